"""The config's limits against what AWS documents, and the keys against the docs and the stack file."""

from __future__ import annotations

import re

import botocore.session
import pytest
import yaml
from mlw_config import _FARGATE_MEMORY, _LOG_RETENTION_DAYS, PlatformConfig, StackConfigError
from mlw_mocks import ACCOUNT, REPO_ROOT

MODELS = botocore.session.get_session()
BASE = dict(vpcId="vpc-1", privateSubnetIds=["subnet-1"], databaseHost="db", databaseName="app",
            apiRoleArn=f"arn:aws:iam::{ACCOUNT}:role/api")


def config(**values) -> PlatformConfig:
    return PlatformConfig.from_values({**BASE, **values}, "ap-south-1")


def documented_fargate_memory() -> dict[int, set[int]]:
    """RegisterTaskDefinition's `memory` documentation: the MiB sizes per Fargate CPU size."""
    doc = MODELS.get_service_model("ecs").shape_for("RegisterTaskDefinitionRequest").members["memory"].documentation
    sizes: dict[int, set[int]] = {}
    for item in re.findall(r"<li> <p>(.*?)</p>", doc):
        cpu = re.search(r"Available <code>cpu</code> values: (\d+)", item)
        if not cpu:
            continue
        between = re.match(r"Between (\d+) \(\d+ GB\) and (\d+) \(\d+ GB\) in increments of (\d+)", item)
        if between:
            low, high, step = map(int, between.groups())
            sizes[int(cpu.group(1))] = set(range(low, high + 1, step))
        elif re.match(r"\d+ \(", item):
            sizes[int(cpu.group(1))] = {int(m) for m in re.findall(r"(\d+) \([\d.]+ GB\)", item.split(" - ")[0])}
    return sizes


def test_fargate_sizes_are_those_ecs_documents():
    documented = documented_fargate_memory()
    assert {cpu: set(memory) for cpu, memory in _FARGATE_MEMORY.items()} == {cpu: documented[cpu] for cpu in
                                                                              _FARGATE_MEMORY}


def test_every_fargate_size_is_accepted_and_its_neighbours_refused():
    for cpu, sizes in _FARGATE_MEMORY.items():
        for memory in sizes:
            assert config(taskCpu=cpu, taskMemory=memory).task_memory == memory
        for memory in (min(sizes) - 512, max(sizes) + 1024):
            with pytest.raises(StackConfigError, match="not a Fargate size"):
                config(taskCpu=cpu, taskMemory=memory)


def test_log_retention_values_are_those_cloudwatch_logs_documents():
    doc = MODELS.get_service_model("logs").shape_for("PutRetentionPolicyRequest").members["retentionInDays"]
    listed = re.search(r"Possible values are: ([\d, and]+)\.", doc.documentation).group(1)
    assert _LOG_RETENTION_DAYS == {int(v) for v in re.findall(r"\d+", listed)}
    for days in _LOG_RETENTION_DAYS:
        assert config(logRetentionDays=days).log_retention_days == days
    for days in (0, 2, 149, 151, 3654):
        with pytest.raises(StackConfigError, match="logRetentionDays"):
            config(logRetentionDays=days)


@pytest.mark.parametrize("key,lowest,highest", [
    ("scaleInAfterMinutes", 2, 60), ("oldestMessageAlarmSeconds", 60, None), ("databasePort", 1, 65535),
    ("targetQueueDepth", 1, None), ("maxCapacity", 1, None), ("minCapacity", 0, None),
])
def test_bounds(key, lowest, highest):
    assert config(**{key: lowest, "maxCapacity": max(lowest, 1)} if key == "minCapacity" else {key: lowest})
    with pytest.raises(StackConfigError, match=key):
        config(**{key: lowest - 1})
    if highest is not None:
        assert config(**{key: highest})
        with pytest.raises(StackConfigError, match=key):
            config(**{key: highest + 1})


def test_every_key_is_documented_and_in_the_stack_file():
    keys = PlatformConfig.keys()
    assert "region" not in keys and len(keys) == len(PlatformConfig.model_fields) - 1
    doc = (REPO_ROOT / "docs" / "deployment.md").read_text()
    table = doc.split("## Config keys", 1)[1].split("\n## ", 1)[0]
    documented = {k for row in re.findall(r"^\| (`[^|]+)\|", table, re.MULTILINE) for k in re.findall(r"`(\w+)`", row)}
    assert set(keys) <= documented, set(keys) - documented
    stack = yaml.safe_load((REPO_ROOT / "Pulumi.production.yaml").read_text())["config"]
    in_file = {k.split(":", 1)[1] for k in stack if k.startswith("zivo-ml-worker:")}
    assert in_file <= set(keys), in_file - set(keys)  # no stale key in the committed file
    assert set(keys) - in_file == {"biobertRevision"}  # every key but the BioBERT build option is shown there


def test_fields_by_their_python_names_too():
    cfg = PlatformConfig(region="ap-south-1", vpc_id="vpc-1", private_subnet_ids=("subnet-1",), database_host="db",
                         database_name="app", api_role_arn=f"arn:aws:iam::{ACCOUNT}:role/api", max_capacity=4)
    assert (cfg.vpc_id, cfg.max_capacity) == ("vpc-1", 4)


def test_unknown_keys_are_refused():
    with pytest.raises(StackConfigError, match="alarmEmial"):
        config(alarmEmial="a@b.co")


def test_role_name_from_arn():
    from mlw_iam import role_name_from_arn

    assert role_name_from_arn(f"arn:aws:iam::{ACCOUNT}:role/api") == "api"
    assert role_name_from_arn(f"arn:aws:iam::{ACCOUNT}:role/team/path/api") == "api"


def test_defaults_are_the_documented_ones():
    cfg = config()
    assert (cfg.environment, cfg.database_port, cfg.min_capacity, cfg.max_capacity, cfg.target_queue_depth,
            cfg.scale_in_after_minutes, cfg.task_cpu, cfg.task_memory, cfg.log_retention_days, cfg.log_level,
            cfg.oldest_message_alarm_seconds, cfg.priority_queue, cfg.vpc_endpoints, cfg.private_route_table_ids,
            cfg.operator_role_arns, cfg.alarm_topic_arn, cfg.alarm_email, cfg.biobert_revision) == (
        "production", 5432, 0, 3, 5, 10, 512, 3072, 30, "INFO", 900, False, False, (), (), None, None, None)
    assert cfg.batch_size == 5
    assert PlatformConfig.shutdown_deadline < PlatformConfig.stop_timeout <= 120  # Fargate Spot's two minutes


def test_a_stack_file_without_a_region_is_refused():
    with pytest.raises(StackConfigError, match="aws:region"):
        PlatformConfig.from_stack_file({"config": {"zivo-ml-worker:vpcId": "vpc-1"}})
    cfg = PlatformConfig.from_stack_file({"config": {"aws:region": "eu-west-1", "other:key": 1,
                                                     **{f"zivo-ml-worker:{k}": v for k, v in BASE.items()}}})
    assert cfg.region == "eu-west-1" and cfg.vpc_id == "vpc-1"


def test_value_objects_are_immutable():
    import dataclasses

    from mlw_preflight import AwsContext
    from mlw_scaling_rules import Step

    for value, field in ((AwsContext("aws", ACCOUNT, "ap-south-1"), "account_id"), (Step(0, 5, 1), "capacity")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, field, None)
    with pytest.raises(Exception, match="frozen"):
        config().max_capacity = 9  # type: ignore[misc]
