"""The sentence encoders and the reference's stored embedding index.

Three ways to run the model (``ML_WORKER_ENCODER``, see ``model.ENCODERS``): the sentence-transformers
model in full precision (PyTorch), or its transformer exported to ONNX and run by ONNX Runtime, in
float32 or with int8 dynamically quantised weights. The export (both files, with the tokenizer and the
pooling) is written once per model under the index directory; the image does it at build time, and
``export_model`` copies what one ONNX encoder needs into a model directory of its own (the image's
runtime stage, which has no PyTorch, runs from that). ``check_encoder`` says, before anything loads,
whether the chosen encoder can run here: ``EncoderUnavailableError`` (a configuration error) if not.

The reference's embeddings are computed once per (model, encoder, reference version) and stored as
``.npy`` under the index directory, so a task starts without re-embedding the reference. Beside them,
the embeddings of every name the reference and the synonym table use: a report name that normalises
to one of them costs a lookup, not a forward pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from worker.mapping.model import (
    EncoderUnavailableError,
    installed,
    load_sentence_model,
    model_identity,
    model_label,
    onnx_export_meta,
)
from worker.mapping.names import entry_embedding_text
from worker.mapping.reference import Reference

RECIPE_VERSION = "1"  # bump when the text embedded for reference entries changes
EXPORT_FILES = ("tokenizer.json", "encoder.json")  # beside the weights, in every export
WEIGHTS = {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx"}
EXPORT_NEEDS = ("torch", "sentence_transformers", "onnx")  # the modules export_onnx imports


class SentenceEncoder:
    """A thin wrapper over a SentenceTransformer: L2-normalised float32 rows; counts its calls."""

    kind = "torch"

    def __init__(self, model, batch_size: int = 64):
        self.model = model
        self.batch_size = batch_size
        self.calls = 0
        self.texts_encoded = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.texts_encoded += len(texts)
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


class OnnxEncoder:
    """The exported transformer run by ONNX Runtime, with the model's own tokenizer and pooling: the
    same L2-normalised float32 rows as ``SentenceEncoder`` (to float rounding for ``onnx``), without
    importing PyTorch."""

    def __init__(self, directory: Path, quantised: bool, batch_size: int = 64):
        import onnxruntime
        from tokenizers import Tokenizer

        self.kind = "onnx-int8" if quantised else "onnx"
        self.batch_size = batch_size
        self.calls = 0
        self.texts_encoded = 0
        meta = json.loads((directory / "encoder.json").read_text())
        self.pooling = meta["pooling"]
        self.dimension = int(meta["dim"])
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(int(meta["max_seq_length"]))
        self.tokenizer.enable_padding(pad_id=int(meta["pad_id"]), pad_token=meta["pad_token"])
        options = onnxruntime.SessionOptions()
        # its own thread pool, sized like torch's: OMP_NUM_THREADS (the image sets 1 for a 0.5 vCPU task)
        options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS") or 0)
        options.inter_op_num_threads = 1
        weights = directory / WEIGHTS[self.kind]
        self.session = onnxruntime.InferenceSession(str(weights), options, providers=["CPUExecutionProvider"])
        self.inputs = [node.name for node in self.session.get_inputs()]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.texts_encoded += len(texts)
        texts = [str(t).strip() for t in texts]
        out = np.zeros((len(texts), self.dimension), np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # like lengths in a batch: less padding
        for start in range(0, len(texts), self.batch_size):
            rows = order[start:start + self.batch_size]
            encodings = self.tokenizer.encode_batch([texts[i] for i in rows])
            mask = np.array([e.attention_mask for e in encodings], np.int64)
            feeds = {"input_ids": np.array([e.ids for e in encodings], np.int64), "attention_mask": mask,
                     "token_type_ids": np.array([e.type_ids for e in encodings], np.int64)}
            hidden = self.session.run(None, {name: feeds[name] for name in self.inputs})[0]
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
            out[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out


def export_dir(model_name: str, index_dir: str | Path) -> Path:
    """Where the model's ONNX export lives: one folder per model (its weights' identity) under the index
    directory; the model's own directory if it is an export."""
    if onnx_export_meta(model_name):
        return Path(model_name).expanduser()
    key = hashlib.sha256(f"{RECIPE_VERSION}|{model_identity(model_name)}".encode()).hexdigest()[:16]
    return Path(index_dir) / "onnx" / f"{_slug(model_name)}-{key}"


