"""The sentence encoder and the reference's stored embedding index.

The reference's embeddings are computed once per (model, reference version) and stored as ``.npy``
under the index directory, so a task starts without re-embedding the reference. Beside them, the
embeddings of every name the reference and the synonym table use: a report name that normalises to
one of them costs a lookup, not a forward pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from worker.mapping.model import model_identity, model_label
from worker.mapping.names import entry_embedding_text
from worker.mapping.reference import Reference

RECIPE_VERSION = "1"  # bump when the text embedded for reference entries changes


class SentenceEncoder:
    """A thin wrapper over a SentenceTransformer: L2-normalised float32 rows; counts its calls."""

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


def index_key(reference: Reference, model_name: str) -> str:
    digest = hashlib.sha256()
    for part in (RECIPE_VERSION, model_identity(model_name), reference.version):
        digest.update(part.encode())
        digest.update(b"\x00")
    for entry in reference.entries:
        digest.update(entry_embedding_text(entry).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def index_path(reference: Reference, model_name: str, index_dir: str | Path) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_label(model_name))
    return Path(index_dir) / f"{slug}-{index_key(reference, model_name)}.npy"


def load_or_build_index(reference: Reference, encoder, model_name: str, index_dir: str | Path,
                        progress: bool = False) -> np.ndarray:
    """The reference's embeddings: read from ``index_dir`` if a matching file exists, else computed and stored."""
    path = index_path(reference, model_name, index_dir)
    texts = [entry_embedding_text(e) for e in reference.entries]
    meta = {"model": model_label(model_name), "model_identity": model_identity(model_name),
            "reference_version": reference.version, "entries": len(reference)}
    return _stored_vectors(path, texts, encoder, meta, progress)


def names_path(names: Sequence[str], model_name: str, index_dir: str | Path) -> Path:
    digest = hashlib.sha256()
    for part in (RECIPE_VERSION, model_identity(model_name), *names):
        digest.update(part.encode())
        digest.update(b"\x00")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_label(model_name))
    return Path(index_dir) / f"{slug}-names-{digest.hexdigest()[:16]}.npy"


def load_or_build_name_vectors(names: Sequence[str], encoder, model_name: str, index_dir: str | Path,
                               progress: bool = False) -> np.ndarray:
    """The embeddings of the names the reference uses (the retriever's ``known_names``), stored beside the
    reference index: a report name that normalises to one of them is looked up, not encoded."""
    path = names_path(names, model_name, index_dir)
    meta = {"model": model_label(model_name), "model_identity": model_identity(model_name), "names": len(names)}
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
