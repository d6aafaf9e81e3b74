"""The load run: the moto server and queues, a throwaway database behind a proxy, the workers, the
workload sent in phases with a round of faults in each, then the verdict (see the package docstring)."""

from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from worker.local.emulator import MotoServer, create_queue_with_dlq
from worker.local.load.faults import FaultInjector, TcpProxy, database_address, proxied_url
from worker.local.load.report import LoadReport, log
from worker.local.load.verify import done_documents, queue_counts, verify
from worker.local.load.workers import (
    Cluster,
    ThrowawayDatabase,
    WorkerProcess,
    WorkerRole,
    migrate,
    worker_environment,
)
from worker.local.load.workload import plan_workload, send_workload

MAX_RECEIVE_COUNT = 3
DESCRIPTION = "The load and fault suite: N jobs through moto SQS into worker processes writing to PostgreSQL."


@dataclass
class LoadConfig:
    jobs: int = 2000
    workers: int = 3
    database_url: str | None = None
    seed: int = 2026
    visibility_timeout: int = 30
    shutdown_deadline: int = 30
    outage_s: float = 6.0
    # Longer than three receives at the retry backoff below (3 s, then 6 s): a worker that kept
    # receiving while the database refuses writes would dead-letter good jobs.
    write_refusal_s: float = 12.0
    retry_backoff: float = 3.0
    faults: bool = True
    rounds: int | None = None  # fault rounds (SIGKILL, SIGTERM, outage, write refusal); default 1 per 500 jobs
    timeout: float | None = None
    keep: bool = False
    work_dir: Path | None = None


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

        migrate(database_url)
        role: WorkerRole | None = WorkerRole(database_url)
        try:
            worker_url = role.create()
            cleanup.callback(role.drop)  # after the workers stop (registered later, so run earlier)
        except sqlalchemy.exc.SQLAlchemyError as error:  # e.g. a given database whose user may not create roles
            notes.append(f"the workers connect as the database's owner: no role of their own ({type(error).__name__})")
            role, worker_url = None, database_url
        env = worker_environment(moto.endpoint, queue_url, dlq_url, proxied_url(worker_url, proxy.port),
                                 config.visibility_timeout, config.shutdown_deadline,
                                 retry_backoff=config.retry_backoff)
        workload = plan_workload(config.jobs, seed=config.seed)
        kinds = Counter(workload.poison.values())
        faults["poison"] = len(workload.poison) - kinds["bad_id"]
        faults["bad_id"] = kinds["bad_id"]
        faults["duplicate_sends"] = workload.duplicates
        log(f"workload: {len(workload.expected)} jobs, {workload.tests} tests, "
            f"{len(workload.messages)} messages ({len(workload.poison)} poison, {workload.duplicates} duplicates)")

        events: Counter = Counter()
        for slot in range(config.workers):
            worker = WorkerProcess(slot, env, work_dir, events)
            worker.start()
            workers.append(worker)
        cluster = Cluster(workers, notes)
        cleanup.callback(cluster.stop)
        inject = FaultInjector(cluster, proxy, faults, notes, config.shutdown_deadline, config.outage_s, role,
                               config.write_refusal_s)
        documents = set(workload.expected)
        total = len(documents)
        # The messages go out in phases; each fault is injected while a fresh phase is in work,
        # so that it hits a batch in flight whatever N is. A round is SIGKILL, SIGTERM, outage,
        # write refusal; the first phase carries 40% of the messages, the rest are split evenly.
        rounds = max(1, config.rounds or 1) if config.faults else 1
        count = len(workload.messages)
        first = int(count * 0.4)
        cuts = [0] + [first + (count - first) * k // (4 * rounds) for k in range(4 * rounds)] + [count]
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

        cluster.wait_ready(min(300, remaining()))
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
            inject.sigkill(min(120, remaining()), clear=round_number > 0)
            next_phase()
            inject.sigterm(min(120, remaining()))
            cluster.wait_ready(min(300, remaining()))
            next_phase()
            inject.db_outage(min(120, remaining()))
            next_phase()
            inject.db_refuses_writes(min(120, remaining()))
        while phase < len(phases):
            next_phase()
        log(f"everything sent: {dict(sent)}")
        # Wait for the end: every good job done and the main queue empty. A queue that stays
        # empty while jobs are still missing means nothing more can arrive: stop waiting then.
        last_progress, last_log, empty_since = -1, 0.0, None
        while remaining() > 0:
            cluster.ensure_alive()
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
        cluster.stop()
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
    parser = argparse.ArgumentParser(prog="python -m worker.local.load", description=DESCRIPTION)
    parser.add_argument("--jobs", type=int, default=2000, help="good jobs to send (default 2000)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument("--database-url", help="use this (empty) PostgreSQL database instead of a throwaway one")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--visibility-timeout", type=int, default=30)
    parser.add_argument("--outage", type=float, default=6.0, help="seconds the database refuses connections")
    parser.add_argument("--write-refusal", type=float, default=12.0,
                        help="seconds the database answers but refuses writes")
    parser.add_argument("--no-faults", action="store_true", help="no kill/term/outage (poison and duplicates stay)")
    parser.add_argument("--rounds", type=int, help="rounds of SIGKILL, SIGTERM, outage and write refusal "
                        "(default 1 per 500 jobs)")
    parser.add_argument("--timeout", type=float, help="give up after this many seconds (default 300 + 1 s per job)")
    parser.add_argument("--keep", action="store_true", help="keep the logs and the throwaway database")
    args = parser.parse_args(argv)
    config = LoadConfig(jobs=args.jobs, workers=args.workers, database_url=args.database_url, seed=args.seed,
                        visibility_timeout=args.visibility_timeout, outage_s=args.outage,
                        write_refusal_s=args.write_refusal,
                        faults=not args.no_faults, rounds=args.rounds, timeout=args.timeout, keep=args.keep)
    try:
        report = run_load(config)
    except _Stopped as stopped:
        log(f"stopped by {stopped}; cleaned up")
        return 130
    for note in report.notes:
        log(note)
    if not report.ok:
        log(report.failures())
    print(report.line(), flush=True)
    return 0 if report.ok else 1
