"""The behaviour people expect: help with examples everywhere, exit codes, one-line errors, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from opsctl.cli import app

OPSCTL = Path(sys.executable).with_name("opsctl")
COMMANDS = [["queue", "depth"], ["dlq", "peek"], ["dlq", "redrive"], ["dlq", "purge"], ["logs", "tail"],
            ["send-test"], ["service", "status"], ["scaling", "show"], ["redeploy"], ["deploy"], ["doctor"]]


@pytest.mark.parametrize("command", [[]] + [c[:1] for c in COMMANDS if len(c) == 2] + COMMANDS,
                         ids=lambda c: " ".join(c) or "root")
def test_every_command_has_help_with_examples(runner, command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout and "Examples" in result.stdout
    assert "$ opsctl" in result.stdout
    assert "\x1b[" not in result.stdout  # no colour off a terminal


def test_root_help_lists_global_options_and_completion(runner):
    result = runner.invoke(app, ["--help"])
    for option in ("--profile", "--region", "--env", "--json", "--install-completion", "--version"):
        assert option in result.stdout


def test_version(runner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("opsctl ")


@pytest.mark.parametrize("args", [
    ["queue", "depth", "--bogus"],
    ["dlq", "peek", "-n", "many"],
    ["dlq", "peek", "-n", "0"],
    ["logs", "tail", "--since"],
    ["logs", "tail", "--since", "a while"],
    ["send-test", "--priority", "urgent"],
    ["nosuchnoun"],
    ["queue", "nosuchverb"],
    ["--env"],
], ids=lambda a: " ".join(a))
def test_bad_flags_exit_2_with_one_line_and_a_hint(runner, args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("opsctl: error: ")
    assert "(hint: see 'opsctl" in result.stderr and "--help')" in result.stderr
    assert "Traceback" not in result.output


def test_missing_credentials_is_one_line_exit_1(stack, runner, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for args in (["queue", "depth"], ["doctor"], ["dlq", "peek", "--dlq-url", stack.dlq_url], ["logs", "tail"]):
        result = runner.invoke(app, ["--env", "test", *args])
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr == ("opsctl: error: no AWS credentials found (hint: pass --profile, set AWS_PROFILE "
                                 "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run 'aws sso login')\n")
        assert result.stdout == ""


def test_unknown_profile_is_one_line(stack, runner):
    result = runner.invoke(app, ["--profile", "nope", "--env", "test", "queue", "depth"])
    assert result.exit_code == 1
    assert "profile (nope) could not be found" in result.stderr and result.stderr.count("\n") == 1


def test_an_unexpected_error_is_one_line_too(stack, runner, monkeypatch):
    def boom(state):
        raise RuntimeError("something odd\nsecond line")

    monkeypatch.setattr("opsctl.queues.fetch_depth", boom)
    result = runner.invoke(app, ["--env", "test", "queue", "depth"])
    assert result.exit_code == 1
    assert result.stderr == ("opsctl: error: unexpected error: RuntimeError: something odd second line "
                             "(hint: rerun with OPSCTL_DEBUG=1 for the traceback)\n")


def test_opsctl_never_imports_torch_or_the_database_driver_up_front():
    code = ("import sys, opsctl.cli; bad = [m for m in ('torch', 'transformers', 'sentence_transformers', "
            "'sqlalchemy', 'psycopg2') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# -- the installed console script, in a real subprocess ----------------------------------------
def run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    for name in ("ML_WORKER_SQS_QUEUE_URL", "ML_WORKER_DLQ_URL", "OPSCTL_ENV", "COLUMNS"):
        environment.pop(name, None)
    return subprocess.run([str(OPSCTL), *args], capture_output=True, text=True, timeout=120, env=environment)


def test_console_script_against_moto(stack):
    stack.send(stack.queue_url, "{}")
    done = run_script("--env", "test", "queue", "depth", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["queues"][0] == {
        "name": "test-ml-worker-queue", "url": stack.queue_url, "visible": 1, "in_flight": 0, "delayed": 0,
        "oldest_age_s": None}
    table = run_script("--env", "test", "queue", "depth")
    assert "test-ml-worker-dlq" in table.stdout and "\x1b[" not in table.stdout


def test_console_script_errors_and_completion():
    bad = run_script("queue", "depth", "--nope")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == "opsctl: error: No such option: --nope (hint: see 'opsctl queue depth --help')\n"
    completion = run_script("--show-completion", "bash")
    assert completion.returncode == 0 and "_OPSCTL_COMPLETE=complete_bash" in completion.stdout
