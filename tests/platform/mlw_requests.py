"""The AWS API requests the registered resources stand for, and their validation against botocore.

Each registered pulumi_aws resource is turned into the request(s) the provider sends to create it
(CreateQueue, PutMetricAlarm, RegisterTaskDefinition, ...), in the API's own shape. `problems()`
then checks every request against botocore's service model: botocore's own validator (required
members, types, minimums) plus what it leaves out (enums, maximums, patterns, list lengths).
Numbers come back from the mock monitor as floats; they are coerced where the model says integer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import botocore.session
from botocore.validate import ParamValidator
from mlw_mocks import Program, Registered

SESSION = botocore.session.get_session()


@dataclass(frozen=True)
class Request:
    service: str
    operation: str
    params: dict
    source: str  # "type name" of the registered resource

    def __str__(self) -> str:
        return f"{self.service}.{self.operation} ({self.source})"


def _step(s: dict) -> dict:
    out = {"ScalingAdjustment": s["scalingAdjustment"]}
    for key in ("metricIntervalLowerBound", "metricIntervalUpperBound"):
        if key in s:
            out[key[0].upper() + key[1:]] = float(s[key])
    return out


def scaling_policy(inputs: dict) -> dict:
    config = inputs["stepScalingPolicyConfiguration"]
    return {
        "PolicyName": inputs["name"], "ServiceNamespace": inputs["serviceNamespace"],
        "ResourceId": inputs["resourceId"], "ScalableDimension": inputs["scalableDimension"],
        "PolicyType": inputs["policyType"],
        "StepScalingPolicyConfiguration": {
            "AdjustmentType": config["adjustmentType"], "Cooldown": config["cooldown"],
            "MetricAggregationType": config["metricAggregationType"],
            "StepAdjustments": [_step(s) for s in config["stepAdjustments"]],
        },
    }


def metric_alarm(inputs: dict) -> dict:
    params: dict[str, Any] = {
        "AlarmName": inputs["name"], "AlarmDescription": inputs.get("alarmDescription", ""),
        "ComparisonOperator": inputs["comparisonOperator"], "Threshold": inputs["threshold"],
        "EvaluationPeriods": inputs["evaluationPeriods"], "AlarmActions": inputs.get("alarmActions", []),
        "OKActions": inputs.get("okActions", []), "TreatMissingData": inputs.get("treatMissingData", "missing"),
    }
    if "datapointsToAlarm" in inputs:
        params["DatapointsToAlarm"] = inputs["datapointsToAlarm"]
    if "metricQueries" in inputs:
        queries = []
        for q in inputs["metricQueries"]:
            query = {"Id": q["id"], "ReturnData": q.get("returnData", False)}
            if "expression" in q:
                query.update(Expression=q["expression"], Label=q.get("label", ""))
            else:
                m = q["metric"]
                query["MetricStat"] = {
                    "Metric": {"Namespace": m["namespace"], "MetricName": m["metricName"],
                               "Dimensions": [{"Name": k, "Value": v} for k, v in m["dimensions"].items()]},
                    "Period": m["period"], "Stat": m["stat"]}
            queries.append(query)
        params["Metrics"] = queries
    else:
        params.update(Namespace=inputs["namespace"], MetricName=inputs["metricName"],
                      Dimensions=[{"Name": k, "Value": v} for k, v in inputs["dimensions"].items()],
                      Period=inputs["period"], Statistic=inputs["statistic"])
    return params


def _permissions(rules: list[dict]) -> list[dict]:
    return [{"IpProtocol": r["protocol"], "FromPort": r["fromPort"], "ToPort": r["toPort"],
             "IpRanges": [{"CidrIp": c, "Description": r.get("description", "")} for c in r.get("cidrBlocks", [])]}
            for r in rules]


def _queue_attributes(i: dict) -> dict:
    names = {"visibilityTimeoutSeconds": "VisibilityTimeout", "receiveWaitTimeSeconds": "ReceiveMessageWaitTimeSeconds",
             "messageRetentionSeconds": "MessageRetentionPeriod", "sqsManagedSseEnabled": "SqsManagedSseEnabled",
             "redrivePolicy": "RedrivePolicy"}
    return {api: str(i[key]).lower() if isinstance(i[key], bool) else str(int(i[key]) if isinstance(i[key], float)
                                                                              else i[key])
            for key, api in names.items() if key in i}


def _container_definitions(text: str) -> list[dict]:
    return json.loads(text)


BUILDERS: dict[str, Callable[[dict], list[tuple[str, str, dict]]]] = {
    "aws:sqs/queue:Queue": lambda i: [("sqs", "CreateQueue", {"QueueName": i["name"],
                                                              "Attributes": _queue_attributes(i)})],
    "aws:sqs/redriveAllowPolicy:RedriveAllowPolicy": lambda i: [("sqs", "SetQueueAttributes", {
        "QueueUrl": i["queueUrl"], "Attributes": {"RedriveAllowPolicy": i["redriveAllowPolicy"]}})],
    "aws:sqs/queuePolicy:QueuePolicy": lambda i: [("sqs", "SetQueueAttributes", {
        "QueueUrl": i["queueUrl"], "Attributes": {"Policy": i["policy"]}})],
    "aws:ecr/repository:Repository": lambda i: [("ecr", "CreateRepository", {
        "repositoryName": i["name"], "imageTagMutability": i["imageTagMutability"],
        "imageScanningConfiguration": {"scanOnPush": i["imageScanningConfiguration"]["scanOnPush"]},
        "encryptionConfiguration": {"encryptionType": i["encryptionConfigurations"][0]["encryptionType"]}})],
    "aws:ecr/lifecyclePolicy:LifecyclePolicy": lambda i: [("ecr", "PutLifecyclePolicy", {
        "repositoryName": i["repository"], "lifecyclePolicyText": i["policy"]})],
    "aws:iam/role:Role": lambda i: [("iam", "CreateRole", {
        "RoleName": i["name"], "AssumeRolePolicyDocument": i["assumeRolePolicy"], "Description": i["description"]})],
    "aws:iam/rolePolicy:RolePolicy": lambda i: [("iam", "PutRolePolicy", {
        "RoleName": i["role"], "PolicyName": i["name"], "PolicyDocument": i["policy"]})],
    "aws:ec2/securityGroup:SecurityGroup": lambda i: [
        ("ec2", "CreateSecurityGroup", {"GroupName": i["name"], "Description": i["description"], "VpcId": i["vpcId"]}),
        *([("ec2", "AuthorizeSecurityGroupEgress", {
            "GroupId": "sg-0123456789abcdef0", "IpPermissions": _permissions(i["egress"])})] if i["egress"] else []),
    ],
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": lambda i: [("ec2", "AuthorizeSecurityGroupIngress", {
        "GroupId": i["securityGroupId"], "IpPermissions": [{
            "IpProtocol": i["ipProtocol"], "FromPort": i["fromPort"], "ToPort": i["toPort"],
            "UserIdGroupPairs": [{"GroupId": i["referencedSecurityGroupId"], "Description": i["description"]}]}]})],
    "aws:ec2/vpcEndpoint:VpcEndpoint": lambda i: [("ec2", "CreateVpcEndpoint", {
        k: v for k, v in {"VpcId": i["vpcId"], "ServiceName": i["serviceName"], "VpcEndpointType": i["vpcEndpointType"],
                          "SubnetIds": i.get("subnetIds"), "SecurityGroupIds": i.get("securityGroupIds"),
                          "RouteTableIds": i.get("routeTableIds"),
                          "PrivateDnsEnabled": i.get("privateDnsEnabled")}.items() if v is not None})],
    "aws:cloudwatch/logGroup:LogGroup": lambda i: [
        ("logs", "CreateLogGroup", {"logGroupName": i["name"]}),
        ("logs", "PutRetentionPolicy", {"logGroupName": i["name"], "retentionInDays": i["retentionInDays"]})],
    "aws:cloudwatch/logMetricFilter:LogMetricFilter": lambda i: [("logs", "PutMetricFilter", {
        "logGroupName": i["logGroupName"], "filterName": i["name"], "filterPattern": i["pattern"],
        "metricTransformations": [{"metricName": i["metricTransformation"]["name"],
                                   "metricNamespace": i["metricTransformation"]["namespace"],
                                   "metricValue": i["metricTransformation"]["value"],
                                   "unit": i["metricTransformation"]["unit"]}]})],
    "aws:cloudwatch/dashboard:Dashboard": lambda i: [("cloudwatch", "PutDashboard", {
        "DashboardName": i["dashboardName"], "DashboardBody": i["dashboardBody"]})],
    "aws:cloudwatch/metricAlarm:MetricAlarm": lambda i: [("cloudwatch", "PutMetricAlarm", metric_alarm(i))],
    "aws:ecs/cluster:Cluster": lambda i: [("ecs", "CreateCluster", {"clusterName": i["name"],
                                                                    "settings": i["settings"]})],
    "aws:ecs/clusterCapacityProviders:ClusterCapacityProviders": lambda i: [("ecs", "PutClusterCapacityProviders", {
        "cluster": i["clusterName"], "capacityProviders": i["capacityProviders"],
        "defaultCapacityProviderStrategy": [{"capacityProvider": s["capacityProvider"], "weight": s["weight"]}
                                            for s in i["defaultCapacityProviderStrategies"]]})],
    "aws:ecs/taskDefinition:TaskDefinition": lambda i: [("ecs", "RegisterTaskDefinition", {
        "family": i["family"], "cpu": i["cpu"], "memory": i["memory"], "networkMode": i["networkMode"],
        "requiresCompatibilities": i["requiresCompatibilities"], "executionRoleArn": i["executionRoleArn"],
        "taskRoleArn": i["taskRoleArn"], "runtimePlatform": i["runtimePlatform"],
        "containerDefinitions": _container_definitions(i["containerDefinitions"])})],
    "aws:ecs/service:Service": lambda i: [("ecs", "CreateService", {
        "serviceName": i["name"], "cluster": i["cluster"], "taskDefinition": i["taskDefinition"],
        "desiredCount": i["desiredCount"],
        "capacityProviderStrategy": [{"capacityProvider": s["capacityProvider"], "weight": s["weight"]}
                                     for s in i["capacityProviderStrategies"]],
        "networkConfiguration": {"awsvpcConfiguration": {
            "subnets": i["networkConfiguration"]["subnets"],
            "securityGroups": i["networkConfiguration"]["securityGroups"],
            "assignPublicIp": "ENABLED" if i["networkConfiguration"]["assignPublicIp"] else "DISABLED"}},
        "deploymentConfiguration": {"deploymentCircuitBreaker": i["deploymentCircuitBreaker"],
                                    "minimumHealthyPercent": i["deploymentMinimumHealthyPercent"],
                                    "maximumPercent": i["deploymentMaximumPercent"]},
        "enableECSManagedTags": i["enableEcsManagedTags"], "propagateTags": i["propagateTags"]})],
    "aws:appautoscaling/target:Target": lambda i: [("application-autoscaling", "RegisterScalableTarget", {
        "ServiceNamespace": i["serviceNamespace"], "ResourceId": i["resourceId"],
        "ScalableDimension": i["scalableDimension"], "MinCapacity": i["minCapacity"],
        "MaxCapacity": i["maxCapacity"]})],
    "aws:appautoscaling/policy:Policy": lambda i: [("application-autoscaling", "PutScalingPolicy", scaling_policy(i))],
    "aws:sns/topic:Topic": lambda i: [("sns", "CreateTopic", {"Name": i["name"]})],
    "aws:sns/topicSubscription:TopicSubscription": lambda i: [("sns", "Subscribe", {
        "TopicArn": i["topic"], "Protocol": i["protocol"], "Endpoint": i["endpoint"]})],
    "aws:ssm/parameter:Parameter": lambda i: [("ssm", "PutParameter", {
        "Name": i["name"], "Value": i["value"], "Type": i["type"], "Description": i["description"]})],
}
# Components and remote builds send nothing themselves.
NOT_REQUESTS = ("zivo:mlworker:", "awsx:ecr:Image")


def requests(prog: Program) -> list[Request]:
    out = []
    for r in prog.resources:
        if r.type.startswith(NOT_REQUESTS):
            continue
        if r.type not in BUILDERS:
            raise AssertionError(f"no request builder for {r.type}: add one so that it is validated too")
        for service, operation, params in BUILDERS[r.type](r.inputs):
            out.append(Request(service, operation, coerce(SESSION.get_service_model(service)
                                                          .operation_model(operation).input_shape, params),
                               f"{r.type} {r.name}"))
    return out


def coerce(shape, value):
    """Floats that the mock monitor made of integers, back to int where the model wants an integer."""
    if shape is None:
        return value
    if shape.type_name == "structure" and isinstance(value, dict):
        return {k: coerce(shape.members.get(k), v) for k, v in value.items()}
    if shape.type_name == "list" and isinstance(value, list):
        return [coerce(shape.member, v) for v in value]
    if shape.type_name == "map" and isinstance(value, dict):
        return {k: coerce(shape.value, v) for k, v in value.items()}
    if shape.type_name in ("integer", "long") and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _walk(shape, value, path: str) -> Iterator[str]:
    """What botocore's validator leaves out: enums, maximums, patterns, list lengths."""
    meta = shape.metadata
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, member in shape.members.items():
            if key in value:
                yield from _walk(member, value[key], f"{path}.{key}")
        return
    if shape.type_name == "list" and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            yield f"{path}: {len(value)} items, at most {meta['max']}"
        for n, item in enumerate(value):
            yield from _walk(shape.member, item, f"{path}[{n}]")
        return
    if shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(shape.value, item, f"{path}.{key}")
        return
    if shape.type_name == "string" and isinstance(value, str):
        if getattr(shape, "enum", None) and value not in shape.enum:
            yield f"{path}: {value!r} is not one of {shape.enum}"
        if "max" in meta and len(value) > meta["max"]:
            yield f"{path}: {len(value)} characters, at most {meta['max']}"
        pattern = meta.get("pattern")
        if pattern:
            try:
                compiled = re.compile(pattern)
            except re.error:
                return  # a Java-only construct; botocore's length checks still apply
            if not compiled.fullmatch(value) and not compiled.match(value):
                yield f"{path}: {value!r} does not match {pattern}"
    if shape.type_name in ("integer", "long", "double") and isinstance(value, int | float) and "max" in meta \
            and value > meta["max"]:
        yield f"{path}: {value} is above {meta['max']}"


def problems(request: Request) -> list[str]:
    shape = SESSION.get_service_model(request.service).operation_model(request.operation).input_shape
    report = ParamValidator().validate(request.params, shape)
    found = [report.generate_report()] if report.has_errors() else []
    return found + list(_walk(shape, request.params, request.operation))


def registered(prog: Program, type_: str) -> list[Registered]:
    return prog.of_type(type_)
