"""The few statements the worker runs, in SQLAlchemy Core, portable between PostgreSQL and SQLite.

Idempotency lives here: a job's results are inserted with ON CONFLICT DO NOTHING on
(job_id, test_index), a job already 'done' is never claimed again, a job id already held by other
content is never claimed for this one, and a model row never overwrites a manual row in the
mapping memory, which never holds a key without letters or digits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, bindparam, func, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from worker.store.models import LabJob, LabTestMapping, LabTestResult

MAX_ERROR_LENGTH = 2000
BACKFILL_CHUNK = 2000
BACKFILL_LOCK_TIMEOUT = "2s"


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
    content_hash: str | None = None
    is_test: bool = False


@dataclass(frozen=True, slots=True)
class Claim:
    """What claiming a batch found: jobs already done, and jobs whose id other content holds."""

    done: set[str]
    reused: set[str]


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
    normalized_name: str | None = None  # the mapping-memory key the worker used
    unit_key: str | None = None
    candidates: list[dict] | None = None  # [{"code", "name", "score"}], best first; uncertain results only


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


def ready(engine: Engine) -> bool:
    """True when the database would take the worker's writes now.

    A database can answer SELECT 1 and still refuse every write: read-only after a failover (a
    replica in recovery, ``default_transaction_read_only``), a revoked grant. On PostgreSQL the
    probe asks exactly that, in a transaction of its own: is this transaction read-only, and may
    this role insert and update the worker's tables? It takes no table lock, so a lock held
    elsewhere never stalls it. Other databases (SQLite, for local runs) are asked for a ping.
    """
    try:
        with engine.connect() as connection:
            if connection.dialect.name != "postgresql":
                connection.execute(select(1))
                return True
            return bool(connection.execute(text(
                "select not pg_is_in_recovery() and current_setting('transaction_read_only') = 'off'"
                " and has_table_privilege('lab_jobs', 'INSERT, UPDATE')"
                " and has_table_privilege('lab_test_results', 'INSERT')")).scalar())
    except Exception:  # any driver or pool error means "not now"
        return False


def claim_jobs(engine: Engine, jobs: Sequence[JobRow]) -> Claim:
    """Record that these jobs are in work (attempts + 1); say which are done and which ids are reused.

    One transaction for the batch. A 'done' row is left untouched: its job is not worked again.
    A row whose content hash differs from the job's is left untouched too: that job id belongs to
    another job.
    """
    if not jobs:
        return Claim(set(), set())
    table = LabJob.__table__
    with engine.begin() as connection:
        statement = _insert(connection, table).values([
            {"job_id": job.job_id, "message_id": job.message_id, "user_id": job.user_id,
             "document_id": job.document_id, "priority": job.priority, "status": "processing",
             "attempts": 1, "test_count": job.test_count, "content_hash": job.content_hash,
             "is_test": job.is_test}
            for job in jobs
        ])
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.job_id],
            set_={"attempts": table.c.attempts + 1, "status": "processing", "updated_at": func.now(),
                  "message_id": excluded.message_id,
                  "content_hash": func.coalesce(table.c.content_hash, excluded.content_hash)},
            where=(table.c.status != "done") & _same_content(table.c.content_hash, excluded.content_hash),
        )
        connection.execute(statement)
        rows = connection.execute(
            select(table.c.job_id, table.c.status, table.c.content_hash)
            .where(table.c.job_id.in_([job.job_id for job in jobs]))
        ).all()
    ours = {job.job_id: job.content_hash for job in jobs}
    reused = {row.job_id for row in rows if row.content_hash and ours[row.job_id]
              and row.content_hash != ours[row.job_id]}
    return Claim(done={row.job_id for row in rows if row.status == "done"} - reused, reused=reused)


def _same_content(stored, incoming):
    # A row or a job without a hash (written before hashes, or by an old worker) is trusted.
    return stored.is_(None) | incoming.is_(None) | (stored == incoming)


def complete_job(engine: Engine, job: JobRow, results: Sequence[ResultRow]) -> None:
    """Write a job's results and mark it done, in one transaction."""
    complete_jobs(engine, [(job, results)])


