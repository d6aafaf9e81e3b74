"""The Fargate Spot service that runs `python -m worker`: cluster, log group, task definition, service.

The service starts at desired count 0 and Pulumi never touches the desired count again: the
queue-depth scaling (mlw_scaling) owns it. Tasks run in private subnets with no public IP behind
the network's security group, which has no ingress at all. The log group keeps the worker's
history: it is protected like the queues.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from mlw_config import PlatformConfig
from mlw_iam import WorkerIam
from mlw_network import WorkerNetwork
from mlw_preflight import AwsContext
from mlw_queues import WorkerQueues
from mlw_stateful import stateful

HEALTH_CHECK = {
    "command": ["CMD", "python", "-m", "worker", "healthcheck"],
    "interval": 30,
    "timeout": 10,
    "retries": 3,
    # Loading the model takes a while on 0.5 vCPU; the reference index is prebuilt in the image.
    "startPeriod": 180,
}
# What ECS accepts (RegisterTaskDefinition's HealthCheck; a test reads the ranges from botocore's model).
HEALTH_CHECK_RANGES = {"interval": (5, 300), "timeout": (2, 60), "retries": (1, 10), "startPeriod": (0, 300)}


def checked_health_check(check: dict) -> dict:
    """The container health check, refused here if ECS would refuse it at deploy time."""
    for key, (low, high) in HEALTH_CHECK_RANGES.items():
        if not low <= check[key] <= high:
            raise ValueError(f"health check {key} {check[key]} is outside ECS's {low}..{high}")
    if check["timeout"] >= check["interval"]:
        raise ValueError("the health check's timeout must be shorter than its interval")
    return check


def worker_environment(cfg: PlatformConfig, queue_url: str, dlq_url: str, priority_url: str | None) -> list[dict]:
    """The worker's settings as plain task-definition environment (secrets come separately)."""
    env = {
        "ML_WORKER_SQS_QUEUE_URL": queue_url,
        "ML_WORKER_DLQ_URL": dlq_url,
        "ML_WORKER_BATCH_SIZE": str(cfg.batch_size),
        "ML_WORKER_WAIT_TIME": str(cfg.wait_time),
        "ML_WORKER_VISIBILITY_TIMEOUT": str(cfg.visibility_timeout),
        "ML_WORKER_SHUTDOWN_DEADLINE": str(cfg.shutdown_deadline),
        "ML_WORKER_MODEL": cfg.model_dir,
        "ML_WORKER_INDEX_DIR": cfg.index_dir,
        "LOG_LEVEL": cfg.log_level,
        "AWS_REGION": cfg.region,
        "POSTGRES_HOST": cfg.database_host,
        "POSTGRES_PORT": str(cfg.database_port),
        "POSTGRES_DB": cfg.database_name,
    }
    if priority_url:
        env["ML_WORKER_PRIORITY_QUEUE_URL"] = priority_url
    return [{"name": k, "value": v} for k, v in sorted(env.items())]


def container_definition(cfg: PlatformConfig, image: str, environment: list[dict], secrets: dict[str, str]) -> dict:
    names = cfg.names
    return {
        "name": names.container,
        "image": image,
        "essential": True,
        "command": ["python", "-m", "worker"],
        # Fargate Spot gives a two-minute warning: SIGTERM, then SIGKILL after stopTimeout (max 120 s).
        # The worker stops receiving and finishes its batch within ML_WORKER_SHUTDOWN_DEADLINE (90 s).
        "stopTimeout": cfg.stop_timeout,
        "environment": environment,
        "secrets": [{"name": k, "valueFrom": v} for k, v in sorted(secrets.items())],
        "healthCheck": checked_health_check(HEALTH_CHECK),
        "linuxParameters": {"initProcessEnabled": True},
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": names.log_group,
                "awslogs-region": cfg.region,
                "awslogs-stream-prefix": "worker",
                "mode": "non-blocking",
                "max-buffer-size": "25m",
            },
        },
    }


@dataclass
class ServiceArgs:
    cfg: PlatformConfig
    aws: AwsContext
    image_uri: pulumi.Output[str]
    queues: WorkerQueues
    iam: WorkerIam
    network: WorkerNetwork


class WorkerService(pulumi.ComponentResource):
    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("zivo:mlworker:Service", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg, names, queues = args.cfg, args.cfg.names, args.queues

        self.log_group = aws.cloudwatch.LogGroup(
            "log-group", name=names.log_group, retention_in_days=cfg.log_retention_days, opts=stateful(self),
        )

        self.cluster = aws.ecs.Cluster(
            "cluster",
            name=names.cluster,
            settings=[{"name": "containerInsights", "value": "enabled"}],
            opts=child,
        )
        capacity = aws.ecs.ClusterCapacityProviders(
            "capacity-providers",
            cluster_name=self.cluster.name,
            capacity_providers=["FARGATE_SPOT", "FARGATE"],
            default_capacity_provider_strategies=[{"capacity_provider": "FARGATE_SPOT", "weight": 1}],
            opts=child,
        )

        secrets = {
            "POSTGRES_USER": args.aws.arn("ssm", f"parameter{names.database_user_parameter}"),
            "POSTGRES_PASSWORD": args.aws.arn("ssm", f"parameter{names.database_password_parameter}"),
        }
        priority_url = queues.priority.url if queues.priority is not None else None
        container = pulumi.Output.all(
            image=args.image_uri, queue=queues.queue.url, dlq=queues.dlq.url, priority=priority_url,
            user=secrets["POSTGRES_USER"], password=secrets["POSTGRES_PASSWORD"],
        ).apply(lambda v: json.dumps([container_definition(
            cfg, v["image"], worker_environment(cfg, v["queue"], v["dlq"], v["priority"]),
            {"POSTGRES_USER": v["user"], "POSTGRES_PASSWORD": v["password"]},
        )]))

        self.task_definition = aws.ecs.TaskDefinition(
            "task-definition",
            family=names.task_family,
            cpu=str(cfg.task_cpu),
            memory=str(cfg.task_memory),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform={"operating_system_family": "LINUX", "cpu_architecture": "X86_64"},
            execution_role_arn=args.iam.execution_role.arn,
            task_role_arn=args.iam.task_role.arn,
            container_definitions=container,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.log_group]),
        )

        self.service = aws.ecs.Service(
            "service",
            name=names.service,
            cluster=self.cluster.arn,
            task_definition=self.task_definition.arn,
            desired_count=0,
            capacity_provider_strategies=[{"capacity_provider": "FARGATE_SPOT", "weight": 1}],
            network_configuration={
                "subnets": list(cfg.private_subnet_ids),
                "security_groups": [args.network.security_group.id],
                "assign_public_ip": False,
            },
            deployment_circuit_breaker={"enable": True, "rollback": True},
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=200,
            enable_ecs_managed_tags=True,
            propagate_tags="SERVICE",
            wait_for_steady_state=False,
            # The scaling policies own the desired count; a `pulumi up` must not reset it to 0.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[capacity], ignore_changes=["desiredCount"]),
        )
        self.cluster_name: pulumi.Output[str] = self.cluster.name
        self.service_name: pulumi.Output[str] = self.service.name
        self.log_group_name: pulumi.Output[str] = self.log_group.name
        self.register_outputs({"cluster_name": self.cluster_name, "service_name": self.service_name})
