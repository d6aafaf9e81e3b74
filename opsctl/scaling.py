"""`opsctl scaling show` and `opsctl scaling simulate`: the scalable target, its policies and alarms,
and what they do to the desired count for a minute-by-minute queue depth."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from opsctl import render
from opsctl.errors import AWS_ERRORS, OpsError, is_unsupported
from opsctl.options import ClusterOpt, JsonOpt, ServiceOpt, examples
from opsctl.resources import find_project
from opsctl.simulator import SimulationError, changes, depth_trace, simulate
from opsctl.state import State, get_state

app = typer.Typer(help="Queue-depth scaling of the worker service.", no_args_is_help=True,
                  epilog=examples("opsctl scaling show", "opsctl scaling simulate --depths 0,3,7,12,12,4,0"))
MAX_MINUTES = 24 * 60


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


def deployed_scaling(state: State) -> dict:
    """The scalable target, its policies and their alarms, as the APIs return them."""
    cluster, service = state.resources.get("cluster"), state.resources.get("service")
    resource_id = f"service/{cluster}/{service}"
    aas = state.client("application-autoscaling")
    targets = aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource_id]).get(
        "ScalableTargets", [])
    policies = aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=resource_id).get(
        "ScalingPolicies", [])
    alarm_names = sorted({a["AlarmName"] for p in policies for a in p.get("Alarms", [])})
    cloudwatch = state.client("cloudwatch")
    alarms: dict[str, dict] = {}
    for start in range(0, len(alarm_names), 100):
        for a in cloudwatch.describe_alarms(AlarmNames=alarm_names[start:start + 100]).get("MetricAlarms", []):
            alarms[a["AlarmName"]] = a
    # The stack's other alarms (the DLQ alarm) share the service's name prefix.
    for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=f"{state.env}-ml-worker"):
        for a in page.get("MetricAlarms", []):
            alarms.setdefault(a["AlarmName"], a)
    return {"resource_id": resource_id, "target": targets[0] if targets else None, "policies": policies,
            "alarms": alarms}


def _policy_alarms(policy: dict, alarms: dict[str, dict]) -> list[str]:
    """The alarms acting on a policy (endpoints that do not link them: follow the alarms' actions)."""
    linked = [a["AlarmName"] for a in policy.get("Alarms", [])]
    return linked or sorted(name for name, a in alarms.items() if policy.get("PolicyARN") in a.get("AlarmActions", []))


def fetch_scaling(state: State) -> dict:
    raw = deployed_scaling(state)
    t = raw["target"]
    target = None if t is None else {"min": t.get("MinCapacity"), "max": t.get("MaxCapacity"),
                                     "suspended": t.get("SuspendedState", {})}
    policies = [{"name": p["PolicyName"], "arn": p.get("PolicyARN"), "type": p.get("PolicyType"),
                 "adjustments": _adjustments(p), "alarms": _policy_alarms(p, raw["alarms"])}
                for p in raw["policies"]]
    alarms = [{"name": a["AlarmName"], "state": a.get("StateValue"), "metric": _alarm_metric(a),
               "condition": _alarm_condition(a),
               "updated_at": a.get("StateUpdatedTimestamp"), "reason": a.get("StateReason")}
              for a in sorted(raw["alarms"].values(), key=lambda a: a["AlarmName"])]
    return {"resource_id": raw["resource_id"], "target": target, "policies": policies, "alarms": alarms,
            "activities": scaling_activities(state, raw["resource_id"])}


# -- simulate -----------------------------------------------------------------------------------
def parse_depths(text: str) -> list[int | None]:
    """'0,3,7,12' -> [0, 3, 7, 12]; '-' is a minute in which SQS published nothing (an idle queue)."""
    depths: list[int | None] = []
    for position, item in enumerate(text.split(","), 1):
        item = item.strip()
        if item == "-":
            depths.append(None)
        elif item.isdigit():
            depths.append(int(item))
        else:
            raise typer.BadParameter(f"item {position} is {item!r}, not a whole number of messages "
                                     "(or '-' for a minute without data)", param_hint="'--depths'")
    if len(depths) > MAX_MINUTES:
        raise typer.BadParameter(f"at most {MAX_MINUTES} minutes", param_hint="'--depths'")
    return depths


def _queue_names(alarms: list[dict]) -> list[str]:
    names = []
    for alarm in alarms:
        metrics = [q["MetricStat"]["Metric"] for q in alarm.get("Metrics") or [] if "MetricStat" in q] or [alarm]
        for metric in metrics:
            for d in metric.get("Dimensions", []):
                if d["Name"] == "QueueName" and d["Value"] not in names:
                    names.append(d["Value"])
    return names


def _main_queue(alarms: list[dict], env: str) -> str:
    names = _queue_names(alarms)
    if not names:
        raise OpsError("the scaling alarms watch no SQS queue", hint="see opsctl scaling show")
    conventional = f"{env}-ml-worker-queue"
    return conventional if conventional in names else next((n for n in names if "priority" not in n), names[0])


def deployed_rules(state: State) -> dict:
    raw = deployed_scaling(state)
    if raw["target"] is None or not raw["policies"]:
        raise OpsError(f"no scalable target or policies for {raw['resource_id']}",
                       hint="deploy the stack (opsctl deploy), or simulate the local config with --local")
    acting = {name for p in raw["policies"] for name in _policy_alarms(p, raw["alarms"])}
    return {"source": f"deployed policies of {raw['resource_id']}", "min": raw["target"]["MinCapacity"],
            "max": raw["target"]["MaxCapacity"], "policies": raw["policies"],
            "alarms": [a for name, a in raw["alarms"].items() if name in acting]}


def _platform_modules(project: Path):
    """The program's config and scaling rules, loaded from the project's platform/ (pure, no Pulumi)."""
    program = project / "platform"
    if not (program / "mlw_scaling_rules.py").is_file():
        raise OpsError(f"no platform program in {project}", hint="run from the project, or pass --stack-file")
    if str(program) not in sys.path:
        sys.path.insert(0, str(program))
    return importlib.import_module("mlw_config"), importlib.import_module("mlw_scaling_rules")


def local_rules(stack_file: Path) -> dict:
    try:
        import yaml
    except ImportError:
        raise OpsError("reading a stack file needs PyYAML", hint="pip install 'zivo-ml-worker[ops]'") from None
    if not stack_file.is_file():
        raise OpsError(f"no stack file {stack_file}", hint="pass --stack-file Pulumi.<stack>.yaml")
    project = find_project(stack_file.resolve().parent)
    if project is None:
        raise OpsError(f"{stack_file} is not inside a Pulumi project (no Pulumi.yaml above it)")
    config, rules = _platform_modules(project)
    try:
        cfg = config.PlatformConfig.from_stack_file(yaml.safe_load(stack_file.read_text()) or {})
    except (ValueError, yaml.YAMLError) as error:
        raise OpsError(f"{stack_file}: {' '.join(str(error).split())}") from None
    policies = rules.scaling_policies(cfg)
    return {"source": f"stack file {stack_file}", "min": cfg.min_capacity, "max": cfg.max_capacity,
            "policies": policies, "alarms": rules.scaling_alarms(cfg)}


def fetch_simulation(state: State, depths: list[int | None], stack_file: Path | None, start: int | None) -> dict:
    rules = local_rules(stack_file) if stack_file else deployed_rules(state)
    queue = _main_queue(rules["alarms"], state.env)
    first = rules["min"] if start is None else start
    try:
        minutes = simulate(depth_trace(depths, queue), rules["alarms"], rules["policies"], rules["min"],
                           rules["max"], start=first, depths=depths)
    except SimulationError as error:
        raise OpsError(f"cannot simulate these alarms: {error}") from None
    return {"source": rules["source"], "queue": queue, "min": rules["min"], "max": rules["max"], "start": first,
            "changes": changes(minutes, start=first),
            "minutes": [{"minute": m.minute, "depth": m.depth, "desired": m.desired, "alarms": m.alarms,
                         "events": list(m.events)} for m in minutes]}


@app.command(name="simulate", epilog=examples(
    "opsctl scaling simulate --depths 0,3,7,12,12,4,0,0,0", "opsctl scaling simulate --local --depths 5,6,5,6,5,6",
    "opsctl scaling simulate --stack-file Pulumi.staging.yaml --depths 20,-,- --json"))
def simulate_command(
    ctx: typer.Context,
    depths: Annotated[str, typer.Option("--depths", help="Queue depth (visible + in flight) per minute, "
                                        "comma-separated; '-' for a minute in which SQS published nothing.")],
    local: Annotated[bool, typer.Option("--local", help="The local stack config (Pulumi.<env>.yaml of the "
                                        "project here) instead of the deployed policies.")] = False,
    stack_file: Annotated[Path | None, typer.Option("--stack-file", help="This stack file instead of the "
                                                    "deployed policies.")] = None,
    start: Annotated[int | None, typer.Option("--start", min=0, help="Desired count before the first minute "
                                              "(default: the minimum capacity).")] = None,
    cluster: ClusterOpt = None, service: ServiceOpt = None, json_output: JsonOpt = False,
) -> None:
    """The desired task count, minute by minute, that the scaling alarms and policies give for a depth trace.

    Models CloudWatch's alarm evaluation (M of N datapoints, missing data, metric math with FILL)
    and Application Auto Scaling's step policies (aggregation, steps, cooldowns), as in
    docs/deployment.md. Minutes are datapoint minutes: real actions lag them by a minute or two.
    """
    parsed = parse_depths(depths)
    state = get_state(ctx, json_output, cluster=cluster, service=service)
    if local and not stack_file:
        project = find_project(Path.cwd())
        if project is None:
            raise OpsError("--local: no Pulumi project here or above", hint="run from the project or pass --stack-file")
        stack_file = project / f"Pulumi.{state.env}.yaml"
    render.simulation(state, fetch_simulation(state, parsed, stack_file, start))


@app.command(epilog=examples("opsctl scaling show", "opsctl scaling show --json"))
def show(ctx: typer.Context, cluster: ClusterOpt = None, service: ServiceOpt = None,
         json_output: JsonOpt = False) -> None:
    """The scalable target (min..max), the step policies and the alarms' states."""
    state = get_state(ctx, json_output, cluster=cluster, service=service)
    render.scaling(state, fetch_scaling(state))
