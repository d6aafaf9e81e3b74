"""Imports show the layers: the consumer knows no database or model, the handler no SQS, and the
CLI's light commands load no ML library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "sentence_transformers", "transformers")


def loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_the_consumer_knows_nothing_about_the_database_the_model_or_lab_tests():
    modules = loaded_after("import worker.consumer")
    assert not {"sqlalchemy", "worker.contract", "worker.handler", "worker.mapping", *HEAVY} & modules


def test_the_handler_knows_nothing_about_sqs():
    modules = loaded_after("import worker.handler")
    assert not {"boto3", "worker.aws", *HEAVY} & modules


def test_healthcheck_and_help_load_no_ml_library(tmp_path):
    code = ("import os, sys\n"
            f"os.environ['ML_WORKER_HEALTH_FILE'] = {str(tmp_path / 'h')!r}\n"
            "from worker.cli import app\n"
            "for args in (['--help'], ['healthcheck']):\n"
            "    try:\n"
            "        app(args)\n"
            "    except SystemExit:\n"
            "        pass\n")
    assert not set(HEAVY) & loaded_after(code)
