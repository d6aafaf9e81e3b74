"""send-test through the producer client, and --wait via the database or via the queue."""

from __future__ import annotations

import json
import uuid

import pytest

from worker.contract import TEST_DOCUMENT_ID, TEST_USER_ID


def received(stack, url) -> list[dict]:
    messages = stack.drain(url)
    return [{"body": json.loads(m["Body"]), "attributes": m.get("MessageAttributes", {}),
             "id": m["MessageId"]} for m in messages]


def test_send_test_sends_the_sample_job_through_the_producer(stack, opsctl):
    result = opsctl("send-test", "--json")
    assert result.exit_code == 0, result.output
    sent = json.loads(result.stdout)
    [message] = received(stack, stack.queue_url)
    body = message["body"]
    assert message["id"] == sent["message_id"] and body["job_id"] == sent["job_id"]
    assert (body["user_id"], body["document_id"], body["schema_version"], body["test_count"]) == (
        TEST_USER_ID, TEST_DOCUMENT_ID, 1, 2)
    assert [(t["test_name"], t["test_value"], t["test_unit"]) for t in body["tests"]] == [
        ("Hemoglobin", "14.5", "g/dL"), ("WBC Count", "7.2", "K/uL")]
    assert message["attributes"]["JobType"]["StringValue"] == "lab_categorization"


def test_send_test_with_a_tests_file_and_high_priority(make_stack, opsctl, tmp_path):
    stack = make_stack(priority=True)
    tests = tmp_path / "report.json"
    tests.write_text(json.dumps({"tests": [{"test_name": "TSH", "test_value": 2.1, "test_unit": "mIU/L"}]}))
    result = opsctl("send-test", "--tests", str(tests), "--priority", "high", "--user-id", "7", "--document-id", "9")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("sent job ") and stack.priority_url in result.stdout
    [message] = received(stack, stack.priority_url)
    assert message["body"]["tests"][0]["test_name"] == "TSH" and message["body"]["user_id"] == 7
    assert message["body"]["priority"] == "high"
    assert received(stack, stack.queue_url) == []


def test_send_test_rejects_bad_input(stack, opsctl, tmp_path):
    not_json = tmp_path / "x.json"
    not_json.write_text("{nope")
    result = opsctl("send-test", "--tests", str(not_json))
    assert result.exit_code == 2 and "is not JSON" in result.stderr
    empty_name = tmp_path / "y.json"
    empty_name.write_text(json.dumps([{"test_name": ""}]))
    invalid = opsctl("send-test", "--tests", str(empty_name))
    assert invalid.exit_code == 1 and "invalid job: tests.0.test_name" in invalid.stderr
    assert opsctl("send-test", "--user-id", "0").exit_code == 2
    assert received(stack, stack.queue_url) == []


def test_send_test_to_a_missing_queue(stack, opsctl):
    stack.client("sqs").delete_queue(QueueUrl=stack.queue_url)
    result = opsctl("send-test", "--queue-url", stack.queue_url)
    assert result.exit_code == 1
    assert f"queue {stack.queue_url} does not exist" in result.stderr and result.stderr.count("\n") == 1


@pytest.fixture
def schema_url(pg_url):
    """A schema of its own in the session's database (the search_path rides on the URL)."""
    import sqlalchemy

    schema = f"opsctl_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"create schema {schema}"))
    yield f"{pg_url}?options=-csearch_path%3D{schema}"
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"drop schema {schema} cascade"))
    engine.dispose()


@pytest.fixture
def results_db(schema_url):
    """The worker's tables made by the worker's own migrations: opsctl's SQL meets the real schema."""
    from worker.store.db import make_engine, upgrade

    engine = make_engine(schema_url)
    upgrade(engine)
    yield schema_url, engine
    engine.dispose()


def fake_worker(stack, engine, status="done"):
    """Returns a sleep() stand-in that plays the worker once: takes the job, writes its rows."""
    import sqlalchemy

    def sleep(seconds):
        for message in received(stack, stack.queue_url):
            job = message["body"]
            with engine.begin() as connection:
                connection.execute(sqlalchemy.text(
                    "insert into lab_jobs (job_id, message_id, user_id, document_id, status, attempts, error, "
                    "test_count) values (:j, :m, :user, :doc, :s, 1, :e, :n)"),
                    {"j": job["job_id"], "m": message["id"], "s": status, "n": len(job["tests"]),
                     "user": job["user_id"], "doc": job["document_id"],
                     "e": "model failed" if status == "failed" else None})
                for index, test in enumerate(job["tests"] if status == "done" else []):
                    connection.execute(sqlalchemy.text(
                        "insert into lab_test_results (job_id, test_index, user_id, document_id, test_name, "
                        "test_value, test_unit, category, loinc_code, loinc_name, confidence, match_method, "
                        "needs_review) values (:j, :i, :user, :doc, :n, :v, :u, 'Complete Blood Count (CBC)', "
                        ":l, 'LOINC name', 0.93, 'model', false)"),
                        {"j": job["job_id"], "i": index, "n": test["test_name"], "v": test["test_value"],
                         "u": test["test_unit"], "l": ["718-7", "6690-2"][index], "user": job["user_id"],
                         "doc": job["document_id"]})

    return sleep


