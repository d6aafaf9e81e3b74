"""logs tail against a moto log group."""

from __future__ import annotations

import json

WORKER_LINES = [
    {"ts": "2026-11-28T10:00:00+00:00", "level": "INFO", "message": "job done", "job_id": "j-1",
     "message_id": "m-1", "user_id": 123, "document_id": 456, "receive_count": 1},
    {"timestamp": "2026-11-28T10:00:01+00:00", "level": "ERROR", "message": "poison message dead-lettered",
     "job_id": "j-2", "receive_count": 3, "error": "tests: empty"},
]


def test_tail_renders_json_lines_readably_newest_last(stack, opsctl):
    stack.log(WORKER_LINES[0], stream="worker/a", age_s=60)
    stack.log(WORKER_LINES[1], "plain text line", stream="worker/b")
    result = opsctl("logs", "tail")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("2026-11-28 10:00:00 UTC INFO    job done")
    assert "job_id=j-1 message_id=m-1 user_id=123 document_id=456 receive_count=1" in lines[0]
    assert "ERROR" in lines[1] and "poison message dead-lettered" in lines[1] and "error=tests: empty" in lines[1]
    assert lines[2].endswith("plain text line")
    assert "{" not in result.stdout


def test_tail_json_prints_raw_lines(stack, opsctl):
    stack.log(*WORKER_LINES)
    result = opsctl("logs", "tail", "--json")
    assert result.exit_code == 0
    assert [json.loads(line) for line in result.stdout.splitlines()] == WORKER_LINES


def test_tail_since_and_filter(stack, opsctl):
    stack.log({"level": "INFO", "message": "old one"}, stream="s1", age_s=3 * 3600)
    stack.log({"level": "INFO", "message": "recent one"}, {"level": "ERROR", "message": "recent failure"},
              stream="s2", age_s=60)
    recent = opsctl("logs", "tail", "--since", "10m")
    assert "recent one" in recent.stdout and "old one" not in recent.stdout
    both = opsctl("logs", "tail", "--since", "4h")
    assert "old one" in both.stdout
    filtered = opsctl("logs", "tail", "--since", "4h", "--filter", "failure")
    assert "recent failure" in filtered.stdout and "recent one" not in filtered.stdout


def test_tail_follow_prints_new_events_until_ctrl_c(stack, opsctl, monkeypatch):
    stack.log({"level": "INFO", "message": "first"}, stream="s1")
    polls = []

    def sleep(seconds):
        polls.append(seconds)
        if len(polls) == 1:
            stack.log({"level": "INFO", "message": "second"}, stream="s2")
        elif len(polls) > 2:
            raise KeyboardInterrupt

    monkeypatch.setattr("opsctl.logs.time.sleep", sleep)
    result = opsctl("logs", "tail", "--follow", "--interval", "1")
    assert result.exit_code == 0, result.output
    messages = [line.split("INFO", 1)[1].strip() for line in result.stdout.splitlines()]
    assert messages == ["first", "second"]  # each event once


def test_tail_missing_log_group_and_bad_since(make_stack, opsctl):
    make_stack(logs=False)
    missing = opsctl("logs", "tail")
    assert missing.exit_code == 1
    assert "log group /ecs/test-ml-worker does not exist" in missing.stderr
    bad = opsctl("logs", "tail", "--since", "yesterday-ish")
    assert bad.exit_code == 2
    assert bad.stderr.count("\n") == 1 and "--since" in bad.stderr


def test_log_group_flag_overrides_ssm(stack, opsctl):
    stack.client("logs").create_log_group(logGroupName="/custom")
    stack.log_group = "/custom"
    stack.log({"level": "WARNING", "message": "from the custom group"})
    result = opsctl("logs", "tail", "--log-group", "/custom")
    assert "from the custom group" in result.stdout


def test_tail_renders_the_workers_own_log_format(stack, opsctl):
    """Lines made by worker.logs.JsonFormatter (the worker's logging), exception included."""
    import logging

    from worker.logs import JsonFormatter

    formatter = JsonFormatter()
    done = logging.LogRecord("worker.consumer", logging.INFO, __file__, 1, "job %s done", ("j-9",), None)
    done.__dict__.update(job_id="j-9", message_id="m-9", receive_count=2)
    try:
        raise ValueError("bad row")
    except ValueError:
        import sys

        failed = logging.LogRecord("worker.store", logging.ERROR, __file__, 2, "write failed", (), sys.exc_info())
    stack.log(formatter.format(done), formatter.format(failed))
    result = opsctl("logs", "tail")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "INFO    job j-9 done  job_id=j-9 message_id=m-9 receive_count=2" in lines[0]
    assert "logger" not in lines[0]
    assert "ERROR   write failed" in lines[1]
    assert lines[2] == "    Traceback (most recent call last):" and lines[-1] == "    ValueError: bad row"
