"""The producer client against a moto server over HTTP: what lands in the queue, and every refusal."""

import json
import socket
import subprocess
import sys
import threading

import pytest
from botocore.exceptions import ClientError

from worker.contract import InvalidJobError
from worker.producer import (
    DEFAULT_SEND_ATTEMPTS,
    DEFAULT_SEND_TIMEOUT,
    JobSendError,
    MLWorkerClient,
    MLWorkerConfigError,
    MLWorkerDisabledError,
    get_ml_worker_client,
    reset_ml_worker_client,
)

SAMPLE = [{"test_name": "Hemoglobin", "test_value": "14.5", "test_unit": "g/dL"},
          {"test_name": "WBC Count", "test_value": "7.2", "test_unit": "K/uL"}]


def receive_one(sqs, url):
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                   MessageAttributeNames=["All"]).get("Messages", [])
    assert len(messages) == 1
    return messages[0]


@pytest.fixture
def client(queues, monkeypatch):
    monkeypatch.setenv("ML_WORKER_ENABLED", "true")
    monkeypatch.setenv("ML_WORKER_SQS_QUEUE_URL", queues.url)
    monkeypatch.delenv("ML_WORKER_PRIORITY_QUEUE_URL", raising=False)
    reset_ml_worker_client()
    yield get_ml_worker_client()
    reset_ml_worker_client()


def test_sends_the_exact_body_and_attributes(client, sqs, queues):
    message_id = client.send_lab_categorization_job(123, 456, SAMPLE)
    message = receive_one(sqs, queues.url)
    assert message["MessageId"] == message_id
    body = json.loads(message["Body"])
    assert set(body) == {"job_type", "schema_version", "job_id", "user_id", "document_id", "priority",
                         "submitted_at", "test_count", "tests"}
    assert body["job_type"] == "lab_categorization"
    assert body["schema_version"] == 1
    assert (body["user_id"], body["document_id"], body["priority"], body["test_count"]) == (123, 456, "normal", 2)
    assert body["tests"] == [dict(t, specimen=None) for t in SAMPLE]
    assert body["submitted_at"].endswith("Z") or body["submitted_at"].endswith("+00:00")
    assert message["MessageAttributes"] == {
        "JobType": {"DataType": "String", "StringValue": "lab_categorization"},
        "Priority": {"DataType": "String", "StringValue": "normal"},
        "UserId": {"DataType": "Number", "StringValue": "123"},
    }


def test_client_is_process_wide(client):
    assert get_ml_worker_client() is client


def test_high_priority_goes_to_the_priority_queue(sqs, queues, monkeypatch):
    priority_url = sqs.create_queue(QueueName="ml-worker-priority")["QueueUrl"]
    client = MLWorkerClient(queues.url, priority_queue_url=priority_url)
    client.send_lab_categorization_job(1, 2, SAMPLE, priority="high")
    client.send_lab_categorization_job(1, 3, SAMPLE, priority="low")
    assert json.loads(receive_one(sqs, priority_url)["Body"])["document_id"] == 2
    assert json.loads(receive_one(sqs, queues.url)["Body"])["document_id"] == 3


