"""The producer client the API imports to send jobs to the ML worker.

Imports boto3 and pydantic only (never torch or transformers): the API stays small.

    from worker.producer import get_ml_worker_client
    message_id = get_ml_worker_client().send_lab_categorization_job(123, 456, tests)

Environment: ML_WORKER_ENABLED, ML_WORKER_SQS_QUEUE_URL, ML_WORKER_PRIORITY_QUEUE_URL (optional),
ML_WORKER_SEND_TIMEOUT and ML_WORKER_SEND_ATTEMPTS (the send's deadline, below).

A send runs inside an API request, so it fails fast: its attempts' connect and read timeouts
together fit ``send_timeout`` seconds (default 4; boto3's own defaults would let an endpoint that
accepts connections but never answers hold the request for minutes).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from worker import aws
from worker.consumer import SQS_MAX_MESSAGE_BYTES, sqs_message_size
from worker.contract import InvalidJobError, LabCategorizationJob, new_job

log = logging.getLogger(__name__)

TRUE_WORDS = {"1", "true", "yes", "on"}
DEFAULT_SEND_TIMEOUT = 4.0
DEFAULT_SEND_ATTEMPTS = 2


class MLWorkerError(Exception):
    """Base of every error the producer raises."""


class MLWorkerDisabledError(MLWorkerError):
    pass


class MLWorkerConfigError(MLWorkerError):
    pass


class JobSendError(MLWorkerError):
    """SQS refused the job after boto3's retries; ``__cause__`` holds the botocore error."""


class MLWorkerClient:
    def __init__(self, queue_url: str | None, priority_queue_url: str | None = None,
                 enabled: bool = True, sqs: Any = None, send_timeout: float = DEFAULT_SEND_TIMEOUT,
                 send_attempts: int = DEFAULT_SEND_ATTEMPTS):
        if not send_timeout > 0 or send_attempts < 1:
            raise MLWorkerConfigError("the send timeout must be positive and the attempts at least 1")
        self.queue_url = queue_url
        self.priority_queue_url = priority_queue_url
        self.enabled = enabled
        self.send_timeout = send_timeout
        self.send_attempts = send_attempts
        self._sqs = sqs

    @classmethod
    def from_env(cls) -> MLWorkerClient:
        return cls(
            queue_url=os.environ.get("ML_WORKER_SQS_QUEUE_URL") or None,
            priority_queue_url=os.environ.get("ML_WORKER_PRIORITY_QUEUE_URL") or None,
            enabled=os.environ.get("ML_WORKER_ENABLED", "false").strip().lower() in TRUE_WORDS,
            send_timeout=_number_from_env("ML_WORKER_SEND_TIMEOUT", float, DEFAULT_SEND_TIMEOUT),
            send_attempts=_number_from_env("ML_WORKER_SEND_ATTEMPTS", int, DEFAULT_SEND_ATTEMPTS),
        )

    @property
    def sqs(self):
        if self._sqs is None:
            # Each attempt may spend half its share connecting and half waiting for the answer.
            per_step = self.send_timeout / self.send_attempts / 2
            self._sqs = aws.client("sqs", config=Config(
                connect_timeout=per_step, read_timeout=per_step,
                retries={"mode": "standard", "total_max_attempts": self.send_attempts}))
        return self._sqs

    def queue_for(self, priority: str) -> str:
        if not self.enabled:
            raise MLWorkerDisabledError("the ML worker is disabled (set ML_WORKER_ENABLED=true to send jobs)")
        if not self.queue_url:
            raise MLWorkerConfigError("ML_WORKER_SQS_QUEUE_URL is not set: no queue to send the job to")
        if priority == "high" and self.priority_queue_url:
            return self.priority_queue_url
        return self.queue_url

    def send_lab_categorization_job(self, user_id: int, document_id: int, tests: Sequence[Any],
                                    priority: str = "normal") -> str:
        """Validate the job, send it and return the SQS message id.

        Raises InvalidJobError (naming the field), MLWorkerDisabledError, MLWorkerConfigError
        or JobSendError; a job is never dropped silently.
        """
        return self.send_job(new_job(user_id, document_id, tests, priority))

    def send_job(self, job: LabCategorizationJob, test: bool = False) -> str:
        """Send an already built job (see ``worker.contract.new_job``) and return the SQS message id.

        For callers that need the job id back (opsctl send-test, which marks its jobs ``test``);
        same checks and errors as ``send_lab_categorization_job``.
        """
        body, attributes = job.to_body(), job.message_attributes(test=test)
        size = sqs_message_size(body, attributes)
        if size > SQS_MAX_MESSAGE_BYTES:
            raise InvalidJobError("tests", f"message is {size} bytes, over the SQS limit of {SQS_MAX_MESSAGE_BYTES}")
        queue_url = self.queue_for(job.priority)
        try:
            response = self.sqs.send_message(QueueUrl=queue_url, MessageBody=body, MessageAttributes=attributes)
        except (BotoCoreError, ClientError) as error:
            raise JobSendError(f"could not send job {job.job_id} to {queue_url}: {error}") from error
        log.info("sent lab categorization job %s for user %s document %s as message %s",
                 job.job_id, job.user_id, job.document_id, response["MessageId"])
        return response["MessageId"]


def _number_from_env(name: str, kind: type, default: float) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise MLWorkerConfigError(f"{name} must be a number ({kind.__name__})") from None


_client: MLWorkerClient | None = None
_client_lock = threading.Lock()


def get_ml_worker_client() -> MLWorkerClient:
    """The process-wide client, configured from the environment on first use."""
    global _client
    with _client_lock:
        if _client is None:
            _client = MLWorkerClient.from_env()
        return _client


def reset_ml_worker_client() -> None:
    """Forget the process-wide client (after the environment changed, e.g. in tests)."""
    global _client
    with _client_lock:
        _client = None


def send_lab_categorization_job(user_id: int, document_id: int, tests: Sequence[Any],
                                priority: str = "normal") -> str:
    return get_ml_worker_client().send_lab_categorization_job(user_id, document_id, tests, priority)
