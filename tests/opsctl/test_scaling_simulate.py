"""`opsctl scaling simulate`: the deployed policies read through the API (moto), or the local stack file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "platform"))

from mlw_config import PlatformConfig  # noqa: E402
from mlw_scaling_rules import scaling_alarms, scaling_policies  # noqa: E402

BURST = "0,0,12,15,9,4" + ",0" * 14
BURST_DESIRED = [0, 0, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 1, 0, 0, 0, 0, 0]


def stack_config(env: str = "test", **extra) -> PlatformConfig:
    return PlatformConfig(region="us-east-1", environment=env, vpc_id="vpc-1", private_subnet_ids=("subnet-1",),
                          database_host="db", database_name="app",
                          api_role_arn="arn:aws:iam::210987654321:role/api", **extra)


def deploy_platform_scaling(stack, cfg: PlatformConfig) -> None:
    """Register the platform's own policies and alarms through the APIs, as `pulumi up` would."""
    aas, cloudwatch = stack.client("application-autoscaling"), stack.client("cloudwatch")
    resource_id = f"service/{stack.cluster}/{stack.service}"
    aas.register_scalable_target(ServiceNamespace="ecs", ResourceId=resource_id,
                                 ScalableDimension="ecs:service:DesiredCount", MinCapacity=cfg.min_capacity,
                                 MaxCapacity=cfg.max_capacity)
    arns = {}
    for policy in scaling_policies(cfg):
        arns[policy["PolicyName"]] = aas.put_scaling_policy(
            ServiceNamespace="ecs", ResourceId=resource_id, ScalableDimension="ecs:service:DesiredCount",
            **policy)["PolicyARN"]
    for alarm in scaling_alarms(cfg):
        cloudwatch.put_metric_alarm(**{**alarm, "AlarmActions": [arns[a] for a in alarm["AlarmActions"]]})


def desired(result) -> list[int]:
    assert result.exit_code == 0, result.output
    return [m["desired"] for m in json.loads(result.stdout)["minutes"]]


def test_simulates_the_deployed_policies(make_stack, opsctl):
    stack = make_stack(scaling=False)
    deploy_platform_scaling(stack, stack_config())
    result = opsctl("scaling", "simulate", "--depths", BURST, "--json")
    assert desired(result) == BURST_DESIRED
    data = json.loads(result.stdout)
    assert data["source"] == "deployed policies of service/test-ml-worker/test-ml-worker"
    assert (data["queue"], data["min"], data["max"], data["changes"]) == ("test-ml-worker-queue", 0, 3, 4)
    assert data["minutes"][2]["events"] == ["test-ml-worker-scale-out: 12 → 3"]
    assert data["minutes"][2]["alarms"] == {"test-ml-worker-scale-in": "OK", "test-ml-worker-scale-out": "ALARM"}


def test_the_table(make_stack, opsctl):
    stack = make_stack(scaling=False)
    deploy_platform_scaling(stack, stack_config())
    result = opsctl("scaling", "simulate", "--depths", "5,6,5,6,-,-")
    assert result.exit_code == 0, result.output
    assert "capacity 0..3, depth on test-ml-worker-queue" in result.stdout
    assert "test-ml-worker-scale-out: 6 → 2" in result.stdout
    assert "2 change(s) of the desired count in 6 minute(s)" in result.stdout


def test_other_deployed_policies_simulate_as_they_are(stack, opsctl):
    """The fixture's stack has ChangeInCapacity policies on 1-minute alarms: +3 at depth 60, again after the
    60 s cooldown (capped at its max of 4), and -4 at the first empty minute."""
    result = opsctl("scaling", "simulate", "--depths", "60,60,60,0,0", "--json")
    assert desired(result) == [3, 4, 4, 0, 0]


def test_simulates_the_local_stack_file(tmp_path, opsctl, make_stack):
    make_stack(scaling=False, ecs=False)
    result = opsctl("scaling", "simulate", "--stack-file", str(REPO_ROOT / "Pulumi.production.yaml"),
                    "--depths", BURST, "--json", env="production")
    assert desired(result) == BURST_DESIRED  # the committed file's placeholders do not matter here
    data = json.loads(result.stdout)
    assert data["source"].startswith("stack file ") and data["queue"] == "production-ml-worker-queue"


def test_local_follows_the_stack_files_settings(tmp_path, opsctl, make_stack, monkeypatch):
    make_stack(scaling=False, ecs=False)
    document = yaml.safe_load((REPO_ROOT / "Pulumi.production.yaml").read_text())
    document["config"].update({"zivo-ml-worker:environment": "staging", "zivo-ml-worker:targetQueueDepth": "2",
                               "zivo-ml-worker:scaleInAfterMinutes": "3", "zivo-ml-worker:priorityQueue": "true"})
    (tmp_path / "Pulumi.yaml").write_text((REPO_ROOT / "Pulumi.yaml").read_text())
    (tmp_path / "Pulumi.staging.yaml").write_text(yaml.safe_dump(document))
    (tmp_path / "platform").symlink_to(REPO_ROOT / "platform")
    monkeypatch.chdir(tmp_path)
    result = opsctl("scaling", "simulate", "--local", "--depths", "5,0,0,0,0", "--json", env="staging")
    assert desired(result) == [3, 3, 3, 0, 0]
    assert json.loads(result.stdout)["queue"] == "staging-ml-worker-queue"


@pytest.mark.parametrize("depths,fragment", [
    ("3,x", "item 2 is 'x', not a whole number of messages"),
    ("3,-1", "item 2 is '-1'"),
    ("", "item 1 is ''"),
    ("1.5", "item 1 is '1.5'"),
])
def test_bad_depths_are_one_line_and_exit_2(opsctl, depths, fragment):
    result = opsctl("scaling", "simulate", "--depths", depths)
    assert result.exit_code == 2
    assert fragment in result.stderr and result.stderr.count("\n") == 1
    assert result.stderr.startswith("opsctl: error: ")


def test_nothing_deployed_is_one_line(make_stack, opsctl):
    make_stack(scaling=False)
    result = opsctl("scaling", "simulate", "--depths", "1,2")
    assert result.exit_code == 1
    assert "no scalable target or policies for service/test-ml-worker/test-ml-worker" in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_broken_stack_file_is_one_line(tmp_path, opsctl, make_stack):
    make_stack(scaling=False, ecs=False)
    (tmp_path / "Pulumi.yaml").write_text("name: x\n")
    (tmp_path / "platform").symlink_to(REPO_ROOT / "platform")
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text(yaml.safe_dump({"config": {"aws:region": "ap-south-1", "zivo-ml-worker:maxCapacity": "0"}}))
    result = opsctl("scaling", "simulate", "--stack-file", str(bad), "--depths", "1")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "maxCapacity" in result.stderr
