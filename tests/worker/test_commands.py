"""The commands the image build and the README run: selfcheck, demo, and the worker's refusal to start unconfigured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _env(**overrides) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ML_WORKER_", "AWS_", "POSTGRES_"))}
    env.pop("DATABASE_URL", None)
    env.update(HF_HUB_OFFLINE="1", **overrides)
    return env


def _run(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_the_worker_refuses_to_start_without_a_queue_or_database():
    result = _run(env=_env(), timeout=60)
    assert result.returncode == 2
    assert "ML_WORKER_SQS_QUEUE_URL" in result.stderr


@pytest.mark.slow
def test_selfcheck_maps_hemoglobin_with_no_database_and_no_aws(index_dir):
    # No AWS variables, no DATABASE_URL, no network: only the model and the reference.
    result = _run("selfcheck", env=_env(ML_WORKER_INDEX_DIR=index_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] is True
    assert report["result"]["loinc_code"] == "718-7"
    assert report["result"]["category"] == "Complete Blood Count (CBC)"
    assert report["model_version"].startswith("all-MiniLM-L6-v2")
    assert report["load_seconds"] > 0


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_locally(index_dir, tmp_path):
    # A fresh machine: no AWS profile or endpoint, no PostgreSQL settings, offline.
    result = _run("demo", env=_env(ML_WORKER_INDEX_DIR=index_dir, HOME=str(tmp_path), COLUMNS="200"))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "user 123, document 456" in out
    assert "718-7" in out and "Complete Blood Count (CBC)" in out
    assert "Leukocytes [#/volume] in Blood" in out  # official names print whole, not eaten as rich markup
    assert "done: 2/2 jobs" in out
