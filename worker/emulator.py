"""What the local runs (demo, benchmark, load suite) and the tests share to stand in for AWS:
a free loopback port for the moto server, and the platform's queue layout (a queue redriving to
its DLQ after a few receives)."""

from __future__ import annotations

import json
import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_queue_with_dlq(sqs, name: str, visibility_timeout: int, max_receive_count: int = 3) -> tuple[str, str]:
    """Create ``name`` and ``name-dlq`` with the redrive policy; returns (queue URL, DLQ URL)."""
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=name, Attributes={
        "VisibilityTimeout": str(visibility_timeout),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}),
    })["QueueUrl"]
    return url, dlq_url


def patch_moto_receive() -> None:
    """Make moto's ReceiveMessage cost what SQS's does, not O(queue length) per message returned.

    To check a message's retention period moto re-reads every queue attribute, counting the
    whole queue three times over, for each message it returns (moto 5.2). Through a backlog of
    100 jobs that is most of the benchmark's warm run. The period is read directly instead:
    the same value, so the same answer.
    """
    from moto.core.utils import unix_time
    from moto.sqs.models import SQSBackend

    def is_message_valid_based_on_retention_period(self, queue_name: str, message) -> bool:
        retention = int(self.get_queue(queue_name).message_retention_period)
        return retention + message.sent_timestamp / 1000 > unix_time()

    SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period


def serve(argv: list[str] | None = None) -> None:
    """``moto_server`` with :func:`patch_moto_receive` applied (``python -m worker.emulator -p PORT``)."""
    from moto.server import main

    patch_moto_receive()
    main(argv)


if __name__ == "__main__":
    serve()
