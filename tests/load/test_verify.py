"""The load suite's checker is not vacuous: it reports what is lost, duplicated or misplaced."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from worker.local.load.verify import verify
from worker.local.load.workload import PlannedMessage, Workload


@pytest.fixture
def store(tmp_path):
    from worker.store.db import make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'verify.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def add_job(connection, job_id: str, document_id: int, indexes, status: str = "done") -> None:
    connection.execute(text(
        "insert into lab_jobs (job_id, user_id, document_id, status, attempts, test_count) "
        "values (:job, 1, :doc, :status, 1, :n)"), {"job": job_id, "doc": document_id, "status": status,
                                                      "n": len(indexes)})
    for index in indexes:
        connection.execute(text(
            "insert into lab_test_results (job_id, test_index, user_id, document_id, test_name, category, "
            "confidence, match_method) values (:job, :i, 1, :doc, 'x', 'Others', 0.5, 'none')"),
            {"job": job_id, "i": index, "doc": document_id})


def test_verify_finds_lost_duplicated_and_misplaced(store, sqs, queues):
    workload = Workload(
        messages=[PlannedMessage("job", 1), PlannedMessage("job", 2), PlannedMessage("job", 3),
                  PlannedMessage("job", 4), PlannedMessage("job", 5)],
        expected={1: 2, 2: 2, 3: 2, 4: 1, 5: 1},
        poison={"poison-a": "not_json", "poison-b": "contract", "poison-c": "unknown_job_type"},
        duplicates=0,
    )
    with store.begin() as connection:
        add_job(connection, "ok", 1, [0, 1])
        add_job(connection, "short", 2, [0])  # a test row missing: lost
        add_job(connection, "twice-a", 3, [0, 1])  # the same document processed as two jobs
        add_job(connection, "twice-b", 3, [0, 1])
        add_job(connection, "stuck", 4, [0], status="processing")  # rows but never done: lost
        add_job(connection, "stray", 99, [0])  # rows for a document nobody sent
    # document 5 is a good job that ended in the DLQ; poison-b has no reason; poison-c is missing
    sqs.send_message(QueueUrl=queues.dlq_url, MessageBody=json.dumps({"document_id": 5, "tests": []}))
    sqs.send_message(QueueUrl=queues.dlq_url, MessageBody="garbage poison-a",
                     MessageAttributes={"FailureReason": {"DataType": "String", "StringValue": "body: not JSON"}})
    sqs.send_message(QueueUrl=queues.dlq_url, MessageBody='{"poison": "poison-b"}')
    sqs.send_message(QueueUrl=queues.url, MessageBody="left behind")
    # a second copy of poison-a (dead-lettered again after a kill): counted apart, not an error
    sqs.send_message(QueueUrl=queues.dlq_url, MessageBody="garbage poison-a",
                     MessageAttributes={"FailureReason": {"DataType": "String", "StringValue": "body: not JSON"}})

    verdict = verify(store, sqs, queues.url, queues.dlq_url, workload)

    assert sorted(verdict.lost) == [2, 4, 5]
    assert verdict.duplicated == ["document 3: 2 jobs"]
    assert verdict.unexpected_rows == 1
    assert verdict.good_in_dlq == 1
    assert verdict.poison_in_dlq == 2
    assert verdict.poison_extra_copies == 1
    assert verdict.poison_without_reason == ["poison-b"]
    assert verdict.poison_missing == ["poison-c"]
    assert verdict.queue_left[0] == 1
    assert not verdict.ok


def test_verify_passes_a_clean_run(store, sqs, queues):
    workload = Workload(messages=[PlannedMessage("job", 1)], expected={1: 2}, poison={"poison-a": "not_json"},
                        duplicates=0)
    with store.begin() as connection:
        add_job(connection, "ok", 1, [0, 1])
    sqs.send_message(QueueUrl=queues.dlq_url, MessageBody="garbage poison-a",
                     MessageAttributes={"FailureReason": {"DataType": "String", "StringValue": "body: not JSON"}})
    verdict = verify(store, sqs, queues.url, queues.dlq_url, workload)
    assert verdict.ok, verdict
    assert verdict.done_jobs == 1 and verdict.result_rows == 2
