"""Settings from the environment, JSON log lines, the health file and the healthcheck/db commands."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest
from typer.testing import CliRunner

from worker.cli import app
from worker.health import HealthFile
from worker.logs import configure_logging
from worker.settings import WorkerSettings

ENV_NAMES = ("ML_WORKER_SQS_QUEUE_URL", "ML_WORKER_PRIORITY_QUEUE_URL", "ML_WORKER_DLQ_URL", "ML_WORKER_BATCH_SIZE",
             "ML_WORKER_WAIT_TIME", "ML_WORKER_VISIBILITY_TIMEOUT", "ML_WORKER_HEARTBEAT",
             "ML_WORKER_SHUTDOWN_DEADLINE", "ML_WORKER_HEALTH_FILE", "ML_WORKER_HEALTH_MAX_AGE", "DATABASE_URL",
             "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD", "LOG_LEVEL",
             "ECS_AGENT_URI")


@pytest.fixture
def clean_env(monkeypatch):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_defaults_and_environment(clean_env):
    clean_env.setenv("ML_WORKER_SQS_QUEUE_URL", "http://q/main")
    clean_env.setenv("ML_WORKER_PRIORITY_QUEUE_URL", "http://q/priority")
    clean_env.setenv("ML_WORKER_WAIT_TIME", "5")
    settings = WorkerSettings()
    assert (settings.batch_size, settings.wait_time, settings.visibility_timeout) == (10, 5, 300)
    assert settings.shutdown_deadline == 90 < 120
    assert settings.heartbeat_seconds == 60 and settings.health_file == "/tmp/ml-worker-health"
    assert settings.queue_urls() == ["http://q/priority", "http://q/main"]
    with pytest.raises(ValueError, match="DATABASE_URL"):
        settings.database_url()


def test_database_url_from_the_postgres_variables(clean_env):
    for name, value in {"POSTGRES_HOST": "db.internal", "POSTGRES_PORT": "6543", "POSTGRES_DB": "app",
                        "POSTGRES_USER": "worker", "POSTGRES_PASSWORD": "p@ss/word"}.items():
        clean_env.setenv(name, value)
    url = WorkerSettings().database_url()
    assert (url.drivername, url.host, url.port, url.database, url.username, url.password) == (
        "postgresql+psycopg2", "db.internal", 6543, "app", "worker", "p@ss/word")
    clean_env.setenv("DATABASE_URL", "postgres://u:pw@h/d")
    assert WorkerSettings().database_url().render_as_string(hide_password=False) == "postgresql+psycopg2://u:pw@h/d"


def test_invalid_settings_are_refused(clean_env):
    clean_env.setenv("ML_WORKER_BATCH_SIZE", "11")
    with pytest.raises(ValueError):
        WorkerSettings()
    clean_env.setenv("ML_WORKER_BATCH_SIZE", "10")
    clean_env.setenv("ML_WORKER_VISIBILITY_TIMEOUT", "30")
    clean_env.setenv("ML_WORKER_HEARTBEAT", "30")
    with pytest.raises(ValueError, match="HEARTBEAT"):
        WorkerSettings()
    clean_env.setenv("ML_WORKER_HEARTBEAT", "10")
    assert WorkerSettings().heartbeat_seconds == 10


def test_log_lines_are_json_objects_with_the_job_fields():
    stream = io.StringIO()
    configure_logging("INFO", stream)
    try:
        logging.getLogger("worker.test").info("completed lab categorization for user %s document %s", 123, 456,
                                              extra={"job_id": "j1", "message_id": "m1", "user_id": 123,
                                                     "document_id": 456, "receive_count": 1, "test_count": 2})
    finally:
        configure_logging("WARNING")
    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert entry["message"] == "completed lab categorization for user 123 document 456"
    assert {k: entry[k] for k in ("job_id", "message_id", "user_id", "document_id", "receive_count",
                                  "test_count", "level")} == {"job_id": "j1", "message_id": "m1", "user_id": 123,
                                                             "document_id": 456, "receive_count": 1,
                                                             "test_count": 2, "level": "INFO"}


def test_log_lines_are_capped_and_stay_one_json_object(sqs, queues):
    """A 200 KB field must not make a 200 KB line: the awslogs driver splits lines over 16 KiB."""
    from worker.consumer import Consumer, ConsumerOptions, PoisonMessage
    from worker.logs import MAX_FIELD_CHARS, MAX_LINE_BYTES

    stream = io.StringIO()
    configure_logging("INFO", stream)
    huge = "x" * 200_000
    try:
        logging.getLogger("worker.test").error("odd %s", huge, extra={"job_type": huge, "ids": [huge] * 3})
        sqs.send_message(QueueUrl=queues.url, MessageBody=huge)

        def decode(message):
            raise PoisonMessage("unknown job type " + message.body)

        Consumer(queues.url, lambda messages: {}, decode=decode, sqs=sqs,
                 options=ConsumerOptions(wait_time=0)).run_once()
    finally:
        configure_logging("WARNING")
    lines = stream.getvalue().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one whole JSON object
    assert all(len(line.encode()) <= MAX_LINE_BYTES for line in lines)
    assert entries[0]["message"].startswith("odd xxx") and entries[0]["job_type"].startswith("xxx")
    assert any(entry["message"] == "message dead-lettered" for entry in entries)
    [dead] = sqs.receive_message(QueueUrl=queues.dlq_url, MessageAttributeNames=["All"])["Messages"]
    assert len(dead["MessageAttributes"]["FailureReason"]["StringValue"]) > MAX_FIELD_CHARS  # the DLQ keeps more


def test_healthcheck_command(tmp_path, clean_env):
    path = tmp_path / "health"
    clean_env.setenv("ML_WORKER_HEALTH_FILE", str(path))
    runner = CliRunner()
    assert runner.invoke(app, ["healthcheck"]).exit_code == 1  # the loop never started
    HealthFile(path).touch()
    result = runner.invoke(app, ["healthcheck"])
    assert result.exit_code == 0, result.output
    path.write_text(f"{time.time() - 1000:.3f}\n")  # no progress for 1000 s
    assert runner.invoke(app, ["healthcheck"]).exit_code == 1
    assert runner.invoke(app, ["healthcheck", "--max-age", "2000"]).exit_code == 0
    clean_env.setenv("ML_WORKER_HEALTH_MAX_AGE", "5000")
    assert runner.invoke(app, ["healthcheck"]).exit_code == 0


def test_db_upgrade_command_on_sqlite(tmp_path, clean_env):
    url = f"sqlite:///{tmp_path}/cmd.db"
    result = CliRunner().invoke(app, ["db", "upgrade", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert "database at revision 0" in result.output
    clean_env.delenv("DATABASE_URL", raising=False)
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 2
