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
