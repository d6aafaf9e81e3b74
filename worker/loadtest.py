"""The load and fault suite: N jobs through moto SQS into 3 worker processes writing to PostgreSQL.

    python -m worker.loadtest --jobs 2000 [--workers 3] [--database-url URL]
    ./dev load --jobs 2000

What it does, all on loopback and all torn down at the end:

1. starts a moto server (a subprocess) and creates the platform's queue layout: the main queue
   redriving to a DLQ after 3 receives, with a short visibility timeout so the run finishes;
2. creates a throwaway PostgreSQL database on 127.0.0.1:5432 (unless ``--database-url`` is
   given) and puts a small TCP proxy in front of it: the workers reach the database only
   through the proxy, so the suite can make the database refuse connections for a while;
3. sends N jobs of realistic reports (the bundled sample reports, a seeded random mix) through
   the producer client, plus a few legacy-format jobs (no job id, the app's old producer),
   duplicate sends of the same job body, and poison messages of each kind (not JSON, contract
   failures, an unknown job type);
4. runs 3 ``python -m worker`` processes with the packaged model, and injects faults: SIGKILL
   of a worker mid-batch (then a restart), SIGTERM of another mid-batch (then a restart), the
   database refusing connections for a few seconds;
5. waits (bounded) until every good job is done and the queues are empty, then checks from the
   database and the queues: every good job done exactly once, one result row per test, no
   duplicate rows, every poison message in the DLQ with a ``FailureReason`` attribute.

It prints one line of figures and exits non-zero when anything was lost or duplicated, when a
poison message is missing from the DLQ, or when the queues are not empty.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from worker.emulator import create_queue_with_dlq, free_port

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
MAX_RECEIVE_COUNT = 3
POISON_KINDS = ("not_json", "contract", "unknown_job_type")


def log(message: str) -> None:
    print(f"[load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# --------------------------------------------------------------------------------------------
# moto server


class MotoServer:
    """``moto_server`` as a subprocess on a free loopback port (its own process: the workers'
    traffic does not compete with this script's threads for the GIL)."""

    def __init__(self, log_path: Path, constant_receive: bool = False):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.constant_receive = constant_receive  # see worker.emulator.patch_moto_receive
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> None:
        executable = Path(sys.executable).with_name("moto_server")
        if self.constant_receive:
            command = [sys.executable, "-m", "worker.emulator"]
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


# --------------------------------------------------------------------------------------------
# the database and the proxy in front of it


class ThrowawayDatabase:
    """A database created on the admin server for this run and dropped at the end."""

    def __init__(self, admin_url: str = PG_ADMIN_URL, prefix: str = "mlw_load"):
        self.admin_url = admin_url
        self.name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.url = admin_url.rsplit("/", 1)[0] + f"/{self.name}"

    def create(self) -> str:
        import sqlalchemy

        admin = sqlalchemy.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(sqlalchemy.text(f'create database "{self.name}"'))
        finally:
            admin.dispose()
        return self.url

    def drop(self) -> None:
        import sqlalchemy

        admin = sqlalchemy.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(sqlalchemy.text(f'drop database if exists "{self.name}" with (force)'))
        finally:
            admin.dispose()


class TcpProxy:
    """A loopback TCP proxy whose listener can be closed (connections refused, open ones cut)
    and reopened on the same port: the database "refusing connections for a while"."""

    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="db-proxy", daemon=True)
        self.connections_cut = 0

    def start(self) -> None:
        self.up()
        self._thread.start()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def up(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            deadline = time.monotonic() + 10
            while True:
                try:
                    listener.bind(("127.0.0.1", self.port))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            listener.listen(64)
            listener.setblocking(False)
            self._listener = listener
            self._selector.register(listener, selectors.EVENT_READ, ("accept", None))
        self._wake()

    def down(self) -> None:
        """Close the listener (new connections are refused) and cut every open connection."""
        with self._lock:
            if self._listener is not None:
                self._selector.unregister(self._listener)
                self._listener.close()
                self._listener = None
            pairs, self._pairs = self._pairs, set()
            for client, server in pairs:
                self.connections_cut += 1
                for sock in (client, server):
                    self._forget(sock)
        self._wake()

    def _forget(self, sock: socket.socket) -> None:
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def close(self) -> None:
        self._closed = True
        self.down()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._closed:
            for key, _ in self._selector.select(timeout=0.5):
                kind, pair = key.data
                if kind == "wake":
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                elif kind == "accept":
                    self._accept()
                else:
                    self._pump(key.fileobj, pair)

    def _accept(self) -> None:
        with self._lock:
            if self._listener is None:
                return
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, OSError):
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                return
            client.setblocking(False)
            server.setblocking(False)
            pair = (client, server)
            self._pairs.add(pair)
            self._selector.register(client, selectors.EVENT_READ, ("data", pair))
            self._selector.register(server, selectors.EVENT_READ, ("data", pair))

    def _pump(self, source: socket.socket, pair: tuple[socket.socket, socket.socket]) -> None:
        target = pair[1] if source is pair[0] else pair[0]
        try:
            data = source.recv(65536)
            if data:
                target.setblocking(True)
                target.settimeout(10)
                target.sendall(data)
                target.setblocking(False)
                return
        except OSError:
            pass
        with self._lock:
            if pair in self._pairs:
                self._pairs.discard(pair)
                for sock in pair:
                    self._forget(sock)


