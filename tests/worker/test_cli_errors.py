"""`python -m worker` on bad input and bad configuration (issue 15): one line, exit 2 for usage and
configuration, 1 for failures, and never a secret in the output. Real subprocesses, real PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECRET = "Zq9-s3cret-Pw-4417"


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ML_WORKER_", "AWS_", "POSTGRES_"))}
    env.pop("DATABASE_URL", None)
    # No progress bars from the model loaders: the test reads stderr line by line.
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", ML_WORKER_HEALTH_FILE="/nonexistent/health",
               **overrides)
    return env


def _run(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker", *args], env=_env(**env), cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# Every way a secret reaches the settings, each with a configuration error beside it. The second
# member says whether the error is in the settings themselves (every command reads them) or only in
# the database URL (the healthcheck reads no database settings, so it does not see it).
SECRET_SETTINGS = {
    "heartbeat beside POSTGRES_PASSWORD": ({"POSTGRES_HOST": "db", "POSTGRES_PASSWORD": SECRET,
                                            "ML_WORKER_HEARTBEAT": "400"}, True),
    "heartbeat beside DATABASE_URL": ({"DATABASE_URL": f"postgresql://worker:{SECRET}@db/app",
                                       "ML_WORKER_HEARTBEAT": "400"}, True),
    "a bad batch size": ({"POSTGRES_HOST": "db", "POSTGRES_PASSWORD": SECRET, "ML_WORKER_BATCH_SIZE": "many"}, True),
    "the password in the port": ({"POSTGRES_HOST": "db", "POSTGRES_PORT": SECRET}, True),
    "an unparsable port in DATABASE_URL": ({"DATABASE_URL": f"postgresql://worker:{SECRET}@db:port/app"}, False),
    "an unparsable DATABASE_URL": ({"DATABASE_URL": f"{SECRET} is not a url"}, False),
    "a DATABASE_URL of an unknown driver": ({"DATABASE_URL": f"mongodb://worker:{SECRET}@db/app"}, False),
}
COMMANDS = {"the worker": (), "healthcheck": ("healthcheck",), "db upgrade": ("db", "upgrade"),
            "memory set": ("memory", "set", "Hb", "718-7")}


@pytest.mark.parametrize("case", list(SECRET_SETTINGS))
def test_configuration_errors_exit_2_in_one_line_and_never_echo_a_secret(case):
    settings, in_settings = SECRET_SETTINGS[case]
    for name, args in COMMANDS.items():
        result = _run(*args, ML_WORKER_SQS_QUEUE_URL="http://127.0.0.1:1/q", **settings, timeout=60)
        output = result.stdout + result.stderr
        assert SECRET not in output, f"{name}: {output}"
        assert "Traceback" not in output, f"{name}: {output}"
        if name == "healthcheck" and not in_settings:
            assert result.returncode == 1  # unhealthy: no loop has run here
            continue
        assert result.returncode == 2, f"{name}: exit {result.returncode}: {output}"
        if name != "the worker":  # the worker logs JSON lines; the commands print one line
            assert _one_line_error(result).startswith("error: ")


def test_an_unreachable_database_is_a_one_line_failure_without_the_password():
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:1/nothing"
    upgrade = _run("db", "upgrade", DATABASE_URL=url, timeout=60)
    assert upgrade.returncode == 1
    line = _one_line_error(upgrade)
    assert "database" in line and SECRET not in line
    worker = _run(DATABASE_URL=url, ML_WORKER_SQS_QUEUE_URL="http://127.0.0.1:1/q", timeout=60)
    assert worker.returncode == 1 and SECRET not in worker.stdout + worker.stderr


def test_db_upgrade_to_an_unknown_revision_is_one_line(pg_url):
    result = _run("db", "upgrade", "no-such-revision", DATABASE_URL=pg_url, timeout=60)
    assert result.returncode == 2
    assert "no-such-revision" in _one_line_error(result)


def test_memory_set_refuses_a_name_without_letters_or_digits(pg_url):
    for name in ("...", "🙂"):
        result = _run("memory", "set", name, "718-7", "--unit", "g/dL", DATABASE_URL=pg_url)
        assert result.returncode == 2
        assert "no letters or digits" in _one_line_error(result)


def test_eval_on_a_file_it_cannot_read_is_a_usage_error(tmp_path):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x01bad")
    for path in (wrong, binary):
        result = _run("eval", str(path))
        assert result.returncode == 2
        assert str(path.name) in _one_line_error(result)