def test_high_priority_without_a_priority_queue_uses_the_main_queue(sqs, queues):
    MLWorkerClient(queues.url).send_lab_categorization_job(1, 2, SAMPLE, priority="high")
    assert receive_one(sqs, queues.url)["MessageAttributes"]["Priority"]["StringValue"] == "high"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"user_id": None}, "user_id"),
        ({"user_id": 0}, "user_id"),
        ({"document_id": -4}, "document_id"),
        ({"tests": []}, "tests"),
        ({"tests": [{"test_name": ""}]}, "tests.0.test_name"),
        ({"tests": [{"test_name": "x" * 201}]}, "tests.0.test_name"),
        ({"tests": [{"test_value": "1"}]}, "tests.0.test_name"),
        ({"priority": "urgent"}, "priority"),
        ({"tests": [{"test_name": "Hemoglobin", "test_value": "v" * 200, "test_unit": "u" * 50}] * 900}, "tests"),
        ({"tests": None}, "tests"),
        ({"user_id": True}, "user_id"),
        ({"document_id": 2**63}, "document_id"),
        ({"tests": [{"test_name": "Hb\x00"}]}, "tests.0.test_name"),
    ],
)
def test_bad_input_names_the_field_and_sends_nothing(sqs, queues, kwargs, field):
    arguments = {"user_id": 1, "document_id": 2, "tests": SAMPLE, "priority": "normal"} | kwargs
    with pytest.raises(InvalidJobError) as caught:
        MLWorkerClient(queues.url).send_lab_categorization_job(**arguments)
    assert caught.value.field == field
    attributes = sqs.get_queue_attributes(QueueUrl=queues.url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_oversized_message_error_mentions_the_limit(queues):
    tests = [{"test_name": "Hemoglobin", "test_value": "v" * 200, "test_unit": "u" * 50}] * 900
    with pytest.raises(InvalidJobError, match="over the SQS limit of 262144"):
        MLWorkerClient(queues.url).send_lab_categorization_job(1, 2, tests)


def test_disabled_or_unconfigured_client_refuses_clearly(monkeypatch):
    monkeypatch.setenv("ML_WORKER_ENABLED", "false")
    monkeypatch.setenv("ML_WORKER_SQS_QUEUE_URL", "http://127.0.0.1:1/queue")
    with pytest.raises(MLWorkerDisabledError, match="ML_WORKER_ENABLED=true"):
        MLWorkerClient.from_env().send_lab_categorization_job(1, 2, SAMPLE)
    monkeypatch.setenv("ML_WORKER_ENABLED", "true")
    monkeypatch.delenv("ML_WORKER_SQS_QUEUE_URL")
    with pytest.raises(MLWorkerConfigError, match="ML_WORKER_SQS_QUEUE_URL is not set"):
        MLWorkerClient.from_env().send_lab_categorization_job(1, 2, SAMPLE)


def test_sqs_failure_is_raised_as_one_error_type_with_the_cause(aws, queues):
    missing = queues.url.rsplit("/", 1)[0] + "/no-such-queue"
    with pytest.raises(JobSendError, match="no-such-queue") as caught:
        MLWorkerClient(missing).send_lab_categorization_job(1, 2, SAMPLE)
    assert isinstance(caught.value.__cause__, ClientError)


def test_transient_failures_are_retried_by_boto3_standard_mode(aws, queues, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    client = MLWorkerClient(queues.url)
    attempts = []
    client.sqs.meta.events.register("before-send.sqs.SendMessage", lambda **kw: attempts.append(1))
    with pytest.raises(JobSendError) as caught:
        client.send_lab_categorization_job(1, 2, SAMPLE)
    assert len(attempts) == DEFAULT_SEND_ATTEMPTS == 2  # standard mode, a retry, then the API hears of it
    assert "Could not connect" in str(caught.value.__cause__)


@pytest.fixture
def silent_endpoint():
    """An endpoint that accepts connections and never answers; counts the connections."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept():
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    listener.close()
    for connection in accepted:
        connection.close()


def _send_in_thread(client) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def send():
        try:
            client.send_lab_categorization_job(1, 2, SAMPLE)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            outcome["error"] = error

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread, outcome


def test_an_endpoint_that_never_answers_fails_the_send_within_the_deadline(aws, queues, silent_endpoint,
                                                                          monkeypatch):
    url, accepted = silent_endpoint
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    client = MLWorkerClient(queues.url)
    config = client.sqs.meta.config
    # Every attempt's connect and read timeouts fit the total deadline (what an API request can wait).
    assert DEFAULT_SEND_ATTEMPTS * (config.connect_timeout + config.read_timeout) <= DEFAULT_SEND_TIMEOUT <= 10
    thread, outcome = _send_in_thread(client)
    thread.join(DEFAULT_SEND_TIMEOUT + 20)  # generous for a busy machine; the old client took 150 s
    assert not thread.is_alive(), "the send was still blocked"
    assert isinstance(outcome.get("error"), JobSendError)
    assert len(accepted) == DEFAULT_SEND_ATTEMPTS


def test_the_send_deadline_is_configurable(aws, queues, silent_endpoint, monkeypatch):
    url, accepted = silent_endpoint
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setenv("ML_WORKER_ENABLED", "true")
    monkeypatch.setenv("ML_WORKER_SQS_QUEUE_URL", queues.url)
    monkeypatch.setenv("ML_WORKER_SEND_TIMEOUT", "1")
    monkeypatch.setenv("ML_WORKER_SEND_ATTEMPTS", "1")
    client = MLWorkerClient.from_env()
    assert client.sqs.meta.config.read_timeout + client.sqs.meta.config.connect_timeout <= 1
    thread, outcome = _send_in_thread(client)
    thread.join(20)
    assert not thread.is_alive() and isinstance(outcome.get("error"), JobSendError)
    assert len(accepted) == 1
    monkeypatch.setenv("ML_WORKER_SEND_TIMEOUT", "soon")
    with pytest.raises(MLWorkerConfigError, match="ML_WORKER_SEND_TIMEOUT"):
        MLWorkerClient.from_env()


def test_importing_the_producer_imports_no_ml_library():
    code = ("import sys, worker.producer, worker.contract; "
            "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'sqlalchemy', 'numpy') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "[]"
