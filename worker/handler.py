"""The lab-categorization handler: what the consumer calls with each batch. It knows nothing about SQS
beyond the consumer's Message (a body, an id, a receive count) and its Results.

For a batch:

1. each message is decoded with the job contract (the consumer's ``decode``): a message that is
   not JSON, breaks the contract or names an unknown job type is poison;
2. the batch's jobs are claimed in ``lab_jobs`` (attempts + 1); a job already 'done' is a
   redelivery: its message is acknowledged and nothing is written again. A job id that other
   content holds (in the table, or earlier in the batch) is poison: "job_id reused with different
   content". When the batch's claim fails while the database takes writes, the jobs are claimed
   one by one, so that a job the store refuses is settled alone;
3. every test is looked up in the mapping memory by the engine's normalised (name, unit): a
   manual row wins, a model row of the current model version saves an inference. A name without
   letters or digits has no key: it never reads or writes the memory;
4. the remaining tests of the whole batch go through ``engine.map`` in one call; confident model
   results are remembered;
5. each job's results and its 'done' status are written in one transaction; a job whose write
   fails is retried (its last error recorded), the others complete. Each result carries the memory
   key it was looked up by and, when uncertain, the engine's candidates: a reviewer's work list.

Whatever fails because of one job's data (the database refuses its values) makes that job
poison, with the reason; whatever fails because of the database (down, read-only) is retried.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest

from sqlalchemy import Engine
from sqlalchemy.exc import DataError, SQLAlchemyError

from worker.consumer import Message, PoisonMessage, Result, done, poison, retry
from worker.contract import TEST_ATTRIBUTE, InvalidJobError, LabCategorizationJob, LabTest, decode_job
from worker.mapping.types import LabTestQuery, MappingResult
from worker.store import repository as repo

log = logging.getLogger(__name__)

MANUAL_MODEL_VERSION = "manual"
REUSED_JOB_ID = "job_id reused with different content"


def failure_reason(error: InvalidJobError) -> str:
    """A dead-letter reason that says which kind of poison the message is, and why."""
    if error.field == "body":
        kind = "not JSON" if error.reason.startswith("not JSON") else "not a job object"
    elif error.field == "job_type":
        kind = "unknown job type"
    else:
        kind = "contract violation"
    return f"{kind}: {error.field}: {error.reason}"


def decode(message: Message) -> LabCategorizationJob:
    """The consumer's decoder: the job contract, or PoisonMessage with the reason."""
    try:
        job = decode_job(message.body, message.message_id)
    except InvalidJobError as error:
        raise PoisonMessage(failure_reason(error)) from None
    message.context.update(job_id=job.job_id, user_id=job.user_id, document_id=job.document_id,
                           priority=job.priority)
    if is_test(message):
        message.context["test"] = True
    return job


def is_test(message: Message) -> bool:
    """An operator's test job (opsctl send-test marks it with a message attribute)."""
    return message.message_attributes.get(TEST_ATTRIBUTE, {}).get("StringValue", "").lower() == "true"


def refused_data(error: BaseException) -> bool:
    """True when the database (or its driver) refused a job's values, not the connection or the write:
    a BIGINT out of range, a NUL in text, a string it cannot encode. Retrying will never help."""
    return isinstance(error, DataError) or (isinstance(error, ValueError) and not isinstance(error, SQLAlchemyError))


@dataclass
class JobStats:
    """Counters for the periodic stats line; shared between the handler thread and the loop."""

    processed: int = 0
    failed: int = 0
    duplicates: int = 0
    tests: int = 0
    memory_hits: int = 0
    model_tests: int = 0
    model_calls: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: float) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            per_test_ms = 1000 * self.seconds / self.tests if self.tests else None
            return {"processed": self.processed, "failed": self.failed, "duplicates": self.duplicates,
                    "tests": self.tests, "memory_hits": self.memory_hits, "model_tests": self.model_tests,
                    "model_calls": self.model_calls,
                    "per_test_ms": round(per_test_ms, 2) if per_test_ms is not None else None}


def _query(test: LabTest) -> LabTestQuery:
    return LabTestQuery(name=test.test_name, unit=test.test_unit, value=test.test_value, specimen=test.specimen)


def _queries(job: LabCategorizationJob) -> list[LabTestQuery]:
    return [_query(test) for test in job.tests]


