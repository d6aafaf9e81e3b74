"""What an adversarial tester found in opsctl (issue 15): production one keystroke away, an environment
variable overriding --env, terminal escapes from logs and messages, usage errors reported as AWS errors."""

from __future__ import annotations

import json

import pytest

from worker.contract import TEST_DOCUMENT_ID, TEST_USER_ID


@pytest.fixture
def production(stack):
    """Production's queues beside the test stack's, found by their names (no SSM for production here)."""
    sqs = stack.client("sqs")
    dlq = sqs.create_queue(QueueName="production-ml-worker-dlq")["QueueUrl"]
    queue = sqs.create_queue(QueueName="production-ml-worker-queue")["QueueUrl"]
    return {"queue_url": queue, "dlq_url": dlq}


def messages_in(stack, url: str) -> list[dict]:
    return stack.drain(url)


def after_the_answer(stdout: str) -> str:
    """The command's output: CliRunner echoes the typed answer into stdout, where a terminal shows it."""
    first, _, rest = stdout.partition("\n")
    assert first.strip() in ("y", "n")
    return rest


# -- production needs a yes ---------------------------------------------------------------------
def test_send_test_to_production_asks_first(stack, opsctl, production):
    declined = opsctl("send-test", env="production", input="n\n")
    assert declined.exit_code == 1 and "not sent" in declined.stderr
    assert "production-ml-worker-queue" in declined.stderr  # the question names the queue ...
    assert "production-ml-worker-queue" not in declined.stdout  # ... on stderr, not in the output
    assert messages_in(stack, production["queue_url"]) == []
    unattended = opsctl("send-test", env="production")  # no terminal, no --yes
    assert unattended.exit_code == 1 and "--yes" in unattended.stderr
    assert messages_in(stack, production["queue_url"]) == []
    confirmed = opsctl("send-test", "--json", env="production", input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert json.loads(after_the_answer(confirmed.stdout))["queue_url"] == production["queue_url"]
    assert opsctl("send-test", "--yes", env="production").exit_code == 0
    assert len(messages_in(stack, production["queue_url"])) == 2


def test_send_test_elsewhere_does_not_ask(stack, opsctl):
    assert opsctl("send-test").exit_code == 0  # env "test"
    assert len(messages_in(stack, stack.queue_url)) == 1


def test_redrive_into_production_asks_first(stack, opsctl, production):
    stack.send(production["dlq_url"], {"job_id": "j"})
    dry = opsctl("dlq", "redrive", "--dry-run", env="production")
    assert dry.exit_code == 0, dry.output  # a dry run moves nothing: no question
    declined = opsctl("dlq", "redrive", env="production", input="n\n")
    assert declined.exit_code == 1 and "not redriven" in declined.stderr
    assert stack.depth(production["dlq_url"]) == (1, 0)
    confirmed = opsctl("dlq", "redrive", "--yes", env="production")
    assert confirmed.exit_code == 0, confirmed.output
    assert len(messages_in(stack, production["queue_url"])) == 1


def test_redeploy_of_production_asks_first(stack, opsctl):
    declined = opsctl("redeploy", env="production", input="n\n")
    assert declined.exit_code == 1 and "not redeployed" in declined.stderr
    assert "production-ml-worker" in declined.stderr
    # With --yes it goes ahead (and finds no production cluster in this moto).
    confirmed = opsctl("redeploy", "--yes", env="production")
    assert confirmed.exit_code == 1 and "ECS cluster production-ml-worker does not exist" in confirmed.stderr


def test_a_staging_dlq_is_never_redriven_into_production(stack, opsctl, production):
    staging_dlq = stack.client("sqs").create_queue(QueueName="staging-ml-worker-dlq")["QueueUrl"]
    stack.send(staging_dlq, {"job_id": "j"})
    result = opsctl("dlq", "redrive", "--yes", "--dlq-url", staging_dlq, env="production")
    assert result.exit_code == 2
    assert "staging-ml-worker-dlq" in result.stderr and "production-ml-worker-queue" in result.stderr
    assert stack.depth(staging_dlq) == (1, 0)
    assert messages_in(stack, production["queue_url"]) == []


# -- an environment variable of another environment ----------------------------------------------
def test_an_environment_variable_of_another_environment_is_refused(stack, opsctl, production, monkeypatch):
    monkeypatch.setenv("ML_WORKER_SQS_QUEUE_URL", production["queue_url"])
    result = opsctl("send-test")  # --env test
    assert result.exit_code == 2
    assert "ML_WORKER_SQS_QUEUE_URL" in result.stderr and "production" in result.stderr
    assert "--env test" in result.stderr or "'test'" in result.stderr
    assert messages_in(stack, production["queue_url"]) == [] and messages_in(stack, stack.queue_url) == []
    monkeypatch.setenv("ML_WORKER_SQS_QUEUE_URL", stack.queue_url)  # the same environment: fine
    assert opsctl("queue", "depth", "--json").exit_code == 0
    monkeypatch.setenv("ML_WORKER_LOG_GROUP", "/ecs/production-ml-worker")
    logs = opsctl("logs", "tail")
    assert logs.exit_code == 2 and "ML_WORKER_LOG_GROUP" in logs.stderr


# -- test jobs are marked ----------------------------------------------------------------------------
def test_send_test_uses_the_reserved_test_user_and_marks_the_job(stack, opsctl):
    result = opsctl("send-test", "--json")
    assert result.exit_code == 0, result.output
    [message] = messages_in(stack, stack.queue_url)
    body = json.loads(message["Body"])
    assert (body["user_id"], body["document_id"]) == (TEST_USER_ID, TEST_DOCUMENT_ID)
    assert message["MessageAttributes"]["Test"]["StringValue"] == "true"


def test_send_test_refuses_ids_the_store_cannot_hold(stack, opsctl):
    result = opsctl("send-test", "--user-id", str(2**63))
    assert result.exit_code == 2 and "--user-id" in result.stderr
    assert messages_in(stack, stack.queue_url) == []


def test_an_invalid_job_hint_points_at_what_ships(stack, opsctl, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"test_name": "Hb\u0000"}]))
    result = opsctl("send-test", "--tests", str(bad))
    assert result.exit_code == 1 and "invalid job: tests.0.test_name" in result.stderr
    assert "DESIGN.md" not in result.stderr and "README" in result.stderr


