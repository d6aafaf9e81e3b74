"""The load and fault suite, small: 60 jobs through moto SQS into 3 worker processes on PostgreSQL.

Every fault kind is injected (SIGKILL and SIGTERM of a worker mid-batch, the database refusing
connections, the database answering but refusing writes, poison messages of each kind, bad-id jobs
mixed into good batches, duplicate sends); the run must lose nothing, dead-letter no good job,
duplicate nothing and dead-letter every poison message with its reason. ``python -m
worker.local.load --jobs 2000`` is the full-size run.
"""

from __future__ import annotations

import pytest

from worker.local.load.run import LoadConfig, run_load
from worker.local.load.workload import POISON_KINDS, plan_workload

pytestmark = pytest.mark.slow


def test_workload_has_every_fault_kind_and_is_seeded():
    first, second = plan_workload(60, seed=11), plan_workload(60, seed=11)
    kinds = {message.kind for message in first.messages}
    assert set(POISON_KINDS) <= kinds
    assert {"job", "legacy", "job_raw", "duplicate"} <= kinds
    assert len(first.expected) == 60
    assert [m.tests for m in first.messages] == [m.tests for m in second.messages]
    # every duplicate comes after its original
    order = [(m.kind, m.document_id) for m in first.messages]
    for position, (kind, document) in enumerate(order):
        if kind == "duplicate":
            assert order.index(("job_raw", document)) < position


def test_no_poison_marker_is_part_of_another():
    """The checker finds a poison message by its marker in the body: "...-1" must not match "...-10"."""
    markers = list(plan_workload(2000, seed=3).poison)
    assert len(markers) >= 50
    assert not [(a, b) for a in markers for b in markers if a != b and a in b]


@pytest.mark.timeout(420)
def test_sixty_jobs_under_faults_lose_and_duplicate_nothing(pg_url, packaged_model_dir):
    # pg_url gates the test on PostgreSQL being up (skip locally, fail in CI); the run uses its
    # own throwaway database so that nothing else's rows are counted.
    report = run_load(LoadConfig(jobs=60, workers=3, timeout=300))
    print(report.line())
    verdict = report.verdict
    assert report.faults.get("sigkill") == 1
    assert report.faults.get("sigterm") == 1
    assert report.faults.get("db_outage") == 1
    assert report.faults.get("db_refuses_writes") == 1
    assert report.faults.get("bad_id", 0) >= 4
    assert report.faults.get("poison", 0) >= len(POISON_KINDS) - 1
    assert report.faults.get("duplicate_sends", 0) >= 1
    assert verdict.lost == []
    assert verdict.duplicated == []
    assert verdict.unexpected_rows == 0
    assert verdict.done_jobs == 60
    assert verdict.result_rows == verdict.expected_tests
    assert verdict.poison_missing == []
    assert verdict.poison_without_reason == []
    assert verdict.poison_in_dlq == report.poison
    assert verdict.good_in_dlq == 0
    assert sum(verdict.queue_left) == 0
    assert not any("SIGTERM'd worker exited" in note for note in report.notes), report.notes
    assert report.ok
