"""`opsctl doctor`: the operators' guide troubleshooting section as one command."""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Annotated
from urllib.parse import unquote

import typer
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from opsctl import render
from opsctl.errors import AWS_ERRORS, OpsError, describe, error_code, is_unsupported
from opsctl.options import (
    ClusterOpt,
    DatabaseUrlOpt,
    DlqUrlOpt,
    JsonOpt,
    LogGroupOpt,
    QueueUrlOpt,
    ServiceOpt,
    examples,
)
from opsctl.queues import queue_attributes, queue_name
from opsctl.resources import DB_PASSWORD_PARAM, ssm_parameter_names
from opsctl.service import describe_service
from opsctl.state import State, get_state

# What the worker's task role must allow (consume the queue, dead-letter poison messages, protect
# itself from scale-in while busy) and what ECS needs from the execution role (pull the image,
# write logs, inject the SSM secrets). The platform's policies grant exactly these.
TASK_ROLE_ACTIONS = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                     "sqs:GetQueueAttributes", "sqs:SendMessage", "ecs:UpdateTaskProtection"]
EXECUTION_ROLE_ACTIONS = ["ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage",
                          "ecr:GetDownloadUrlForLayer", "logs:CreateLogStream", "logs:PutLogEvents",
                          "ssm:GetParameters"]
RECENT_LOGS_S = 24 * 3600
BACKLOG_WARN = 20  # groups of uncertain results waiting for review before doctor warns


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    hint: str | None = None
    warning: bool = False


class Failed(Exception):
    def __init__(self, detail: str, hint: str | None = None):
        super().__init__(detail)
        self.detail, self.hint = detail, hint


class Warned(Failed):
    """Worth a look, not a failure: doctor's exit code stays 0."""


# -- the checks: each returns its detail line or raises Failed ---------------------------------
def check_identity(state: State) -> str:
    identity = state.client("sts").get_caller_identity()
    return f"account {identity['Account']} as {identity['Arn']}"


def check_service(state: State) -> str:
    service = describe_service(state)
    desired, running = service.get("desiredCount", 0), service.get("runningCount", 0)
    primary = next((d for d in service.get("deployments", []) if d.get("status") == "PRIMARY"), {})
    detail = f"{service['serviceName']} {service.get('status')}, running {running}/{desired}"
    if service.get("status") != "ACTIVE":
        raise Failed(detail, "the service is not ACTIVE: redeploy the stack (opsctl deploy)")
    if primary.get("rolloutState") == "FAILED":
        raise Failed(detail + f", deployment FAILED: {primary.get('rolloutStateReason', '')}",
                     "see opsctl service status and opsctl logs tail, then opsctl redeploy")
    if running < desired and primary.get("rolloutState") != "IN_PROGRESS":
        raise Failed(detail, "tasks are not starting: check opsctl service status (Spot capacity?) and the logs")
    return detail + (" (scaled to zero)" if desired == 0 else "")


def _depth(state: State, url: str) -> tuple[int, int]:
    attributes = queue_attributes(state, url)
    return int(attributes.get("ApproximateNumberOfMessages", 0)), int(
        attributes.get("ApproximateNumberOfMessagesNotVisible", 0))


def check_queue(state: State) -> str:
    url = state.resources.get("queue_url")
    visible, in_flight = _depth(state, url)
    return f"{queue_name(url)} reachable: {visible} visible, {in_flight} in flight"


def check_dlq(state: State) -> str:
    url = state.resources.get("dlq_url")
    visible, in_flight = _depth(state, url)
    if visible + in_flight:
        raise Failed(f"{queue_name(url)} holds {visible + in_flight} message(s)",
                     "look with opsctl dlq peek, then opsctl dlq redrive or opsctl dlq purge")
    return f"{queue_name(url)} is empty"


def check_image(state: State, repository: str) -> str:
    try:
        images = state.client("ecr").describe_images(repositoryName=repository, filter={"tagStatus": "TAGGED"},
                                                     maxResults=100).get("imageDetails", [])
    except ClientError as error:
        if error_code(error) == "RepositoryNotFoundException":
            raise Failed(f"ECR repository {repository} does not exist", "deploy the stack (opsctl deploy)") from None
        raise
    if not images:
        raise Failed(f"no tagged image in {repository}", "build and push the image (opsctl deploy builds both)")
    newest = max(images, key=lambda i: str(i.get("imagePushedAt", "")))
    return f"{repository}: {len(images)} tagged image(s), newest {', '.join(newest.get('imageTags', []))}"


