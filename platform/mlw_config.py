"""The stack's configuration, typed and validated once, and the names every piece derives from it.

Nothing environment-specific is hard-coded elsewhere: resource names, SSM paths and the worker's
settings all come from `PlatformConfig` (read from `Pulumi.<stack>.yaml`) and `Names`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

# Fargate's valid memory sizes (MiB) for the CPU sizes this worker can sensibly use.
_FARGATE_MEMORY = {
    256: range(512, 2048 + 1, 512),
    512: range(1024, 4096 + 1, 1024),
    1024: range(2048, 8192 + 1, 1024),
    2048: range(4096, 16384 + 1, 1024),
    4096: range(8192, 30720 + 1, 1024),
}


@dataclass(frozen=True)
class PlatformConfig:
    """Everything the program reads from config. Keys are the camelCase form of the field names."""

    region: str
    vpc_id: str
    private_subnet_ids: tuple[str, ...]
    database_host: str
    database_name: str
    api_role_arn: str
    environment: str = "production"
    database_port: int = 5432
    min_capacity: int = 0
    max_capacity: int = 3
    target_queue_depth: int = 5
    task_cpu: int = 512
    task_memory: int = 3072
    log_retention_days: int = 30
    alarm_email: str | None = None
    priority_queue: bool = False
    # Scale to zero only after the depth has been zero for this many consecutive minutes.
    scale_in_after_minutes: int = 10
    oldest_message_alarm_seconds: int = 900
    log_level: str = "INFO"
    # Roles allowed to send to the worker's queues besides the API role (e.g. the operators' role
    # that runs `opsctl dlq redrive`: a DLQ redrive sends into the source queue as its caller).
    operator_role_arns: tuple[str, ...] = ()
    # Where the base image bakes the sentence model, and where the worker image bakes the index.
    # They must match the ENV lines of images/base/Dockerfile and images/worker/Dockerfile (a test checks).
    model_dir: str = "/opt/models/biobert-mnli-snli-scinli-scitail-mednli-stsb"
    index_dir: str = "/opt/ml-worker/index"
    # The worker's fixed settings (the job contract's tuning; not per-environment).
    visibility_timeout: int = field(default=300, init=False)
    batch_size: int = field(default=10, init=False)
    wait_time: int = field(default=20, init=False)
    shutdown_deadline: int = field(default=90, init=False)
    stop_timeout: int = field(default=120, init=False)
    max_receive_count: int = field(default=3, init=False)

    def __post_init__(self) -> None:
        problems = []
        if not self.private_subnet_ids:
            problems.append("privateSubnetIds must list at least one private subnet")
        if not 0 <= self.min_capacity <= self.max_capacity:
            problems.append(f"need 0 <= minCapacity <= maxCapacity, got {self.min_capacity}..{self.max_capacity}")
        if self.max_capacity < 1:
            problems.append("maxCapacity must be at least 1")
        if self.target_queue_depth < 1:
            problems.append("targetQueueDepth must be at least 1")
        if self.task_memory not in _FARGATE_MEMORY.get(self.task_cpu, ()):
            problems.append(f"taskCpu {self.task_cpu} / taskMemory {self.task_memory} is not a Fargate size")
        if self.scale_in_after_minutes < 2:
            problems.append("scaleInAfterMinutes must be at least 2 (scale to zero only after several quiet minutes)")
        if self.shutdown_deadline >= self.stop_timeout:
            problems.append("the worker's shutdown deadline must end before ECS's stop timeout")
        if self.log_retention_days not in _LOG_RETENTION_DAYS:
            problems.append(f"logRetentionDays {self.log_retention_days} is not a CloudWatch Logs retention value")
        if problems:
            raise ValueError("invalid ml-worker stack config: " + "; ".join(problems))

    @classmethod
    def load(cls) -> PlatformConfig:
        """Read the stack's config once (project namespace plus `aws:region`)."""
        conf = pulumi.Config()
        aws_conf = pulumi.Config("aws")

        def opt_int(key: str, default: int) -> int:
            value = conf.get_int(key)
            return default if value is None else value

        defaults = cls.__dataclass_fields__
        return cls(
            region=aws_conf.require("region"),
            environment=conf.get("environment") or defaults["environment"].default,
            vpc_id=conf.require("vpcId"),
            private_subnet_ids=tuple(conf.require_object("privateSubnetIds")),
            database_host=conf.require("databaseHost"),
            database_port=opt_int("databasePort", 5432),
            database_name=conf.require("databaseName"),
            api_role_arn=conf.require("apiRoleArn"),
            min_capacity=opt_int("minCapacity", 0),
            max_capacity=opt_int("maxCapacity", 3),
            target_queue_depth=opt_int("targetQueueDepth", 5),
            task_cpu=opt_int("taskCpu", 512),
            task_memory=opt_int("taskMemory", 3072),
            log_retention_days=opt_int("logRetentionDays", 30),
            alarm_email=conf.get("alarmEmail") or None,
            priority_queue=bool(conf.get_bool("priorityQueue")),
            scale_in_after_minutes=opt_int("scaleInAfterMinutes", 10),
            oldest_message_alarm_seconds=opt_int("oldestMessageAlarmSeconds", 900),
            log_level=conf.get("logLevel") or "INFO",
            operator_role_arns=tuple(conf.get_object("operatorRoleArns") or ()),
        )

    @property
    def names(self) -> Names:
        return Names(self.environment)


_LOG_RETENTION_DAYS = {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                       2557, 2922, 3288, 3653}


@dataclass(frozen=True)
class Names:
    """The names other code relies on (the producer, opsctl, the runbooks): keep them stable."""

    env: str

    @property
    def queue(self) -> str:
        return f"{self.env}-ml-worker-queue"

    @property
    def dlq(self) -> str:
        return f"{self.env}-ml-worker-dlq"

    @property
    def priority_queue(self) -> str:
        return f"{self.env}-ml-worker-priority"

    @property
    def cluster(self) -> str:
        return f"{self.env}-ml-worker"

    @property
    def service(self) -> str:
        return f"{self.env}-ml-worker"

    @property
    def task_family(self) -> str:
        return f"{self.env}-ml-worker"

    @property
    def container(self) -> str:
        return "ml-worker"

    @property
    def log_group(self) -> str:
        return f"/ecs/{self.env}-ml-worker"

    @property
    def base_repository(self) -> str:
        return f"{self.env}-ml-worker-base"

    @property
    def worker_repository(self) -> str:
        return f"{self.env}-ml-worker"

    @property
    def alarm_topic(self) -> str:
        return f"{self.env}-ml-worker-alarms"

    @property
    def ssm_prefix(self) -> str:
        """The worker's own parameters, written by this program."""
        return f"/zivohealth/{self.env}/ml_worker"

    @property
    def database_user_parameter(self) -> str:
        """Pre-existing SecureString, created by the app team."""
        return f"/zivohealth/{self.env}/database/user"

    @property
    def database_password_parameter(self) -> str:
        """Pre-existing SecureString, created by the app team."""
        return f"/zivohealth/{self.env}/database/password"
