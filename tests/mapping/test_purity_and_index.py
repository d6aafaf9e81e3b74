"""The engine is pure and cheap to import; the reference index is computed once and reused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from worker.mapping.types import LabTestQuery


def _imported_modules(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(output.split())


def test_engine_imports_no_boto3_or_sqlalchemy():
    modules = _imported_modules("import worker.mapping.engine, worker.mapping.cli, worker.mapping.evaluate, "
                                "worker.mapping.importer, worker.mapping.benchmark")
    assert not {m for m in modules if m.split(".")[0] in ("boto3", "botocore", "sqlalchemy", "psycopg2")}


def test_types_and_cli_import_cheaply():
    modules = _imported_modules("import worker.mapping.types, worker.mapping.cli")
    assert not {m for m in modules if m.split(".")[0] in ("torch", "sentence_transformers", "transformers", "numpy")}


def test_no_mapping_module_mentions_boto3_or_sql():
    from pathlib import Path

    import worker.mapping

    root = Path(worker.mapping.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        for forbidden in ("import boto3", "from boto3", "import sqlalchemy", "from sqlalchemy"):
            assert forbidden not in text, f"{path.name}: {forbidden}"


def test_second_load_does_not_reembed_the_reference(sentence_encoder, packaged_model_dir, tmp_path,
                                                   counting_encoder, small_reference):
    from worker.mapping.encoder import index_path
    from worker.mapping.engine import MappingEngine

    CountingEncoder = counting_encoder  # noqa: N806
    reference = small_reference
    first_encoder = CountingEncoder(sentence_encoder)
    first = MappingEngine.load(packaged_model_dir, tmp_path, reference=reference, synonyms=(), encoder=first_encoder)
    known = first.retriever.known_names()
    # the reference's entries, then the names it uses (component, core long name) in a second call
    assert first_encoder.calls == 2 and len(first_encoder.texts) == len(reference) + len(known)
    assert {"hemoglobin", "creatinine", "alanine aminotransferase"} <= set(known)
    path = index_path(reference, packaged_model_dir, tmp_path)
    mtime = path.stat().st_mtime_ns

    second_encoder = CountingEncoder(sentence_encoder)
    engine = MappingEngine.load(packaged_model_dir, tmp_path, reference=reference, synonyms=(),
                                encoder=second_encoder)
    assert second_encoder.calls == 0
    assert path.stat().st_mtime_ns == mtime

    # a different reference gets its own index file
    from worker.mapping.reference import Reference

    smaller = Reference(reference.entries[:5])
    assert index_path(smaller, packaged_model_dir, tmp_path) != path

    # a name the reference uses is looked up; the batch's other distinct, not-yet-seen names are embedded
    # in one call
    engine.map([LabTestQuery("Hemoglobin", "g/dL"), LabTestQuery("HAEMOGLOBIN", "gm/dl"),
                LabTestQuery("S. Creatinine", "mg/dL"), LabTestQuery("Page 2 of 3")])
    assert second_encoder.calls == 0
    engine.map([LabTestQuery("Serum Creatinine", "umol/L"), LabTestQuery("Hemoglobin concentration", "g/dL"),
                LabTestQuery("Liver enzyme SGPT", "U/L")])
    assert second_encoder.calls == 1
    assert sorted(second_encoder.texts) == ["hemoglobin concentration", "liver enzyme alanine aminotransferase"]
    engine.map([LabTestQuery("Hb", "g/dL"), LabTestQuery("creatinine"), LabTestQuery("HEMOGLOBIN CONCENTRATION")])
    assert second_encoder.calls == 1  # all seen: no forward pass at all


def test_a_looked_up_name_is_answered_as_an_encoded_one(sentence_encoder, packaged_model_dir, tmp_path,
                                                        small_reference):
    """The stored vector of a known name is the encoder's own: the answer is the same either way."""
    from worker.mapping.engine import MappingEngine

    queries = [LabTestQuery("Hemoglobin", "g/dL"), LabTestQuery("S. Creatinine", "umol/L"),
               LabTestQuery("SGPT", "U/L"), LabTestQuery("Glucose")]
    looked_up = MappingEngine.load(packaged_model_dir, tmp_path, reference=small_reference, synonyms=(),
                                   encoder=sentence_encoder)
    encoded = MappingEngine.load(packaged_model_dir, tmp_path, reference=small_reference, synonyms=(),
                                 encoder=sentence_encoder)
    encoded.retriever.use_known_vectors([], sentence_encoder.encode([])[:0])
    assert looked_up.map(queries) == encoded.map(queries)