def check_ssm(state: State) -> str:
    names = ssm_parameter_names(state.env)
    required, optional = names[:-1], names[-1]
    found: dict[str, dict] = {}
    ssm = state.client("ssm")
    for start in range(0, len(names), 10):
        for parameter in ssm.get_parameters(Names=names[start:start + 10]).get("Parameters", []):
            found[parameter["Name"]] = parameter
    missing = [name for name in required if name not in found]
    if missing:
        raise Failed(f"missing {', '.join(missing)}", "deploy the stack (opsctl deploy) or create them")
    password = found[DB_PASSWORD_PARAM.format(env=state.env)]
    if password.get("Type") != "SecureString":
        raise Failed(f"{password['Name']} is a {password.get('Type')}, not a SecureString",
                     "store the database password as a SecureString")
    enabled = found[names[0]]["Value"]
    return (f"{len(required)} parameters present (database credentials included), enabled={enabled}"
            + ("" if optional in found else "; no priority queue"))


def _statements(document) -> list[dict]:
    if isinstance(document, str):
        document = json.loads(unquote(document))
    statements = document.get("Statement", [])
    return statements if isinstance(statements, list) else [statements]


def _matches(patterns, action: str) -> bool:
    patterns = [patterns] if isinstance(patterns, str) else patterns or []
    return any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in patterns)


def _policy_documents(state: State, role: str) -> list:
    iam = state.client("iam")
    documents = []
    for page in iam.get_paginator("list_role_policies").paginate(RoleName=role):
        for name in page.get("PolicyNames", []):
            documents.append(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
    for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=role):
        for attached in page.get("AttachedPolicies", []):
            try:
                policy = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]
                documents.append(iam.get_policy_version(PolicyArn=attached["PolicyArn"],
                                                        VersionId=policy["DefaultVersionId"])["PolicyVersion"]["Document"])
            except ClientError:
                continue
    return documents


def allowed_actions(state: State, role_arn: str, actions: list[str]) -> tuple[dict[str, bool], str]:
    """Whether the role allows each action: IAM's policy simulator, else reading its policies."""
    try:
        response = state.client("iam", retries=False).simulate_principal_policy(PolicySourceArn=role_arn,
                                                                                ActionNames=actions)
        return {r["EvalActionName"]: r["EvalDecision"] == "allowed" for r in response["EvaluationResults"]}, \
            "simulated"
    except AWS_ERRORS as error:
        if not (is_unsupported(error) or error_code(error) in {"AccessDenied", "AccessDeniedException"}):
            raise
    statements = [s for document in _policy_documents(state, role_arn.rsplit("/", 1)[-1])
                  for s in _statements(document)]
    result = {}
    for action in actions:
        allow = any(s.get("Effect") == "Allow" and (_matches(s.get("Action"), action) if "Action" in s
                                                    else not _matches(s.get("NotAction"), action))
                    for s in statements)
        deny = any(s.get("Effect") == "Deny" and _matches(s.get("Action"), action) for s in statements)
        result[action] = allow and not deny
    return result, "read from its policies, resources not evaluated"


def check_role(state: State, which: str) -> str:
    service = describe_service(state)
    definition = state.client("ecs").describe_task_definition(taskDefinition=service["taskDefinition"])[
        "taskDefinition"]
    key, needed = ("taskRoleArn", TASK_ROLE_ACTIONS) if which == "task" else ("executionRoleArn",
                                                                             EXECUTION_ROLE_ACTIONS)
    role_arn = definition.get(key)
    if not role_arn:
        raise Failed(f"the task definition {definition.get('family')} has no {key}",
                     "the platform must set it; redeploy the stack")
    try:
        decisions, how = allowed_actions(state, role_arn, needed)
    except ClientError as error:
        if error_code(error) == "NoSuchEntity":
            raise Failed(f"role {role_arn} does not exist", "redeploy the stack (opsctl deploy)") from None
        raise
    missing = [action for action in needed if not decisions.get(action)]
    name = role_arn.rsplit("/", 1)[-1]
    if missing:
        raise Failed(f"{name} lacks {', '.join(missing)} ({how})", f"grant them to the {which} role in the platform")
    return f"{name} allows {len(needed)} needed actions ({how})"


def check_logs(state: State) -> str:
    group = state.resources.get("log_group")
    since = int((time.time() - RECENT_LOGS_S) * 1000)
    try:
        events = state.client("logs").filter_log_events(logGroupName=group, startTime=since, limit=1).get(
            "events", [])
    except ClientError as error:
        if error_code(error) == "ResourceNotFoundException":
            raise Failed(f"log group {group} does not exist", "deploy the stack (opsctl deploy)") from None
        raise
    if not events:
        raise Failed(f"{group}: no events in the last 24h",
                     "the worker has not run (scaled to zero, no jobs?) or cannot write logs: opsctl send-test")
    return f"{group}: events in the last 24h, last at {render.when(events[-1].get('timestamp'))}"


