"""`python -m worker bench --json` on a tiny workload: the keys are there and the figures are sane.

No timing thresholds here (DESIGN.md: a timing target is checked by the benchmark's printed
figures, never by a timed unit test).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from worker.local.bench import JSON_KEYS, bench_workload, looked_up_share

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(packaged_model_dir, tmp_path_factory):
    from worker.mapping.engine import MappingEngine

    return MappingEngine.load(packaged_model_dir, tmp_path_factory.mktemp("bench-index"), encoder_kind="torch")


def test_workload_is_seeded_and_no_two_names_are_alike_once_normalised(engine):
    from worker.mapping.types import LabTestQuery

    first, second = bench_workload(40, seed=3, engine=engine), bench_workload(40, seed=3, engine=engine)
    assert first == second
    assert bench_workload(40, seed=4, engine=engine) != first
    queries = [LabTestQuery(name=t["test_name"], unit=t["test_unit"], value=t["test_value"])
               for report in first for t in report]
    assert len(queries) > 400
    # neither the mapping memory (its key) nor the encoder (the normalised text) has seen any name twice
    assert len({engine.key(q)[0] for q in queries}) == len(queries)
    assert len({engine.normalise(q).expanded for q in queries}) == len(queries)
    # a third of the names are written inverted, and those the encoder has to read
    inverted = [q for q in queries if ", " in q.name]
    assert 0.25 < len(inverted) / len(queries) < 0.42
    assert 0.5 < looked_up_share(engine, first) < 0.8


def test_workload_that_needs_more_names_than_the_reference_gives_says_so(engine):
    with pytest.raises(ValueError, match="distinct names"):
        bench_workload(100_000, seed=3, engine=engine)


@pytest.mark.timeout(400)
def test_bench_json_prints_one_object_with_sane_figures(packaged_model_dir, tmp_path, engine):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ML_WORKER_", "AWS_"))}
    env.update(HF_HUB_OFFLINE="1", ML_WORKER_MODEL=packaged_model_dir)
    result = subprocess.run([sys.executable, "-m", "worker", "bench", "--json", "--jobs", "3"], env=env,
                            capture_output=True, text=True, timeout=360, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout
    figures = json.loads(lines[0])
    assert set(JSON_KEYS) <= set(figures)
    for key in JSON_KEYS:
        value = figures[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (key, value)
    assert figures["p50_job_latency_s"] <= figures["p95_job_latency_s"]
    assert figures["peak_rss_mb"] > 50  # a Python process with torch loaded, at the very least
    expected = figures["warm_tests_per_s"] / figures["baseline_tests_per_s"]
    assert figures["speedup_vs_baseline"] == pytest.approx(expected, rel=0.02)
    assert figures["tests"] == sum(len(report) for report in bench_workload(3, seed=7, engine=engine))
    assert 0 <= figures["cold_names_looked_up"] <= 1
    assert figures["sqs"].startswith("moto ") and "O(1)" in figures["sqs"]
