"""A whole ML-worker stack in moto (over HTTP), built the way the platform names it, for env "test"."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import boto3
import pytest
from typer.testing import CliRunner

ENV = "test"
ACCOUNT = "123456789012"
PREFIX = f"/zivohealth/{ENV}/ml_worker/"

TASK_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Resource": "*", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage",
                                                    "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"]},
    {"Effect": "Allow", "Resource": "*", "Action": "sqs:SendMessage"},
    {"Effect": "Allow", "Resource": "*", "Action": "ecs:UpdateTaskProtection"}]}
EXECUTION_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Resource": "*", "Action": ["ecr:GetAuthorizationToken", "ecr:BatchGetImage",
                                                    "ecr:GetDownloadUrlForLayer", "ecr:BatchCheck*"]},
    {"Effect": "Allow", "Resource": "*", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"]},
    {"Effect": "Allow", "Resource": f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/zivohealth/{ENV}/*",
     "Action": "ssm:GetParameter*"}]}
ASSUME_ECS = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


@dataclass
class Stack:
    queue_url: str
    dlq_url: str
    dlq_arn: str
    priority_url: str | None = None
    cluster: str = f"{ENV}-ml-worker"
    service: str = f"{ENV}-ml-worker"
    log_group: str = f"/ecs/{ENV}-ml-worker"
    subnet: str = ""
    extra: dict = field(default_factory=dict)

    def client(self, name: str):
        return boto3.client(name)

    # -- helpers the tests use ---------------------------------------------------------------
    def send(self, url: str, body, attributes: dict | None = None) -> str:
        sqs = self.client("sqs")
        text = body if isinstance(body, str) else json.dumps(body)
        kwargs = {"QueueUrl": url, "MessageBody": text}
        if attributes:
            kwargs["MessageAttributes"] = {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()}
        return sqs.send_message(**kwargs)["MessageId"]

    def drain(self, url: str) -> list[dict]:
        """Receive (and delete) every message in a queue; returns them."""
        sqs, out = self.client("sqs"), []
        while True:
            batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                        MessageAttributeNames=["All"]).get("Messages", [])
            if not batch:
                return out
            out.extend(batch)
            for m in batch:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    def depth(self, url: str) -> tuple[int, int]:
        a = self.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])

    def log(self, *records, stream: str = "worker/worker/abc", age_s: float = 0) -> None:
        logs = self.client("logs")
        try:
            logs.create_log_stream(logGroupName=self.log_group, logStreamName=stream)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        now = int((time.time() - age_s) * 1000)
        logs.put_log_events(logGroupName=self.log_group, logStreamName=stream, logEvents=[
            {"timestamp": now + i, "message": r if isinstance(r, str) else json.dumps(r)}
            for i, r in enumerate(records)])


def build_stack(priority: bool = False, ssm: bool = True, images: bool = True, logs: bool = True,
                ecs: bool = True, scaling: bool = True, desired: int = 0) -> Stack:
    sqs = boto3.client("sqs")
    dlq_url = sqs.create_queue(QueueName=f"{ENV}-ml-worker-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = {"VisibilityTimeout": "300",
               "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})}
    url = sqs.create_queue(QueueName=f"{ENV}-ml-worker-queue", Attributes=redrive)["QueueUrl"]
    priority_url = sqs.create_queue(QueueName=f"{ENV}-ml-worker-priority", Attributes=redrive)["QueueUrl"] \
        if priority else None
    stack = Stack(queue_url=url, dlq_url=dlq_url, dlq_arn=dlq_arn, priority_url=priority_url)

    iam = boto3.client("iam")
    task_role = iam.create_role(RoleName=f"{ENV}-ml-worker-task", AssumeRolePolicyDocument=ASSUME_ECS)["Role"]["Arn"]
    iam.put_role_policy(RoleName=f"{ENV}-ml-worker-task", PolicyName="queue",
                        PolicyDocument=json.dumps(TASK_POLICY))
    exec_role = iam.create_role(RoleName=f"{ENV}-ml-worker-exec", AssumeRolePolicyDocument=ASSUME_ECS)["Role"]["Arn"]
    policy_arn = iam.create_policy(PolicyName=f"{ENV}-ml-worker-exec",
                                   PolicyDocument=json.dumps(EXECUTION_POLICY))["Policy"]["Arn"]
    iam.attach_role_policy(RoleName=f"{ENV}-ml-worker-exec", PolicyArn=policy_arn)
    stack.extra.update(task_role=task_role, exec_role=exec_role)

    if ssm:
        params = boto3.client("ssm")
        values = {"enabled": "true", "queue_url": url, "dlq_url": dlq_url, "cluster_name": stack.cluster,
                  "service_name": stack.service, "log_group": stack.log_group}
        if priority_url:
            values["priority_queue_url"] = priority_url
        for name, value in values.items():
            params.put_parameter(Name=PREFIX + name, Value=value, Type="String")
        params.put_parameter(Name=f"/zivohealth/{ENV}/database/user", Value="worker", Type="String")
        params.put_parameter(Name=f"/zivohealth/{ENV}/database/password", Value="s3cret", Type="SecureString")

    if logs:
        boto3.client("logs").create_log_group(logGroupName=stack.log_group)

    if images:
        ecr = boto3.client("ecr")
        for repo in (f"{ENV}-ml-worker-base", f"{ENV}-ml-worker"):
            ecr.create_repository(repositoryName=repo)
            manifest = json.dumps({"schemaVersion": 2, "mediaType":
                                   "application/vnd.docker.distribution.manifest.v2+json",
                                   "config": {"digest": "sha256:" + "a" * 64, "size": 1}, "layers": []})
            ecr.put_image(repositoryName=repo, imageManifest=manifest, imageTag="v1")

    if ecs:
        ec2 = boto3.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        stack.subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName="worker", Description="worker", VpcId=vpc)["GroupId"]
        stack.extra["network"] = {"awsvpcConfiguration": {"subnets": [stack.subnet], "securityGroups": [group]}}
        client = boto3.client("ecs")
        client.create_cluster(clusterName=stack.cluster, capacityProviders=["FARGATE", "FARGATE_SPOT"])
        client.register_task_definition(
            family=f"{ENV}-ml-worker", taskRoleArn=task_role, executionRoleArn=exec_role, networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"], cpu="1024", memory="4096",
            containerDefinitions=[{"name": "worker", "image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/"
                                   f"{ENV}-ml-worker:v1", "essential": True, "cpu": 1024,
                                   "memory": 4096}])
        client.create_service(
            cluster=stack.cluster, serviceName=stack.service, taskDefinition=f"{ENV}-ml-worker", desiredCount=desired,
            capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}],
            networkConfiguration=stack.extra["network"])

    if scaling:
        aas = boto3.client("application-autoscaling")
        resource_id = f"service/{stack.cluster}/{stack.service}"
        aas.register_scalable_target(ServiceNamespace="ecs", ResourceId=resource_id,
                                     ScalableDimension="ecs:service:DesiredCount", MinCapacity=0, MaxCapacity=4)
        cloudwatch = boto3.client("cloudwatch")
        for name, adjustments, comparison, threshold in (
            ("scale-out", [{"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 50, "ScalingAdjustment": 1},
                           {"MetricIntervalLowerBound": 50, "ScalingAdjustment": 3}],
             "GreaterThanOrEqualToThreshold", 1),
            ("scale-in", [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": -4}], "LessThanThreshold", 1),
        ):
            arn = aas.put_scaling_policy(
                PolicyName=f"{ENV}-ml-worker-{name}", ServiceNamespace="ecs", ResourceId=resource_id,
                ScalableDimension="ecs:service:DesiredCount", PolicyType="StepScaling",
                StepScalingPolicyConfiguration={"AdjustmentType": "ChangeInCapacity", "Cooldown": 60,
                                                "StepAdjustments": adjustments})["PolicyARN"]
            cloudwatch.put_metric_alarm(  # metric math on visible + in flight, as the platform builds it
                AlarmName=f"{ENV}-ml-worker-{name}", EvaluationPeriods=1, Threshold=threshold,
                ComparisonOperator=comparison, AlarmActions=[arn], Metrics=[
                    {"Id": short, "ReturnData": False, "MetricStat": {"Metric": {
                        "Namespace": "AWS/SQS", "MetricName": metric,
                        "Dimensions": [{"Name": "QueueName", "Value": f"{ENV}-ml-worker-queue"}]},
                        "Period": 60, "Stat": "Maximum"}}
                    for short, metric in (("visible0", "ApproximateNumberOfMessagesVisible"),
                                          ("inflight0", "ApproximateNumberOfMessagesNotVisible"))] + [
                    {"Id": "depth", "Expression": "visible0 + inflight0", "Label": "visible + in-flight messages",
                     "ReturnData": True}])
        cloudwatch.put_metric_alarm(
            AlarmName=f"{ENV}-ml-worker-dlq-not-empty", MetricName="ApproximateNumberOfMessagesVisible",
            Namespace="AWS/SQS", Statistic="Maximum", Period=60, EvaluationPeriods=1, Threshold=1,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            Dimensions=[{"Name": "QueueName", "Value": f"{ENV}-ml-worker-dlq"}])
    return stack


@pytest.fixture(autouse=True)
def quick_receives(monkeypatch):
    """moto answers a zero-wait receive exactly; the one-second long poll is for real SQS."""
    monkeypatch.setattr("opsctl.dlq.RECEIVE_WAIT_S", 0)


@pytest.fixture
def make_stack(aws, monkeypatch, tmp_path_factory):
    """Build the stack with options (priority=True, ssm=False, images=False, ...); call once per test."""
    for name in ("ML_WORKER_SQS_QUEUE_URL", "ML_WORKER_PRIORITY_QUEUE_URL", "ML_WORKER_DLQ_URL", "ML_WORKER_CLUSTER",
                 "ML_WORKER_SERVICE", "ML_WORKER_LOG_GROUP", "DATABASE_URL", "POSTGRES_HOST", "OPSCTL_ENV",
                 "COLUMNS", "OPSCTL_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    # No pulumi (even one installed on this machine) unless a test puts its fake there.
    monkeypatch.setenv("PATH", str(tmp_path_factory.mktemp("empty-path")))
    return build_stack


@pytest.fixture
def stack(make_stack) -> Stack:
    return make_stack()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def opsctl(runner):
    """Run opsctl in-process against env "test": opsctl("queue", "depth", "--json")."""
    from opsctl.cli import app

    def run(*args: str, input: str | None = None, env: str = ENV):
        result = runner.invoke(app, ["--env", env, *args], input=input)
        assert "Traceback" not in result.stderr, result.stderr  # errors are one line, never a traceback
        return result

    return run


@pytest.fixture
def hook(monkeypatch):
    """Register a botocore event handler on every client opsctl builds: hook("before-call.sqs.X", fn)."""
    from worker import aws as worker_aws

    original = worker_aws.client
    handlers: list[tuple[str, object]] = []

    def client(service, profile=None, region=None, config=None):
        made = original(service, profile=profile, region=region, config=config)
        for event, handler in handlers:
            made.meta.events.register(event, handler)
        return made

    monkeypatch.setattr(worker_aws, "client", client)

    def add(event: str, handler) -> None:
        handlers.append((event, handler))

    return add