def _take(message: Message, fingerprints: dict[str, str], taken: list[Message]) -> bool:
    """Add the message to ``taken`` unless its job id came with other content already."""
    fingerprint = message.payload.fingerprint()
    if fingerprints.setdefault(message.payload.job_id, fingerprint) != fingerprint:
        return False
    taken.append(message)
    return True


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


class LabCategorizationHandler:
    """Maps a batch of lab-categorization jobs and writes the results; idempotent on redelivery."""

    def __init__(self, db: Engine, engine, stats: JobStats | None = None):
        self.db = db
        self.engine = engine
        self.stats = stats or JobStats()

    decode = staticmethod(decode)

    def ready(self) -> bool:
        """The consumer's readiness probe: would the database take our writes?"""
        return repo.ready(self.db)

    def __call__(self, messages: Sequence[Message]) -> dict[str, Result]:
        results: dict[str, Result] = {}
        remaining = list(messages)
        while remaining:
            # A job id sent with two contents in one batch: the first content is handled first, so
            # the store knows it when the other's turn comes (it is then a redelivery, or refused).
            fingerprints: dict[str, str] = {}
            now: list[Message] = []
            remaining = [message for message in remaining if not _take(message, fingerprints, now)]
            results.update(self._handle(now, fingerprints))
        return results

    def _handle(self, messages: list[Message], fingerprints: dict[str, str]) -> dict[str, Result]:
        started = time.monotonic()
        results: dict[str, Result] = {}
        by_job: dict[str, list[Message]] = {}
        for message in messages:
            by_job.setdefault(message.payload.job_id, []).append(message)
        jobs = {job_id: group[0].payload for job_id, group in by_job.items()}

        def settle(job_id: str, result: Result) -> None:
            for message in by_job[job_id]:
                results[message.message_id] = result

        def fail_all(job_ids, error: BaseException, what: str) -> dict[str, Result]:
            reason = f"{what}: {_error_text(error)}"
            for job_id in job_ids:
                first = by_job[job_id][0]
                log.error("lab categorization failed", extra=first.log_fields(error=reason))
                settle(job_id, retry(reason))
            self._record_failure(list(job_ids), by_job, reason)
            self.stats.add(failed=len(job_ids))
            return results

        def refuse(job_id: str, reason: str) -> None:
            log.error("job refused: %s", reason, extra=by_job[job_id][0].log_fields())
            settle(job_id, poison(reason))
            self.stats.add(failed=1)

        # 2. Claim the jobs; skip those already done, refuse those whose id other content holds.
        rows = {job.job_id: repo.JobRow(job_id=job.job_id, message_id=by_job[job.job_id][0].message_id,
                                        user_id=job.user_id, document_id=job.document_id, priority=job.priority,
                                        test_count=len(job.tests), content_hash=fingerprints[job.job_id],
                                        is_test=is_test(by_job[job.job_id][0]))
                for job in jobs.values()}
        claim, claim_errors = self._claim(rows)
        unavailable = {job_id: error for job_id, error in claim_errors.items() if not refused_data(error)}
        for job_id, error in claim_errors.items():
            if job_id not in unavailable:
                refuse(job_id, f"the database refused the job: {_error_text(error)}")
        if unavailable:
            fail_all(list(unavailable), next(iter(unavailable.values())), "database unavailable")
        for job_id in claim.reused:
            refuse(job_id, REUSED_JOB_ID)
        for job_id in claim.done:
            log.info("job already done: duplicate delivery acknowledged", extra=by_job[job_id][0].log_fields())
            settle(job_id, done())
        self.stats.add(duplicates=len(claim.done))
        pending = {job_id: job for job_id, job in jobs.items()
                   if job_id not in claim.done and job_id not in claim.reused and job_id not in claim_errors}
        if not pending:
            return results
        for job_id, job in pending.items():
            log.info("processing lab categorization for user %s document %s", job.user_id, job.document_id,
                     extra=by_job[job_id][0].log_fields(test_count=len(job.tests)))

        # 3 and 4. Mapping memory, then one model call for what it does not know.
        try:
            mapped = self._map({job_id: _queries(job) for job_id, job in pending.items()})
        except Exception as error:
            if len(pending) == 1 or not repo.ready(self.db):
                return fail_all(pending, error, "mapping failed")
            # One job may be what breaks the batch: map them one by one, so only it is retried.
            log.warning("batch mapping failed; mapping job by job", extra={"error": _error_text(error)})
            mapped = {}
            for job_id, job in list(pending.items()):
                try:
                    mapped.update(self._map({job_id: _queries(job)}))
                except Exception as job_error:
                    fail_all([job_id], job_error, "mapping failed")
                    del pending[job_id]
            if not pending:
                return results

        # 5. One transaction for the batch; if it fails while the database takes writes, one per job.
        written = {job_id: [self._result_row(index, test, result, version)
                            for index, (test, (result, version)) in enumerate(zip(job.tests, mapped[job_id],
                                                                                  strict=True))]
                   for job_id, job in pending.items()}
        failed = self._complete(rows, written)
        for job_id, error in failed.items():
            if refused_data(error):
                refuse(job_id, f"the database refused the results: {_error_text(error)}")
            else:
                fail_all([job_id], error, "writing results failed")
        # each job's share of the batch's time, by its tests, so the stats' time per test adds up
        batch_seconds = time.monotonic() - started
        total_tests = sum(len(result_rows) for result_rows in written.values()) or 1
        for job_id, result_rows in written.items():
            if job_id in failed:
                continue
            settle(job_id, done())
            seconds = batch_seconds * len(result_rows) / total_tests
            self.stats.add(processed=1, tests=len(result_rows), seconds=seconds)
            log.info("completed lab categorization for user %s document %s", rows[job_id].user_id,
                     rows[job_id].document_id,
                     extra=by_job[job_id][0].log_fields(test_count=len(result_rows), seconds=round(seconds, 3),
                                                        needs_review=sum(r.needs_review for r in result_rows)))
        return results

    def _complete(self, rows: dict[str, repo.JobRow], written: dict[str, list[repo.ResultRow]]
                  ) -> dict[str, Exception]:
        """Write the batch's results in one transaction (job by job if that fails); the errors by job."""
        return self._whole_or_job_by_job(
            list(written), lambda ids: repo.complete_jobs(self.db, [(rows[i], written[i]) for i in ids]), "writing")

    def _claim(self, rows: dict[str, repo.JobRow]) -> tuple[repo.Claim, dict[str, Exception]]:
        """Claim the batch in one statement (job by job if that fails); the claim and the errors by job."""
        claims: list[repo.Claim] = []
        errors = self._whole_or_job_by_job(
            list(rows), lambda ids: claims.append(repo.claim_jobs(self.db, [rows[i] for i in ids])), "claiming")
        return repo.Claim(set().union(*(c.done for c in claims)), set().union(*(c.reused for c in claims))), errors

    def _whole_or_job_by_job(self, job_ids: list[str], run: Callable[[list[str]], object], what: str
                             ) -> dict[str, Exception]:
        """``run`` the whole batch in one go; if that fails while the database takes writes, job by job, so
        that one job's bad data fails only that job. Returns the errors by job."""
        try:
            run(job_ids)
            return {}
        except Exception as error:  # noqa: BLE001 - sorted out below: one job's data, or the database
            batch_error = error
        if len(job_ids) == 1 or not repo.ready(self.db):
            return dict.fromkeys(job_ids, batch_error)
        log.warning("%s the batch failed; %s job by job", what, what, extra={"error": _error_text(batch_error)})
        errors: dict[str, Exception] = {}
        for job_id in job_ids:
            try:
                run([job_id])
            except Exception as error:  # noqa: BLE001 - this job's own failure
                errors[job_id] = error
        return errors

    def _map(self, queries: dict[str, list[LabTestQuery]]) -> dict[str, list[tuple[MappingResult, str | None]]]:
        """(result, model_version) per test, memory first, one engine call for the rest."""
        model_version = self.engine.model_version
        keys = {job_id: [self._key(query) for query in job_queries] for job_id, job_queries in queries.items()}
        memory = repo.lookup_mappings(self.db, (key for job_keys in keys.values() for key in job_keys
                                                if repo.usable_key(key[0])))
        answers: dict[str, list[tuple[MappingResult, str | None] | None]] = {}
        missing: list[tuple[str, int]] = []
        hits = 0
        for job_id, job_keys in keys.items():
            answers[job_id] = []
            for index, key in enumerate(job_keys):
                row = memory.get(key)
                if row is not None and row.source == "manual":
                    answers[job_id].append((MappingResult(row.category, row.loinc_code, row.loinc_name,
                                                          row.confidence, "override"), MANUAL_MODEL_VERSION))
                    hits += 1
                elif row is not None and row.model_version == model_version:
                    answers[job_id].append((MappingResult(row.category, row.loinc_code, row.loinc_name,
                                                          row.confidence, "memory"), model_version))
                    hits += 1
                else:
                    answers[job_id].append(None)
                    missing.append((job_id, index))
        if missing:
            results = self.engine.map([queries[job_id][index] for job_id, index in missing])
            if len(results) != len(missing):
                raise RuntimeError(f"the engine returned {len(results)} results for {len(missing)} queries")
            remember: dict[tuple[str, str], repo.MemoryRow] = {}
            for (job_id, index), result in zip(missing, results, strict=True):
                answers[job_id][index] = (result, model_version)
                key = keys[job_id][index]
                if not result.needs_review and key not in remember and repo.usable_key(key[0]):
                    remember[key] = repo.MemoryRow(
                        normalized_name=key[0], unit_key=key[1], category=result.category,
                        loinc_code=result.loinc_code, loinc_name=result.loinc_name,
                        confidence=float(result.confidence), match_method=result.match_method, source="model",
                        model_version=model_version)
            try:
                repo.remember_mappings(self.db, list(remember.values()))
            except Exception as error:  # the memory is an optimisation: the jobs' own writes decide
                log.warning("could not store mappings in memory", extra={"error": _error_text(error)})
            self.stats.add(model_calls=1, model_tests=len(missing))
        self.stats.add(memory_hits=hits)
        return {job_id: [answer for answer in job_answers if answer is not None] for job_id, job_answers in
                answers.items()}

    def _result_row(self, index: int, test: LabTest, result: MappingResult, version: str | None) -> repo.ResultRow:
        """The row of one test, with the memory key it was looked up by and, when the engine was unsure,
        its candidates, so a reviewer can group, see and fix it without the engine."""
        name, unit = self._key(_query(test))
        candidates = None
        if (result.needs_review or result.loinc_code is None) and result.candidates:
            scores = result.candidate_scores[:len(result.candidates)]
            candidates = [{"code": code, "name": self._loinc_name(code), "score": score}
                          for code, score in zip_longest(result.candidates, scores)]
        return repo.ResultRow(test_index=index, test_name=test.test_name, test_value=test.test_value,
                              test_unit=test.test_unit, category=result.category, loinc_code=result.loinc_code,
                              loinc_name=result.loinc_name, confidence=float(result.confidence),
                              match_method=result.match_method,
                              needs_review=bool(result.needs_review), model_version=version,
                              normalized_name=name, unit_key=unit, candidates=candidates)

    def _loinc_name(self, code: str) -> str | None:
        described = self.engine.describe(code)
        return described[0] if described else None

    def backfill_keys(self, should_stop=lambda: False) -> int:
        """Key the results written before the store kept keys (migration 0002), as new rows are keyed.

        Exact for every result except one whose job named a specimen: results do not keep it, so such
        a row gets the key of its name and unit alone.
        """
        started = time.monotonic()
        try:
            filled = repo.backfill_keys(self.db, lambda name, unit: self._key(LabTestQuery(name=name, unit=unit)),
                                        should_stop=should_stop)
        except Exception as error:  # the next start finishes it; the jobs come first
            log.warning("could not key the older results", extra={"error": _error_text(error)})
            return 0
        if filled:
            log.info("results given their memory key", extra={"rows": filled,
                                                              "seconds": round(time.monotonic() - started, 2)})
        return filled

    def _key(self, query: LabTestQuery) -> tuple[str, str]:
        name, unit = self.engine.key(query)
        return name, unit or ""

    def _record_failure(self, job_ids: list[str], by_job: dict[str, list[Message]], reason: str) -> None:
        """Best effort: note the last error on the jobs (not possible while the database is down)."""
        final = [job_id for job_id in job_ids if by_job[job_id][0].final_attempt]
        other = [job_id for job_id in job_ids if job_id not in final]
        try:
            repo.record_failure(self.db, other, reason)
            repo.record_failure(self.db, final, reason, final=True)
        except Exception as error:
            log.warning("could not record the failure", extra={"job_ids": job_ids, "error": _error_text(error)})
