"""The store: migrations (PostgreSQL under an advisory lock, and SQLite), and the idempotent statements."""

from __future__ import annotations

import threading

from sqlalchemy import inspect, select, text

from worker.store import repository as repo
from worker.store.db import alembic_config, current_revision, make_engine, upgrade
from worker.store.models import Base, LabJob, LabTestResult


def _head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


HEAD = _head()

JOB = repo.JobRow(job_id="job-1", message_id="m-1", user_id=123, document_id=456, priority="normal", test_count=2)


def _result(index: int, name: str = "Hemoglobin", code: str = "718-7") -> repo.ResultRow:
    return repo.ResultRow(test_index=index, test_name=name, test_value="14.5", test_unit="g/dL",
                          category="Complete Blood Count (CBC)", loinc_code=code, loinc_name="Hemoglobin",
                          confidence=0.97, match_method="exact", needs_review=False, model_version="v1")


def test_schema_has_the_contract_columns(db):
    inspector = inspect(db)
    columns = {table: [c["name"] for c in inspector.get_columns(table)]
               for table in ("lab_jobs", "lab_test_results", "lab_test_mappings")}
    assert columns["lab_jobs"] == ["job_id", "message_id", "user_id", "document_id", "priority", "status",
                                   "attempts", "test_count", "error", "created_at", "updated_at", "completed_at",
                                   "content_hash", "is_test"]
    assert columns["lab_test_results"] == [
        "job_id", "test_index", "user_id", "document_id", "test_name", "test_value", "test_unit", "category",
        "loinc_code", "loinc_name", "confidence", "match_method", "needs_review", "model_version", "created_at",
        "normalized_name", "unit_key", "candidates"]
    assert columns["lab_test_mappings"] == [
        "normalized_name", "unit_key", "category", "loinc_code", "loinc_name", "confidence", "match_method",
        "source", "model_version", "created_at", "updated_at"]
    assert inspector.get_pk_constraint("lab_test_results")["constrained_columns"] == ["job_id", "test_index"]
    assert inspector.get_pk_constraint("lab_test_mappings")["constrained_columns"] == ["normalized_name", "unit_key"]


def test_migrations_match_the_models(db):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with db.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_concurrent_upgrades_do_not_race(pg_url):
    """Four starters at once on an empty database: all succeed and the schema is built once."""
    import uuid

    import sqlalchemy

    admin = sqlalchemy.create_engine(pg_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    name = f"mlw_race_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'create database "{name}"'))
    url = pg_url.rsplit("/", 1)[0] + f"/{name}"
    engines = [make_engine(url) for _ in range(4)]
    results, errors = [], []
    barrier = threading.Barrier(4)

    def start(engine):
        barrier.wait()
        try:
            results.append(upgrade(engine))
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=start, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for engine in engines:
        engine.dispose()
    with admin.connect() as connection:
        connection.execute(text(f'drop database "{name}" with (force)'))
    admin.dispose()
    assert errors == []
    assert results == [HEAD] * 4


def test_sqlite_works_for_local_runs(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/local.db")
    assert upgrade(engine) == HEAD
    assert upgrade(engine) == HEAD
    assert repo.claim_jobs(engine, [JOB]).done == set()
    repo.complete_job(engine, JOB, [_result(0), _result(1, "WBC Count", "6690-2")])
    repo.complete_job(engine, JOB, [_result(0), _result(1, "WBC Count", "6690-2")])
    assert repo.claim_jobs(engine, [JOB]).done == {"job-1"}
    with engine.connect() as connection:
        rows = connection.execute(select(LabTestResult.__table__).where(LabTestResult.__table__.c.job_id == "job-1"))
        assert len(rows.all()) == 2
    assert current_revision(engine) == HEAD
    engine.dispose()


def test_redelivered_job_writes_one_set_of_rows(db):
    assert repo.claim_jobs(db, [JOB]).done == set()
    repo.complete_job(db, JOB, [_result(0), _result(1)])
    # A second delivery: the job is reported done and nothing more is written, even if completed again.
    assert repo.claim_jobs(db, [JOB]).done == {"job-1"}
    repo.complete_job(db, JOB, [_result(0), _result(1)])
    with db.connect() as connection:
        count = connection.execute(text("select count(*) from lab_test_results where job_id = 'job-1'")).scalar()
        job = connection.execute(select(LabJob.__table__)).one()
    assert count == 2
    assert (job.status, job.attempts, job.test_count, job.error) == ("done", 1, 2, None)
    assert job.completed_at is not None


def test_attempts_and_last_error_are_recorded(db):
    repo.claim_jobs(db, [JOB])
    repo.record_failure(db, ["job-1"], "OperationalError: connection refused")
    repo.claim_jobs(db, [JOB])
    repo.record_failure(db, ["job-1"], "timeout", final=True)
    with db.connect() as connection:
        job = connection.execute(select(LabJob.__table__)).one()
    assert (job.status, job.attempts, job.error) == ("failed", 2, "timeout")


def test_manual_mapping_is_never_overwritten_by_the_model(db):
    manual = repo.MemoryRow("hb", "g/dl", "Complete Blood Count (CBC)", "718-7", "Hemoglobin [Mass/volume] in Blood",
                            1.0, "override", "manual", None)
    repo.set_manual_mapping(db, manual)
    model = repo.MemoryRow("hb", "g/dl", "Others", "0000-0", "wrong", 0.4, "embedding", "model", "v1")
    fresh = repo.MemoryRow("wbc count", "k/ul", "Complete Blood Count (CBC)", "6690-2", "Leukocytes", 0.9,
                           "synonym", "model", "v1")
    repo.remember_mappings(db, [model, fresh])
    found = repo.lookup_mappings(db, [("hb", "g/dl"), ("wbc count", "k/ul"), ("unknown", "")])
    assert found[("hb", "g/dl")] == manual
    assert found[("wbc count", "k/ul")] == fresh
    assert ("unknown", "") not in found


def test_model_rows_are_refreshed_on_sqlite(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/m.db")
    upgrade(engine)
    old = repo.MemoryRow("glucose", "mg/dl", "Diabetes Panel", "2345-7", "Glucose", 0.8, "lexical", "model", "v1")
    new = repo.MemoryRow("glucose", "mg/dl", "Diabetes Panel", "2339-0", "Glucose [Mass/volume] in Blood", 0.9,
                         "embedding", "model", "v2")
    repo.remember_mappings(engine, [old])
    repo.remember_mappings(engine, [new])
    assert repo.lookup_mappings(engine, [("glucose", "mg/dl")])[("glucose", "mg/dl")] == new
    engine.dispose()
