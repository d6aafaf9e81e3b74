"""Resource resolution: flag, then environment variable, then SSM, then Pulumi outputs, then the names."""

from __future__ import annotations

import json
import os
import stat


def main_queue(opsctl, *args: str) -> str:
    result = opsctl("queue", "depth", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["queues"][0]["url"]


def other_queue(stack, name: str) -> str:
    return stack.client("sqs").create_queue(QueueName=name)["QueueUrl"]


def test_flag_beats_env_beats_ssm(stack, opsctl, monkeypatch):
    from_env, from_flag = other_queue(stack, "from-env"), other_queue(stack, "from-flag")
    assert main_queue(opsctl) == stack.queue_url  # SSM
    monkeypatch.setenv("ML_WORKER_SQS_QUEUE_URL", from_env)
    assert main_queue(opsctl) == from_env
    assert main_queue(opsctl, "--queue-url", from_flag) == from_flag


def test_ssm_beats_the_naming_convention(stack, opsctl):
    custom = other_queue(stack, "custom-main")
    stack.client("ssm").put_parameter(Name="/zivohealth/test/ml_worker/queue_url", Value=custom, Overwrite=True,
                                      Type="String")
    assert main_queue(opsctl) == custom


def fake_pulumi(directory, outputs: dict | None, exit_code: int = 0):
    script = directory / "pulumi"
    payload = json.dumps(outputs or {})
    script.write_text(f"#!/bin/sh\n[ \"$1 $2 $3 $4 $5\" = \"stack output --json --stack test\" ] || exit 3\n"
                      f"echo '{payload}'\nexit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_pulumi_outputs_when_ssm_has_nothing(make_stack, opsctl, monkeypatch, tmp_path):
    stack = make_stack(ssm=False)
    from_pulumi = other_queue(stack, "from-pulumi")
    fake_pulumi(tmp_path, {"ml_worker_queue_url": from_pulumi, "ml_worker_dlq_url": stack.dlq_url})
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    result = opsctl("doctor", "--json", "--only", "queue")
    assert json.loads(result.stdout)["resources"]["queue_url"] == "Pulumi output ml_worker_queue_url"
    assert main_queue(opsctl) == from_pulumi


def test_a_failing_pulumi_falls_through_to_the_naming_convention(make_stack, opsctl, monkeypatch, tmp_path):
    stack = make_stack(ssm=False)
    fake_pulumi(tmp_path, None, exit_code=255)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert main_queue(opsctl) == stack.queue_url
    result = opsctl("doctor", "--json", "--only", "logs", "--only", "queue")
    sources = json.loads(result.stdout)["resources"]
    assert sources["queue_url"] == "queue named test-ml-worker-queue"
    assert sources["log_group"] == "naming convention"


def test_env_selects_the_stack(stack, opsctl):
    result = opsctl("queue", "depth", env="staging")
    assert result.exit_code == 1
    assert "no queue found for env 'staging'" in result.stderr
