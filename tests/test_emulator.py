"""The benchmark's SQS stand-in: moto with its ReceiveMessage made O(1) per message returned.

The patch is checked against moto's own answer, in a fresh interpreter so that this process's
moto (the other tests' server) stays as released.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import boto3

from worker.local.emulator import MotoServer

AGREEMENT = textwrap.dedent("""
    from moto.sqs.models import Message, SQSBackend
    from worker.local.emulator import patch_moto_receive

    backend = SQSBackend("us-east-1", "123456789012")
    backend.create_queue("q", MessageRetentionPeriod="60")
    fresh, stale = Message("fresh", "a"), Message("stale", "b")
    fresh.mark_sent()
    stale.mark_sent()
    stale.sent_timestamp -= 61_000
    check = SQSBackend.is_message_valid_based_on_retention_period
    before = [check(backend, "q", m) for m in (fresh, stale)]
    patch_moto_receive()
    after = [SQSBackend.is_message_valid_based_on_retention_period(backend, "q", m) for m in (fresh, stale)]
    print(before, after)
""")


def test_patched_retention_check_gives_moto_s_answer():
    result = subprocess.run([sys.executable, "-c", AGREEMENT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[True, False] [True, False]"


def test_patched_server_is_an_sqs_endpoint(tmp_path):
    server = MotoServer(tmp_path / "moto.log", constant_receive=True)
    server.start()
    try:
        sqs = boto3.client("sqs", endpoint_url=server.endpoint, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        for number in range(12):
            sqs.send_message(QueueUrl=url, MessageBody=str(number))
        bodies = []
        while len(bodies) < 12:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
            bodies += [m["Body"] for m in messages]
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
        assert sorted(bodies, key=int) == [str(n) for n in range(12)]
        assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []) == []
    finally:
        server.stop()
