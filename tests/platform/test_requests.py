"""Every request the program would send, checked against botocore's service models; every IAM
document linted with parliament; the health check within the ranges ECS documents in its model."""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import sys
import types

import botocore.session
import pytest
from mlw_mocks import Program
from mlw_requests import Request, problems, requests
from mlw_service import HEALTH_CHECK_RANGES


@pytest.fixture(params=["program", "priority_program"])
def prog(request) -> Program:
    return request.getfixturevalue(request.param)


def test_every_request_is_valid_for_its_api(prog):
    reqs = requests(prog)
    operations = {r.operation for r in reqs}
    assert {"CreateQueue", "PutMetricAlarm", "PutScalingPolicy", "RegisterTaskDefinition", "CreateService",
            "PutRolePolicy", "PutDashboard", "PutMetricFilter"} <= operations
    found = {str(r): problems(r) for r in reqs}
    assert {k: v for k, v in found.items() if v} == {}
    print(f"\n{len(reqs)} requests valid against botocore's models")


def test_the_endpoint_variant_sends_valid_endpoint_requests(priority_program):
    endpoint_requests = [r for r in requests(priority_program) if r.operation == "CreateVpcEndpoint"]
    assert len(endpoint_requests) == 6
    assert all(problems(r) == [] for r in endpoint_requests)


@pytest.mark.parametrize("path,bad,expected", [
    (("ComparisonOperator",), "GreaterThan", "is not one of"),
    (("EvaluationPeriods",), 0, "valid min value: 1"),
    (("AlarmActions",), ["a"] * 6, "at most 5"),
    (("AlarmName",), "x" * 300, "at most 255"),
    (("Threshold",), "one", "Invalid type"),
])
def test_the_check_catches_what_aws_would_refuse(program, path, bad, expected):
    [alarm] = [r for r in requests(program) if r.operation == "PutMetricAlarm"
               and r.params["AlarmName"].endswith("dlq-messages")]
    params = copy.deepcopy(alarm.params)
    params[path[0]] = bad
    found = problems(Request(alarm.service, alarm.operation, params, alarm.source))
    assert any(expected in p for p in found), found


def test_health_check_within_the_ranges_ecs_documents(program):
    """RegisterTaskDefinition's HealthCheck ranges are stated in the model's documentation only."""
    shape = botocore.session.get_session().get_service_model("ecs").shape_for("HealthCheck")
    documented = {}
    for name, member in shape.members.items():
        found = re.search(r"between (\d+) and (\d+)", member.documentation)
        if found:
            documented[name] = (int(found.group(1)), int(found.group(2)))
    assert documented == HEALTH_CHECK_RANGES
    [container] = program.one("aws:ecs/taskDefinition:TaskDefinition").json("containerDefinitions")
    check = container["healthCheck"]
    for name, (low, high) in documented.items():
        assert low <= check[name] <= high, (name, check[name])
    assert check["timeout"] < check["interval"]


def test_an_out_of_range_health_check_stops_the_program():
    from mlw_service import HEALTH_CHECK, checked_health_check

    for key, value in [("retries", 30), ("retries", 0), ("startPeriod", 900), ("interval", 4), ("timeout", 61)]:
        with pytest.raises(ValueError, match=f"health check {key} {value} is outside"):
            checked_health_check({**HEALTH_CHECK, key: value})
    for key, value in [("retries", 10), ("retries", 1), ("startPeriod", 300), ("startPeriod", 0), ("interval", 300)]:
        assert checked_health_check({**HEALTH_CHECK, key: value})[key] == value  # the ends of ECS's ranges
    for timeout, interval in [(30, 30), (40, 30)]:
        with pytest.raises(ValueError, match="timeout"):
            checked_health_check({**HEALTH_CHECK, "timeout": timeout, "interval": interval})


# -- parliament ------------------------------------------------------------------------------------
def _parliament():
    """parliament 1.6 reads its data files through pkg_resources, which setuptools 81+ no longer ships."""
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            shim = types.ModuleType("pkg_resources")
            shim.resource_filename = lambda package, name: str(importlib.resources.files(package) / name)
            sys.modules["pkg_resources"] = shim
    import parliament

    return parliament


def iam_documents(prog: Program) -> list[tuple[str, str, dict]]:
    """(where, kind, document) for every identity, trust and queue policy the program registers."""
    docs = []
    for r in prog.resources:
        if r.type == "aws:iam/rolePolicy:RolePolicy":
            docs.append((f"{r.name}", "identity", r.json("policy")))
        elif r.type == "aws:iam/role:Role":
            docs.append((f"{r.name}", "trust", r.json("assumeRolePolicy")))
        elif r.type == "aws:sqs/queuePolicy:QueuePolicy":
            docs.append((f"{r.name}", "resource", r.json("policy")))
    return docs


def findings(document: dict) -> list[tuple[str, str]]:
    policy = _parliament().analyze_policy_string(json.dumps(document))
    return [(f.issue, str(f.detail)) for f in policy.findings]


def test_every_iam_document_lints_clean_with_parliament(prog):
    docs = iam_documents(prog)
    assert {kind for _, kind, _ in docs} == {"identity", "trust", "resource"}
    report = {}
    for where, kind, doc in docs:
        found = findings(doc)
        if kind == "trust":  # a trust policy has a Principal and no Resource, by design
            found = [f for f in found if f != ("MALFORMED", "Statement contains neither Resource nor NotResource")]
        if found:
            report[where] = found
    assert report == {}


def test_parliament_does_flag_a_broken_document():
    found = findings({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["sqs:ReceiveMessag"], "Resource": "arn:aws:sqs:ap-south-1:210987654321:q"}]})
    assert ("UNKNOWN_ACTION", "Unknown action sqs:ReceiveMessag") in found
