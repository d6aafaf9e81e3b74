"""Every property the platform issue asks for, asserted on the resources the program registers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlw_mocks import ACCOUNT, REPO_ROOT, VPC_CIDR, run_program

REGION = "ap-south-1"
ENV = "production"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{ENV}-ml-worker-queue"
PRIORITY_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{ENV}-ml-worker-priority"
DLQ_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{ENV}-ml-worker-dlq"
API_ROLE = f"arn:aws:iam::{ACCOUNT}:role/zivohealth-production-api"
QUEUE_TYPE = "aws:sqs/queue:Queue"


def url(name: str) -> str:
    return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"


def container(prog) -> dict:
    [definition] = prog.one("aws:ecs/taskDefinition:TaskDefinition").json("containerDefinitions")
    return definition


def policy(prog, name: str) -> dict:
    return prog.one("aws:iam/rolePolicy:RolePolicy", name).json("policy")


def test_config_is_the_committed_production_stack(program):
    assert program.config["aws:region"] == REGION
    assert program.config["zivo-ml-worker:environment"] == ENV


# --- queues -------------------------------------------------------------------------------------

def test_main_queue(program):
    q = program.named(QUEUE_TYPE, f"{ENV}-ml-worker-queue").inputs
    assert q["visibilityTimeoutSeconds"] == 300
    assert q["receiveWaitTimeSeconds"] == 20
    assert q["messageRetentionSeconds"] == 4 * 24 * 3600
    assert q["sqsManagedSseEnabled"] is True
    assert json.loads(q["redrivePolicy"]) == {"deadLetterTargetArn": DLQ_ARN, "maxReceiveCount": 3}


def test_dlq(program):
    q = program.named(QUEUE_TYPE, f"{ENV}-ml-worker-dlq").inputs
    assert q["messageRetentionSeconds"] == 14 * 24 * 3600
    assert q["sqsManagedSseEnabled"] is True
    assert "redrivePolicy" not in q
    allow = program.one("aws:sqs/redriveAllowPolicy:RedriveAllowPolicy")
    assert allow.inputs["queueUrl"] == url(f"{ENV}-ml-worker-dlq")
    assert allow.json("redriveAllowPolicy") == {"redrivePermission": "byQueue", "sourceQueueArns": [QUEUE_ARN]}


def test_no_priority_queue_unless_enabled(program):
    assert sorted(r.inputs["name"] for r in program.of_type(QUEUE_TYPE)) == [
        f"{ENV}-ml-worker-dlq", f"{ENV}-ml-worker-queue"]
    assert "ml_worker_priority_queue_url" not in program.outputs


def test_priority_queue_likewise(priority_program):
    main = priority_program.named(QUEUE_TYPE, f"{ENV}-ml-worker-queue").inputs
    prio = priority_program.named(QUEUE_TYPE, f"{ENV}-ml-worker-priority").inputs
    for key in ("visibilityTimeoutSeconds", "receiveWaitTimeSeconds", "messageRetentionSeconds",
                "sqsManagedSseEnabled", "redrivePolicy"):
        assert prio[key] == main[key], key
    allow = priority_program.one("aws:sqs/redriveAllowPolicy:RedriveAllowPolicy").json("redriveAllowPolicy")
    assert sorted(allow["sourceQueueArns"]) == sorted([QUEUE_ARN, PRIORITY_ARN])
    assert priority_program.outputs["ml_worker_priority_queue_url"] == url(f"{ENV}-ml-worker-priority")


def _send_policies(prog) -> dict[str, dict]:
    return {r.inputs["queueUrl"]: r.json("policy") for r in prog.of_type("aws:sqs/queuePolicy:QueuePolicy")}


def test_queue_policy_lets_only_the_api_role_send(program):
    policies = _send_policies(program)
    assert list(policies) == [url(f"{ENV}-ml-worker-queue")]
    allow, deny = policies[url(f"{ENV}-ml-worker-queue")]["Statement"]
    assert allow["Effect"] == "Allow" and allow["Principal"] == {"AWS": [API_ROLE]}
    assert allow["Action"] == "sqs:SendMessage" and allow["Resource"] == QUEUE_ARN
    assert deny["Effect"] == "Deny" and deny["Action"] == "sqs:SendMessage" and deny["Resource"] == QUEUE_ARN
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": [API_ROLE]}}


def test_priority_queue_policy_and_operator_roles(priority_program):
    policies = _send_policies(priority_program)
    assert set(policies) == {url(f"{ENV}-ml-worker-queue"), url(f"{ENV}-ml-worker-priority")}
    senders = [API_ROLE, f"arn:aws:iam::{ACCOUNT}:role/ops"]
    for doc in policies.values():
        allow, deny = doc["Statement"]
        assert allow["Principal"] == {"AWS": senders}
        assert deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"] == senders


# --- images -------------------------------------------------------------------------------------

def _resolved(path: str) -> Path:
    return (Path.cwd() / path).resolve()


def test_ecr_repositories(program):
    repos = {r.inputs["name"]: r.inputs for r in program.of_type("aws:ecr/repository:Repository")}
    assert set(repos) == {f"{ENV}-ml-worker-base", f"{ENV}-ml-worker"}
    for repo in repos.values():
        assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert len(program.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")) == 2


def test_awsx_image_inputs(program):
    base = program.one("awsx:ecr:Image", "base-image")
    worker = program.one("awsx:ecr:Image", "worker-image")
    assert base.remote and worker.remote  # awsx components: only their inputs are visible under mocks
    for image in (base, worker):
        assert image.inputs["platform"] == "linux/amd64"
    assert base.inputs["repositoryUrl"] == f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{ENV}-ml-worker-base"
    assert worker.inputs["repositoryUrl"] == f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{ENV}-ml-worker"
    assert _resolved(base.inputs["context"]) == REPO_ROOT / "images" / "base"
    assert _resolved(base.inputs["dockerfile"]) == REPO_ROOT / "images" / "base" / "Dockerfile"
    assert _resolved(worker.inputs["context"]) == REPO_ROOT
    assert _resolved(worker.inputs["dockerfile"]) == REPO_ROOT / "images" / "worker" / "Dockerfile"
    for key in ("context", "dockerfile"):  # relative: the inputs don't change with the checkout's path
        assert not Path(base.inputs[key]).is_absolute() and not Path(worker.inputs[key]).is_absolute()
    # The worker is built FROM the base image's (digest-pinned) URI.
    assert worker.inputs["args"] == {"BASE_IMAGE": base.outputs["imageUri"]}
    assert "@sha256:" in base.outputs["imageUri"]
    assert "args" not in base.inputs


def test_task_runs_the_worker_image(program):
    assert container(program)["image"] == program.one("awsx:ecr:Image", "worker-image").outputs["imageUri"]


# --- service ------------------------------------------------------------------------------------

def test_cluster_spot_and_container_insights(program):
    cluster = program.one("aws:ecs/cluster:Cluster").inputs
    assert cluster["name"] == f"{ENV}-ml-worker"
    assert {"name": "containerInsights", "value": "enabled"} in cluster["settings"]
    cp = program.one("aws:ecs/clusterCapacityProviders:ClusterCapacityProviders").inputs
    assert sorted(cp["capacityProviders"]) == ["FARGATE", "FARGATE_SPOT"]


def test_task_definition(program):
    td = program.one("aws:ecs/taskDefinition:TaskDefinition").inputs
    assert td["family"] == f"{ENV}-ml-worker"
    assert (td["cpu"], td["memory"]) == ("512", "3072")
    assert td["requiresCompatibilities"] == ["FARGATE"] and td["networkMode"] == "awsvpc"
    assert td["runtimePlatform"] == {"operatingSystemFamily": "LINUX", "cpuArchitecture": "X86_64"}
    assert td["executionRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/{ENV}-ml-worker-execution"
    assert td["taskRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/{ENV}-ml-worker-task"

    c = container(program)
    assert c["essential"] is True
    assert c["command"] == ["python", "-m", "worker"]
    assert c["stopTimeout"] == 120
    assert c["healthCheck"]["command"] == ["CMD", "python", "-m", "worker", "healthcheck"]
    log = c["logConfiguration"]
    assert log["logDriver"] == "awslogs"
    assert log["options"]["awslogs-group"] == f"/ecs/{ENV}-ml-worker"
    assert log["options"]["awslogs-region"] == REGION


def test_worker_environment_and_secrets(program):
    from mlw_config import PlatformConfig

    env = {e["name"]: e["value"] for e in container(program)["environment"]}
    defaults = PlatformConfig.__dataclass_fields__
    assert env == {
        "ML_WORKER_SQS_QUEUE_URL": url(f"{ENV}-ml-worker-queue"),
        "ML_WORKER_DLQ_URL": url(f"{ENV}-ml-worker-dlq"),
        "ML_WORKER_BATCH_SIZE": "10",
        "ML_WORKER_WAIT_TIME": "20",
        "ML_WORKER_VISIBILITY_TIMEOUT": "300",
        "ML_WORKER_SHUTDOWN_DEADLINE": "90",
        "ML_WORKER_MODEL": defaults["model_dir"].default,
        "ML_WORKER_INDEX_DIR": defaults["index_dir"].default,
        "LOG_LEVEL": "INFO",
        "AWS_REGION": REGION,
        "POSTGRES_HOST": program.config["zivo-ml-worker:databaseHost"],
        "POSTGRES_PORT": "5432",
        "POSTGRES_DB": program.config["zivo-ml-worker:databaseName"],
    }
    secrets = {s["name"]: s["valueFrom"] for s in container(program)["secrets"]}
    assert secrets == {
        "POSTGRES_USER": f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/zivohealth/{ENV}/database/user",
        "POSTGRES_PASSWORD": f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/zivohealth/{ENV}/database/password",
    }
    assert not set(secrets) & set(env)
    assert not any("PASSWORD" in k or "USER" in k for k in env)


def test_priority_queue_url_in_environment(priority_program):
    env = {e["name"]: e["value"] for e in container(priority_program)["environment"]}
    assert env["ML_WORKER_PRIORITY_QUEUE_URL"] == url(f"{ENV}-ml-worker-priority")


def test_log_group_with_retention(program):
    lg = program.one("aws:cloudwatch/logGroup:LogGroup").inputs
    assert lg["name"] == f"/ecs/{ENV}-ml-worker" and lg["retentionInDays"] == 30


def test_service(program):
    svc = program.one("aws:ecs/service:Service")
    s = svc.inputs
    assert s["name"] == f"{ENV}-ml-worker"
    assert s["cluster"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{ENV}-ml-worker"
    assert s["desiredCount"] == 0
    assert svc.ignore_changes == ["desiredCount"]  # the scaling policies own it
    assert s["capacityProviderStrategies"] == [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]
    assert "launchType" not in s
    net = s["networkConfiguration"]
    assert net["assignPublicIp"] is False
    assert net["subnets"] == program.config["zivo-ml-worker:privateSubnetIds"]
    assert net["securityGroups"] == ["security-group-id"]  # the mock's id for the worker's security group
    assert s["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}


def test_security_group_has_no_ingress(program):
    sg = program.one("aws:ec2/securityGroup:SecurityGroup").inputs
    assert sg["vpcId"] == program.config["zivo-ml-worker:vpcId"]
    assert sg["ingress"] == []
    egress = {(e["protocol"], e["fromPort"], e["toPort"], tuple(e["cidrBlocks"])) for e in sg["egress"]}
    assert egress == {("tcp", 443, 443, ("0.0.0.0/0",)), ("tcp", 5432, 5432, (VPC_CIDR,))}


# --- IAM ----------------------------------------------------------------------------------------

def _actions_by_resource(doc: dict) -> dict[str, set[str]]:
    grants: dict[str, set[str]] = {}
    for st in doc["Statement"]:
        assert st["Effect"] == "Allow"
        for res in [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]:
            grants.setdefault(res, set()).update([st["Action"]] if isinstance(st["Action"], str) else st["Action"])
    return grants


def test_roles_trust_only_ecs_tasks_of_this_account(program):
    for role in program.of_type("aws:iam/role:Role"):
        [st] = role.json("assumeRolePolicy")["Statement"]
        assert st["Principal"] == {"Service": "ecs-tasks.amazonaws.com"} and st["Action"] == "sts:AssumeRole"
        assert st["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}


def test_execution_role_pulls_logs_and_reads_only_its_secrets(program):
    grants = _actions_by_resource(policy(program, "execution-policy"))
    assert grants == {
        "*": {"ecr:GetAuthorizationToken"},
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{ENV}-ml-worker":
            {"ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"},
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/ecs/{ENV}-ml-worker:*":
            {"logs:CreateLogStream", "logs:PutLogEvents"},
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/zivohealth/{ENV}/database/user": {"ssm:GetParameters"},
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/zivohealth/{ENV}/database/password": {"ssm:GetParameters"},
    }


@pytest.mark.parametrize("fixture", ["program", "priority_program"])
def test_task_role_consumes_sends_to_dlq_protects_itself(fixture, request):
    prog = request.getfixturevalue(fixture)
    grants = _actions_by_resource(policy(prog, "task-policy"))
    consume = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"}
    expected = {
        QUEUE_ARN: consume,
        DLQ_ARN: {"sqs:SendMessage", "sqs:GetQueueAttributes"},
        f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{ENV}-ml-worker/*": {"ecs:UpdateTaskProtection"},
    }
    if fixture == "priority_program":
        expected[PRIORITY_ARN] = consume
    assert grants == expected


@pytest.mark.parametrize("fixture", ["program", "priority_program"])
def test_api_role_may_send_to_main_and_priority_only(fixture, request):
    prog = request.getfixturevalue(fixture)
    rp = prog.one("aws:iam/rolePolicy:RolePolicy", "api-send-policy")
    assert rp.inputs["role"] == "zivohealth-production-api"
    grants = _actions_by_resource(rp.json("policy"))
    expected = {QUEUE_ARN: {"sqs:SendMessage"}}
    if fixture == "priority_program":
        expected[PRIORITY_ARN] = {"sqs:SendMessage"}
    assert grants == expected


# --- alarms -------------------------------------------------------------------------------------

def test_alarm_topic_and_optional_email(program, priority_program):
    assert program.one("aws:sns/topic:Topic").inputs["name"] == f"{ENV}-ml-worker-alarms"
    assert program.of_type("aws:sns/topicSubscription:TopicSubscription") == []
    sub = priority_program.one("aws:sns/topicSubscription:TopicSubscription").inputs
    assert (sub["protocol"], sub["endpoint"]) == ("email", "oncall@example.com")


def test_dlq_alarm_on_any_message(program):
    topic = program.one("aws:sns/topic:Topic").outputs["arn"]
    a = program.one("aws:cloudwatch/metricAlarm:MetricAlarm", "dlq-messages").inputs
    assert (a["namespace"], a["metricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert a["dimensions"] == {"QueueName": f"{ENV}-ml-worker-dlq"}
    assert (a["comparisonOperator"], a["threshold"]) == ("GreaterThanThreshold", 0)
    assert a["alarmActions"] == [topic]


def test_oldest_message_age_alarms(program, priority_program):
    topic = program.one("aws:sns/topic:Topic").outputs["arn"]
    a = program.one("aws:cloudwatch/metricAlarm:MetricAlarm", "oldest-message-age").inputs
    assert a["metricName"] == "ApproximateAgeOfOldestMessage"
    assert a["dimensions"] == {"QueueName": f"{ENV}-ml-worker-queue"}
    assert (a["comparisonOperator"], a["threshold"]) == ("GreaterThanThreshold", 900)
    assert a["alarmActions"] == [topic]
    p = priority_program.one("aws:cloudwatch/metricAlarm:MetricAlarm", "priority-oldest-message-age").inputs
    assert p["dimensions"] == {"QueueName": f"{ENV}-ml-worker-priority"}


# --- SSM parameters and outputs -----------------------------------------------------------------

def _params(prog) -> dict[str, str]:
    params = prog.of_type("aws:ssm/parameter:Parameter")
    assert all(p.inputs["type"] == "String" for p in params)
    return {p.inputs["name"]: p.inputs["value"] for p in params}


def test_ssm_parameters(program, priority_program):
    prefix = f"/zivohealth/{ENV}/ml_worker"
    expected = {
        f"{prefix}/enabled": "true",
        f"{prefix}/queue_url": url(f"{ENV}-ml-worker-queue"),
        f"{prefix}/dlq_url": url(f"{ENV}-ml-worker-dlq"),
        f"{prefix}/cluster_name": f"{ENV}-ml-worker",
        f"{prefix}/service_name": f"{ENV}-ml-worker",
        f"{prefix}/log_group": f"/ecs/{ENV}-ml-worker",
    }
    assert _params(program) == expected
    assert _params(priority_program) == {**expected, f"{prefix}/priority_queue_url": url(f"{ENV}-ml-worker-priority")}


def test_outputs(program):
    out = program.outputs
    assert out["ml_worker_queue_url"] == url(f"{ENV}-ml-worker-queue")
    assert out["ml_worker_dlq_url"] == url(f"{ENV}-ml-worker-dlq")
    assert out["ml_worker_cluster_name"] == f"{ENV}-ml-worker"
    assert out["ml_worker_service_name"] == f"{ENV}-ml-worker"
    assert out["ml_worker_log_group"] == f"/ecs/{ENV}-ml-worker"
    assert out["base_image_uri"] == program.one("awsx:ecr:Image", "base-image").outputs["imageUri"]
    assert out["worker_image_uri"] == program.one("awsx:ecr:Image", "worker-image").outputs["imageUri"]


# --- nothing environment-specific is hard-coded -------------------------------------------------

def test_another_environment_renames_everything():
    staging = run_program({"environment": "staging", "aws:region": "us-east-1", "priorityQueue": True})
    named = [r.inputs["name"] for r in staging.resources if isinstance(r.inputs.get("name"), str)]
    assert named and all("production" not in n for n in named)
    assert {n for n in named if "staging" not in n} == {"ml-worker-execution", "ml-worker-task"}  # inline policy names
    blob = json.dumps([r.inputs for r in staging.resources], default=str)
    assert "production-ml-worker" not in blob and "/zivohealth/production" not in blob
    assert "ap-south-1" not in blob.replace(staging.config["zivo-ml-worker:databaseHost"], "")
    assert staging.outputs["ml_worker_cluster_name"] == "staging-ml-worker"


@pytest.mark.parametrize("overrides,message", [
    ({"taskCpu": 512, "taskMemory": 8192}, "not a Fargate size"),
    ({"minCapacity": 4, "maxCapacity": 3}, "minCapacity"),
    ({"targetQueueDepth": 0}, "targetQueueDepth"),
    ({"logRetentionDays": 10}, "logRetentionDays"),
    ({"scaleInAfterMinutes": 1}, "scaleInAfterMinutes"),
])
def test_invalid_config_is_refused(overrides, message):
    from mlw_config import PlatformConfig

    base = dict(region="ap-south-1", vpc_id="vpc-1", private_subnet_ids=("subnet-1",), database_host="db",
                database_name="app", api_role_arn=API_ROLE)
    fields = {"taskCpu": "task_cpu", "taskMemory": "task_memory", "minCapacity": "min_capacity",
              "maxCapacity": "max_capacity", "targetQueueDepth": "target_queue_depth",
              "logRetentionDays": "log_retention_days", "scaleInAfterMinutes": "scale_in_after_minutes"}
    with pytest.raises(ValueError, match=message):
        PlatformConfig(**base, **{fields[k]: v for k, v in overrides.items()})
