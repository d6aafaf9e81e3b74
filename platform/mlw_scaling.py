"""Scaling from zero on queue depth: desired tasks = ceil(depth / target), capped at the maximum.

Depth is visible plus in-flight messages (CloudWatch metric math over ApproximateNumberOfMessages-
Visible and -NotVisible), never visible alone: a busy worker hides its batch from "visible", and
scaling on visible alone would stop the very tasks that are working.

Two alarms drive two step policies with ExactCapacity adjustments:
- scale-out: depth >= 1 for one minute; its steps map the depth to ceil(depth / target);
- scale-in to zero: depth < 1 for `scale_in_after_minutes` consecutive minutes.

Application Auto Scaling measures step bounds from the alarm threshold; above the threshold a
step's lower bound is inclusive and its upper bound exclusive. Message counts are integers, so
the step for k tasks covers depths (k-1)*target+1 .. k*target, i.e. offsets
[(k-1)*target + 1 - threshold, k*target + 1 - threshold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from mlw_config import PlatformConfig
from mlw_queues import WorkerQueues

SCALE_OUT_THRESHOLD = 1  # messages: any work at all wakes the service
PERIOD_SECONDS = 60


@dataclass(frozen=True)
class Step:
    """One ExactCapacity step; bounds are offsets from the alarm threshold (None = unbounded)."""

    lower: float | None
    upper: float | None
    capacity: int

    def as_args(self) -> dict:
        step: dict = {"scaling_adjustment": self.capacity}
        if self.lower is not None:
            step["metric_interval_lower_bound"] = _bound(self.lower)
        if self.upper is not None:
            step["metric_interval_upper_bound"] = _bound(self.upper)
        return step


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def scale_out_steps(target_depth: int, max_capacity: int, threshold: int = SCALE_OUT_THRESHOLD) -> list[Step]:
    """The scale-out policy's steps: depth d >= threshold gives min(ceil(d / target), max) tasks."""
    if target_depth < 1 or max_capacity < 1 or threshold < 1:
        raise ValueError("target depth, max capacity and threshold must all be >= 1")
    steps = []
    for k in range(1, max_capacity + 1):
        lower = (k - 1) * target_depth + 1 - threshold
        upper = None if k == max_capacity else k * target_depth + 1 - threshold
        if upper is not None and upper <= 0:
            continue  # a step entirely below the threshold can never fire
        steps.append(Step(lower=max(lower, 0), upper=upper, capacity=k))
    return steps


def scale_in_steps() -> list[Step]:
    """The scale-in policy's single step: below the threshold (depth 0 for long enough) -> 0 tasks."""
    return [Step(lower=None, upper=0, capacity=0)]


def apply_steps(steps: list[Step], metric: float, threshold: float) -> int | None:
    """The capacity Application Auto Scaling would set for `metric`, or None if no step matches.

    Above the threshold: lower bound inclusive, upper exclusive; below it: lower exclusive, upper inclusive.
    """
    offset = metric - threshold
    for step in steps:
        lo = -math.inf if step.lower is None else step.lower
        hi = math.inf if step.upper is None else step.upper
        if offset >= 0 and lo <= offset < hi:
            return step.capacity
        if offset < 0 and lo < offset <= hi:
            return step.capacity
    return None


def desired_tasks(depth: int, target_depth: int, min_capacity: int, max_capacity: int) -> int:
    """The steady-state desired count for a queue depth, as the two alarms and policies produce it.

    (Depth 0 reaches 0 only after the scale-in alarm's quiet period.)
    """
    if depth >= SCALE_OUT_THRESHOLD:
        capacity = apply_steps(scale_out_steps(target_depth, max_capacity), depth, SCALE_OUT_THRESHOLD)
    else:
        capacity = apply_steps(scale_in_steps(), depth, SCALE_OUT_THRESHOLD)
    assert capacity is not None
    return min(max(capacity, min_capacity), max_capacity)