def check_review_backlog(state: State, database_url: str | None, threshold: int) -> str:
    from opsctl.database import connect
    from opsctl.review_store import backlog

    try:
        with connect(state, database_url) as engine, engine.connect() as connection:
            size = backlog(connection)
    except OpsError as error:
        raise Warned(f"unknown: {error.message}", error.hint) from None
    detail = f"{size['results']} uncertain result(s) in {size['groups']} group(s) wait for review"
    if size["groups"] > threshold:
        raise Warned(f"{detail} (more than {threshold} groups)", "work through them: opsctl review list")
    return detail


CHECK_NAMES = ("aws identity", "service", "queue", "dlq", "base image", "worker image", "ssm parameters", "task role",
               "execution role", "logs", "review backlog")


def run_checks(state: State, only: list[str] | None = None, database_url: str | None = None,
               backlog_warn: int = BACKLOG_WARN) -> list[Check]:
    env = state.env
    checks: list[tuple[str, Callable[[], str]]] = [
        ("aws identity", lambda: check_identity(state)),
        ("service", lambda: check_service(state)),
        ("queue", lambda: check_queue(state)),
        ("dlq", lambda: check_dlq(state)),
        ("base image", lambda: check_image(state, f"{env}-ml-worker-base")),
        ("worker image", lambda: check_image(state, f"{env}-ml-worker")),
        ("ssm parameters", lambda: check_ssm(state)),
        ("task role", lambda: check_role(state, "task")),
        ("execution role", lambda: check_role(state, "execution")),
        ("logs", lambda: check_logs(state)),
        ("review backlog", lambda: check_review_backlog(state, database_url, backlog_warn)),
    ]
    assert [name for name, _ in checks] == list(CHECK_NAMES)
    results = []
    for name, run in checks:
        if only and name not in only:
            continue
        try:
            results.append(Check(name, True, run()))
        except Warned as warning:
            results.append(Check(name, True, warning.detail, warning.hint, warning=True))
        except Failed as failure:
            results.append(Check(name, False, failure.detail, failure.hint))
        except (NoCredentialsError, PartialCredentialsError):
            raise  # nothing else can pass: one error line for the whole run
        except (OpsError, ClientError, BotoCoreError) as error:
            message, hint, _ = describe(error)
            results.append(Check(name, False, message, hint))
    return results


def dashboard_url(state: State) -> str | None:
    """The stack's CloudWatch dashboard (SSM parameter the platform writes, else its Pulumi output)."""
    try:
        name = f"/zivohealth/{state.env}/ml_worker/dashboard_url"
        return state.client("ssm").get_parameter(Name=name)["Parameter"]["Value"]
    except (ClientError, BotoCoreError):
        return state.resources.pulumi_outputs().get("ml_worker_dashboard_url")


def doctor(
    ctx: typer.Context,
    queue_url: QueueUrlOpt = None,
    dlq_url: DlqUrlOpt = None,
    cluster: ClusterOpt = None,
    service: ServiceOpt = None,
    log_group: LogGroupOpt = None,
    json_output: JsonOpt = False,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this check (repeatable): "
                                                   + ", ".join(CHECK_NAMES) + ".")] = None,
    database_url: DatabaseUrlOpt = None,
    backlog_warn: Annotated[int, typer.Option("--backlog-warn", min=0, help="Warn when more groups than this "
                                              "wait for review.")] = BACKLOG_WARN,
) -> None:
    """Check the worker end to end; one line per check, exit 1 if any fails.

    Service exists and is healthy, queue reachable (with its depth), DLQ empty, base and worker
    images in ECR, SSM parameters present (database credentials included), the task and
    execution roles carry the actions the worker needs, the log group had events in 24h, and the
    review backlog (a warning above --backlog-warn groups, or when the database is out of reach).
    """
    state = get_state(ctx, json_output, queue_url=queue_url, dlq_url=dlq_url, cluster=cluster, service=service,
                      log_group=log_group)
    unknown = sorted(set(only or []) - set(CHECK_NAMES))
    if unknown:
        raise typer.BadParameter(f"no check named {', '.join(unknown)}; checks: {', '.join(CHECK_NAMES)}",
                                 param_hint="'--only'")
    checks = run_checks(state, only, database_url, backlog_warn)
    url = dashboard_url(state)
    render.doctor(state, {"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks],
                          "resources": state.resources.sources(), "dashboard_url": url})
    if url and not state.json:
        render.say(f"dashboard: {url}")
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    root.command(epilog=examples("opsctl doctor", "opsctl --env staging doctor --json"))(doctor)
