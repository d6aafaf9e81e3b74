"""Failures the worker must survive: the database refusing connections mid-batch, SIGTERM mid-batch.

"Mid-batch" is made real, not simulated: the test holds an ACCESS EXCLUSIVE lock on
lab_test_results, so the worker's result insert waits inside its transaction; the test then cuts
the database (a TCP proxy in front of PostgreSQL) or signals the worker process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import sqlalchemy
from sqlalchemy import text

from worker.contract import new_job
from worker.store.db import make_engine

TESTS = [{"test_name": "Hemoglobin", "test_value": "14.5", "test_unit": "g/dL"},
         {"test_name": "WBC Count", "test_value": "7.2", "test_unit": "K/uL"},
         {"test_name": "Platelet Count", "test_value": "250", "test_unit": "10^3/uL"}]


def depth(sqs, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def waiting(sqs, url: str) -> int:
    """Messages in the queue: visible, in flight or delayed (a copy given back waits out its delay)."""
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed"])["Attributes"]
    return sum(int(value) for value in attributes.values())


def send_jobs(sqs, url: str, count: int) -> list[str]:
    ids = []
    for n in range(count):
        job = new_job(100 + n, 200 + n, TESTS)
        sqs.send_message(QueueUrl=url, MessageBody=job.to_body(), MessageAttributes=job.message_attributes())
        ids.append(job.job_id)
    return ids


def counts(db, job_ids: list[str]) -> dict[str, tuple]:
    with db.connect() as connection:
        rows = connection.execute(text(
            "select j.job_id, j.status, j.attempts, count(r.test_index) as results, "
            "count(distinct r.test_index) as distinct_results "
            "from lab_jobs j left join lab_test_results r using (job_id) "
            "where j.job_id = any(:ids) group by j.job_id, j.status, j.attempts"), {"ids": job_ids}).all()
    return {row.job_id: (row.status, row.attempts, row.results, row.distinct_results) for row in rows}


def attempts(db, job_id: str) -> int:
    with db.connect() as connection:
        value = connection.execute(text("select attempts from lab_jobs where job_id = :id"), {"id": job_id}).scalar()
    return value or 0


@contextmanager
def results_table_locked(db):
    """Hold an exclusive lock on lab_test_results: the worker's insert waits until it is released."""
    connection = db.connect()
    transaction = connection.begin()
    connection.execute(text("lock table lab_test_results in access exclusive mode"))
    try:
        yield
    finally:
        transaction.rollback()
        connection.close()


def worker_waiting_on_lock(db) -> bool:
    with db.connect() as connection:
        return bool(connection.execute(text(
            "select count(*) from pg_stat_activity where datname = current_database() "
            "and application_name = 'ml-worker' and wait_event_type = 'Lock'")).scalar())


def test_database_refusing_connections_mid_batch(sqs, queues, db, pg_url, pg_proxy, run_worker, waiter):
    proxied_url = sqlalchemy.engine.make_url(pg_url).set(port=pg_proxy.port)
    proxied = make_engine(proxied_url)
    job_ids = send_jobs(sqs, queues.url, 3)
    try:
        with run_worker(database=proxied, retry_backoff=3, retry_backoff_max=3) as worker:
            with results_table_locked(db):
                waiter(lambda: worker_waiting_on_lock(db), what="the worker to be inside its write")
                pg_proxy.stop()  # connections reset, new ones refused
            # Failed by the outage, the batch is given back as fresh copies: no receive spent.
            waiter(lambda: worker.consumer.stats.requeued >= 3, what="the batch to be given back")
            # Nothing lost, nothing half-written (the originals deleted only once copied).
            assert waiting(sqs, queues.url) == 3
            assert worker.consumer.stats.deleted == 3
            state = counts(db, job_ids)
            assert all(status == "processing" and results == 0 for status, _, results, _ in state.values())
            # While the database is down the worker probes it instead of receiving: the copies,
            # visible after their 3 s delay, keep their receives for when it is back.
            time.sleep(6)
            assert worker.consumer.stats.received == 3
            assert depth(sqs, queues.url) == (3, 0)
            pg_proxy.start()
            waiter(lambda: all(s[0] == "done" for s in counts(db, job_ids).values()) and len(
                counts(db, job_ids)) == 3, timeout=60, what="every job to complete once the database is back")
            waiter(lambda: depth(sqs, queues.url) == (0, 0), what="the queue to empty")
    finally:
        proxied.dispose()
    # Each job exactly once: one row per test; the first attempt counted.
    assert {job_id: (s[0], s[2], s[3]) for job_id, s in counts(db, job_ids).items()} == {
        job_id: ("done", 3, 3) for job_id in job_ids}
    assert all(s[1] == 2 for s in counts(db, job_ids).values())  # one failed attempt, one good
    with db.connect() as connection:
        assert connection.execute(text("select count(*) from lab_jobs where error is not null")).scalar() == 0


