"""Every property the platform issue asks for, asserted on the resources the program registers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlw_config import PACKAGED_MODEL_DIR, PlatformConfig, StackConfigError
from mlw_mocks import ACCOUNT, REPO_ROOT, SUBNETS, VPC_CIDR, VPC_ID, run_program

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


def test_config_is_the_committed_production_stack_filled_in(program):
    assert program.config["aws:region"] == REGION
    assert program.config["zivo-ml-worker:environment"] == ENV
    assert program.config["zivo-ml-worker:vpcId"] == VPC_ID


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


@pytest.mark.parametrize("fixture", ["program", "priority_program"])
def test_job_queues_wait_for_the_redrive_allow_policy(fixture, request):
    """SQS refuses a redrive policy to a DLQ whose allow policy does not list the queue yet."""
    prog = request.getfixturevalue(fixture)
    allow = prog.one("aws:sqs/redriveAllowPolicy:RedriveAllowPolicy")
    job_queues = [q for q in prog.of_type(QUEUE_TYPE) if "redrivePolicy" in q.inputs]
    assert len(job_queues) == (2 if fixture == "priority_program" else 1)
    for queue in job_queues:
        assert any(d.endswith(f"::{allow.name}") for d in queue.dependencies), queue.dependencies
    dlq = prog.named(QUEUE_TYPE, f"{ENV}-ml-worker-dlq")
    assert not any(d.endswith(f"::{allow.name}") for d in dlq.dependencies)


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
    assert allow["sourceQueueArns"] == [PRIORITY_ARN, QUEUE_ARN]  # from the names, not waiting for the queues
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
    policies = program.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    assert len(policies) == 2
    for policy in policies:
        [rule] = policy.json("policy")["rules"]
        assert rule["selection"] == {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 10}
        assert rule["action"] == {"type": "expire"} and rule["rulePriority"] == 1  # ECR's priorities start at 1


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
    # The worker is built FROM the base image's (digest-pinned) URI; its runtime stage puts the model's
    # export where the base image has the model, and where the task definition points ML_WORKER_MODEL.
    assert worker.inputs["args"] == {"BASE_IMAGE": base.outputs["imageUri"], "MODEL_DIR": PACKAGED_MODEL_DIR}
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
    assert c["healthCheck"] == {"command": ["CMD", "python", "-m", "worker", "healthcheck"], "interval": 30,
                                "timeout": 10, "retries": 3, "startPeriod": 180}
    assert c["linuxParameters"] == {"initProcessEnabled": True}
    log = c["logConfiguration"]
    assert log["logDriver"] == "awslogs"
    assert log["options"]["awslogs-group"] == f"/ecs/{ENV}-ml-worker"
    assert log["options"]["awslogs-region"] == REGION


def test_worker_environment_and_secrets(program):
    env = {e["name"]: e["value"] for e in container(program)["environment"]}
    assert env == {
        "ML_WORKER_SQS_QUEUE_URL": url(f"{ENV}-ml-worker-queue"),
        "ML_WORKER_DLQ_URL": url(f"{ENV}-ml-worker-dlq"),
        "ML_WORKER_BATCH_SIZE": "5",  # at most the target depth: every task the table asks for finds work
        "ML_WORKER_WAIT_TIME": "20",
        "ML_WORKER_VISIBILITY_TIMEOUT": "300",
        "ML_WORKER_SHUTDOWN_DEADLINE": "90",
        "ML_WORKER_MODEL": PACKAGED_MODEL_DIR,
        "ML_WORKER_INDEX_DIR": PlatformConfig.index_dir,
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


def test_batch_size_never_exceeds_the_target_depth_nor_sqs_max():
    for target, batch in [(1, 1), (3, 3), (5, 5), (10, 10), (25, 10)]:
        prog = run_program({"targetQueueDepth": target})
        env = {e["name"]: e["value"] for e in container(prog)["environment"]}
        assert env["ML_WORKER_BATCH_SIZE"] == str(batch), target


def test_biobert_build_option_moves_the_model_everywhere():
    revision = "0123456789abcdef0123456789abcdef01234567"
    prog = run_program({"biobertRevision": revision})
    env = {e["name"]: e["value"] for e in container(prog)["environment"]}
    assert env["ML_WORKER_MODEL"] == "/opt/models/biobert-mnli-snli-scinli-scitail-mednli-stsb"
    base = prog.one("awsx:ecr:Image", "base-image")
    assert base.inputs["args"] == {"BIOBERT_REVISION": revision, "MODEL_DIR": env["ML_WORKER_MODEL"]}
    worker = prog.one("awsx:ecr:Image", "worker-image")
    assert worker.inputs["args"]["MODEL_DIR"] == env["ML_WORKER_MODEL"]


def test_log_group_with_retention(program):
    lg = program.one("aws:cloudwatch/logGroup:LogGroup").inputs
    assert lg["name"] == f"/ecs/{ENV}-ml-worker" and lg["retentionInDays"] == 30


@pytest.mark.parametrize("fixture", ["program", "priority_program"])
def test_stateful_resources_are_protected_and_retained(fixture, request):
    prog = request.getfixturevalue(fixture)
    stateful = (prog.of_type(QUEUE_TYPE) + prog.of_type("aws:ecr/repository:Repository")
                + prog.of_type("aws:cloudwatch/logGroup:LogGroup"))
    assert len(stateful) == (3 if fixture == "priority_program" else 2) + 2 + 1
    for r in stateful:
        assert r.protect and r.retain_on_delete, f"{r.type} {r.name}"
    # Everything else can be replaced freely (protecting it would only block fixes).
    others = [r for r in prog.resources if r.custom and r not in stateful and r.protect]
    assert others == []


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
    assert net["subnets"] == program.config["zivo-ml-worker:privateSubnetIds"] == list(SUBNETS)
    assert net["securityGroups"] == ["security-group-id"]  # the mock's id for the worker's security group
    assert s["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert (s["deploymentMinimumHealthyPercent"], s["deploymentMaximumPercent"]) == (100, 200)
    assert s["waitForSteadyState"] is False  # the service sits at 0 tasks: there is no steady state to wait for


def test_security_group_has_no_ingress(program):
    sg = program.one("aws:ec2/securityGroup:SecurityGroup", "security-group").inputs
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


# --- alarms ---------------------------------------------------------------------------------

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
ONCALL = f"arn:aws:sns:{REGION}:{ACCOUNT}:oncall"


def test_alarms_go_to_the_configured_topic(program):
    assert program.of_type("aws:sns/topic:Topic") == []  # the on-call topic exists already
    for name in ("dlq-messages", "oldest-message-age", "tasks-not-starting"):
        a = program.one(ALARM, name).inputs
        assert a["alarmActions"] == [ONCALL] and a["okActions"] == [ONCALL], name
    assert program.outputs["alarm_topic_arn"] == ONCALL


def test_alarm_email_gets_its_own_topic_besides(priority_program):
    topic = priority_program.one("aws:sns/topic:Topic")
    assert topic.inputs["name"] == f"{ENV}-ml-worker-alarms"
    sub = priority_program.one("aws:sns/topicSubscription:TopicSubscription").inputs
    assert (sub["protocol"], sub["endpoint"], sub["topic"]) == ("email", "oncall@example.com", topic.outputs["arn"])
    a = priority_program.one(ALARM, "dlq-messages").inputs
    assert a["alarmActions"] == a["okActions"] == [ONCALL, topic.outputs["arn"]]


def test_email_only_stack():
    prog = run_program({"alarmTopicArn": None, "alarmEmail": "ops@example.com"})
    topic = prog.one("aws:sns/topic:Topic").outputs["arn"]
    assert prog.one(ALARM, "dlq-messages").inputs["alarmActions"] == [topic]
    assert prog.outputs["alarm_topic_arn"] == topic


def _queries(alarm) -> tuple[dict, str]:
    metrics = {q["id"]: q["metric"] for q in alarm.inputs["metricQueries"] if "metric" in q}
    [result] = [q for q in alarm.inputs["metricQueries"] if q.get("returnData")]
    return metrics, result["expression"]


def test_dlq_alarm_counts_visible_and_in_flight(program):
    a = program.one(ALARM, "dlq-messages")
    metrics, expression = _queries(a)
    assert {m["metricName"] for m in metrics.values()} == {"ApproximateNumberOfMessagesVisible",
                                                          "ApproximateNumberOfMessagesNotVisible"}
    for m in metrics.values():
        assert m["dimensions"] == {"QueueName": f"{ENV}-ml-worker-dlq"}
        assert (m["namespace"], m["period"], m["stat"]) == ("AWS/SQS", 60, "Maximum")
    assert expression == "SUM([FILL(visible, 0), FILL(inflight, 0)])"
    i = a.inputs
    assert (i["comparisonOperator"], i["threshold"], i["evaluationPeriods"]) == ("GreaterThanThreshold", 0, 1)
    assert i["treatMissingData"] == "notBreaching"


def test_oldest_message_age_alarms(program, priority_program):
    a = program.one(ALARM, "oldest-message-age").inputs
    assert a["metricName"] == "ApproximateAgeOfOldestMessage"
    assert a["dimensions"] == {"QueueName": f"{ENV}-ml-worker-queue"}
    assert (a["comparisonOperator"], a["threshold"], a["period"], a["evaluationPeriods"]) == (
        "GreaterThanThreshold", 900, 60, 5)
    p = priority_program.one(ALARM, "priority-oldest-message-age").inputs
    assert p["dimensions"] == {"QueueName": f"{ENV}-ml-worker-priority"}


def test_tasks_not_starting_alarm(program):
    """Desired > 0 while running = 0 for 10 minutes: tasks that cannot start (no network path, no secret)."""
    a = program.one(ALARM, "tasks-not-starting")
    metrics, expression = _queries(a)
    assert metrics["desired"]["metricName"] == "DesiredTaskCount"
    assert metrics["running"]["metricName"] == "RunningTaskCount"
    for m in metrics.values():
        assert m["namespace"] == "ECS/ContainerInsights"
        assert m["dimensions"] == {"ClusterName": f"{ENV}-ml-worker", "ServiceName": f"{ENV}-ml-worker"}
    assert expression == "IF(FILL(running, 0) == 0, FILL(desired, 0), 0)"
    i = a.inputs
    assert (i["comparisonOperator"], i["threshold"]) == ("GreaterThanThreshold", 0)
    assert i["evaluationPeriods"] == i["datapointsToAlarm"] == 10


# --- dashboard ----------------------------------------------------------------------------------

def test_dashboard(program):
    dash = program.one("aws:cloudwatch/dashboard:Dashboard")
    assert dash.inputs["dashboardName"] == f"{ENV}-ml-worker"
    widgets = dash.json("dashboardBody")["widgets"]
    titles = [w["properties"]["title"] for w in widgets]
    assert titles == ["Queue depth (visible and in flight), DLQ", "Oldest message age (s)", "Tasks: desired vs running",
                      "Jobs and tests per minute", "Job latency (s)", "Alarms"]
    assert {w["properties"].get("period", 60) for w in widgets} == {60}
    # Two widgets per row on CloudWatch's 24-column grid, 6 rows high, none overlapping.
    assert [(w["x"], w["y"], w["width"], w["height"]) for w in widgets] == [
        (12 * (i % 2), 6 * (i // 2), 12, 6) for i in range(len(widgets))]
    depth = {(m[1], m[3]) for m in widgets[0]["properties"]["metrics"]}
    for queue in (f"{ENV}-ml-worker-queue", f"{ENV}-ml-worker-dlq"):
        assert {("ApproximateNumberOfMessagesVisible", queue),
                ("ApproximateNumberOfMessagesNotVisible", queue)} <= depth
    assert {tuple(m[:6]) for m in widgets[2]["properties"]["metrics"]} == {
        ("ECS/ContainerInsights", metric, "ClusterName", f"{ENV}-ml-worker", "ServiceName", f"{ENV}-ml-worker")
        for metric in ("DesiredTaskCount", "RunningTaskCount")}
    assert {m[1] for m in widgets[3]["properties"]["metrics"]} == {"JobsCompleted", "TestsMapped"}
    assert {m[1] for m in widgets[4]["properties"]["metrics"]} == {"JobSeconds"}
    alarm_arns = {a.outputs["arn"] for a in program.of_type(ALARM)}
    assert set(widgets[5]["properties"]["alarms"]) == alarm_arns and len(alarm_arns) == 5
    url = f"https://{REGION}.console.aws.amazon.com/cloudwatch/home?region={REGION}#dashboards:name={ENV}-ml-worker"
    assert program.outputs["ml_worker_dashboard_url"] == url


def test_job_metrics_come_from_the_workers_completion_lines(program):
    filters = {f.inputs["metricTransformation"]["name"]: f.inputs for f in
               program.of_type("aws:cloudwatch/logMetricFilter:LogMetricFilter")}
    assert set(filters) == {"JobsCompleted", "TestsMapped", "JobSeconds"}
    for f in filters.values():
        assert f["logGroupName"] == f"/ecs/{ENV}-ml-worker"
        assert f["pattern"] == '{ $.message = "completed lab categorization*" }'
        assert f["metricTransformation"]["namespace"] == f"MLWorker/{ENV}"
    assert filters["TestsMapped"]["metricTransformation"]["value"] == "$.test_count"
    assert filters["JobSeconds"]["metricTransformation"]["value"] == "$.seconds"


def test_the_worker_logs_what_the_filters_read():
    """The handler's completion line carries the fields the metric filters take (test_count, seconds)."""
    source = (REPO_ROOT / "worker" / "handler.py").read_text()
    assert 'log.info("completed lab categorization for user' in source
    start = source.index('log.info("completed lab categorization')
    assert "test_count=" in source[start:start + 400] and "seconds=" in source[start:start + 400]


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
        f"{prefix}/dashboard_url": program.outputs["ml_worker_dashboard_url"],
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
    staging = run_program({"environment": "staging", "aws:region": "us-east-1", "priorityQueue": True,
                           "apiRoleArn": f"arn:aws:iam::{ACCOUNT}:role/zivohealth-staging-api",
                           "alarmTopicArn": None})
    named = [r.inputs["name"] for r in staging.resources if isinstance(r.inputs.get("name"), str)]
    assert named and all("production" not in n for n in named)
    assert {n for n in named if "staging" not in n} == {"ml-worker-execution", "ml-worker-task"}  # inline policy names
    blob = json.dumps([r.inputs for r in staging.resources], default=str)
    assert "production-ml-worker" not in blob and "/zivohealth/production" not in blob
    assert "ap-south-1" not in blob.replace(staging.config["zivo-ml-worker:databaseHost"], "")
    assert staging.outputs["ml_worker_cluster_name"] == "staging-ml-worker"


