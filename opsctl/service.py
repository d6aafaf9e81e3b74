"""`opsctl service status` and `opsctl redeploy`: the worker's ECS service."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from botocore.exceptions import ClientError

from opsctl import render
from opsctl.errors import AWS_ERRORS, OpsError, is_unsupported
from opsctl.guards import confirm_production
from opsctl.options import ClusterOpt, JsonOpt, ServiceOpt, examples
from opsctl.state import State, get_state

app = typer.Typer(help="The worker's ECS service.", no_args_is_help=True,
                  epilog=examples("opsctl service status", "opsctl redeploy --wait"))


def describe_service(state: State) -> dict:
    """The raw ECS service; a missing cluster or service is a one-line error."""
    cluster, name = state.resources.get("cluster"), state.resources.get("service")
    try:
        response = state.client("ecs").describe_services(cluster=cluster, services=[name])
    except ClientError as error:
        if "ClusterNotFound" in str(error):
            raise OpsError(f"ECS cluster {cluster} does not exist",
                           hint="check --env/--region or pass --cluster") from None
        raise
    services = [s for s in response.get("services", []) if s.get("status") != "INACTIVE"]
    if not services:
        raise OpsError(f"ECS service {name} not found in cluster {cluster}",
                       hint="check --env/--region or pass --service; has the stack been deployed (opsctl deploy)?")
    return services[0]


def _short(arn: str | None) -> str | None:
    return arn.rsplit("/", 1)[-1] if arn else arn


def task_protection(state: State, cluster: str, task_arns: list[str]) -> tuple[dict[str, bool], str | None]:
    """Scale-in protection per task; ({}, note) where the endpoint lacks the API (moto does)."""
    if not task_arns:
        return {}, None
    try:
        response = state.client("ecs", retries=False).get_task_protection(cluster=cluster, tasks=task_arns)
    except AWS_ERRORS as error:
        if is_unsupported(error):
            return {}, "task protection: not available from this endpoint"
        return {}, f"task protection: {error}"
    return {p["taskArn"]: bool(p.get("protectionEnabled")) for p in response.get("protectedTasks", [])}, None


def fetch_status(state: State) -> dict:
    service = describe_service(state)
    cluster = state.resources.get("cluster")
    ecs = state.client("ecs")
    arns: list[str] = []
    for page in ecs.get_paginator("list_tasks").paginate(cluster=cluster, serviceName=service["serviceName"]):
        arns.extend(page.get("taskArns", []))
    tasks = []
    for start in range(0, len(arns), 100):
        tasks.extend(ecs.describe_tasks(cluster=cluster, tasks=arns[start:start + 100]).get("tasks", []))
    protection, protection_note = task_protection(state, cluster, arns)
    notes = [protection_note] if protection_note else []
    return {
        "service": {
            "name": service["serviceName"], "cluster": _short(service.get("clusterArn")) or cluster,
            "status": service.get("status"), "desired": service.get("desiredCount", 0),
            "running": service.get("runningCount", 0), "pending": service.get("pendingCount", 0),
            "task_definition": _short(service.get("taskDefinition")), "launch_type": service.get("launchType"),
            "capacity_provider_strategy": service.get("capacityProviderStrategy", []),
        },
        "deployments": [{
            "id": d.get("id"), "status": d.get("status"), "rollout_state": d.get("rolloutState"),
            "desired": d.get("desiredCount", 0), "running": d.get("runningCount", 0),
            "pending": d.get("pendingCount", 0), "failed": d.get("failedTasks", 0),
            "task_definition": _short(d.get("taskDefinition")), "created_at": d.get("createdAt"),
            "updated_at": d.get("updatedAt"),
        } for d in service.get("deployments", [])],
        "tasks": [{
            "id": _short(t.get("taskArn")), "arn": t.get("taskArn"),
            "capacity_provider": t.get("capacityProviderName") or t.get("launchType"),
            "last_status": t.get("lastStatus"), "desired_status": t.get("desiredStatus"),
            "health": t.get("healthStatus"), "started_at": t.get("startedAt"),
            "task_definition": _short(t.get("taskDefinitionArn")),
            "protected": protection.get(t.get("taskArn")) if protection else None,
        } for t in tasks],
        "notes": notes,
    }


@app.command(epilog=examples("opsctl service status", "opsctl --env staging service status --json"))
def status(ctx: typer.Context, cluster: ClusterOpt = None, service: ServiceOpt = None,
           json_output: JsonOpt = False) -> None:
    """Running, desired and pending counts, deployments, and tasks with capacity provider and status."""
    state = get_state(ctx, json_output, cluster=cluster, service=service)
    render.service_status(state, fetch_status(state))


# -- redeploy ---------------------------------------------------------------------------------
def _snapshot(service: dict, deployment_id: str, started: float) -> dict:
    deployments = service.get("deployments", [])
    ours = next((d for d in deployments if d.get("id") == deployment_id), None) \
        or next((d for d in deployments if d.get("status") == "PRIMARY"), {})
    return {"elapsed_s": int(time.monotonic() - started), "rollout_state": ours.get("rolloutState") or "UNKNOWN",
            "reason": ours.get("rolloutStateReason"), "running": ours.get("runningCount", 0),
            "desired": ours.get("desiredCount", 0), "pending": ours.get("pendingCount", 0),
            "failed": ours.get("failedTasks", 0), "deployments": len(deployments)}


def wait_stable(state: State, deployment_id: str, timeout: float, interval: float) -> str:
    started = time.monotonic()
    while True:
        snapshot = _snapshot(describe_service(state), deployment_id, started)
        render.redeploy_progress(state, snapshot)
        if snapshot["rollout_state"] == "FAILED":
            raise OpsError(f"deployment {deployment_id} failed: {snapshot['reason'] or 'no reason given'}",
                           hint="see opsctl service status and opsctl logs tail; the circuit breaker rolls back")
        if snapshot["rollout_state"] == "COMPLETED" and snapshot["deployments"] == 1:
            return "stable"
        if time.monotonic() - started >= timeout:
            raise OpsError(f"deployment {deployment_id} not stable after {int(timeout)}s (rollout "
                           f"{snapshot['rollout_state']}, running {snapshot['running']}/{snapshot['desired']})",
                           hint="it may still finish: opsctl service status; raise --timeout to wait longer")
        time.sleep(interval)


def redeploy(
    ctx: typer.Context,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until stable or failed.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Seconds to wait with --wait.")] = 900,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between checks.")] = 10,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before redeploying production.")] = False,
    cluster: ClusterOpt = None,
    service: ServiceOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Force a new deployment of the worker service (same task definition, fresh tasks).

    Production asks first (--yes to skip).
    """
    state = get_state(ctx, json_output, cluster=cluster, service=service)
    confirm_production(state, "service", "Redeploy the service", "not redeployed", yes)
    current = describe_service(state)
    updated = state.client("ecs").update_service(cluster=state.resources.get("cluster"),
                                                 service=current["serviceName"], forceNewDeployment=True)["service"]
    primary = next((d for d in updated.get("deployments", []) if d.get("status") == "PRIMARY"), {})
    deployment_id = primary.get("id", "")
    outcome = wait_stable(state, deployment_id, timeout, interval) if wait else "new deployment started"
    render.redeploy(state, {"service": current["serviceName"], "deployment_id": deployment_id, "outcome": outcome})


def register(root: typer.Typer) -> None:
    root.command(epilog=examples("opsctl redeploy", "opsctl redeploy --wait --timeout 600",
                                 "opsctl --env production redeploy --yes"))(redeploy)