def proxied_url(database_url: str, proxy_port: int) -> str:
    """The same database URL with host and port replaced by the proxy's."""
    parts = urlsplit(database_url)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return parts._replace(netloc=f"{userinfo}127.0.0.1:{proxy_port}").geturl()


def database_address(database_url: str) -> tuple[str, int]:
    parts = urlsplit(database_url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


# --------------------------------------------------------------------------------------------
# the workload


@dataclass
class PlannedMessage:
    kind: str  # "job", "legacy", "duplicate", or one of POISON_KINDS
    document_id: int | None = None
    user_id: int | None = None
    tests: list[dict] | None = None
    body: str | None = None
    attributes: dict | None = None
    marker: str | None = None  # poison messages carry a unique marker in their body
    job: object | None = None  # a built job (LabCategorizationJob), sent twice as a duplicate


@dataclass
class Workload:
    messages: list[PlannedMessage]
    expected: dict[int, int]  # document_id -> number of tests, for every good job
    poison: dict[str, str]  # marker -> kind
    duplicates: int

    @property
    def tests(self) -> int:
        return sum(self.expected.values())


def sample_reports() -> list[tuple[str, list[dict]]]:
    from worker.sample_jobs import load_sample, sample_names

    return [(name, load_sample(name)) for name in sample_names()]


def realistic_tests(rng: random.Random, reports: list[tuple[str, list[dict]]]) -> list[dict]:
    """One report: one or two sample panels, as a lab prints several panels on one report."""
    panels = rng.sample(reports, k=1 if rng.random() < 0.7 else 2)
    tests = [dict(test) for _, panel in panels for test in panel]
    return tests


def plan_workload(jobs: int, seed: int = 2026, poison_per_kind: int | None = None,
                  duplicates: int | None = None, legacy: int | None = None) -> Workload:
    """A seeded mix: ``jobs`` good jobs (a few of them in the legacy format), duplicate sends
    of some of them, and poison messages of each kind, in a shuffled order."""
    rng = random.Random(seed)
    reports = sample_reports()
    poison_per_kind = max(1, jobs // 200) if poison_per_kind is None else poison_per_kind
    duplicates = max(2, jobs // 100) if duplicates is None else duplicates
    legacy = max(1, jobs // 100) if legacy is None else legacy
    run = uuid.uuid4().hex[:8]
    messages: list[PlannedMessage] = []
    expected: dict[int, int] = {}
    base_document = rng.randrange(10_000_000, 90_000_000)
    for index in range(jobs):
        document_id = base_document + index
        user_id = 1000 + rng.randrange(500)
        tests = realistic_tests(rng, reports)
        expected[document_id] = len(tests)
        if index < legacy:
            # The app's old producer: no job_id, no schema_version, numbers as numbers.
            old_tests = []
            for test in tests:
                value = test.get("test_value")
                try:
                    value = float(value) if value is not None and "." in value else int(value)
                except (TypeError, ValueError):
                    pass
                old_tests.append({**test, "test_value": value})
            body = json.dumps({"job_type": "lab_categorization", "user_id": user_id,
                               "document_id": document_id, "tests": old_tests})
            messages.append(PlannedMessage("legacy", document_id, user_id, tests, body=body))
        else:
            messages.append(PlannedMessage("job", document_id, user_id, tests))
    # Duplicate sends: the same body (same job_id) twice. Built through the contract so that the
    # job id is known; the first copy goes where the job would have gone, the second later.
    from worker.contract import new_job

    dup_targets = [m for m in messages if m.kind == "job"][:duplicates]
    for target in dup_targets:
        job = new_job(target.user_id, target.document_id, target.tests)
        target.kind = "job_raw"
        target.job = job
        messages.append(PlannedMessage("duplicate", target.document_id, target.user_id, target.tests, job=job))
    poison: dict[str, str] = {}
    for number in range(poison_per_kind):
        for kind in POISON_KINDS:
            marker = f"poison-{run}-{kind}-{number}"
            poison[marker] = kind
            if kind == "not_json":
                body = f"{{'job_type': 'lab_categorization', truncated {marker}"
            elif kind == "contract":
                broken = [
                    {"user_id": -5, "document_id": 1, "tests": [{"test_name": "Hemoglobin"}]},
                    {"user_id": 7, "document_id": 8, "tests": []},
                    {"user_id": 7, "document_id": 8, "test_count": 3, "tests": [{"test_name": "TSH"}]},
                    {"user_id": 7, "document_id": 8, "tests": [{"test_value": "14.5"}]},
                ][number % 4]
                body = json.dumps({"job_type": "lab_categorization", "schema_version": 1,
                                   "job_id": marker, "poison": marker, **broken})
            else:
                body = json.dumps({"job_type": "pdf_ocr", "schema_version": 1, "job_id": marker,
                                   "poison": marker, "user_id": 7, "document_id": 8,
                                   "tests": [{"test_name": "Hemoglobin"}]})
            messages.append(PlannedMessage(kind, body=body, marker=marker,
                                           attributes={"JobType": {"DataType": "String",
                                                                   "StringValue": "lab_categorization"}}))
    duplicates_to_place = [m for m in messages if m.kind == "duplicate"]
    messages = [m for m in messages if m.kind != "duplicate"]
    rng.shuffle(messages)
    # Each second copy goes somewhere after its original, as a retried send would.
    for copy in duplicates_to_place:
        original = next(i for i, m in enumerate(messages) if m.kind == "job_raw" and m.document_id == copy.document_id)
        messages.insert(rng.randint(original + 1, len(messages)), copy)
    return Workload(messages=messages, expected=expected, poison=poison, duplicates=len(dup_targets))


def send_workload(messages: list[PlannedMessage], queue_url: str, sqs) -> dict[str, int]:
    """Send planned messages: good jobs through the producer client, the rest raw."""
    from worker.producer import MLWorkerClient

    client = MLWorkerClient(queue_url=queue_url, enabled=True, sqs=sqs)
    sent: Counter = Counter()
    for message in messages:
        if message.kind == "job":
            client.send_lab_categorization_job(message.user_id, message.document_id, message.tests)
        elif message.job is not None:  # an original whose duplicate follows, or the duplicate
            client.send_job(message.job)
        else:
            kwargs = {"QueueUrl": queue_url, "MessageBody": message.body}
            if message.attributes:
                kwargs["MessageAttributes"] = message.attributes
            sqs.send_message(**kwargs)
        sent[message.kind] += 1
    return dict(sent)


# --------------------------------------------------------------------------------------------
# worker processes

# The consumer logs "messages received" (with a count) when a batch arrives: the batch is in work from then on.
BUSY_PATTERN = re.compile(r"messages received", re.IGNORECASE)
READY_PATTERN = re.compile(r"worker ready", re.IGNORECASE)
# Log events counted across all workers, to show which paths the faults exercised.
EVENT_PATTERNS = {
    "retried": re.compile(r'"message": "message will be retried"'),
    "released": re.compile(r'"message": "message released"'),
    "dead_lettered": re.compile(r'"message": "message dead-lettered"'),
    "duplicate_acks": re.compile(r'"message": "job already done'),
}


class WorkerProcess:
    """One ``python -m worker`` in its own session, its output teed to a log file.

    ``busy`` is set when the worker logs that it received messages: that is "mid-batch".
    """

    def __init__(self, slot: int, env: dict[str, str], log_dir: Path, events: Counter | None = None):
        self.slot = slot
        self.events = events if events is not None else Counter()
        self.env = env
        self.log_dir = log_dir
        self.generation = 0
        self.process: subprocess.Popen | None = None
        self.busy = threading.Event()
        self.ready = threading.Event()
        self.started_at = 0.0
        self.log_path: Path | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self.generation += 1
        self.busy.clear()
        self.ready.clear()
        self.log_path = self.log_dir / f"worker{self.slot}.{self.generation}.log"
        self.started_at = time.monotonic()
        env = {**self.env, "ML_WORKER_HEALTH_FILE": str(self.log_dir / f"health-{self.slot}")}
        self.process = subprocess.Popen([sys.executable, "-m", "worker"], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self._reader = threading.Thread(target=self._read, args=(self.process, self.log_path),
                                        name=f"worker{self.slot}-log", daemon=True)
        self._reader.start()

    def _read(self, process: subprocess.Popen, path: Path) -> None:
        with open(path, "wb") as sink:
            for line in iter(process.stdout.readline, b""):
                sink.write(line)
                sink.flush()
                text = line.decode("utf-8", "replace")
                if BUSY_PATTERN.search(text) and '"count": 0' not in text:
                    self.busy.set()
                elif READY_PATTERN.search(text):
                    self.ready.set()
                for event, pattern in EVENT_PATTERNS.items():
                    if pattern.search(text):
                        self.events[event] += 1

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self, deadline: float) -> tuple[int | None, float]:
        """SIGTERM and wait; returns (exit code, seconds to exit). SIGKILL after ``deadline``."""
        if not self.alive:
            return self.process.returncode if self.process else None, 0.0
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            code = None
        return code, time.monotonic() - began

    def stop(self) -> None:
        stop_process(self.process, grace=30)
        if self._reader:
            self._reader.join(timeout=5)

    def tail(self, lines: int = 20) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def worker_environment(endpoint: str, queue_url: str, dlq_url: str, database_url: str,
                       visibility_timeout: int, shutdown_deadline: int, wait_time: int = 1,
                       model: str | None = None) -> dict[str, str]:
    from worker.mapping.model import packaged_model_dir

    env = dict(os.environ)
    for key in list(env):
        if key.startswith(("ML_WORKER_", "POSTGRES_")) or key in ("AWS_PROFILE", "ECS_AGENT_URI"):
            env.pop(key)
    env.update({
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "ML_WORKER_SQS_QUEUE_URL": queue_url,
        "ML_WORKER_DLQ_URL": dlq_url,
        "ML_WORKER_WAIT_TIME": str(wait_time),
        "ML_WORKER_BATCH_SIZE": "10",
        "ML_WORKER_VISIBILITY_TIMEOUT": str(visibility_timeout),
        "ML_WORKER_SHUTDOWN_DEADLINE": str(shutdown_deadline),
        "DATABASE_URL": database_url,
        "ML_WORKER_STATS_INTERVAL": "15",
        "LOG_LEVEL": "INFO",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # Three workers share this machine's cores: one intra-op thread each avoids oversubscription.
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
        "PYTHONUNBUFFERED": "1",
    })
    chosen = model or packaged_model_dir()
    if chosen:
        env["ML_WORKER_MODEL"] = chosen
    return env


def migrate(database_url: str) -> None:
    """Bring the schema to head once before the workers start (each worker would, under a lock)."""
    from worker.store.db import make_engine, upgrade

    engine = make_engine(database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------
# observing and verifying


def queue_counts(sqs, queue_url: str) -> tuple[int, int, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                        "ApproximateNumberOfMessagesDelayed"])["Attributes"]
    return (int(attributes.get("ApproximateNumberOfMessages", 0)),
            int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)))


def done_documents(engine, documents: set[int] | None = None) -> int:
    """How many distinct documents have a job in status done (the progress figure)."""
    import sqlalchemy

    with engine.connect() as connection:
        rows = connection.execute(sqlalchemy.text(
            "select distinct document_id from lab_jobs where status = 'done'")).all()
    found = {row[0] for row in rows}
    return len(found & documents) if documents is not None else len(found)


def drain_dlq(sqs, dlq_url: str, timeout: float = 60) -> list[dict]:
    """Every message in the DLQ (received with a long visibility so each is seen once)."""
    seen: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    empty_rounds = 0
    while time.monotonic() < deadline and empty_rounds < 2:
        response = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=600,
                                       WaitTimeSeconds=0, MessageAttributeNames=["All"],
                                       AttributeNames=["All"])
        batch = response.get("Messages", [])
        empty_rounds = 0 if batch else empty_rounds + 1
        for message in batch:
            seen[message["MessageId"]] = message
    return list(seen.values())


@dataclass
class Verdict:
    expected_jobs: int
    expected_tests: int
    done_jobs: int = 0
    result_rows: int = 0
    lost: list[int] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected_rows: int = 0
    good_in_dlq: int = 0
    poison_in_dlq: int = 0
    poison_extra_copies: int = 0
    poison_without_reason: list[str] = field(default_factory=list)
    poison_missing: list[str] = field(default_factory=list)
    dlq_total: int = 0
    queue_left: tuple[int, int, int] = (0, 0, 0)
    failed_job_rows: int = 0

    @property
    def ok(self) -> bool:
        return (not self.lost and not self.duplicated and not self.unexpected_rows and not self.poison_missing
                and not self.poison_without_reason and not self.good_in_dlq and sum(self.queue_left) == 0)


def verify(engine, sqs, queue_url: str, dlq_url: str, workload: Workload) -> Verdict:
    import sqlalchemy

    verdict = Verdict(expected_jobs=len(workload.expected), expected_tests=workload.tests)
    with engine.connect() as connection:
        rows = connection.execute(sqlalchemy.text(
            "select job_id, document_id, test_index from lab_test_results")).all()
        jobs = {row[0]: row[1] for row in connection.execute(sqlalchemy.text(
            "select job_id, status from lab_jobs")).all()}
    verdict.result_rows = len(rows)
    verdict.failed_job_rows = sum(1 for status in jobs.values() if status != "done")
    by_document: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for job_id, document_id, test_index in rows:
        by_document[document_id][job_id].append(test_index)
    for document_id, count in workload.expected.items():
        per_job = by_document.get(document_id)
        if not per_job:
            verdict.lost.append(document_id)
            continue
        if len(per_job) > 1:
            verdict.duplicated.append(f"document {document_id}: {len(per_job)} jobs")
        for job_id, indexes in per_job.items():
            if len(indexes) != len(set(indexes)) or len(indexes) > count:
                verdict.duplicated.append(f"job {job_id}: {len(indexes)} rows for {count} tests")
            elif (sorted(indexes) != list(range(count)) or jobs.get(job_id) != "done") \
                    and document_id not in verdict.lost:
                verdict.lost.append(document_id)
        if all(jobs.get(job_id) == "done" for job_id in per_job):
            verdict.done_jobs += 1
    verdict.unexpected_rows = sum(len(indexes) for document_id, per_job in by_document.items()
                                  if document_id not in workload.expected for indexes in per_job.values())
    dlq = drain_dlq(sqs, dlq_url)
    verdict.dlq_total = len(dlq)
    found: set[str] = set()
    copies = 0
    for message in dlq:
        body = message.get("Body", "")
        marker = next((m for m in workload.poison if m in body), None)
        if marker is None:
            verdict.good_in_dlq += 1
            continue
        copies += 1
        found.add(marker)
        reason = message.get("MessageAttributes", {}).get("FailureReason", {}).get("StringValue")
        if not reason:
            verdict.poison_without_reason.append(marker)
    # At-least-once: a worker killed between dead-lettering a message and deleting it from the
    # source queue dead-letters it again on redelivery. Extra copies are counted, not an error.
    verdict.poison_in_dlq = len(found)
    verdict.poison_extra_copies = copies - len(found)
    verdict.poison_missing = sorted(set(workload.poison) - found)
    verdict.queue_left = queue_counts(sqs, queue_url)
    return verdict


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class LoadConfig:
    jobs: int = 2000
    workers: int = 3
    database_url: str | None = None
    seed: int = 2026
    visibility_timeout: int = 30
    shutdown_deadline: int = 30
    outage_s: float = 6.0
    faults: bool = True
    rounds: int | None = None  # fault rounds (SIGKILL, SIGTERM, outage); default 1 per 500 jobs
    timeout: float | None = None
    keep: bool = False
    work_dir: Path | None = None


@dataclass
class LoadReport:
    jobs: int
    tests: int
    messages: int
    faults: dict[str, int]
    poison: int
    verdict: Verdict
    wall_s: float
    notes: list[str] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    def line(self) -> str:
        v = self.verdict
        faults = ",".join(f"{kind}:{count}" for kind, count in self.faults.items() if count)
        return (f"load: jobs={self.jobs} tests={self.tests} messages={self.messages} "
                f"faults={sum(self.faults.values())} ({faults}) "
                f"done={v.done_jobs} lost={len(v.lost)} duplicated={len(v.duplicated)} "
                f"dlq={v.poison_in_dlq}/{self.poison} poison"
                f"{'' if not v.poison_extra_copies else f' (+{v.poison_extra_copies} extra copies)'}"
                f"{'' if not v.good_in_dlq else f' +{v.good_in_dlq} good'} "
                f"queues_left={sum(v.queue_left)} wall={self.wall_s:.1f}s "
                f"[worker events: {', '.join(f'{k}={self.events.get(k, 0)}' for k in EVENT_PATTERNS)}] "
                f"result={'PASS' if self.ok else 'FAIL'}")


class _Stopped(Exception):
    pass


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM/SIGINT to this script end the run through the normal clean-up path."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Stopped(f"signal {signum}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_load(config: LoadConfig) -> LoadReport:
    import boto3
    import sqlalchemy

    began = time.monotonic()
    if config.rounds is None:
        config.rounds = max(1, config.jobs // 500)
    timeout = config.timeout or (300 + 1.0 * config.jobs)
    hard_deadline = began + timeout
    work_dir = config.work_dir or Path(tempfile.mkdtemp(prefix="mlw-load-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    faults: Counter = Counter()
    notes: list[str] = []
    workers: list[WorkerProcess] = []
    with ExitStack() as cleanup, _signals_raise():
        moto = MotoServer(work_dir / "moto.log")
        moto.start()
        cleanup.callback(moto.stop)
        log(f"moto server on {moto.endpoint}; logs in {work_dir}")
        sqs = boto3.client("sqs", endpoint_url=moto.endpoint, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        queue_url, dlq_url = create_queue_with_dlq(sqs, "ml-worker-load", config.visibility_timeout,
                                                   MAX_RECEIVE_COUNT)

        database_url = config.database_url
        if database_url is None:
            database = ThrowawayDatabase()
            database_url = database.create()
            if not config.keep:
                cleanup.callback(database.drop)
            log(f"database {database.name} created")
        host, port = database_address(database_url)
        proxy = TcpProxy(host, port)
        proxy.start()
        cleanup.callback(proxy.close)
        engine = sqlalchemy.create_engine(database_url, pool_pre_ping=True)
        cleanup.callback(engine.dispose)

        env = worker_environment(moto.endpoint, queue_url, dlq_url, proxied_url(database_url, proxy.port),
                                 config.visibility_timeout, config.shutdown_deadline)
        migrate(database_url)
        workload = plan_workload(config.jobs, seed=config.seed)
        faults["poison"] = len(workload.poison)
        faults["duplicate_sends"] = workload.duplicates
        log(f"workload: {len(workload.expected)} jobs, {workload.tests} tests, "
            f"{len(workload.messages)} messages ({len(workload.poison)} poison, {workload.duplicates} duplicates)")

        events: Counter = Counter()
        for slot in range(config.workers):
            worker = WorkerProcess(slot, env, work_dir, events)
            worker.start()
            workers.append(worker)

        def stop_workers() -> None:
            for worker in workers:
                worker.stop()

        cleanup.callback(stop_workers)
        documents = set(workload.expected)
        total = len(documents)
        # The messages go out in phases; each fault is injected while a fresh phase is in work,
        # so that it hits a batch in flight whatever N is. A round is SIGKILL, SIGTERM, outage;
        # the first phase carries 40% of the messages, the rest are split evenly.
        rounds = max(1, config.rounds or 1) if config.faults else 1
        count = len(workload.messages)
        first = int(count * 0.4)
        cuts = [0] + [first + (count - first) * k // (3 * rounds) for k in range(3 * rounds)] + [count]
        phases = [workload.messages[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
        sent: Counter = Counter()

        def send_phase(number: int) -> None:
            sent.update(send_workload(phases[number], queue_url, sqs))

        def progress() -> int:
            try:
                return done_documents(engine, documents)
            except sqlalchemy.exc.SQLAlchemyError:
                return 0  # the tables may not exist yet

        def remaining() -> float:
            return hard_deadline - time.monotonic()

        def ensure_alive() -> None:
            for worker in workers:
                if not worker.alive:
                    if len(notes) > 20:
                        raise RuntimeError("workers keep exiting by themselves; giving up:\n" + "\n".join(notes[-3:]))
                    notes.append(f"worker {worker.slot} exited by itself with {worker.process.returncode}; "
                                 f"restarted. Last lines:\n{worker.tail(6)}")
                    log(notes[-1])
                    worker.start()

        def wait_ready(timeout: float) -> None:
            deadline = time.monotonic() + timeout
            for worker in workers:
                while not worker.ready.wait(1.0) and time.monotonic() < deadline:
                    ensure_alive()

        def next_busy(timeout: float, clear: bool = True) -> WorkerProcess | None:
            """The first worker to report a received batch from now on."""
            for worker in workers:
                if clear:
                    worker.busy.clear()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for worker in workers:
                    if worker.busy.is_set() and worker.alive:
                        return worker
                time.sleep(0.005)
            return None

        wait_ready(min(300, remaining()))
        log("workers ready")
        for worker in workers:
            worker.busy.clear()
        phase = 0

        def next_phase() -> None:
            nonlocal phase
            send_phase(phase)
            log(f"phase {phase + 1}/{len(phases)} sent ({len(phases[phase])} messages)")
            phase += 1

        for round_number in range(rounds):
            next_phase()
            if not config.faults or remaining() < 120:
                continue
            # 1. SIGKILL the first worker seen taking a batch, then restart it (as ECS would).
            victim = next_busy(min(120, remaining()), clear=round_number > 0)
            if victim is not None:
                victim.kill()
                faults["sigkill"] += 1
                log(f"SIGKILL worker {victim.slot} mid-batch")
                victim.start()
            else:
                notes.append("SIGKILL skipped: no worker took a batch within 120 s")
            next_phase()
            # 2. SIGTERM the next worker seen taking a batch: it must exit 0 within its deadline.
            victim = next_busy(min(120, remaining()))
            if victim is not None:
                code, took = victim.terminate(config.shutdown_deadline + 15)
                faults["sigterm"] += 1
                log(f"SIGTERM worker {victim.slot} mid-batch: exit {code} after {took:.1f} s")
                if code != 0:
                    notes.append(f"the SIGTERM'd worker exited with {code} after {took:.1f} s")
                victim.start()
            else:
                notes.append("SIGTERM skipped: no worker took a batch within 120 s")
            wait_ready(min(300, remaining()))
            next_phase()
            # 3. The database refuses connections (and open ones are cut) while a batch is in work.
            next_busy(min(120, remaining()))
            proxy.down()
            faults["db_outage"] += 1
            log(f"database down for {config.outage_s:.0f} s (connections refused)")
            time.sleep(config.outage_s)
            proxy.up()
            log(f"database back ({proxy.connections_cut} connections cut so far)")
        while phase < len(phases):
            next_phase()
        log(f"everything sent: {dict(sent)}")
        # Wait for the end: every good job done and the main queue empty. A queue that stays
        # empty while jobs are still missing means nothing more can arrive: stop waiting then.
        last_progress, last_log, empty_since = -1, 0.0, None
        while remaining() > 0:
            ensure_alive()
            visible, in_flight, delayed = queue_counts(sqs, queue_url)
            current = progress()
            if visible + in_flight + delayed == 0 and current >= total:
                break
            if visible + in_flight + delayed == 0:
                empty_since = empty_since or time.monotonic()
                if time.monotonic() - empty_since > 60:
                    notes.append(f"the queue stayed empty for 60 s with {total - current} jobs not done")
                    break
            else:
                empty_since = None
            if current != last_progress and time.monotonic() - last_log >= 5:
                last_progress, last_log = current, time.monotonic()
                log(f"progress {current}/{total} jobs done; queue {visible} visible, {in_flight} in flight")
            time.sleep(1)
        else:
            notes.append(f"timed out after {timeout:.0f} s")
        wall = time.monotonic() - began
        for worker in workers:
            worker.stop()
        verdict = verify(engine, sqs, queue_url, dlq_url, workload)
        report = LoadReport(jobs=len(workload.expected), tests=workload.tests, messages=len(workload.messages),
                            poison=len(workload.poison), faults=dict(faults), verdict=verdict, wall_s=wall,
                            notes=notes, events=dict(events))
        if not report.ok or config.keep:
            config.keep = True
            log(f"keeping worker logs in {work_dir}")
        if not report.ok:
            for worker in workers:
                log(f"worker {worker.slot} last lines:\n{worker.tail()}")
    if not config.keep and config.work_dir is None:
        shutil.rmtree(work_dir, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="good jobs to send (default 2000)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument("--database-url", help="use this (empty) PostgreSQL database instead of a throwaway one")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--visibility-timeout", type=int, default=30)
    parser.add_argument("--outage", type=float, default=6.0, help="seconds the database refuses connections")
    parser.add_argument("--no-faults", action="store_true", help="no kill/term/outage (poison and duplicates stay)")
    parser.add_argument("--rounds", type=int, help="rounds of SIGKILL, SIGTERM and outage (default 1 per 500 jobs)")
    parser.add_argument("--timeout", type=float, help="give up after this many seconds (default 300 + 1 s per job)")
    parser.add_argument("--keep", action="store_true", help="keep the logs and the throwaway database")
    args = parser.parse_args(argv)
    config = LoadConfig(jobs=args.jobs, workers=args.workers, database_url=args.database_url, seed=args.seed,
                        visibility_timeout=args.visibility_timeout, outage_s=args.outage,
                        faults=not args.no_faults, rounds=args.rounds, timeout=args.timeout, keep=args.keep)
    try:
        report = run_load(config)
    except _Stopped as stopped:
        log(f"stopped by {stopped}; cleaned up")
        return 130
    for note in report.notes:
        log(note)
    v = report.verdict
    if not v.ok:
        log(f"lost documents: {v.lost[:10]}; duplicated: {v.duplicated[:10]}; unexpected rows: "
            f"{v.unexpected_rows}; poison missing from the DLQ: {v.poison_missing[:10]}; "
            f"poison without FailureReason: {v.poison_without_reason[:10]}; good jobs in the DLQ: "
            f"{v.good_in_dlq}; main queue left (visible, in flight, delayed): {v.queue_left}")
    print(report.line(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
