"""What the local runs (demo, benchmark, load suite) and the tests share to stand in for AWS:
a free loopback port, the moto server as a subprocess, and the platform's queue layout (a queue
redriving to its DLQ after a few receives)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


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


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class MotoServer:
    """``moto_server`` as a subprocess on a free loopback port (its own process: the workers'
    traffic does not compete with this script's threads for the GIL)."""

    def __init__(self, log_path: Path, constant_receive: bool = False):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.constant_receive = constant_receive  # see patch_moto_receive
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> None:
        executable = Path(sys.executable).with_name("moto_server")
        if self.constant_receive:
            command = [sys.executable, "-m", "worker.local.emulator"]
        else:
            command = [str(executable)] if executable.exists() else [sys.executable, "-m", "moto.server"]
        with open(self.log_path, "ab") as sink:
            self.process = subprocess.Popen(command + ["-H", "127.0.0.1", "-p", str(self.port)],
                                            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.process.returncode}; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        if not wait_until(up, timeout):
            raise RuntimeError(f"moto_server did not listen on port {self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        stop_process(self.process, grace=5)


def stop_process(process: subprocess.Popen | None, grace: float = 10) -> int | None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Only the given process is signalled."""
    if process is None or process.poll() is not None:
        return None if process is None else process.returncode
    try:
        process.terminate()
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=10)


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
    """``moto_server`` with :func:`patch_moto_receive` applied (``python -m worker.local.emulator -p PORT``)."""
    from moto.server import main

    patch_moto_receive()
    main(argv)


if __name__ == "__main__":
    serve()
