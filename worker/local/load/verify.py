"""What a load run checks at the end, from the database and the queues: every good job done
exactly once with one row per test, every poison message in the DLQ with its reason, nothing left."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from worker.local.load.workload import Workload


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
