"""The few statements the worker runs, in SQLAlchemy Core, portable between PostgreSQL and SQLite.

Idempotency lives here: a job's results are inserted with ON CONFLICT DO NOTHING on
(job_id, test_index), a job already 'done' is never claimed again, and a model row never
overwrites a manual row in the mapping memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from worker.store.models import LabJob, LabTestMapping, LabTestResult

MAX_ERROR_LENGTH = 2000


def _insert(connection: Connection, table):
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"the worker's store supports PostgreSQL and SQLite, not {dialect}")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class JobRow:
    job_id: str
    message_id: str | None
    user_id: int
    document_id: int
    priority: str
    test_count: int


@dataclass(frozen=True, slots=True)
class ResultRow:
    test_index: int
    test_name: str
    test_value: str | None
    test_unit: str | None
    category: str
    loinc_code: str | None
    loinc_name: str | None
    confidence: float
    match_method: str
    needs_review: bool
    model_version: str | None


@dataclass(frozen=True, slots=True)
class MemoryRow:
    normalized_name: str
    unit_key: str
    category: str
    loinc_code: str | None
    loinc_name: str | None
    confidence: float
    match_method: str
    source: str
    model_version: str | None


def ping(engine: Engine) -> bool:
    """True when the database answers."""
    try:
        with engine.connect() as connection:
            connection.execute(select(1))
        return True
    except Exception:  # any driver or pool error means "not now"
        return False


def claim_jobs(engine: Engine, jobs: Sequence[JobRow]) -> set[str]:
    """Record that these jobs are in work (attempts + 1) and return the ids already done.

    One transaction for the batch. A 'done' row is left untouched: its job is not worked again.
    """
    if not jobs:
        return set()
    table = LabJob.__table__
    with engine.begin() as connection:
        statement = _insert(connection, table).values([
            {"job_id": job.job_id, "message_id": job.message_id, "user_id": job.user_id,
             "document_id": job.document_id, "priority": job.priority, "status": "processing",
             "attempts": 1, "test_count": job.test_count}
            for job in jobs
        ])
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.job_id],
            set_={"attempts": table.c.attempts + 1, "status": "processing", "updated_at": func.now(),
                  "message_id": statement.excluded.message_id},
            where=table.c.status != "done",
        )
        connection.execute(statement)
        done = connection.execute(
            select(table.c.job_id).where(table.c.job_id.in_([job.job_id for job in jobs]), table.c.status == "done")
        ).scalars()
        return set(done)


def complete_job(engine: Engine, job: JobRow, results: Sequence[ResultRow]) -> None:
    """Write a job's results and mark it done, in one transaction."""
    results_table = LabTestResult.__table__
    jobs_table = LabJob.__table__
    with engine.begin() as connection:
        if results:
            # One constant statement with the rows as parameters (executemany): SQLAlchemy caches its
            # compiled form, where a multi-row VALUES clause was rebuilt for every job.
            statement = _insert(connection, results_table).on_conflict_do_nothing(
                index_elements=[results_table.c.job_id, results_table.c.test_index])
            connection.execute(statement, [
                {"job_id": job.job_id, "user_id": job.user_id, "document_id": job.document_id,
                 "test_index": row.test_index, "test_name": row.test_name, "test_value": row.test_value,
                 "test_unit": row.test_unit, "category": row.category, "loinc_code": row.loinc_code,
                 "loinc_name": row.loinc_name, "confidence": row.confidence, "match_method": row.match_method,
                 "needs_review": row.needs_review, "model_version": row.model_version}
                for row in results
            ])
        now = _now()
        connection.execute(
            update(jobs_table).where(jobs_table.c.job_id == job.job_id)
            .values(status="done", test_count=len(results), error=None, completed_at=now, updated_at=now)
        )


def record_failure(engine: Engine, job_ids: Iterable[str], error: str, final: bool = False) -> None:
    """Note the last error on jobs not done; ``final`` marks them failed (their message goes to the DLQ)."""
    ids = list(job_ids)
    if not ids:
        return
    table = LabJob.__table__
    values = {"error": error[:MAX_ERROR_LENGTH], "updated_at": _now()}
    if final:
        values["status"] = "failed"
    with engine.begin() as connection:
        connection.execute(update(table).where(table.c.job_id.in_(ids), table.c.status != "done").values(**values))


def lookup_mappings(engine: Engine, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], MemoryRow]:
    """The memory's rows for these (normalized_name, unit_key) keys."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    table = LabTestMapping.__table__
    found: dict[tuple[str, str], MemoryRow] = {}
    with engine.connect() as connection:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            rows = connection.execute(
                select(table.c.normalized_name, table.c.unit_key, table.c.category, table.c.loinc_code,
                       table.c.loinc_name, table.c.confidence, table.c.match_method, table.c.source,
                       table.c.model_version)
                .where(tuple_(table.c.normalized_name, table.c.unit_key).in_(chunk))
            )
            for row in rows:
                found[(row.normalized_name, row.unit_key)] = MemoryRow(*row)
    return found


def remember_mappings(engine: Engine, rows: Sequence[MemoryRow]) -> None:
    """Store model results in the memory; an existing manual row is never overwritten."""
    if not rows:
        return
    table = LabTestMapping.__table__
    with engine.begin() as connection:
        # One constant statement with the rows as parameters (executemany, sent in pages): SQLAlchemy
        # caches its compiled form, where a multi-row VALUES clause was rebuilt for every batch.
        statement = _insert(connection, table)
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.normalized_name, table.c.unit_key],
            set_={"category": excluded.category, "loinc_code": excluded.loinc_code,
                  "loinc_name": excluded.loinc_name, "confidence": excluded.confidence,
                  "match_method": excluded.match_method, "model_version": excluded.model_version,
                  "updated_at": func.now()},
            where=table.c.source == "model",
        )
        connection.execute(statement, [
            {"normalized_name": row.normalized_name, "unit_key": row.unit_key, "category": row.category,
             "loinc_code": row.loinc_code, "loinc_name": row.loinc_name, "confidence": row.confidence,
             "match_method": row.match_method, "source": "model", "model_version": row.model_version}
            for row in rows
        ])


def set_manual_mapping(engine: Engine, row: MemoryRow) -> None:
    """Insert or replace a reviewed mapping: it wins over the model from now on."""
    table = LabTestMapping.__table__
    values = {"normalized_name": row.normalized_name, "unit_key": row.unit_key, "category": row.category,
              "loinc_code": row.loinc_code, "loinc_name": row.loinc_name, "confidence": row.confidence,
              "match_method": row.match_method, "source": "manual", "model_version": None}
    with engine.begin() as connection:
        statement = _insert(connection, table).values(values)
        connection.execute(statement.on_conflict_do_update(
            index_elements=[table.c.normalized_name, table.c.unit_key],
            set_={**{k: v for k, v in values.items() if k not in ("normalized_name", "unit_key")},
                  "updated_at": func.now()},
        ))
