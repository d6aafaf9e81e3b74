"""The processes and database of a load run: ``python -m worker`` processes teed to log files, a
throwaway PostgreSQL database, and the schema brought to head before the workers start."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from worker.local.emulator import stop_process
from worker.local.load.report import log

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


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


class WorkerRole:
    """A login role for the workers, with no superuser rights (production's database user has none), so
    that the suite can revoke its writes: the database then answers SELECT 1 but refuses every write,
    as after a failover to a read-only node or a revoked grant."""

    WRITES = "insert, update on lab_jobs, lab_test_results, lab_test_mappings"

    def __init__(self, database_url: str):
        self.database_url = database_url
        self.name = f"mlw_load_worker_{uuid.uuid4().hex[:8]}"

    def _run(self, *statements: str) -> None:
        import sqlalchemy

        admin = sqlalchemy.create_engine(self.database_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                for statement in statements:
                    connection.execute(sqlalchemy.text(statement))
        finally:
            admin.dispose()

    def create(self) -> str:
        """Create the role with the worker's grants (the schema must exist); returns its database URL."""
        from sqlalchemy.engine import make_url

        url = make_url(self.database_url)
        self._run(f'create role "{self.name}" login',
                  f'grant connect on database "{url.database}" to "{self.name}"',
                  f'grant usage on schema public to "{self.name}"',
                  f'grant select on all tables in schema public to "{self.name}"',
                  f'grant {self.WRITES} to "{self.name}"')
        return url.set(username=self.name, password=None).render_as_string(hide_password=False)

    def refuse_writes(self) -> None:
        self._run(f'revoke {self.WRITES} from "{self.name}"')

    def allow_writes(self) -> None:
        self._run(f'grant {self.WRITES} to "{self.name}"')

    def drop(self) -> None:
        self._run(f"select pg_terminate_backend(pid) from pg_stat_activity where usename = '{self.name}'",
                  f'drop owned by "{self.name}"', f'drop role if exists "{self.name}"')


# The consumer logs "messages received" (with a count) when a batch arrives: the batch is in work from then on.
BUSY_PATTERN = re.compile(r"messages received", re.IGNORECASE)
READY_PATTERN = re.compile(r"worker ready", re.IGNORECASE)
# Log events counted across all workers, to show which paths the faults exercised.
EVENT_PATTERNS = {
    "retried": re.compile(r'"message": "message will be retried"'),
    "released": re.compile(r'"message": "message released"'),
    "dead_lettered": re.compile(r'"message": "message dead-lettered"'),
    "duplicate_acks": re.compile(r'"message": "job already done'),
    "requeued": re.compile(r'"message": "message given back as a fresh copy'),
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


class Cluster:
    """The worker processes of a run: restarted when one exits by itself, watched for batches."""

    def __init__(self, workers: list[WorkerProcess], notes: list[str]):
        self.workers = workers
        self.notes = notes

    def ensure_alive(self) -> None:
        for worker in self.workers:
            if not worker.alive:
                if len(self.notes) > 20:
                    raise RuntimeError("workers keep exiting by themselves; giving up:\n" + "\n".join(self.notes[-3:]))
                self.notes.append(f"worker {worker.slot} exited by itself with {worker.process.returncode}; "
                                  f"restarted. Last lines:\n{worker.tail(6)}")
                log(self.notes[-1])
                worker.start()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            while not worker.ready.wait(1.0) and time.monotonic() < deadline:
                self.ensure_alive()

    def next_busy(self, timeout: float, clear: bool = True) -> WorkerProcess | None:
        """The first worker to report a received batch from now on."""
        for worker in self.workers:
            if clear:
                worker.busy.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for worker in self.workers:
                if worker.busy.is_set() and worker.alive:
                    return worker
            time.sleep(0.005)
        return None

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


def worker_environment(endpoint: str, queue_url: str, dlq_url: str, database_url: str,
                       visibility_timeout: int, shutdown_deadline: int, wait_time: int = 1,
                       model: str | None = None, retry_backoff: float = 10.0) -> dict[str, str]:
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
        # The suite migrates before the workers start; their role may not change the schema.
        "ML_WORKER_MIGRATE_ON_START": "false",
        "ML_WORKER_RETRY_BACKOFF": f"{retry_backoff:g}",
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