def _worker_env(queues, pg_url, packaged_model_dir, index_dir, tmp_path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ML_WORKER_SQS_QUEUE_URL=queues.url, DATABASE_URL=pg_url, ML_WORKER_WAIT_TIME="1",
        ML_WORKER_VISIBILITY_TIMEOUT="300", ML_WORKER_SHUTDOWN_DEADLINE="3", ML_WORKER_MODEL=packaged_model_dir,
        ML_WORKER_INDEX_DIR=index_dir, ML_WORKER_HEALTH_FILE=str(tmp_path / "health"), HF_HUB_OFFLINE="1",
        LOG_LEVEL="INFO", PYTHONUNBUFFERED="1",
    )
    for name in ("ECS_AGENT_URI", "ML_WORKER_PRIORITY_QUEUE_URL", "ML_WORKER_DLQ_URL", "POSTGRES_HOST"):
        env.pop(name, None)
    return env


def _start(env, log_path):
    log = open(log_path, "ab")  # noqa: SIM115 - closed by the caller through the process
    return subprocess.Popen([sys.executable, "-m", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def test_sigterm_mid_batch_exits_in_time_and_releases_the_batch(sqs, queues, db, pg_url, packaged_model_dir,
                                                                 index_dir, mapping_engine, tmp_path, waiter):
    env = _worker_env(queues, pg_url, packaged_model_dir, index_dir, tmp_path)
    log_path = tmp_path / "worker.log"
    job_ids = send_jobs(sqs, queues.url, 4)
    with results_table_locked(db):
        process = _start(env, log_path)
        try:
            # (At start the worker's keying of older results meets the lock too, and gives up after 2 s.)
            waiter(lambda: (worker_waiting_on_lock(db) and depth(sqs, queues.url) == (0, 4))
                   or process.poll() is not None, timeout=120, what="the worker to be inside its write")
            assert process.poll() is None, log_path.read_text()
            assert depth(sqs, queues.url) == (0, 4)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
            exit_seconds = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                process.kill()
        # Unfinished messages are visible again at once (not after the 300 s visibility timeout).
        assert depth(sqs, queues.url) == (4, 0)
    assert code == 0, log_path.read_text()
    print(f"SIGTERM to exit with a batch stuck mid-write: {exit_seconds:.2f} s (deadline 3 s)")
    assert exit_seconds < 3 + 5, f"stopped in {exit_seconds:.1f} s"
    output = log_path.read_text()
    assert "shutdown deadline reached" in output and "message released" in output
    assert "could not key the older results" in output  # it gave up on the lock and went on to the jobs
    assert all(result == 0 for _, _, result, _ in counts(db, job_ids).values())

    process = _start(env, log_path)
    try:
        waiter(lambda: len(counts(db, job_ids)) == 4 and all(s[0] == "done" for s in counts(db, job_ids).values()),
               timeout=120, what="every job to complete after the restart")
        waiter(lambda: depth(sqs, queues.url) == (0, 0), what="the queue to empty")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert {job_id: (s[0], s[2], s[3]) for job_id, s in counts(db, job_ids).items()} == {
        job_id: ("done", 3, 3) for job_id in job_ids}


def test_a_timeout_records_attempts_and_last_error_then_the_redrive_takes_over(sqs, queues, db, pg_url, run_worker,
                                                                               waiter):
    """The database is up but the write times out (a lock held elsewhere): retried with backoff, the
    job row counts attempts and keeps the last error; after the third receive SQS moves the message
    to the DLQ and the job is marked failed."""
    impatient = make_engine(pg_url, connect_args={"options": "-c lock_timeout=300", "application_name": "ml-worker"})
    [job_id] = send_jobs(sqs, queues.url, 1)
    try:
        with results_table_locked(db), run_worker(database=impatient, retry_backoff=1, retry_backoff_max=2):
            waiter(lambda: attempts(db, job_id) >= 3 and sqs.receive_message(
                QueueUrl=queues.dlq_url, VisibilityTimeout=0).get("Messages"), timeout=60,
                what="three attempts and the redrive")
    finally:
        impatient.dispose()
    with db.connect() as connection:
        job = connection.execute(text("select * from lab_jobs where job_id = :id"), {"id": job_id}).one()
    assert (job.status, job.attempts) == ("failed", 3)
    assert "lock" in job.error.lower()
    assert depth(sqs, queues.url) == (0, 0)