BASE = dict(region="ap-south-1", vpcId="vpc-1", privateSubnetIds=["subnet-1"], databaseHost="db",
            databaseName="app", apiRoleArn=API_ROLE)


@pytest.mark.parametrize("overrides,message", [
    ({"taskCpu": 512, "taskMemory": 8192}, "not a Fargate size"),
    ({"minCapacity": 4, "maxCapacity": 3}, "minCapacity"),
    ({"targetQueueDepth": 0}, "targetQueueDepth"),
    ({"logRetentionDays": 10}, "logRetentionDays"),
    ({"scaleInAfterMinutes": 1}, "scaleInAfterMinutes"),
    ({"privateSubnetIds": []}, "privateSubnetIds"),
    ({"vpcEndpoints": "true"}, "privateRouteTableIds"),
    ({"apiRoleArn": "zivohealth-production-api"}, "apiRoleArn"),
    ({"alarmEmail": "not-an-address"}, "alarmEmail"),
    ({"biobertRevision": "main"}, "biobertRevision"),
    ({"logLevel": "LOUD"}, "logLevel"),
])
def test_invalid_config_is_refused_in_one_line_naming_the_key(overrides, message):
    values = {k: v for k, v in {**BASE, **overrides}.items() if k != "region"}
    with pytest.raises(StackConfigError, match=message) as refused:
        PlatformConfig.from_values(values, BASE["region"])
    assert "\n" not in str(refused.value)


def test_config_values_arrive_as_pulumi_strings():
    cfg = PlatformConfig.from_values({**{k: v for k, v in BASE.items() if k != "region"}, "maxCapacity": "4",
                                      "priorityQueue": "true", "privateSubnetIds": '["subnet-1", "subnet-2"]',
                                      "alarmEmail": ""}, "ap-south-1")
    assert (cfg.max_capacity, cfg.priority_queue, cfg.private_subnet_ids, cfg.alarm_email) == (
        4, True, ("subnet-1", "subnet-2"), None)