def test_send_test_wait_follows_the_job_in_the_database(stack, opsctl, results_db, monkeypatch):
    url, engine = results_db
    monkeypatch.setattr("opsctl.sendtest.time.sleep", fake_worker(stack, engine))
    result = opsctl("send-test", "--wait", "--database-url", url, "--interval", "0.1", "--timeout", "30")
    assert result.exit_code == 0, result.output
    assert "job " in result.stdout and ": done (2 result(s), 1 attempt(s))" in result.stdout
    assert "718-7" in result.stdout and "6690-2" in result.stdout and "Hemoglobin" in result.stdout


@pytest.mark.parametrize("scheme", ["postgresql://", "postgres://"])
def test_send_test_wait_takes_a_plain_postgres_url_as_the_worker_does(stack, opsctl, results_db, monkeypatch,
                                                                      scheme):
    url, engine = results_db
    plain = url.replace("postgresql+psycopg2://", scheme)
    monkeypatch.setattr("opsctl.sendtest.time.sleep", fake_worker(stack, engine))
    result = opsctl("send-test", "--wait", "--database-url", plain, "--interval", "0.1", "--timeout", "30")
    assert result.exit_code == 0, result.output
    assert "following the job through the queue" not in result.stderr
    assert ": done (2 result(s), 1 attempt(s))" in result.stdout


def test_send_test_wait_reads_postgres_env_and_reports_a_failed_job(stack, opsctl, results_db, monkeypatch):
    url, engine = results_db
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setattr("opsctl.sendtest.time.sleep", fake_worker(stack, engine, status="failed"))
    result = opsctl("send-test", "--wait", "--interval", "0.1", "--json")
    assert result.exit_code == 1
    outcome = json.loads(result.stdout)
    assert (outcome["status"], outcome["detail"], outcome["via"]) == ("failed", "model failed", "database")


def test_send_test_wait_falls_back_to_the_queue_when_the_database_is_unreachable(stack, opsctl, monkeypatch):
    monkeypatch.setattr("opsctl.sendtest.time.sleep", lambda s: received(stack, stack.queue_url))  # worker done
    result = opsctl("send-test", "--wait", "--database-url", "postgresql+psycopg2://nobody@127.0.0.1:1/none",
                    "--interval", "0.1")
    assert result.exit_code == 0, result.output
    assert "database not reachable (OperationalError): following the job through the queue" in result.stderr
    assert ": processed (off the queue and not in the DLQ; results are in the database" in result.stdout


def test_send_test_wait_via_the_queue_sees_a_dead_lettered_job(stack, opsctl, monkeypatch):
    def dead_letter(seconds):
        for message in received(stack, stack.queue_url):
            stack.send(stack.dlq_url, message["body"], {"FailureReason": "job_id: bad",
                                                         "SourceMessageId": message["id"],
                                                         "SourceQueueUrl": stack.queue_url})

    monkeypatch.setattr("opsctl.sendtest.time.sleep", dead_letter)
    result = opsctl("send-test", "--wait", "--interval", "0.1", "--json")
    assert result.exit_code == 1, result.output
    outcome = json.loads(result.stdout)
    assert (outcome["status"], outcome["detail"], outcome["via"]) == ("dead-lettered", "job_id: bad", "queue")


def test_send_test_wait_times_out(stack, opsctl, monkeypatch):
    monkeypatch.setattr("opsctl.sendtest.time.sleep", lambda s: None)
    result = opsctl("send-test", "--wait", "--timeout", "0")
    assert result.exit_code == 1
    assert "still on the queue after 0s" in result.stderr and "no database configured" in result.stderr


def test_send_test_wait_without_the_workers_tables_follows_the_queue(stack, opsctl, schema_url, monkeypatch):
    monkeypatch.setattr("opsctl.sendtest.time.sleep", lambda s: received(stack, stack.queue_url))
    result = opsctl("send-test", "--wait", "--database-url", schema_url, "--interval", "0.1")
    assert result.exit_code == 0, result.output
    assert "the database has no lab_jobs table" in result.stderr


def test_database_url_from_postgres_variables(monkeypatch):
    from opsctl.sendtest import database_url

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("POSTGRES_HOST", raising=False)
    assert database_url(None) is None
    monkeypatch.setenv("POSTGRES_HOST", "db.internal")
    monkeypatch.setenv("POSTGRES_PORT", "6432")
    monkeypatch.setenv("POSTGRES_DB", "zivo")
    monkeypatch.setenv("POSTGRES_USER", "worker")
    monkeypatch.setenv("POSTGRES_PASSWORD", "p@ss/word")
    assert database_url(None).render_as_string(hide_password=False) == \
        "postgresql+psycopg2://worker:p%40ss%2Fword@db.internal:6432/zivo"
    monkeypatch.setenv("DATABASE_URL", "postgresql://a@b/c")
    assert database_url(None).render_as_string() == "postgresql+psycopg2://a@b/c"
    assert database_url("sqlite://").render_as_string() == "sqlite://"


def test_send_test_denied_by_the_queue_policy(stack, opsctl, hook):
    from botocore.exceptions import ClientError

    def denied(**kwargs):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "SendMessage")

    hook("before-call.sqs.SendMessage", denied)
    result = opsctl("send-test")
    assert result.exit_code == 1
    assert f"not allowed to send to {stack.queue_url}" in result.stderr and "operatorRoleArns" in result.stderr

