"""The worker end to end in-process: moto SQS over HTTP, the real PostgreSQL, the real engine."""

from __future__ import annotations

import json
import logging

from sqlalchemy import text

from worker.contract import decode_job, new_job
from worker.producer import MLWorkerClient

GUIDE_TESTS = [{"test_name": "Hemoglobin", "test_value": "14.5", "test_unit": "g/dL"},
               {"test_name": "WBC Count", "test_value": "7.2", "test_unit": "K/uL"}]
LEUKOCYTE_COUNT_CODES = {"6690-2", "26464-8", "804-5"}
CBC = "Complete Blood Count (CBC)"


def depth(sqs, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def job_rows(db, job_id: str):
    with db.connect() as connection:
        job = connection.execute(text("select * from lab_jobs where job_id = :id"), {"id": job_id}).one_or_none()
        results = connection.execute(text("select * from lab_test_results where job_id = :id order by test_index"),
                                     {"id": job_id}).all()
    return job, results


def is_done(db, *job_ids: str) -> bool:
    with db.connect() as connection:
        count = connection.execute(text("select count(*) from lab_jobs where status = 'done' and job_id = any(:ids)"),
                                   {"ids": list(job_ids)}).scalar()
    return count == len(job_ids)


def send_job(sqs, url: str, user_id: int = 123, document_id: int = 456, tests=GUIDE_TESTS) -> str:
    job = new_job(user_id, document_id, tests)
    sqs.send_message(QueueUrl=url, MessageBody=job.to_body(), MessageAttributes=job.message_attributes())
    return job.job_id


def test_the_guide_sample_job_is_categorised_and_its_message_deleted(sqs, queues, db, run_worker, waiter, caplog):
    caplog.set_level(logging.INFO)
    message_id = MLWorkerClient(queues.url, enabled=True, sqs=sqs).send_lab_categorization_job(123, 456, GUIDE_TESTS)
    with run_worker() as worker:
        with db.connect() as connection:
            job_id = waiter(lambda: connection.execute(
                text("select job_id from lab_jobs where message_id = :m and status = 'done'"), {"m": message_id}
            ).scalar(), what="the sample job")
        waiter(lambda: depth(sqs, queues.url) == (0, 0), what="the message to be deleted")
        assert worker.health.age() is not None and worker.health.age() < 10
    job, results = job_rows(db, job_id)
    assert (job.status, job.attempts, job.test_count, job.user_id, job.document_id, job.error) == (
        "done", 1, 2, 123, 456, None)
    assert job.completed_at is not None
    hemoglobin, wbc = results
    assert (hemoglobin.test_name, hemoglobin.test_value, hemoglobin.test_unit) == ("Hemoglobin", "14.5", "g/dL")
    assert (hemoglobin.loinc_code, hemoglobin.category) == ("718-7", CBC)
    assert wbc.loinc_code in LEUKOCYTE_COUNT_CODES and wbc.category == CBC
    assert "leukocytes" in wbc.loinc_name.lower()
    assert hemoglobin.model_version and hemoglobin.confidence > 0.5

    # The operators' log points carry the job's identity.
    processing = [r for r in caplog.records
                  if r.getMessage() == "processing lab categorization for user 123 document 456"]
    assert processing and processing[0].job_id == job_id and processing[0].message_id == message_id
    assert processing[0].receive_count == 1 and processing[0].user_id == 123 and processing[0].document_id == 456
    completed = [r for r in caplog.records if r.getMessage().startswith("completed lab categorization")]
    assert completed[0].test_count == 2 and completed[0].seconds >= 0
    assert any(r.getMessage() == "messages received" for r in caplog.records)
    assert any(r.getMessage() == "message deleted" and r.job_id == job_id for r in caplog.records)
    assert any(r.getMessage() == "stats" and r.processed == 1 for r in caplog.records)


def test_poison_messages_of_each_kind_go_to_the_dlq_while_good_ones_complete(sqs, queues, db, run_worker, waiter):
    good = [send_job(sqs, queues.url, document_id=n) for n in (1, 2)]
    poison = {
        "not JSON": "Hemoglobin 14.5 g/dL",
        "contract violation": json.dumps({"job_type": "lab_categorization", "user_id": -5, "document_id": 1,
                                          "tests": [{"test_name": "Hemoglobin"}]}),
        "unknown job type": json.dumps({"job_type": "radiology_report", "user_id": 1, "document_id": 1,
                                        "tests": [{"test_name": "Hemoglobin"}]}),
    }
    poison_ids = {sqs.send_message(QueueUrl=queues.url, MessageBody=body,
                                   MessageAttributes={"JobType": {"DataType": "String", "StringValue": "x"}}
                                   )["MessageId"]: kind for kind, body in poison.items()}
    with run_worker():
        waiter(lambda: is_done(db, *good), what="the good jobs")
        waiter(lambda: depth(sqs, queues.url) == (0, 0), what="the source queue to empty")
    dead = sqs.receive_message(QueueUrl=queues.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                               MessageSystemAttributeNames=["All"])["Messages"]
    assert len(dead) == 3
    for message in dead:
        attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        kind = poison_ids[attributes["SourceMessageId"]]
        assert attributes["FailureReason"].startswith(kind)
        assert attributes["SourceQueueUrl"] == queues.url
        assert attributes["JobType"] == "x"
        assert message["Body"] == poison[kind]
        # Dead-lettered by the worker at once, not by the redrive after three receives.
        assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    assert "user_id" in next(m for m in dead if m["Body"] == poison["contract violation"])[
        "MessageAttributes"]["FailureReason"]["StringValue"]


def test_the_same_message_delivered_twice_gives_one_set_of_rows(sqs, queues, db, run_worker, waiter):
    job = new_job(7, 8, GUIDE_TESTS)
    for _ in range(2):  # the same job twice in one batch
        sqs.send_message(QueueUrl=queues.url, MessageBody=job.to_body(), MessageAttributes=job.message_attributes())
    legacy_body = json.dumps({"user_id": 9, "document_id": 10, "tests": GUIDE_TESTS})  # the app's old producer
    sqs.send_message(QueueUrl=queues.url, MessageBody=legacy_body)
    legacy_id = decode_job(legacy_body, "any").job_id
    with run_worker() as worker:
        waiter(lambda: is_done(db, job.job_id, legacy_id) and depth(sqs, queues.url) == (0, 0), what="the jobs")
        # Redelivery after completion (e.g. a lost delete): acknowledged, nothing written again.
        sqs.send_message(QueueUrl=queues.url, MessageBody=job.to_body(), MessageAttributes=job.message_attributes())
        waiter(lambda: worker.stats.duplicates >= 1 and depth(sqs, queues.url) == (0, 0), what="the redelivery")
    for job_id in (job.job_id, legacy_id):
        row, results = job_rows(db, job_id)
        assert row.status == "done" and row.attempts == 1
        assert [r.test_index for r in results] == [0, 1]


def test_a_manual_mapping_wins_over_the_model(sqs, queues, db, run_worker, waiter, mapping_engine):
    from worker.commands import manual_row
    from worker.mapping.types import LabTestQuery
    from worker.store.repository import set_manual_mapping

    name, category = mapping_engine.describe("59260-0") or ("Hemoglobin [Moles/volume] in Blood", CBC)
    set_manual_mapping(db, manual_row(mapping_engine, LabTestQuery("HEMOGLOBIN", "g/dL"), "59260-0", name, category))
    job_id = send_job(sqs, queues.url)
    with run_worker():
        waiter(lambda: is_done(db, job_id), what="the job")
    _, (hemoglobin, wbc) = job_rows(db, job_id)
    assert (hemoglobin.loinc_code, hemoglobin.match_method) == ("59260-0", "override")
    assert hemoglobin.model_version == "manual"
    assert wbc.match_method != "override"
    with db.connect() as connection:
        source = connection.execute(text("select source, loinc_code from lab_test_mappings where unit_key = 'g/dl'"
                                         " and loinc_code = '59260-0'")).one()
    assert tuple(source) == ("manual", "59260-0")  # the model's result did not overwrite it


def test_a_name_seen_before_costs_a_lookup_not_an_inference(sqs, queues, db, run_worker, waiter):
    first = send_job(sqs, queues.url)
    with run_worker() as worker:
        waiter(lambda: is_done(db, first), what="the first job")
        model_tests = worker.stats.model_tests
        assert model_tests == 2 and worker.stats.memory_hits == 0
        second = send_job(sqs, queues.url, user_id=55, tests=[
            {"test_name": "hemoglobin", "test_value": "13.1", "test_unit": "g/dl"},
            {"test_name": "WBC Count", "test_value": "9.9", "test_unit": "K/uL"}])
        waiter(lambda: is_done(db, second), what="the second job")
        assert worker.stats.model_tests == model_tests  # no model call for it
        assert worker.stats.memory_hits == 2
    _, first_results = job_rows(db, first)
    _, second_results = job_rows(db, second)
    assert [r.match_method for r in second_results] == ["memory", "memory"]
    assert [r.loinc_code for r in second_results] == [r.loinc_code for r in first_results]
    assert [r.test_value for r in second_results] == ["13.1", "9.9"]



class FailsOn:
    """The real engine, except that it raises on one test name: a stand-in for an engine bug."""

    def __init__(self, engine, name: str):
        self.engine, self.name = engine, name
        self.model_version = engine.model_version

    def key(self, query):
        return self.engine.key(query)

    def map(self, queries):
        if any(query.name == self.name for query in queries):
            raise RuntimeError("engine bug")
        return self.engine.map(queries)


def test_a_job_that_breaks_the_engine_does_not_take_its_batch_with_it(sqs, queues, db, run_worker, waiter,
                                                                      mapping_engine):
    good = [send_job(sqs, queues.url, document_id=n) for n in (1, 2)]
    bad = send_job(sqs, queues.url, document_id=3, tests=[{"test_name": "BOOM", "test_value": "1"}])
    with run_worker(engine=FailsOn(mapping_engine, "BOOM"), retry_backoff=30) as worker:
        waiter(lambda: is_done(db, *good), what="the good jobs")
        waiter(lambda: worker.consumer.stats.retried >= 1, what="the bad job to be given back")
    job, results = job_rows(db, bad)
    assert (job.status, job.attempts, results) == ("processing", 1, [])
    assert job.error == "mapping failed: RuntimeError: engine bug"
    assert depth(sqs, queues.url) == (0, 1)  # the bad job waits for its retry; the good ones are gone