def export_onnx(model_name: str, target: Path) -> Path:
    """Export the sentence model's transformer to ``target``: ``model.onnx`` (float32), ``model-int8.onnx``
    (int8 dynamic quantisation of the weights, per channel), ``tokenizer.json`` and ``encoder.json``
    (pooling, sequence length, padding). Needs PyTorch and onnx: the image runs it at build time."""
    import shutil

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = load_sentence_model(model_name)
    transformer, pooling = model[0], model[1]
    config = pooling.get_config_dict()  # sentence-transformers 6 names one mode; older releases set flags
    mode = config.get("pooling_mode") or ("mean" if config.get("pooling_mode_mean_tokens") else
                                          "cls" if config.get("pooling_mode_cls_token") else repr(config))
    if mode not in ("mean", "cls"):
        raise ValueError(f"{model_label(model_name)}: the ONNX encoder pools by mean or CLS token, not {mode!r}")
    tokenizer = transformer.tokenizer
    sample = tokenizer(["hemoglobin", "total leukocyte count"], padding=True, return_tensors="pt")
    inputs = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in sample]

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *tensors):
            return self.inner(**dict(zip(inputs, tensors, strict=True))).last_hidden_state

    work = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(LastHiddenState(transformer.auto_model.eval()), tuple(sample[name] for name in inputs),
                      str(work / "model.onnx"), input_names=inputs, output_names=["last_hidden_state"],
                      dynamic_axes={name: axes for name in [*inputs, "last_hidden_state"]}, opset_version=17,
                      dynamo=False)
    quantize_dynamic(work / "model.onnx", work / "model-int8.onnx", weight_type=QuantType.QInt8, per_channel=True)
    tokenizer.backend_tokenizer.save(str(work / "tokenizer.json"))
    dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    meta = {"model": model_label(model_name), "model_identity": model_identity(model_name), "pooling": mode,
            "max_seq_length": int(transformer.max_seq_length), "dim": int(dimension()),
            "pad_id": int(tokenizer.pad_token_id), "pad_token": tokenizer.pad_token}
    (work / "encoder.json").write_text(json.dumps(meta, indent=2))
    try:
        os.replace(work, target)
    except OSError:  # another process exported it first: keep theirs
        shutil.rmtree(work, ignore_errors=True)
        if not (target / "encoder.json").is_file():
            raise
    return target


def export_model(model_name: str, index_dir: str | Path, kind: str, target: str | Path) -> Path:
    """Copy the ONNX export's files that the ``kind`` encoder needs (its weights, the tokenizer and
    ``encoder.json``) to ``target``, a model directory that runs with ONNX Runtime alone. Its
    ``encoder.json`` keeps the original model's label and identity, so the reference index built for
    the original model is found from it. Exports first if the export is missing (needs PyTorch)."""
    import shutil

    if kind not in WEIGHTS:
        raise ValueError(f"only an ONNX encoder ({', '.join(WEIGHTS)}) runs from an exported model, not {kind!r}")
    source = export_dir(model_name, index_dir)
    if not (source / "encoder.json").is_file():
        export_onnx(model_name, source)
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS[kind], *EXPORT_FILES):
        shutil.copy2(source / name, target / name)
    return target


def check_encoder(model_name: str, kind: str, index_dir: str | Path) -> None:
    """Raise ``EncoderUnavailableError`` (one sentence: what is missing, what to choose) unless the ``kind``
    encoder can run the model here. Cheap: looks for files and modules without importing anything."""
    export = onnx_export_meta(model_name)
    if kind == "torch":
        if export:
            raise EncoderUnavailableError(
                f"ML_WORKER_ENCODER=torch needs the sentence-transformers model, but {model_name} holds only its "
                f"ONNX export (this image runs ML_WORKER_ENCODER=onnx-int8)")
        if not installed("sentence_transformers") or not installed("torch"):
            raise EncoderUnavailableError(
                "ML_WORKER_ENCODER=torch needs PyTorch and sentence-transformers, which are not installed "
                "(the worker image ships ONNX Runtime only): use ML_WORKER_ENCODER=onnx-int8")
        return
    directory = export_dir(model_name, index_dir)
    weights = directory / WEIGHTS[kind]
    if (directory / "encoder.json").is_file() and weights.is_file():
        return
    if export:
        shipped = sorted(k for k, name in WEIGHTS.items() if (directory / name).is_file())
        raise EncoderUnavailableError(
            f"ML_WORKER_ENCODER={kind} needs {weights.name}, which the ONNX export in {model_name} does not hold "
            f"(it runs ML_WORKER_ENCODER={' or '.join(shipped) or 'nothing'})")
    missing = [module for module in EXPORT_NEEDS if not installed(module)]
    if missing:
        raise EncoderUnavailableError(
            f"ML_WORKER_ENCODER={kind}: {model_label(model_name)} has no ONNX export in {directory.parent}, and "
            f"exporting it needs {', '.join(missing)}, which are not installed")


