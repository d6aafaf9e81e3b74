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

from worker.local.bench import JSON_KEYS, bench_workload

pytestmark = pytest.mark.slow


def test_workload_is_seeded_and_every_name_is_new():
    first, second = bench_workload(12, seed=3), bench_workload(12, seed=3)
    assert first == second
    names = [test["test_name"] for report in first for test in report]
    assert len(names) == len(set(names))
    assert bench_workload(12, seed=4) != first


@pytest.mark.timeout(400)
def test_bench_json_prints_one_object_with_sane_figures(packaged_model_dir, tmp_path):
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
    assert figures["tests"] == sum(len(report) for report in bench_workload(3, seed=7))
    assert figures["sqs"].startswith("moto ") and "O(1)" in figures["sqs"]
