"""`opsctl scaling show`: the scalable target, its policies and their alarms."""

from __future__ import annotations

import typer

from opsctl import render
from opsctl.errors import AWS_ERRORS, is_unsupported
from opsctl.options import ClusterOpt, JsonOpt, ServiceOpt, examples
from opsctl.state import State, get_state

app = typer.Typer(help="Queue-depth scaling of the worker service.", no_args_is_help=True,
                  epilog=examples("opsctl scaling show", "opsctl scaling show --json"))


def _adjustments(policy: dict) -> str:
    step = policy.get("StepScalingPolicyConfiguration")
    if step:
        parts = []
        for s in step.get("StepAdjustments", []):
            low, high = s.get("MetricIntervalLowerBound"), s.get("MetricIntervalUpperBound")
            span = f"[{'-inf' if low is None else format(low, 'g')}..{'+inf' if high is None else format(high, 'g')})"
            parts.append(f"{span} {s.get('ScalingAdjustment'):+d}")
        kind = step.get("AdjustmentType", "")
        return f"{kind}: " + ", ".join(parts) + (f"; cooldown {step['Cooldown']}s" if step.get("Cooldown") else "")
    target = policy.get("TargetTrackingScalingPolicyConfiguration")
    if target:
        return f"target {target.get('TargetValue')}"
    return ""


def _alarm_metric(alarm: dict) -> str | None:
    """The metric, or for a metric-math alarm (the platform's depth alarms) its returned expression."""
    if alarm.get("MetricName"):
        return alarm["MetricName"]
    for query in alarm.get("Metrics", []):
        if query.get("ReturnData", True) and query.get("Expression"):
            return query.get("Label") or query["Expression"]
    return None


def _alarm_condition(alarm: dict) -> str:
    parts = [alarm.get("Statistic") or alarm.get("ExtendedStatistic"), alarm.get("ComparisonOperator"),
             alarm.get("Threshold")]
    return " ".join(str(p) for p in parts if p not in (None, ""))


def scaling_activities(state: State, resource_id: str) -> list[dict] | None:
    """The last activities; None where the endpoint lacks the API (moto does)."""
    try:
        response = state.client("application-autoscaling", retries=False).describe_scaling_activities(
            ServiceNamespace="ecs", ResourceId=resource_id, ScalableDimension="ecs:service:DesiredCount", MaxResults=5)
    except AWS_ERRORS as error:
        if is_unsupported(error):
            return None
        raise
    return [{"started_at": a.get("StartTime"), "status": a.get("StatusCode"), "description": a.get("Description")}
            for a in response.get("ScalingActivities", [])]


def fetch_scaling(state: State) -> dict:
    cluster, service = state.resources.get("cluster"), state.resources.get("service")
    resource_id = f"service/{cluster}/{service}"
    aas = state.client("application-autoscaling")
    targets = aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource_id]).get(
        "ScalableTargets", [])
    target = None
    if targets:
        t = targets[0]
        target = {"min": t.get("MinCapacity"), "max": t.get("MaxCapacity"),
                  "suspended": t.get("SuspendedState", {})}
    raw_policies = aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=resource_id).get(
        "ScalingPolicies", [])
    policies = [{"name": p["PolicyName"], "arn": p.get("PolicyARN"), "type": p.get("PolicyType"),
                 "adjustments": _adjustments(p), "alarms": [a["AlarmName"] for a in p.get("Alarms", [])]}
                for p in raw_policies]
    alarm_names = sorted({name for p in policies for name in p["alarms"]})
    cloudwatch = state.client("cloudwatch")
    raw_alarms: dict[str, dict] = {}
    for start in range(0, len(alarm_names), 100):
        for a in cloudwatch.describe_alarms(AlarmNames=alarm_names[start:start + 100]).get("MetricAlarms", []):
            raw_alarms[a["AlarmName"]] = a
    # The stack's other alarms (the DLQ alarm) share the service's name prefix.
    for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=f"{state.env}-ml-worker"):
        for a in page.get("MetricAlarms", []):
            raw_alarms.setdefault(a["AlarmName"], a)
    for policy in policies:  # endpoints that do not link alarms to policies: follow the alarms' actions
        if not policy["alarms"]:
            policy["alarms"] = sorted(name for name, a in raw_alarms.items()
                                      if policy["arn"] in a.get("AlarmActions", []))
    alarms = [{"name": a["AlarmName"], "state": a.get("StateValue"), "metric": _alarm_metric(a),
               "condition": _alarm_condition(a),
               "updated_at": a.get("StateUpdatedTimestamp"), "reason": a.get("StateReason")}
              for a in sorted(raw_alarms.values(), key=lambda a: a["AlarmName"])]
    return {"resource_id": resource_id, "target": target, "policies": policies, "alarms": alarms,
            "activities": scaling_activities(state, resource_id)}


@app.command(epilog=examples("opsctl scaling show", "opsctl scaling show --json"))
def show(ctx: typer.Context, cluster: ClusterOpt = None, service: ServiceOpt = None,
         json_output: JsonOpt = False) -> None:
    """The scalable target (min..max), the step policies and the alarms' states."""
    state = get_state(ctx, json_output, cluster=cluster, service=service)
    render.scaling(state, fetch_scaling(state))
