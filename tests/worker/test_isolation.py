"""A job's failure is settled on that job alone (issue 15): a bad neighbour, a reused job id, a database
that answers but refuses writes, an empty memory key. Real PostgreSQL, moto over HTTP, the real engine.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager

import pytest
import sqlalchemy
from sqlalchemy import text

from worker.consumer import Message, Outcome
from worker.contract import TEST_ATTRIBUTE, LabCategorizationJob, LabTest, decode_job, new_job
from worker.handler import LabCategorizationHandler
from worker.store import repository as repo
from worker.store.db import make_engine

TESTS = [{"test_name": "Hemoglobin", "test_value": "14.5", "test_unit": "g/dL"},
         {"test_name": "WBC Count", "test_value": "7.2", "test_unit": "K/uL"}]


def message_for(job: LabCategorizationJob, message_id: str | None = None, receive_count: int = 1,
                attributes: dict | None = None) -> Message:
    message = Message(queue_url="q", message_id=message_id or uuid.uuid4().hex, receipt_handle="r",
                      body=job.to_body(), attributes={"ApproximateReceiveCount": str(receive_count)},
                      message_attributes=attributes or {}, max_receive_count=3)
    message.payload = job
    return message


def unchecked_job(**fields) -> LabCategorizationJob:
    """A job the contract would refuse, built past it: what the store must not let break a batch."""
    values = {"job_id": uuid.uuid4().hex, "user_id": 1, "document_id": 1, "priority": "normal",
              "tests": [LabTest(test_name="Hemoglobin")], "test_count": 1} | fields
    return LabCategorizationJob.model_construct(**values)


def statuses(db, job_ids) -> dict[str, tuple[str, int]]:
    with db.connect() as connection:
        rows = connection.execute(text("select j.job_id, j.status, count(r.test_index) from lab_jobs j "
                                       "left join lab_test_results r using (job_id) where j.job_id = any(:ids) "
                                       "group by j.job_id, j.status"), {"ids": list(job_ids)}).all()
    return {row[0]: (row[1], row[2]) for row in rows}


def dlq_messages(sqs, url: str) -> list[dict]:
    found: list[dict] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                       MessageAttributeNames=["All"],
                                       MessageSystemAttributeNames=["All"]).get("Messages", []):
        found.extend(batch)
    return found


def depth(sqs, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def send(sqs, url: str, job: LabCategorizationJob, **attributes) -> str:
    return sqs.send_message(QueueUrl=url, MessageBody=job.to_body(),
                            MessageAttributes=job.message_attributes(**attributes))["MessageId"]


# -- a bad neighbour --------------------------------------------------------------------------
def test_a_job_the_store_cannot_hold_is_settled_alone(db, mapping_engine):
    good = [new_job(10, n, TESTS) for n in range(1, 10)]
    bad = unchecked_job(user_id=2**63)  # the claim's insert would fail for the whole batch
    messages = [message_for(job) for job in good[:4]] + [message_for(bad)] + [message_for(job) for job in good[4:]]
    results = LabCategorizationHandler(db, mapping_engine)(messages)
    bad_result = results[messages[4].message_id]
    assert bad_result.outcome is Outcome.POISON
    assert "the database refused the job" in bad_result.reason and "out of range" in bad_result.reason
    assert all(results[m.message_id].outcome is Outcome.DONE for m in messages if m is not messages[4])
    assert statuses(db, [job.job_id for job in good]) == {job.job_id: ("done", 2) for job in good}


def test_results_the_store_cannot_hold_fail_their_job_alone(db, mapping_engine):
    """The batch's results go in one transaction; one job's unwritable result must not fail the others."""
    good = [new_job(11, n, TESTS) for n in range(1, 6)]
    bad = unchecked_job(tests=[LabTest.model_construct(test_name="Hemo\x00globin", test_value=None,
                                                       test_unit=None)])  # PostgreSQL text holds no NUL
    messages = [message_for(job) for job in good[:2]] + [message_for(bad)] + [message_for(job) for job in good[2:]]
    results = LabCategorizationHandler(db, mapping_engine)(messages)
    bad_result = results[messages[2].message_id]
    assert bad_result.outcome is Outcome.POISON and "the database refused the results" in bad_result.reason
    assert all(results[m.message_id].outcome is Outcome.DONE for m in messages if m is not messages[2])
    assert statuses(db, [job.job_id for job in good]) == {job.job_id: ("done", 2) for job in good}
    assert statuses(db, [bad.job_id])[bad.job_id][0] != "done"


def test_bad_neighbours_do_not_take_their_batch_to_the_dlq(sqs, queues, db, run_worker, waiter):
    good = [new_job(20, n, TESTS) for n in range(1, 8)]
    for job in good[:3]:
        send(sqs, queues.url, job)
    bad_bodies = {
        "user_id": json.dumps({"user_id": 2**63, "document_id": 1, "tests": TESTS}),
        "job_id": json.loads(new_job(1, 1, TESTS).to_body()) | {"job_id": "nul\x00id"},
        "test_name": json.dumps({"user_id": 1, "document_id": 1, "tests": [{"test_name": "Hemo\x00globin"}]}),
        "nested": '{"user_id": 1, "document_id": 1, "tests": ' + "[" * 100_000 + "]" * 100_000 + "}",
    }
    for body in bad_bodies.values():
        sqs.send_message(QueueUrl=queues.url, MessageBody=body if isinstance(body, str) else json.dumps(body))
    for job in good[3:]:
        send(sqs, queues.url, job)
    with run_worker() as worker:
        waiter(lambda: depth(sqs, queues.url) == (0, 0), what="the queue to empty")
        assert worker.consumer.stats.dead_lettered == len(bad_bodies)
    assert statuses(db, [job.job_id for job in good]) == {job.job_id: ("done", 2) for job in good}
    dead = dlq_messages(sqs, queues.dlq_url)
    reasons = sorted(m["MessageAttributes"]["FailureReason"]["StringValue"] for m in dead)
    assert len(reasons) == len(bad_bodies) and all(m["Attributes"]["ApproximateReceiveCount"] == "1" for m in dead)
    assert any("user_id" in r for r in reasons) and any("job_id" in r for r in reasons)
    assert any("test_name" in r for r in reasons) and any("nested too deeply" in r for r in reasons)


# -- a reused job id ----------------------------------------------------------------------------
REUSED = "job_id reused with different content"


def test_a_reused_job_id_with_other_content_is_poison_and_the_same_content_is_acknowledged(db, mapping_engine):
    handler = LabCategorizationHandler(db, mapping_engine)
    original = new_job(30, 1, TESTS)
    assert handler([message_for(original)])  # done
    impostors = [original.model_copy(update=change) for change in (
        {"user_id": 31}, {"document_id": 2}, {"tests": [LabTest(test_name="Glucose")], "test_count": 1})]
    again = message_for(original)
    messages = [message_for(job) for job in impostors] + [again]
    results = handler(messages)
    assert [results[m.message_id].outcome for m in messages] == [Outcome.POISON] * 3 + [Outcome.DONE]
    assert all(results[m.message_id].reason == REUSED for m in messages[:3])
    assert statuses(db, [original.job_id]) == {original.job_id: ("done", 2)}
    with db.connect() as connection:
        user, attempts = connection.execute(text("select user_id, attempts from lab_jobs where job_id = :id"),
                                            {"id": original.job_id}).one()
    assert (user, attempts) == (30, 1)


def test_a_reused_job_id_within_one_batch_is_not_silent(db, mapping_engine):
    first = new_job(32, 1, TESTS)
    twin = message_for(first)
    other = message_for(first.model_copy(update={"document_id": 99}))
    results = LabCategorizationHandler(db, mapping_engine)([message_for(first), twin, other])
    assert results[twin.message_id].outcome is Outcome.DONE
    assert results[other.message_id].outcome is Outcome.POISON and results[other.message_id].reason == REUSED
    with db.connect() as connection:
        assert connection.execute(text("select document_id from lab_jobs where job_id = :id"),
                                  {"id": first.job_id}).scalar() == 1


def test_a_reused_job_id_of_a_job_not_yet_done_is_poison_too(db, mapping_engine):
    first = new_job(33, 1, TESTS)
    repo.claim_jobs(db, [repo.JobRow(job_id=first.job_id, message_id="m", user_id=33, document_id=1,
                                     priority="normal", test_count=2, content_hash=first.fingerprint())])
    other = message_for(first.model_copy(update={"user_id": 34}))
    results = LabCategorizationHandler(db, mapping_engine)([other])
    assert results[other.message_id].outcome is Outcome.POISON


def test_legacy_duplicate_sends_write_one_result_set(sqs, queues, db, run_worker, waiter):
    body = json.dumps({"user_id": 40, "document_id": 41, "tests": TESTS})  # the app's old producer: no job_id
    for _ in range(2):
        sqs.send_message(QueueUrl=queues.url, MessageBody=body)
    job_id = decode_job(body, "any").job_id
    with run_worker():
        waiter(lambda: depth(sqs, queues.url) == (0, 0), what="both sends")
    with db.connect() as connection:
        jobs = connection.execute(text("select job_id from lab_jobs where document_id = 41")).scalars().all()
        results = connection.execute(text("select count(*) from lab_test_results where document_id = 41")).scalar()
    assert (jobs, results) == ([job_id], 2)
    assert dlq_messages(sqs, queues.dlq_url) == []


# -- test jobs ------------------------------------------------------------------------------------
def test_jobs_marked_as_tests_are_recorded_as_tests(db, mapping_engine):
    real, trial = new_job(50, 1, TESTS), new_job(50, 2, TESTS)
    LabCategorizationHandler(db, mapping_engine)([
        message_for(real), message_for(trial, attributes=trial.message_attributes(test=True))])
    assert TEST_ATTRIBUTE in trial.message_attributes(test=True)
    with db.connect() as connection:
        rows = dict(connection.execute(text("select job_id, is_test from lab_jobs")).all())
    assert rows == {real.job_id: False, trial.job_id: True}


# -- the mapping memory's empty key -------------------------------------------------------------
def test_names_without_letters_or_digits_never_read_the_memory(db, mapping_engine):
    # A manual row under the empty key, as `memory set "..." 718-7` used to store.
    with db.begin() as connection:
        connection.execute(text(
            "insert into lab_test_mappings (normalized_name, unit_key, category, loinc_code, loinc_name, confidence,"
            " match_method, source) values ('', 'g/dl', 'Complete Blood Count (CBC)', '718-7', 'Hemoglobin', 1.0,"
            " 'override', 'manual')"))
    job = new_job(60, 1, [{"test_name": name, "test_unit": "g/dL"} for name in ("🙂", "...", "—", "#")])
    LabCategorizationHandler(db, mapping_engine)([message_for(job)])
    with db.connect() as connection:
        rows = connection.execute(text("select loinc_code, match_method from lab_test_results where job_id = :id"),
                                  {"id": job.job_id}).all()
        remembered = connection.execute(text("select count(*) from lab_test_mappings where source = 'model'"
                                             " and normalized_name = ''")).scalar()
    assert len(rows) == 4 and all(method != "override" and code != "718-7" for code, method in rows)
    assert remembered == 0
    with pytest.raises(ValueError, match="no letters or digits"):
        repo.set_manual_mapping(db, repo.MemoryRow("", "g/dl", "Others", None, None, 1.0, "override", "manual", None))


# -- a database that answers SELECT 1 but refuses writes -------------------------------------------
@contextmanager
def select_only_role(pg_url: str):
    """A login role that may read the worker's tables but not write them (a revoked grant).

    Yields its URL and a function that grants (``True``) or revokes (``False``) its writes.
    """
    role = f"mlw_ro_{uuid.uuid4().hex[:8]}"
    admin = make_engine(pg_url, isolation_level="AUTOCOMMIT")
    database = sqlalchemy.engine.make_url(pg_url).database
    with admin.connect() as connection:
        connection.execute(text(f'create role "{role}" login'))
        connection.execute(text(f'grant connect on database "{database}" to "{role}"'))
        connection.execute(text(f'grant usage on schema public to "{role}"'))
        connection.execute(text(f'grant select on all tables in schema public to "{role}"'))

    def writes(allowed: bool) -> None:
        verb = "grant" if allowed else "revoke"
        with admin.connect() as connection:
            connection.execute(text(f'{verb} insert, update on lab_jobs, lab_test_results, lab_test_mappings '
                                    f'{"to" if allowed else "from"} "{role}"'))

    try:
        yield sqlalchemy.engine.make_url(pg_url).set(username=role), writes
    finally:
        with admin.connect() as connection:
            connection.execute(text("select pg_terminate_backend(pid) from pg_stat_activity where usename = :r"),
                               {"r": role})
            connection.execute(text(f'drop owned by "{role}"'))
            connection.execute(text(f'drop role "{role}"'))
        admin.dispose()


def test_readiness_tests_a_write_not_a_ping(db, pg_url):
    with select_only_role(pg_url) as (url, writes):
        engine = make_engine(url)
        try:
            assert repo.ping(engine)  # it answers SELECT 1 ...
            assert not repo.ready(engine)  # ... but would refuse the worker's writes
            writes(True)
            assert repo.ready(engine)
        finally:
            engine.dispose()
    read_only = make_engine(pg_url, connect_args={"options": "-c default_transaction_read_only=on"})
    try:
        assert repo.ping(read_only) and not repo.ready(read_only)  # e.g. a replica after a failover
    finally:
        read_only.dispose()
    with db.connect() as connection:  # the probe wrote nothing
        assert connection.execute(text("select count(*) from lab_jobs")).scalar() == 0


def test_while_the_database_refuses_writes_the_worker_pauses_without_spending_receives(
        sqs, queues, db, pg_url, run_worker, waiter):
    before = [new_job(70, n, TESTS) for n in range(1, 3)]
    during = [new_job(71, n, TESTS) for n in range(1, 6)]
    everything = {j.job_id: ("done", 2) for j in before + during}
    with select_only_role(pg_url) as (url, writes):
        writes(True)
        engine = make_engine(url)
        try:
            with run_worker(database=engine, retry_backoff=1, retry_backoff_max=2) as worker:
                for job in before:
                    send(sqs, queues.url, job)
                waiter(lambda: statuses(db, [j.job_id for j in before]) == {j.job_id: ("done", 2) for j in before},
                       what="the jobs before the grant is revoked")
                writes(False)  # the database still answers SELECT 1
                for job in during:
                    send(sqs, queues.url, job)
                # With a ping for readiness the worker kept receiving every 1-2 s and these jobs reached
                # the DLQ within seconds. Now it spends at most the receive in which it met the refusal.
                time.sleep(8)
                assert depth(sqs, queues.dlq_url) == (0, 0)
                assert worker.consumer.stats.received - len(before) <= len(during)
                writes(True)
                waiter(lambda: statuses(db, list(everything)) == everything, what="the jobs once writes are allowed")
        finally:
            engine.dispose()
    assert dlq_messages(sqs, queues.dlq_url) == []
