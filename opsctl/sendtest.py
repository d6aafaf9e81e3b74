"""`opsctl send-test`: send the guide's sample job through the producer client, optionally follow it."""

from __future__ import annotations

import json
import os
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from opsctl import render
from opsctl.errors import DENIED_CODES, SEND_DENIED_HINT, OpsError, error_code
from opsctl.guards import confirm_production
from opsctl.options import DlqUrlOpt, JsonOpt, PriorityQueueUrlOpt, QueueUrlOpt, examples
from opsctl.queues import queue_attributes
from opsctl.state import State, get_state
from worker.contract import MAX_ID, TEST_DOCUMENT_ID, TEST_USER_ID, InvalidJobError, new_job
from worker.producer import MLWorkerClient, MLWorkerError

SAMPLE_TESTS = [
    {"test_name": "Hemoglobin", "test_value": "14.5", "test_unit": "g/dL"},
    {"test_name": "WBC Count", "test_value": "7.2", "test_unit": "K/uL"},
]


class Priority(StrEnum):
    low = "low"
    normal = "normal"
    high = "high"


RESULT_COLUMNS = ("test_index", "test_name", "test_value", "test_unit", "category", "loinc_code", "loinc_name",
                  "confidence", "match_method", "needs_review")


def load_tests(path: Path | None) -> list[Any]:
    """The tests to send: the sample, or a JSON file holding a list of tests or a job with "tests"."""
    if path is None:
        return SAMPLE_TESTS
    try:
        payload = json.loads(path.read_text())
    except OSError as error:
        raise typer.BadParameter(f"cannot read {path}: {error.strerror}", param_hint="'--tests'") from None
    except ValueError as error:
        raise typer.BadParameter(f"{path} is not JSON: {error}", param_hint="'--tests'") from None
    tests = payload.get("tests") if isinstance(payload, dict) else payload
    if not isinstance(tests, list) or not tests:
        raise typer.BadParameter(f"{path} holds no list of tests (a JSON list, or an object with \"tests\")",
                                 param_hint="'--tests'")
    return tests


def database_url(explicit: str | None):
    """The results database as the worker finds it (the same normalisation): the flag, DATABASE_URL, or
    POSTGRES_HOST/PORT/DB/USER/PASSWORD; None when none is set. A bad URL is a usage error."""
    from worker.store.db import database_url as normalised
    from worker.store.db import postgres_url

    raw = explicit or os.environ.get("DATABASE_URL")
    if raw:
        try:
            return normalised(raw)
        except ValueError as error:  # the message never repeats the URL: it holds the password
            raise typer.BadParameter(str(error), param_hint="'--database-url' / DATABASE_URL") from None
    host = os.environ.get("POSTGRES_HOST")
    if not host:
        return None
    try:
        port = int(os.environ.get("POSTGRES_PORT", "5432"))
    except ValueError:
        raise typer.BadParameter("must be a port number", param_hint="POSTGRES_PORT") from None
    return postgres_url(host, port, os.environ.get("POSTGRES_DB"), os.environ.get("POSTGRES_USER"),
                        os.environ.get("POSTGRES_PASSWORD"))


def send(state: State, user_id: int, document_id: int, tests: list[Any], priority: str, yes: bool) -> dict:
    queue_url = state.resources.get("queue_url")
    priority_url = state.resources.optional("priority_queue_url")
    try:
        job = new_job(user_id, document_id, tests, priority)
    except InvalidJobError as error:
        raise OpsError(f"invalid job: {error}", hint="the job contract: README, 'Sending a job from the API'") \
            from None
    client = MLWorkerClient(queue_url, priority_url, enabled=True, sqs=state.client("sqs"))
    destination = "priority_queue_url" if client.queue_for(job.priority) == priority_url else "queue_url"
    confirm_production(state, destination, "Send a test job to", "not sent", yes)
    try:
        message_id = client.send_job(job, test=True)
    except MLWorkerError as error:
        cause = error.__cause__
        if cause is not None and "NonExistentQueue" in str(cause):
            raise OpsError(f"queue {client.queue_for(job.priority)} does not exist",
                           hint="check --env/--region and the queue URL") from None
        if cause is not None and error_code(cause) in DENIED_CODES:
            raise OpsError(f"not allowed to send to {client.queue_for(job.priority)}", hint=SEND_DENIED_HINT) from None
        if cause is not None:
            raise cause from None  # botocore error: reported like any other, with its hint
        raise OpsError(str(error)) from None
    return {"job_id": job.job_id, "message_id": message_id, "queue_url": client.queue_for(job.priority),
            "user_id": user_id, "document_id": document_id, "test_count": len(tests)}


