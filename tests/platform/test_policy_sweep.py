"""A sweep over every resource the program registers, in every variant of the stack.

No security-group ingress (but HTTPS from the worker's group into the VPC endpoints' group), no
public IP, no `*` action and no `*` resource in IAM except where AWS requires it, encryption on
every queue, retention on every log group.
"""

from __future__ import annotations

import json
import re

import pytest
from mlw_iam import STAR_RESOURCE_ACTIONS
from mlw_mocks import Program

# Resource patterns with a wildcard that stay inside this stack's own resources:
# the log streams of the worker's log group, and the tasks of the worker's cluster (task protection).
SCOPED_WILDCARDS = [
    re.compile(r"^arn:aws:logs:[a-z0-9-]+:\d{12}:log-group:/ecs/[a-z0-9-]+-ml-worker:\*$"),
    re.compile(r"^arn:aws:ecs:[a-z0-9-]+:\d{12}:task/[a-z0-9-]+-ml-worker/\*$"),
]


@pytest.fixture(params=["program", "priority_program"])
def prog(request) -> Program:
    return request.getfixturevalue(request.param)


def _as_list(value) -> list:
    return [value] if isinstance(value, str) else list(value)


def policy_documents(prog: Program) -> list[tuple[str, dict]]:
    docs = []
    for r in prog.resources:
        for key in ("policy", "assumeRolePolicy"):
            value = r.inputs.get(key)
            if r.type == "aws:ecr/lifecyclePolicy:LifecyclePolicy":
                continue  # an image-expiry rule, not an access policy
            if isinstance(value, str) and value.strip().startswith("{"):
                docs.append((f"{r.type} {r.name}.{key}", json.loads(value)))
    return docs


def test_the_sweep_sees_every_policy(prog):
    kinds = {name.split()[0] for name, _ in policy_documents(prog)}
    assert kinds == {"aws:iam/role:Role", "aws:iam/rolePolicy:RolePolicy", "aws:sqs/queuePolicy:QueuePolicy"}
    assert len(policy_documents(prog)) >= 6


def test_no_wildcard_actions_or_resources(prog):
    for where, doc in policy_documents(prog):
        for st in doc["Statement"]:
            if st["Effect"] != "Allow":
                continue
            actions = _as_list(st.get("Action", []))
            assert "NotAction" not in st and "NotResource" not in st, where
            for action in actions:
                assert "*" not in action, f"{where}: wildcard action {action}"
            if "Principal" in st:
                assert st["Principal"] not in ("*", {"AWS": "*"}), f"{where}: Allow to everyone"
            for resource in _as_list(st.get("Resource", [])):
                if resource == "*":
                    assert set(actions) <= STAR_RESOURCE_ACTIONS, f"{where}: Resource * for {actions}"
                elif "*" in resource:
                    assert any(p.match(resource) for p in SCOPED_WILDCARDS), f"{where}: wildcard resource {resource}"


def test_star_resource_exceptions_are_only_those_aws_requires():
    assert STAR_RESOURCE_ACTIONS == {"ecr:GetAuthorizationToken"}


def test_no_security_group_ingress_but_https_from_the_worker_to_its_endpoints(prog):
    groups = {sg.name: sg for sg in prog.of_type("aws:ec2/securityGroup:SecurityGroup")}
    assert "security-group" in groups
    for sg in groups.values():
        assert sg.inputs.get("ingress") == [], sg.name
    assert not prog.of_type("aws:ec2/securityGroupRule:SecurityGroupRule")
    rules = prog.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    if "endpoint-security-group" not in groups:
        assert rules == []
        return
    [rule] = rules
    assert rule.inputs["securityGroupId"] == "endpoint-security-group-id"
    assert rule.inputs["referencedSecurityGroupId"] == "security-group-id"  # the worker's group, nothing else
    assert (rule.inputs["ipProtocol"], rule.inputs["fromPort"], rule.inputs["toPort"]) == ("tcp", 443, 443)
    assert "cidrIpv4" not in rule.inputs and "cidrIpv6" not in rule.inputs


def test_no_public_ip(prog):
    services = prog.of_type("aws:ecs/service:Service")
    assert services
    for svc in services:
        assert svc.inputs["networkConfiguration"]["assignPublicIp"] is False
    assert not prog.of_type("aws:ec2/eip:Eip") and not prog.of_type("aws:ec2/instance:Instance")


def test_every_queue_encrypted(prog):
    queues = prog.of_type("aws:sqs/queue:Queue")
    assert len(queues) >= 2
    for q in queues:
        assert q.inputs.get("sqsManagedSseEnabled") is True or q.inputs.get("kmsMasterKeyId"), q.name


def test_every_log_group_has_retention(prog):
    groups = prog.of_type("aws:cloudwatch/logGroup:LogGroup")
    assert groups
    for lg in groups:
        assert lg.inputs.get("retentionInDays", 0) > 0, lg.name


def test_every_container_logs_to_a_managed_group(prog):
    managed = {lg.inputs["name"] for lg in prog.of_type("aws:cloudwatch/logGroup:LogGroup")}
    for td in prog.of_type("aws:ecs/taskDefinition:TaskDefinition"):
        for c in td.json("containerDefinitions"):
            assert c["logConfiguration"]["options"]["awslogs-group"] in managed
            assert "awslogs-create-group" not in c["logConfiguration"]["options"]


def test_custom_resources_live_inside_components(prog):
    """The program reads like the diagram: every AWS resource belongs to one of the components."""
    for r in prog.resources:
        if r.custom or r.remote:
            assert "zivo:mlworker:" in r.parent, f"{r.type} {r.name} has no component parent"