def test_empty_reference_abstains(sentence_encoder, packaged_model_dir, tmp_path):
    from worker.mapping.engine import MappingEngine
    from worker.mapping.reference import Reference

    engine = MappingEngine.load(packaged_model_dir, tmp_path, reference=Reference([]), synonyms=(),
                                encoder=sentence_encoder)
    [hb, page] = engine.map([LabTestQuery("Hemoglobin", "g/dL"), LabTestQuery("Page 2 of 3")])
    assert hb.loinc_code is None and hb.needs_review and hb.category == "Complete Blood Count (CBC)"
    assert page.loinc_code is None and not page.needs_review


def test_benchmark_workload_shape():
    from worker.mapping.benchmark import workload

    rows = workload(500, 50)
    assert len(rows) == 500
    assert len({name for name, _ in rows}) == 50
    assert workload(500, 50) == rows  # deterministic


def test_model_version_is_the_same_in_every_process(packaged_model_dir, tmp_path):
    code = ("from worker.mapping.engine import MappingEngine; "
            f"print(MappingEngine.load({packaged_model_dir!r}, {str(tmp_path)!r}).model_version)")
    versions = set()
    for seed in ("1", "2"):
        env = {**__import__("os").environ, "PYTHONHASHSEED": seed, "HF_HUB_OFFLINE": "1"}
        done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
        versions.add(done.stdout.strip().splitlines()[-1])
    assert len(versions) == 1, versions


def test_a_model_without_a_fitted_calibration_fails_at_start_naming_the_command(tmp_path, fixture_reference_only):
    """Never another model's calibration, silently: the engine refuses to start and says how to fit one."""
    from worker.mapping.decide import MissingCalibrationError
    from worker.mapping.engine import MappingEngine

    class NoModelNeeded:  # the error comes before any encoding
        def encode(self, texts):
            raise AssertionError("the engine encoded before checking its calibration")

    model_dir = tmp_path / "some-other-model"
    model_dir.mkdir()
    with pytest.raises(MissingCalibrationError) as error:
        MappingEngine.load(str(model_dir), tmp_path / "index", encoder=NoModelNeeded())
    message = str(error.value)
    assert "'some-other-model'" in message
    assert "python -m worker.mapping.calibrate" in message and "--write" in message


@pytest.mark.parametrize("command", [["selfcheck"], []], ids=["selfcheck", "worker"])
def test_the_worker_refuses_to_start_with_a_model_that_has_no_calibration(tmp_path, command):
    """`python -m worker` (and its selfcheck) with an uncalibrated model: a non-zero exit with the message."""
    model_dir = tmp_path / "uncalibrated-model"
    model_dir.mkdir()
    env = {**os.environ, "ML_WORKER_MODEL": str(model_dir), "ML_WORKER_INDEX_DIR": str(tmp_path / "index"),
           "ML_WORKER_SQS_QUEUE_URL": "http://127.0.0.1:9/queue/q", "DATABASE_URL": f"sqlite:///{tmp_path}/w.db",
           "ML_WORKER_MIGRATE_ON_START": "false"}
    env.pop("ML_WORKER_CALIBRATION", None)
    result = subprocess.run([sys.executable, "-m", "worker", *command], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "no confidence calibration is fitted for model 'uncalibrated-model" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