# -- terminal escapes ----------------------------------------------------------------------------------
ESCAPES = "\x1b[2J\x1b]0;owned\x07\x9b31m\r"


def test_control_characters_from_logs_never_reach_the_terminal(stack, opsctl):
    stack.log({"level": "ERROR", "message": f"bad{ESCAPES}", "job_id": f"j{ESCAPES}", "extra": ESCAPES},
              f"plain {ESCAPES} line")
    for args in (("logs", "tail"), ("logs", "tail", "--json")):
        result = opsctl(*args)
        assert result.exit_code == 0, result.output
        assert not any(ch in result.stdout for ch in "\x1b\x07\x9b\r"), repr(result.stdout)
    assert "\\x1b[2J" in opsctl("logs", "tail").stdout  # shown, made harmless


def test_control_characters_from_messages_never_reach_the_terminal(stack, opsctl):
    stack.send(stack.dlq_url, {"job_id": f"j{ESCAPES}"}, {"FailureReason": f"why{ESCAPES}"})
    stack.send(stack.dlq_url, f"not json {ESCAPES}")
    for args in (("dlq", "peek"), ("dlq", "peek", "--json")):
        result = opsctl(*args)
        assert result.exit_code == 0, result.output
        assert not any(ch in result.stdout for ch in "\x1b\x07\x9b\r"), repr(result.stdout)


def test_peek_shows_a_deeply_nested_body_as_text(stack, opsctl):
    deep = "[" * 50_000 + "]" * 50_000
    stack.send(stack.dlq_url, deep, {"FailureReason": "body: JSON nested too deeply"})
    for args in (("dlq", "peek"), ("dlq", "peek", "--json")):
        result = opsctl(*args)
        assert result.exit_code == 0, result.stderr
        assert "nested too deeply" in result.stdout


# -- usage errors --------------------------------------------------------------------------------------
def test_an_absurd_since_is_a_usage_error(stack, opsctl):
    result = opsctl("logs", "tail", "--since", "99999999d")
    assert result.exit_code == 2 and "--since" in result.stderr


def test_the_purge_question_goes_to_stderr_under_json(stack, opsctl):
    stack.send(stack.dlq_url, {"job_id": "j"})
    result = opsctl("dlq", "purge", "--json", input="y\n")
    assert result.exit_code == 0, result.output
    assert json.loads(after_the_answer(result.stdout))["purged"] is True  # the JSON document alone
    assert "Purge 1 message(s)" in result.stderr