# -- following the job --------------------------------------------------------------------------
def _database(url):
    """(engine, None) when the database answers and has lab_jobs; (None, why not) otherwise."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ProgrammingError, SQLAlchemyError

    try:
        engine = create_engine(url, connect_args={"connect_timeout": 5}
                               if url.get_backend_name() == "postgresql" else {})
    except (SQLAlchemyError, ImportError, ValueError) as error:
        return None, f"unusable database URL ({type(error).__name__})"
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1 from lab_jobs limit 1"))
        return engine, None
    except ProgrammingError:
        engine.dispose()
        return None, "the database has no lab_jobs table (worker migrations not run?)"
    except (SQLAlchemyError, ImportError) as error:
        engine.dispose()
        return None, f"database not reachable ({type(error).__name__})"


def follow_in_database(engine, job_id: str, timeout: float, interval: float) -> dict:
    from sqlalchemy import text

    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as connection:
            job = connection.execute(text(
                "select status, attempts, error, test_count, completed_at from lab_jobs where job_id = :id"),
                {"id": job_id}).mappings().first()
            if job and job["status"] in ("done", "failed"):
                rows = connection.execute(text(
                    f"select {', '.join(RESULT_COLUMNS)} from lab_test_results where job_id = :id "
                    "order by test_index"), {"id": job_id}).mappings().all()
                return {"job_id": job_id, "status": job["status"], "via": "database",
                        "detail": job["error"] if job["status"] == "failed" else
                        f"{len(rows)} result(s), {job['attempts']} attempt(s)",
                        "results": [dict(row) for row in rows]}
        if time.monotonic() >= deadline:
            status = job["status"] if job else "not picked up yet"
            raise OpsError(f"job {job_id} still {status} after {int(timeout)}s",
                           hint="is the worker running? opsctl service status; opsctl logs tail")
        time.sleep(interval)


def _in_dlq(state: State, dlq_url: str, job_id: str, message_id: str) -> dict | None:
    from opsctl.dlq import fetch_peek

    for message in fetch_peek(state, 100)["messages"]:
        body = message["body"] if isinstance(message["body"], dict) else {}
        if body.get("job_id") == job_id or message["source_message_id"] == message_id:
            return message
    return None


def follow_in_queue(state: State, sent: dict, timeout: float, interval: float, reason: str) -> dict:
    """Without the database: the job is done once its queue is drained and it is not in the DLQ."""
    dlq_url = state.resources.get("dlq_url")
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        attributes = queue_attributes(state, sent["queue_url"])
        waiting = sum(int(attributes.get(name, 0)) for name in (
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed"))
        # Looking into the DLQ receives its messages; do it when the queue drained, else now and then.
        dead = _in_dlq(state, dlq_url, sent["job_id"], sent["message_id"]) \
            if waiting == 0 or polls % 5 == 4 else None
        polls += 1
        if dead:
            return {"job_id": sent["job_id"], "status": "dead-lettered", "via": "queue",
                    "detail": dead["failure_reason"] or "moved to the DLQ after repeated failures", "results": []}
        if waiting == 0:
            return {"job_id": sent["job_id"], "status": "processed", "via": "queue",
                    "detail": f"off the queue and not in the DLQ; results are in the database "
                              f"(lab_jobs / lab_test_results, job_id {sent['job_id']}); {reason}", "results": []}
        if time.monotonic() >= deadline:
            raise OpsError(f"job {sent['job_id']} still on the queue after {int(timeout)}s ({waiting} message(s) "
                           "waiting or in flight)", hint="is the worker running? opsctl service status")
        time.sleep(interval)


def send_test(
    ctx: typer.Context,
    user_id: Annotated[int, typer.Option("--user-id", min=1, max=MAX_ID, help="User id of the test job "
                                         "(default: the id reserved for tests).")] = TEST_USER_ID,
    document_id: Annotated[int, typer.Option("--document-id", min=1, max=MAX_ID, help="Document id of the test "
                                             "job (default: the id reserved for tests).")] = TEST_DOCUMENT_ID,
    tests_file: Annotated[Path | None, typer.Option("--tests", help="JSON file: a list of tests, or a job "
                                                    "with \"tests\" (default: the guide's sample).")] = None,
    priority: Annotated[Priority, typer.Option("--priority", help="High goes to the priority queue if there "
                                               "is one.")] = Priority.normal,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job until the worker has finished it.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Seconds to wait with --wait.")] = 300,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between checks.")] = 2,
    db_url: Annotated[str | None, typer.Option("--database-url", help="Results database (default: DATABASE_URL "
                                               "or POSTGRES_HOST/PORT/DB/USER/PASSWORD).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before sending to production.")] = False,
    queue_url: QueueUrlOpt = None,
    priority_queue_url: PriorityQueueUrlOpt = None,
    dlq_url: DlqUrlOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Send the guide's sample job (Hemoglobin 14.5 g/dL, WBC Count 7.2 K/uL) as a test job.

    Goes through the producer client, as the API does, and prints the job and message ids. The
    job goes to the user and document ids reserved for tests and carries the Test attribute, so
    the worker records it as a test (lab_jobs.is_test). Production asks first (--yes to skip).
    With --wait, follows the job in the database (lab_jobs, lab_test_results) when reachable,
    else through the queue, and prints the results.
    """
    tests = load_tests(tests_file)
    url = database_url(db_url) if wait else None  # a bad URL is refused before anything is sent
    state = get_state(ctx, json_output, queue_url=queue_url, priority_queue_url=priority_queue_url, dlq_url=dlq_url)
    sent = send(state, user_id, document_id, tests, priority.value, yes)
    render.sent(state, sent, final=not wait)
    if not wait:
        return
    engine, reason = _database(url) if url else (None, "no database configured")
    if engine is not None:
        try:
            outcome = follow_in_database(engine, sent["job_id"], timeout, interval)
        finally:
            engine.dispose()
    else:
        render.note(f"{reason}: following the job through the queue")
        outcome = follow_in_queue(state, sent, timeout, interval, reason)
    render.job_outcome(state, {**sent, **outcome})
    if outcome["status"] in ("failed", "dead-lettered"):
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    root.command("send-test", epilog=examples(
        "opsctl send-test", "opsctl send-test --wait", "opsctl send-test --tests report.json --priority high",
        "opsctl --env staging send-test --json", "opsctl --env production send-test --yes --wait"))(send_test)