def depth_queries(queue_names: list[str]) -> list[dict]:
    """Metric-math queries: visible + in-flight over every consumed queue, returned as `depth`."""
    queries, terms = [], []
    for i, queue_name in enumerate(queue_names):
        for metric_name, short in (("ApproximateNumberOfMessagesVisible", "visible"),
                                   ("ApproximateNumberOfMessagesNotVisible", "inflight")):
            query_id = f"{short}{i}"
            terms.append(query_id)
            queries.append({
                "id": query_id,
                "return_data": False,
                "metric": {
                    "namespace": "AWS/SQS",
                    "metric_name": metric_name,
                    "dimensions": {"QueueName": queue_name},
                    "period": PERIOD_SECONDS,
                    "stat": "Maximum",
                },
            })
    queries.append({
        "id": "depth",
        "expression": " + ".join(terms),
        "label": "visible + in-flight messages",
        "return_data": True,
    })
    return queries


@dataclass(frozen=True)
class ScalingArgs:
    cfg: PlatformConfig
    queues: WorkerQueues
    cluster_name: pulumi.Input[str]
    service_name: pulumi.Input[str]


class QueueDepthScaling(pulumi.ComponentResource):
    def __init__(self, name: str, args: ScalingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("zivo:mlworker:Scaling", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg, names = args.cfg, args.cfg.names

        self.target = aws.appautoscaling.Target(
            "target",
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=pulumi.Output.concat("service/", args.cluster_name, "/", args.service_name),
            min_capacity=cfg.min_capacity,
            max_capacity=cfg.max_capacity,
            opts=child,
        )

        def policy(resource_name: str, steps: list[Step]) -> aws.appautoscaling.Policy:
            return aws.appautoscaling.Policy(
                resource_name,
                name=f"{names.service}-{resource_name}",
                policy_type="StepScaling",
                service_namespace=self.target.service_namespace,
                scalable_dimension=self.target.scalable_dimension,
                resource_id=self.target.resource_id,
                step_scaling_policy_configuration={
                    "adjustment_type": "ExactCapacity",
                    "metric_aggregation_type": "Maximum",
                    "cooldown": PERIOD_SECONDS,
                    "step_adjustments": [s.as_args() for s in steps],
                },
                opts=child,
            )

        self.scale_out = policy("scale-out", scale_out_steps(cfg.target_queue_depth, cfg.max_capacity))
        self.scale_in = policy("scale-in", scale_in_steps())

        queue_names = [names.priority_queue] if cfg.priority_queue else []
        queue_names.append(names.queue)
        queries = depth_queries(queue_names)

        # SQS stops publishing metrics for a queue idle for hours: no data means no messages.
        aws.cloudwatch.MetricAlarm(
            "scale-out-alarm",
            name=f"{names.service}-scale-out",
            alarm_description="ML worker queue depth (visible + in-flight) >= 1: set tasks to ceil(depth / target)",
            comparison_operator="GreaterThanOrEqualToThreshold",
            threshold=SCALE_OUT_THRESHOLD,
            evaluation_periods=1,
            datapoints_to_alarm=1,
            metric_queries=queries,
            treat_missing_data="notBreaching",
            alarm_actions=[self.scale_out.arn],
            opts=child,
        )
        aws.cloudwatch.MetricAlarm(
            "scale-in-alarm",
            name=f"{names.service}-scale-in",
            alarm_description=(f"ML worker queue depth (visible + in-flight) 0 for {cfg.scale_in_after_minutes}"
                               " minutes: scale to zero"),
            comparison_operator="LessThanThreshold",
            threshold=SCALE_OUT_THRESHOLD,
            evaluation_periods=cfg.scale_in_after_minutes,
            datapoints_to_alarm=cfg.scale_in_after_minutes,
            metric_queries=queries,
            treat_missing_data="breaching",
            alarm_actions=[self.scale_in.arn],
            opts=child,
        )
        self.register_outputs({})
