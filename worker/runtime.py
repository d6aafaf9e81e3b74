"""The worker's entry point: the one place that wires settings, logging, store, engine and consumer.

``python -m worker`` calls :func:`run_worker`. The order at start: settings, JSON logging,
database engine and migrations (under the advisory lock of ``worker.store.db.upgrade``, so
tasks starting together do not race), the mapping engine, then the consumer loop. SIGTERM and
SIGINT stop it gracefully (a second signal shortens the deadline to nothing).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field

from worker.consumer import Consumer, ConsumerOptions
from worker.handler import JobStats, LabCategorizationHandler
from worker.health import HealthFile
from worker.logs import configure_logging
from worker.protection import TaskProtection
from worker.settings import ConfigError, WorkerSettings, load_settings

log = logging.getLogger("worker")


def consumer_options(settings: WorkerSettings) -> ConsumerOptions:
    return ConsumerOptions(
        batch_size=settings.batch_size,
        wait_time=settings.wait_time,
        visibility_timeout=settings.visibility_timeout,
        heartbeat=settings.heartbeat_seconds,
        retry_backoff=settings.retry_backoff,
        retry_backoff_max=settings.retry_backoff_max,
        shutdown_deadline=settings.shutdown_deadline,
        dlq_url=settings.dlq_url,
    )


def load_engine(settings: WorkerSettings):
    """The mapping engine for these settings (imports torch: call it once per process)."""
    # Log lines are JSON objects only: no progress bars from the model loaders.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from worker.mapping.engine import MappingEngine

    started = time.monotonic()
    engine = MappingEngine.load(settings.model, settings.index_dir, encoder_kind=settings.encoder)
    log.info("mapping engine loaded", extra={"model_version": engine.model_version,
                                             "seconds": round(time.monotonic() - started, 2)})
    return engine


def check_encoder(settings: WorkerSettings) -> None:
    """Fail fast, before the database, if the chosen encoder cannot run here: ``EncoderUnavailableError``
    (e.g. ML_WORKER_ENCODER=torch in the worker image, which has no PyTorch)."""
    from worker.mapping import encoder, model

    name, kind = model.resolve_model(settings.model), model.resolve_encoder(settings.encoder)
    encoder.check_encoder(name, kind, model.resolve_index_dir(settings.index_dir))


def open_database(settings: WorkerSettings, migrate: bool | None = None):
    from worker.store.db import make_engine, upgrade

    db = make_engine(settings.database_url())
    if settings.migrate_on_start if migrate is None else migrate:
        upgrade(db)
    return db


@dataclass
class Worker:
    """A consumer with its handler, health file, task protection and stats, ready to run."""

    settings: WorkerSettings
    consumer: Consumer
    handler: LabCategorizationHandler
    health: HealthFile
    protection: TaskProtection
    stats: JobStats
    _last_stats: float = field(default_factory=time.monotonic)

    def run(self) -> None:
        self.health.touch()
        try:
            self.consumer.run()
        finally:
            self.protection.idle()
            self.log_stats()

    def stop(self, deadline: float | None = None) -> None:
        self.consumer.stop(deadline)

    def on_poll(self) -> None:
        self.health.touch()
        if time.monotonic() - self._last_stats >= self.settings.stats_interval:
            self.log_stats()

    def log_stats(self) -> None:
        self._last_stats = time.monotonic()
        consumer = self.consumer.stats
        log.info("stats", extra={**self.stats.snapshot(), "received": consumer.received,
                                 "deleted": consumer.deleted, "retried": consumer.retried,
                                 "dead_lettered": consumer.dead_lettered, "released": consumer.released,
                                 "requeued": consumer.requeued})


def build_worker(settings: WorkerSettings, db, engine, sqs=None) -> Worker:
    stats = JobStats()
    handler = LabCategorizationHandler(db, engine, stats)
    protection = TaskProtection(settings.ecs_agent_uri, settings.visibility_timeout)
    health = HealthFile(settings.health_file)
    consumer = Consumer(settings.queue_urls(), handler, decode=handler.decode, options=consumer_options(settings),
                        sqs=sqs, on_busy=protection.busy, on_idle=protection.idle, ready=handler.ready)
    worker = Worker(settings, consumer, handler, health, protection, stats)
    consumer.on_poll = worker.on_poll
    return worker


class _Signals:
    """SIGTERM/SIGINT from the very start: a stop requested while the engine loads is honoured too."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.worker: Worker | None = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.handle)
            signal.signal(signal.SIGINT, self.handle)

    def attach(self, worker: Worker) -> None:
        self.worker = worker
        if self.received:
            worker.stop(0)

    def handle(self, signum, frame) -> None:
        self.received.append(signum)
        name = signal.Signals(signum).name
        if self.worker is None:
            log.warning("%s received while starting: stopping", name, extra={"signal": name})
        elif len(self.received) == 1:
            log.warning("%s received: stopping within %.0f s", name, self.worker.settings.shutdown_deadline,
                        extra={"signal": name})
            self.worker.stop()
        else:
            log.warning("%s received again: releasing the batch now", name, extra={"signal": name})
            self.worker.stop(0)


def run_worker() -> int:
    """Run the consumer until SIGTERM/SIGINT; the process's exit code (0 after a graceful stop)."""
    try:
        settings = load_settings()
    except ConfigError as error:
        configure_logging("INFO")
        log.error("configuration error: %s", error)
        return 2
    configure_logging(settings.log_level)
    try:
        settings.queue_urls()
        settings.database_url()
    except ConfigError as error:
        log.error("configuration error: %s", error)
        return 2
    from worker.mapping.model import EncoderUnavailableError

    try:
        check_encoder(settings)
    except ValueError as error:  # EncoderUnavailableError, or an encoder.json that is not JSON
        log.error("configuration error: %s", error)
        return 2
    signals = _Signals()
    signals.install()
    started = time.monotonic()
    try:
        db = open_database(settings)
    except Exception:  # the task exits non-zero and ECS starts another; say why first
        log.exception("could not open or migrate the database")
        return 1
    from worker.mapping.decide import MissingCalibrationError

    try:
        engine = load_engine(settings)
    except (MissingCalibrationError, EncoderUnavailableError) as error:
        log.error("configuration error: %s", error)
        return 2
    worker = build_worker(settings, db, engine)
    signals.attach(worker)

    def between_chunks() -> bool:  # keying older results is progress too (the health check); a signal stops it
        worker.health.touch()
        return bool(signals.received)

    worker.handler.backfill_keys(should_stop=between_chunks)
    log.info("worker ready", extra={"seconds": round(time.monotonic() - started, 2),
                                    "model_version": engine.model_version, "on_ecs": worker.protection.active})
    worker.run()
    db.dispose()
    log.info("worker stopped", extra={"abandoned": worker.consumer.abandoned})
    if worker.consumer.abandoned:
        # The abandoned batch's thread may still be inside the database driver or torch; its
        # messages are released and will be redelivered. Leave without waiting for it.
        logging.shutdown()
        os._exit(0)
    return 0
