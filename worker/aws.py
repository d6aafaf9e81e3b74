"""boto3 clients built the standard way, shared by the producer, the worker and opsctl.

Nothing here overrides the endpoint: AWS_ENDPOINT_URL, AWS_PROFILE and AWS_REGION work as
everywhere in the AWS ecosystem. Retries use botocore's standard mode.
"""

from __future__ import annotations

import boto3
from botocore.config import Config

# Without any configured region boto3 refuses to build a client; us-east-1 is its usual fallback.
FALLBACK_REGION = "us-east-1"
# SQS counts the body and the message attributes against one 256 KiB limit.
SQS_MAX_MESSAGE_BYTES = 256 * 1024
RETRY_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 5}, connect_timeout=5, read_timeout=30)


def session(profile: str | None = None, region: str | None = None) -> boto3.session.Session:
    chosen = boto3.session.Session(profile_name=profile, region_name=region)
    if chosen.region_name is None:
        chosen = boto3.session.Session(profile_name=profile, region_name=FALLBACK_REGION)
    return chosen


def client(service: str, profile: str | None = None, region: str | None = None, config: Config | None = None):
    return session(profile, region).client(service, config=RETRY_CONFIG.merge(config) if config else RETRY_CONFIG)


def sqs_message_size(body: str, attributes: dict[str, dict]) -> int:
    """Bytes SQS counts against its size limit: the body plus each attribute's name, type and value."""
    size = len(body.encode())
    for name, attribute in attributes.items():
        size += len(name.encode()) + len(attribute["DataType"].encode())
        size += len(attribute.get("StringValue", "").encode()) + len(attribute.get("BinaryValue", b""))
    return size
