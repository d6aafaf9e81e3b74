"""The ONNX encoders: exported once, the float one gives the model's own vectors, the int8 one vectors
close to them, and an engine on either never imports PyTorch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from worker.mapping.types import LabTestQuery

NAMES = ["hemoglobin", "total leukocytes count", "serum glutamic pyruvic transaminase", "hba1c",
         "thyroid stimulating hormone ultrasensitive 3rd generation", "x"]


@pytest.fixture(scope="module")
def onnx_index(packaged_model_dir, tmp_path_factory):
    """An index directory holding the packaged model's ONNX export (exported here, as the image build does)."""
    from worker.mapping.encoder import export_dir, export_onnx

    index_dir = tmp_path_factory.mktemp("onnx-index")
    export_onnx(packaged_model_dir, export_dir(packaged_model_dir, index_dir))
    return index_dir


def _encoder(packaged_model_dir, index_dir, kind):
    from worker.mapping.encoder import load_encoder

    return load_encoder(packaged_model_dir, kind, index_dir)


def test_the_export_holds_both_weights_the_tokenizer_and_the_pooling(packaged_model_dir, onnx_index):
    from worker.mapping.encoder import export_dir

    directory = export_dir(packaged_model_dir, onnx_index)
    assert {p.name for p in directory.iterdir()} == {"model.onnx", "model-int8.onnx", "tokenizer.json",
                                                     "encoder.json"}
    meta = json.loads((directory / "encoder.json").read_text())
    assert meta["pooling"] == "mean" and meta["dim"] == 384 and meta["max_seq_length"] == 256
    # int8 weights: about a quarter of the float file
    assert (directory / "model-int8.onnx").stat().st_size < 0.3 * (directory / "model.onnx").stat().st_size


def test_float_onnx_gives_the_models_own_vectors(sentence_encoder, packaged_model_dir, onnx_index):
    expected = sentence_encoder.encode(NAMES)
    got = _encoder(packaged_model_dir, onnx_index, "onnx").encode(NAMES)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.abs(got - expected).max() < 1e-5


def test_int8_onnx_gives_close_vectors_and_keeps_each_names_nearest(sentence_encoder, packaged_model_dir, onnx_index):
    expected = sentence_encoder.encode(NAMES)
    got = _encoder(packaged_model_dir, onnx_index, "onnx-int8").encode(NAMES)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosines = (got * expected).sum(axis=1)
    assert cosines.min() > 0.95, cosines
    assert ((got @ expected.T).argmax(axis=1) == np.arange(len(NAMES))).all()


def test_an_empty_batch_is_an_empty_matrix(packaged_model_dir, onnx_index):
    assert _encoder(packaged_model_dir, onnx_index, "onnx-int8").encode([]).shape == (0, 384)


def test_the_engine_on_onnx_never_imports_torch_and_says_so_in_its_version(packaged_model_dir, onnx_index):
    code = ("import json, sys; from worker.mapping.engine import MappingEngine; "
            "from worker.mapping.types import LabTestQuery as Q; "
            f"e = MappingEngine.load({packaged_model_dir!r}, {str(onnx_index)!r}, encoder_kind='onnx-int8'); "
            "n = e.encoder.texts_encoded; "
            "r = e.map([Q('Haemoglobin', 'g/dL'), Q('Haemoglobin estimation by cyanmeth method', 'g/dL')]); "
            "print(json.dumps([e.model_version, r[0].loinc_code, e.encoder.texts_encoded - n, "
            "'torch' in sys.modules]))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    version, code, encoded, imported_torch = json.loads(done.stdout.strip().splitlines()[-1])
    assert version.startswith("all-MiniLM-L6-v2-onnx-int8+ref-")
    assert code == "718-7"
    assert encoded == 1  # the second name is new: one forward pass, by ONNX Runtime
    assert imported_torch is False


def test_the_engine_answers_alike_on_every_encoder(sentence_encoder, packaged_model_dir, onnx_index, small_reference):
    from worker.mapping.engine import MappingEngine

    queries = [LabTestQuery("Hb", "g/dL"), LabTestQuery("S. Creatinine", "umol/L"), LabTestQuery("SGPT", "U/L"),
               LabTestQuery("Fasting blood sugar", "mg/dL"), LabTestQuery("Thyroid stimulating hormone", "uIU/mL")]
    answers = {}
    for kind in ("torch", "onnx", "onnx-int8"):
        encoder = sentence_encoder if kind == "torch" else _encoder(packaged_model_dir, onnx_index, kind)
        engine = MappingEngine.load(packaged_model_dir, onnx_index, reference=small_reference, synonyms=(),
                                    encoder=encoder)
        answers[kind] = [(r.loinc_code, r.category, r.needs_review) for r in engine.map(queries)]
    assert answers["torch"] == answers["onnx"] == answers["onnx-int8"]
    assert [code for code, _, _ in answers["torch"]] == ["718-7", "14682-9", "1742-6", "1558-6", "3016-3"]


def test_an_unknown_encoder_is_a_configuration_error_naming_the_choices():
    from pydantic import ValidationError

    from worker.settings import WorkerSettings

    with pytest.raises(ValidationError, match="torch, onnx, onnx-int8"):
        WorkerSettings(queue_url="q", encoder="fp16")
    assert WorkerSettings(queue_url="q", encoder="onnx-int8").encoder == "onnx-int8"
