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


def test_an_exported_model_runs_from_the_original_models_index_without_embedding_again(
        packaged_model_dir, onnx_index, small_reference, tmp_path):
    """The image's runtime stage: ML_WORKER_MODEL is the int8 export alone (no weights, no PyTorch) and the
    index was built from the original model; its keys follow the export's encoder.json, so nothing is
    embedded again."""
    from worker.mapping.encoder import export_model, index_path
    from worker.mapping.engine import MappingEngine
    from worker.mapping.model import model_identity, model_label

    built = MappingEngine.load(packaged_model_dir, onnx_index, reference=small_reference, synonyms=(),
                               encoder_kind="onnx-int8")
    model_dir = export_model(packaged_model_dir, onnx_index, "onnx-int8", tmp_path / "model")
    assert {p.name for p in model_dir.iterdir()} == {"model-int8.onnx", "tokenizer.json", "encoder.json"}
    assert model_label(str(model_dir)) == "all-MiniLM-L6-v2"
    assert model_identity(str(model_dir)) == model_identity(packaged_model_dir)

    runtime_index = tmp_path / "index"  # the index without the export under onnx/, as the image copies it
    runtime_index.mkdir()
    for path in onnx_index.glob("*.*"):
        (runtime_index / path.name).write_bytes(path.read_bytes())
    engine = MappingEngine.load(str(model_dir), runtime_index, reference=small_reference, synonyms=(),
                                encoder_kind="onnx-int8")
    assert engine.encoder.texts_encoded == 0
    assert engine.model_version == built.model_version
    assert (index_path(small_reference, str(model_dir), runtime_index, "onnx-int8").name
            == index_path(small_reference, packaged_model_dir, onnx_index, "onnx-int8").name)
    assert [r.loinc_code for r in engine.map([LabTestQuery("Hb", "g/dL")])] == ["718-7"]
    assert not (runtime_index / "onnx").exists()


def _fake_export(directory, *weights):
    directory.mkdir(parents=True)
    (directory / "encoder.json").write_text(json.dumps({"model": "all-MiniLM-L6-v2", "model_identity": "m"}))
    for name in ("tokenizer.json", *weights):
        (directory / name).write_bytes(b"")
    return str(directory)


def test_check_encoder_names_what_an_image_without_pytorch_cannot_run(tmp_path, monkeypatch, packaged_model_dir):
    from worker.mapping import encoder as encoders
    from worker.mapping.model import EncoderUnavailableError

    export = _fake_export(tmp_path / "model", "model-int8.onnx")
    encoders.check_encoder(export, "onnx-int8", tmp_path / "index")  # what the image runs
    with pytest.raises(EncoderUnavailableError, match="ML_WORKER_ENCODER=torch needs the sentence-transformers "
                                                      "model, but .* holds only its ONNX export"):
        encoders.check_encoder(export, "torch", tmp_path / "index")
    with pytest.raises(EncoderUnavailableError, match=r"ML_WORKER_ENCODER=onnx needs model.onnx, .* \(it runs "
                                                      r"ML_WORKER_ENCODER=onnx-int8\)"):
        encoders.check_encoder(export, "onnx", tmp_path / "index")

    # the original model, where PyTorch is not installed: neither torch nor an export made here can run
    monkeypatch.setattr(encoders, "installed", lambda module: module not in ("torch", "sentence_transformers"))
    with pytest.raises(EncoderUnavailableError, match="needs PyTorch and sentence-transformers, which are not "
                                                      "installed"):
        encoders.check_encoder(packaged_model_dir, "torch", tmp_path / "index")
    with pytest.raises(EncoderUnavailableError, match="has no ONNX export .* exporting it needs torch, "
                                                      "sentence_transformers, which are not installed"):
        encoders.check_encoder(packaged_model_dir, "onnx", tmp_path / "index")
    with pytest.raises(EncoderUnavailableError):  # load_encoder checks first: no traceback from an import
        encoders.load_encoder(packaged_model_dir, "torch", tmp_path / "index")


def test_check_encoder_passes_where_pytorch_is_installed_or_the_export_exists(packaged_model_dir, onnx_index,
                                                                             tmp_path):
    from worker.mapping.encoder import check_encoder

    for kind in ("torch", "onnx", "onnx-int8"):
        check_encoder(packaged_model_dir, kind, onnx_index)
        check_encoder(packaged_model_dir, kind, tmp_path / "empty-index")  # it can export here


@pytest.mark.parametrize("encoder", ["torch", "onnx"])
def test_the_worker_exits_2_with_one_line_when_the_encoder_cannot_run_here(tmp_path, encoder):
    """`python -m worker` in the image (an int8 export, no PyTorch) with another encoder: exit 2, one line."""
    export = _fake_export(tmp_path / "model", "model-int8.onnx")
    env = {**os.environ, "ML_WORKER_MODEL": export, "ML_WORKER_ENCODER": encoder,
           "ML_WORKER_INDEX_DIR": str(tmp_path / "index"), "ML_WORKER_SQS_QUEUE_URL": "http://127.0.0.1:9/queue/q",
           "DATABASE_URL": f"sqlite:///{tmp_path}/w.db", "ML_WORKER_MIGRATE_ON_START": "false"}
    result = subprocess.run([sys.executable, "-m", "worker"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = (result.stdout + result.stderr).strip().splitlines()
    assert "configuration error: ML_WORKER_ENCODER=" in line and "Traceback" not in line
    assert json.loads(line)["level"] == "ERROR"


def test_without_pytorch_the_worker_exits_2_naming_the_encoder_it_can_run(tmp_path, packaged_model_dir):
    """PyTorch absent (its import blocked) and ML_WORKER_ENCODER=torch: exit 2 before the database, one line."""
    blocker = ("import runpy, sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('torch', 'sentence_transformers', 'transformers'):\n"
               "            raise ImportError(name)\n"
               "sys.meta_path.insert(0, Block())\n"
               "sys.argv = ['worker']\n"
               "runpy.run_module('worker', run_name='__main__')\n")
    env = {**os.environ, "ML_WORKER_MODEL": packaged_model_dir, "ML_WORKER_ENCODER": "torch",
           "ML_WORKER_INDEX_DIR": str(tmp_path / "index"), "ML_WORKER_SQS_QUEUE_URL": "http://127.0.0.1:9/queue/q",
           "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"}
    result = subprocess.run([sys.executable, "-c", blocker], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = (result.stdout + result.stderr).strip().splitlines()
    assert "ML_WORKER_ENCODER=torch needs PyTorch and sentence-transformers, which are not installed" in line