def load_encoder(model_name: str, kind: str, index_dir: str | Path):
    """The encoder of this kind for the model; an ONNX kind exports the model first if its export is missing.
    ``EncoderUnavailableError`` if this environment cannot run it (``check_encoder``)."""
    check_encoder(model_name, kind, index_dir)
    if kind == "torch":
        return SentenceEncoder(load_sentence_model(model_name))
    directory = export_dir(model_name, index_dir)
    if not (directory / "encoder.json").is_file():
        export_onnx(model_name, directory)
    return OnnxEncoder(directory, quantised=kind == "onnx-int8")


def _slug(model_name: str, kind: str = "torch") -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_label(model_name))
    return slug if kind == "torch" else f"{slug}-{kind}"


def _identity(model_name: str, kind: str) -> str:
    """The weights' identity, and the encoder's when it is not the float model (its vectors differ)."""
    return model_identity(model_name) if kind == "torch" else f"{model_identity(model_name)}|{kind}"


def index_key(reference: Reference, model_name: str, kind: str = "torch") -> str:
    digest = hashlib.sha256()
    for part in (RECIPE_VERSION, _identity(model_name, kind), reference.version):
        digest.update(part.encode())
        digest.update(b"\x00")
    for entry in reference.entries:
        digest.update(entry_embedding_text(entry).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def index_path(reference: Reference, model_name: str, index_dir: str | Path, kind: str = "torch") -> Path:
    return Path(index_dir) / f"{_slug(model_name, kind)}-{index_key(reference, model_name, kind)}.npy"


def load_or_build_index(reference: Reference, encoder, model_name: str, index_dir: str | Path,
                        progress: bool = False) -> np.ndarray:
    """The reference's embeddings: read from ``index_dir`` if a matching file exists, else computed and stored."""
    kind = getattr(encoder, "kind", "torch")
    path = index_path(reference, model_name, index_dir, kind)
    texts = [entry_embedding_text(e) for e in reference.entries]
    meta = {"model": model_label(model_name), "encoder": kind, "model_identity": model_identity(model_name),
            "reference_version": reference.version, "entries": len(reference)}
    return _stored_vectors(path, texts, encoder, meta, progress)


def names_path(names: Sequence[str], model_name: str, index_dir: str | Path, kind: str = "torch") -> Path:
    digest = hashlib.sha256()
    for part in (RECIPE_VERSION, _identity(model_name, kind), *names):
        digest.update(part.encode())
        digest.update(b"\x00")
    return Path(index_dir) / f"{_slug(model_name, kind)}-names-{digest.hexdigest()[:16]}.npy"


def load_or_build_name_vectors(names: Sequence[str], encoder, model_name: str, index_dir: str | Path,
                               progress: bool = False) -> np.ndarray:
    """The embeddings of the names the reference uses (the retriever's ``known_names``), stored beside the
    reference index: a report name that normalises to one of them is looked up, not encoded."""
    kind = getattr(encoder, "kind", "torch")
    path = names_path(names, model_name, index_dir, kind)
    meta = {"model": model_label(model_name), "encoder": kind, "model_identity": model_identity(model_name),
            "names": len(names)}
    return _stored_vectors(path, list(names), encoder, meta, progress)


def _stored_vectors(path: Path, texts: list[str], encoder, meta: dict, progress: bool) -> np.ndarray:
    """The texts' embeddings from ``path`` if it holds them, else computed and stored there."""
    if path.is_file():
        array = np.load(path)
        if array.shape[0] == len(texts):
            return array.astype(np.float32, copy=False)
    if not texts:
        return np.zeros((0, 1), np.float32)
    if progress and hasattr(encoder, "model"):
        vectors = np.asarray(encoder.model.encode(texts, batch_size=64, convert_to_numpy=True,
                                                  normalize_embeddings=True, show_progress_bar=True), np.float32)
    else:
        vectors = encoder.encode(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps({**meta, "dim": int(vectors.shape[1])}, indent=2))
    return vectors