def complete_jobs(engine: Engine, jobs: Sequence[tuple[JobRow, Sequence[ResultRow]]]) -> None:
    """Write the jobs' results and mark them done, in one transaction (all or none)."""
    results_table = LabTestResult.__table__
    jobs_table = LabJob.__table__
    rows = [{"job_id": job.job_id, "user_id": job.user_id, "document_id": job.document_id,
             "test_index": row.test_index, "test_name": row.test_name, "test_value": row.test_value,
             "test_unit": row.test_unit, "category": row.category, "loinc_code": row.loinc_code,
             "loinc_name": row.loinc_name, "confidence": row.confidence, "match_method": row.match_method,
             "needs_review": row.needs_review, "model_version": row.model_version,
             "normalized_name": row.normalized_name, "unit_key": row.unit_key, "candidates": row.candidates}
            for job, results in jobs for row in results]
    now = _now()
    with engine.begin() as connection:
        if rows:
            # One constant statement with the rows as parameters (executemany): SQLAlchemy caches its
            # compiled form, where a multi-row VALUES clause was rebuilt for every batch.
            statement = _insert(connection, results_table).on_conflict_do_nothing(
                index_elements=[results_table.c.job_id, results_table.c.test_index])
            connection.execute(statement, rows)
        connection.execute(
            update(jobs_table).where(jobs_table.c.job_id == bindparam("done_job_id"))
            .values(status="done", test_count=bindparam("done_count"), error=None, completed_at=now,
                    updated_at=now),
            [{"done_job_id": job.job_id, "done_count": len(results)} for job, results in jobs],
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


def usable_key(normalized_name: str) -> bool:
    """A memory key must name something: a name without letters or digits (an emoji, dashes, blanks)
    normalises to the same empty key as every other such name, so a row under it would answer for all."""
    base = normalized_name.rsplit(" [", 1)[0]  # without the engine's " [urine 24h]" qualifiers
    return any(character.isalnum() for character in base)


def set_manual_mapping(engine: Engine, row: MemoryRow) -> None:
    """Insert or replace a reviewed mapping: it wins over the model from now on."""
    with engine.begin() as connection:
        write_manual_mapping(connection, row)


def write_manual_mapping(connection: Connection, row: MemoryRow) -> None:
    """``set_manual_mapping`` inside the caller's transaction (a review writes its audit in the same one)."""
    if not usable_key(row.normalized_name):
        raise ValueError("a test name with no letters or digits cannot key a mapping")
    table = LabTestMapping.__table__
    values = {"normalized_name": row.normalized_name, "unit_key": row.unit_key, "category": row.category,
              "loinc_code": row.loinc_code, "loinc_name": row.loinc_name, "confidence": row.confidence,
              "match_method": row.match_method, "source": "manual", "model_version": None}
    statement = _insert(connection, table).values(values)
    connection.execute(statement.on_conflict_do_update(
        index_elements=[table.c.normalized_name, table.c.unit_key],
        set_={**{k: v for k, v in values.items() if k not in ("normalized_name", "unit_key")},
              "updated_at": func.now()},
    ))


def backfill_keys(engine: Engine, key: Callable[[str, str | None], tuple[str, str]],
                  chunk: int = BACKFILL_CHUNK, should_stop: Callable[[], bool] = lambda: False) -> int:
    """Give every result written without its memory key (before migration 0002, or by an older worker
    during a rolling deploy) the key ``key(test_name, test_unit)``; returns how many rows got one.

    One short transaction per chunk, so progress survives a stop; on PostgreSQL the chunk's rows are
    locked with SKIP LOCKED, so several tasks starting together share the work instead of repeating it,
    and a lock held on the table fails the chunk after ``BACKFILL_LOCK_TIMEOUT`` instead of holding up
    the worker's start (the caller logs it; the next start goes on).
    """
    table = LabTestResult.__table__
    pick = (select(table.c.job_id, table.c.test_index, table.c.test_name, table.c.test_unit)
            .where(table.c.normalized_name.is_(None)).limit(chunk).with_for_update(skip_locked=True))
    write = (update(table).where(table.c.job_id == bindparam("b_job_id"),
                                 table.c.test_index == bindparam("b_test_index"))
             .values(normalized_name=bindparam("b_name"), unit_key=bindparam("b_unit")))
    filled = 0
    while not should_stop():
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text(f"set local lock_timeout = '{BACKFILL_LOCK_TIMEOUT}'"))
            rows = connection.execute(pick).all()
            if not rows:
                break
            params = []
            for row in rows:
                name, unit = key(row.test_name, row.test_unit)
                params.append({"b_job_id": row.job_id, "b_test_index": row.test_index, "b_name": name,
                               "b_unit": unit})
            connection.execute(write, params)
        filled += len(rows)
    return filled
