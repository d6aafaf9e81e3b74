"""The local pipeline (``./dev demo``, ``python -m worker demo``): the whole path on one machine.

No AWS account, no PostgreSQL, no network: a moto SQS server on a free loopback port (queue +
DLQ with the platform's redrive policy), a SQLite database in a temporary directory, the worker
loop in a thread with the packaged sentence model, and the producer client the API uses. It
sends the operators' guide sample (Hemoglobin 14.5 g/dL, WBC Count 7.2 K/uL for user 123,
document 456) and a realistic report, waits until both jobs are done, prints the results and
exits 0 (1 when a job did not complete in time).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from worker.local.emulator import create_queue_with_dlq, free_port

log = logging.getLogger(__name__)

GUIDE_USER, GUIDE_DOCUMENT = 123, 456
DEFAULT_REPORT = "us_cmp"


@dataclass
class SentJob:
    label: str
    user_id: int
    document_id: int
    message_id: str


def _point_aws_at(endpoint: str) -> None:
    """The emulator stands in for AWS: the standard variables, so the code under it is unchanged."""
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo",
                      AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1")
    os.environ.pop("AWS_PROFILE", None)


def _results(db, message_ids: list[str]):
    from sqlalchemy import text

    with db.connect() as connection:
        jobs = {row.message_id: row for row in connection.execute(
            text("select job_id, message_id, status, test_count, attempts from lab_jobs")) if row.message_id in
            message_ids}
        rows = {}
        for message_id, job in jobs.items():
            rows[message_id] = connection.execute(text(
                "select test_name, test_value, test_unit, category, loinc_code, loinc_name, confidence, "
                "match_method, needs_review from lab_test_results where job_id = :job_id order by test_index"),
                {"job_id": job.job_id}).all()
    return jobs, rows


def _render(console, sent: list[SentJob], jobs, rows) -> None:
    from rich.table import Table
    from rich.text import Text  # data cells as Text: rich must not read "[#/volume]" in a LOINC name as markup

    for job in sent:
        record = jobs.get(job.message_id)
        title = f"{job.label}: user {job.user_id}, document {job.document_id}"
        if record is not None:
            title += f" (job {record.job_id[:12]}, {record.status})"
        table = Table(title=title, title_justify="left", show_lines=False)
        for column, options in (("test", {}), ("value", {"justify": "right"}), ("unit", {}), ("category", {}),
                                ("LOINC code", {}), ("name", {"overflow": "fold", "max_width": 64}),
                                ("confidence", {"justify": "right"})):
            table.add_column(column, **options)
        for row in rows.get(job.message_id, []):
            confidence = f"{row.confidence:.2f}" + (" ?" if row.needs_review else "")
            cells = (row.test_name, row.test_value or "", row.test_unit or "", row.category,
                     row.loinc_code or "-", row.loinc_name or "-", confidence)
            table.add_row(*(Text(cell) for cell in cells))
        console.print(table)


def run_demo(report: str = DEFAULT_REPORT, timeout: float = 180.0, verbose: bool = False,
             model: str | None = None) -> int:
    from rich.console import Console
    from sqlalchemy import text

    from worker.logs import configure_logging

    # A pipe gets a wide table rather than rich's 80-column default.
    console = Console(width=None if sys.stdout.isatty() else 160)
    configure_logging("INFO" if verbose else "WARNING")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    from moto.server import ThreadedMotoServer

    from worker import aws
    from worker.local.sample_jobs import load_sample
    from worker.producer import MLWorkerClient
    from worker.runtime import build_worker, load_engine
    from worker.settings import WorkerSettings
    from worker.store.db import make_engine, upgrade

    began = time.monotonic()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    _point_aws_at(endpoint)
    workdir = tempfile.TemporaryDirectory(prefix="ml-worker-demo-")
    worker = thread = db = None
    try:
        sqs = aws.client("sqs")
        queue_url, dlq_url = create_queue_with_dlq(sqs, "ml-worker-demo", visibility_timeout=60)
        database = Path(workdir.name) / "demo.db"
        settings = WorkerSettings(
            queue_url=queue_url, priority_queue_url=None, dlq_url=None, database_url_env=f"sqlite:///{database}",
            wait_time=1, visibility_timeout=60, batch_size=10, shutdown_deadline=10,
            health_file=str(Path(workdir.name) / "health"), ecs_agent_uri=None,
            model=model or os.environ.get("ML_WORKER_MODEL") or None,
        )
        db = make_engine(settings.database_url())
        upgrade(db)
        console.print(f"[bold]SQS emulator[/] {endpoint}   [bold]queue[/] {queue_url}")
        console.print(f"[bold]database[/] SQLite {database}")
        with console.status("loading the mapping engine…"):
            load_started = time.monotonic()
            engine = load_engine(settings)
            load_seconds = time.monotonic() - load_started
        console.print(f"[bold]model[/] {engine.model_version} (loaded in {load_seconds:.1f} s)")

        worker = build_worker(settings, db, engine, sqs=sqs)
        thread = threading.Thread(target=worker.run, name="worker-loop", daemon=True)
        thread.start()

        client = MLWorkerClient(queue_url, enabled=True, sqs=sqs)
        sent_at = time.monotonic()
        sent = [SentJob("operators' guide sample", GUIDE_USER, GUIDE_DOCUMENT,
                        client.send_lab_categorization_job(GUIDE_USER, GUIDE_DOCUMENT, load_sample("guide_sample")))]
        sent.append(SentJob(f"sample report {report!r}", 124, 789,
                            client.send_lab_categorization_job(124, 789, load_sample(report))))
        message_ids = [job.message_id for job in sent]
        with console.status("waiting for the worker…"):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                jobs, _ = _results(db, message_ids)
                if len(jobs) == len(sent) and all(job.status == "done" for job in jobs.values()):
                    break
                if thread is not None and not thread.is_alive():
                    break
                time.sleep(0.2)
        pipeline_seconds = time.monotonic() - sent_at
        jobs, rows = _results(db, message_ids)
        _render(console, sent, jobs, rows)
        complete = len(jobs) == len(sent) and all(job.status == "done" for job in jobs.values())
        with db.connect() as connection:
            memory = connection.execute(text("select count(*) from lab_test_mappings")).scalar()
        tests = sum(len(r) for r in rows.values())
        console.print(
            f"{'done' if complete else 'NOT DONE'}: {len(jobs)}/{len(sent)} jobs, {tests} tests in "
            f"{pipeline_seconds:.1f} s from send to results; {memory} mappings remembered; "
            f"total {time.monotonic() - began:.1f} s")
        if not complete:
            console.print(f"[red]a job did not complete within {timeout:.0f} s[/] (run with --verbose for logs)")
        return 0 if complete else 1
    finally:
        if worker is not None:
            worker.stop(5)
        if thread is not None:
            thread.join(15)
        if db is not None:
            db.dispose()
        server.stop()
        workdir.cleanup()
