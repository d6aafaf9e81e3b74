"""The load suite's workload: realistic reports as good jobs (a few in the app's old format),
duplicate sends of some of them, and poison messages of each kind, in a seeded shuffled order."""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass

POISON_KINDS = ("not_json", "contract", "unknown_job_type", "bad_id")


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
    from worker.local.sample_jobs import load_sample, sample_names

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
    # Bad-id jobs are the neighbours that used to take their whole batch to the DLQ: enough of them
    # to land in many good batches, and every variant at least once.
    per_kind = {kind: poison_per_kind for kind in POISON_KINDS} | {"bad_id": max(4, jobs // 100)}
    for kind, count in per_kind.items():
        for number in range(count):
            marker = f"poison-{run}-{kind}-{number:04d}"  # fixed width: no marker is a prefix of another
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
            elif kind == "bad_id":
                # What the store cannot hold, shaped like a good job, so that it lands in good batches:
                # an id past BIGINT, or a NUL in the job id or a test name.
                bad = [
                    {"user_id": 2**63, "document_id": 8, "job_id": marker},
                    {"user_id": 7, "document_id": 2**64, "job_id": marker},
                    {"user_id": 7, "document_id": 8, "job_id": marker + "\u0000"},
                    {"user_id": 7, "document_id": 8, "job_id": marker,
                     "tests": [{"test_name": "Hemo\u0000globin", "test_value": "14.5", "test_unit": "g/dL"}]},
                ][number % 4]
                body = json.dumps({"job_type": "lab_categorization", "schema_version": 1, "poison": marker,
                                   "tests": [{"test_name": "Hemoglobin", "test_value": "14.5", "test_unit": "g/dL"}],
                                   **bad})
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
