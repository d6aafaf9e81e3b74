"""Finding the worker's resources: flag, then environment variable, then SSM, then Pulumi outputs.

A last resort is the platform's naming convention (``{env}-ml-worker-queue`` and friends), so a
stack deployed without SSM parameters still works. Every answer records where it came from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from opsctl.errors import OpsError, error_code

SSM_PREFIX = "/zivohealth/{env}/ml_worker/"
DB_USER_PARAM = "/zivohealth/{env}/database/user"
DB_PASSWORD_PARAM = "/zivohealth/{env}/database/password"


@dataclass(frozen=True)
class Spec:
    flag: str
    env_var: str
    ssm: str
    pulumi: str
    convention: str  # a format string on env; queues are looked up by this name


SPECS: dict[str, Spec] = {
    "queue_url": Spec("--queue-url", "ML_WORKER_SQS_QUEUE_URL", "queue_url", "ml_worker_queue_url",
                      "{env}-ml-worker-queue"),
    "priority_queue_url": Spec("--priority-queue-url", "ML_WORKER_PRIORITY_QUEUE_URL", "priority_queue_url",
                               "ml_worker_priority_queue_url", "{env}-ml-worker-priority"),
    "dlq_url": Spec("--dlq-url", "ML_WORKER_DLQ_URL", "dlq_url", "ml_worker_dlq_url", "{env}-ml-worker-dlq"),
    "cluster": Spec("--cluster", "ML_WORKER_CLUSTER", "cluster_name", "ml_worker_cluster_name", "{env}-ml-worker"),
    "service": Spec("--service", "ML_WORKER_SERVICE", "service_name", "ml_worker_service_name", "{env}-ml-worker"),
    "log_group": Spec("--log-group", "ML_WORKER_LOG_GROUP", "log_group", "ml_worker_log_group",
                      "/ecs/{env}-ml-worker"),
}
QUEUES = {"queue_url", "priority_queue_url", "dlq_url"}


def find_project(start: Path) -> Path | None:
    """The nearest directory at or above `start` holding Pulumi.yaml (the stack's project)."""
    for directory in (start, *start.parents):
        if (directory / "Pulumi.yaml").is_file():
            return directory
    return None


@dataclass(frozen=True)
class Resolved:
    value: str
    source: str


def ssm_parameter_names(env: str) -> list[str]:
    """Every SSM parameter the platform writes for the worker (the optional priority queue last)."""
    prefix = SSM_PREFIX.format(env=env)
    names = [prefix + "enabled"] + [prefix + SPECS[key].ssm for key in ("queue_url", "dlq_url", "cluster",
                                                                           "service", "log_group")]
    return names + [DB_USER_PARAM.format(env=env), DB_PASSWORD_PARAM.format(env=env),
                    prefix + SPECS["priority_queue_url"].ssm]


class Resolver:
    def __init__(self, state):
        self.state = state
        self.flags: dict[str, str] = {}
        self._ssm: dict[str, str] | None = None
        self._pulumi: dict[str, str] | None = None
        self._cache: dict[str, Resolved | None] = {}

    # -- the sources, each read at most once ------------------------------------------------
    def ssm_values(self) -> dict[str, str]:
        if self._ssm is None:
            prefix = SSM_PREFIX.format(env=self.state.env)
            names = [prefix + spec.ssm for spec in SPECS.values()]
            try:
                response = self.state.client("ssm").get_parameters(Names=names)
                self._ssm = {p["Name"]: p["Value"] for p in response.get("Parameters", [])}
            except ClientError:
                self._ssm = {}  # no access to SSM: fall through to the next source
        return self._ssm

    def pulumi_outputs(self) -> dict[str, str]:
        if self._pulumi is None:
            self._pulumi = {}
            binary = shutil.which("pulumi")
            if binary:
                try:
                    done = subprocess.run([binary, "stack", "output", "--json", "--stack", self.state.env],
                                          capture_output=True, text=True, timeout=60, cwd=find_project(Path.cwd()))
                    if done.returncode == 0:
                        outputs = json.loads(done.stdout or "{}")
                        self._pulumi = {k: str(v) for k, v in outputs.items() if isinstance(v, str | int)}
                except (OSError, subprocess.SubprocessError, ValueError):
                    pass
        return self._pulumi

    def _queue_by_name(self, name: str) -> str | None:
        try:
            return self.state.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as error:
            if "NonExistentQueue" in error_code(error) or "QueueDoesNotExist" in error_code(error):
                return None
            raise

    # -- resolution ----------------------------------------------------------------------------
    def find(self, key: str) -> Resolved | None:
        if key in self._cache:
            return self._cache[key]
        spec, env = SPECS[key], self.state.env
        found: Resolved | None = None
        if self.flags.get(key):
            found = Resolved(self.flags[key], f"flag {spec.flag}")
        elif os.environ.get(spec.env_var):
            from opsctl.guards import check_env_variable

            check_env_variable(key, os.environ[spec.env_var], env)  # a shell left set for another environment
            found = Resolved(os.environ[spec.env_var], f"env {spec.env_var}")
        else:
            name = SSM_PREFIX.format(env=env) + spec.ssm
            value = self.ssm_values().get(name)
            if value:
                found = Resolved(value, f"SSM {name}")
            elif self.pulumi_outputs().get(spec.pulumi):
                found = Resolved(self.pulumi_outputs()[spec.pulumi], f"Pulumi output {spec.pulumi}")
            else:
                conventional = spec.convention.format(env=env)
                if key in QUEUES:
                    url = self._queue_by_name(conventional)
                    found = Resolved(url, f"queue named {conventional}") if url else None
                else:
                    found = Resolved(conventional, "naming convention")
        self._cache[key] = found
        return found

    def get(self, key: str) -> str:
        found = self.find(key)
        if found is None:
            spec, env = SPECS[key], self.state.env
            what = key.replace("_url", "").replace("_", " ")
            raise OpsError(
                f"no {what} found for env {env!r}: no {spec.flag}, no ${spec.env_var}, no SSM "
                f"{SSM_PREFIX.format(env=env)}{spec.ssm}, no Pulumi output, no queue named "
                f"{spec.convention.format(env=env)}",
                hint=f"check --env/--profile/--region, or pass {spec.flag}")
        return found.value

    def optional(self, key: str) -> str | None:
        found = self.find(key)
        return found.value if found else None

    def sources(self) -> dict[str, str]:
        return {key: found.source for key, found in self._cache.items() if found}
