"""Fixtures for the worker's tests: a migrated PostgreSQL database, the mapping engine (once per session)."""

from __future__ import annotations

import socket
import threading
import time

import pytest


@pytest.fixture(scope="session")
def db_engine(pg_url):
    """The session's PostgreSQL database, migrated to head by the worker's own upgrade."""
    from worker.store.db import make_engine, upgrade

    engine = make_engine(pg_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def db(db_engine):
    """The migrated database, emptied for this test."""
    from sqlalchemy import text

    with db_engine.begin() as connection:
        connection.execute(text("truncate lab_test_results, lab_jobs, lab_test_mappings, lab_review_changes, "
                                "lab_review_decisions"))
    return db_engine


@pytest.fixture(scope="session")
def index_dir():
    """The reference's embedding index, shared with worker subprocesses.

    The engine's own cache directory (ML_WORKER_INDEX_DIR or ~/.cache/zivo-ml-worker/index): the
    index is keyed by model and reference version, so reusing it across sessions is safe and
    saves a full re-embedding of the reference on a busy 2-core machine.
    """
    from worker.mapping.model import resolve_index_dir

    return str(resolve_index_dir(None))


@pytest.fixture(scope="session")
def mapping_engine(packaged_model_dir, index_dir):
    """The real engine on the shipped reference with the packaged model, loaded once per session."""
    from worker.mapping.engine import MappingEngine

    return MappingEngine.load(packaged_model_dir, index_dir)


@pytest.fixture
def worker_settings(queues, pg_url, tmp_path):
    """Settings for an in-process worker on the test's queues and database: short polls and backoffs."""
    from worker.settings import WorkerSettings

    return WorkerSettings(
        queue_url=queues.url, priority_queue_url=None, dlq_url=None, database_url_env=pg_url,
        wait_time=1, visibility_timeout=30, heartbeat=5, retry_backoff=1, retry_backoff_max=5,
        shutdown_deadline=5, health_file=str(tmp_path / "health"), ecs_agent_uri=None, migrate_on_start=False,
    )


class RunningWorker:
    """The runtime's worker (consumer + handler + health + protection) running in a thread."""

    def __init__(self, settings, db, engine):
        from worker.runtime import build_worker

        self.worker = build_worker(settings, db, engine)
        self.thread = threading.Thread(target=self.worker.run, name="test-worker", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.worker

    def __exit__(self, *exc):
        self.worker.stop(5)
        self.thread.join(20)
        assert not self.thread.is_alive(), "the worker did not stop"


@pytest.fixture
def run_worker(worker_settings, db, mapping_engine):
    """``with run_worker() as worker:`` runs a worker on the test's queues; keyword overrides go to the settings."""

    def start(settings=None, database=None, engine=None, **overrides):
        settings = settings or worker_settings
        if overrides:
            settings = settings.model_copy(update=overrides)
        return RunningWorker(settings, database or db, engine or mapping_engine)

    return start


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):
    """Poll until ``predicate()`` is truthy; returns its value or fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def waiter():
    return wait_for


class TcpProxy:
    """A TCP proxy in front of PostgreSQL that a test can cut (connections reset, port refusing) and restore."""

    def __init__(self, upstream_port: int = 5432, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and reset the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone would not
            except OSError:
                pass
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def pg_proxy():
    proxy = TcpProxy()
    proxy.start()
    yield proxy
    proxy.stop()
