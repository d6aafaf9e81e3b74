"""The scaling alarms and step policies as data, in the shape the AWS APIs take them.

Desired tasks = ceil(depth / target), capped at the maximum, where depth is visible plus in-flight
messages over every consumed queue: CloudWatch metric math SUM([FILL(term, 0), ...]). SQS
publishes nothing for an idle queue; FILL makes its gaps 0, and SUM adds the terms that have a
value (where `+` would give no datapoint at all if one term had none, and the idle priority queue
would blank the depth of a busy main queue).
Counting visible messages alone would scale in the very tasks that are busy with their batch.

Two alarms drive two ExactCapacity step policies:
- scale-out: depth >= 1 in at least 1 of the last N minutes (N = scaleInAfterMinutes). While any
  minute of the window has work, the alarm stays in ALARM and, as CloudWatch does for Auto Scaling
  actions, invokes the policy every minute; the policy aggregates the window's datapoints with
  Maximum. The count therefore rises within a minute of work arriving and falls only when the
  higher demand has left the window, N minutes later, never minute by minute as the depth falls.
  A task started for a burst is kept for N minutes, long enough to pull its image and start.
- scale-in to zero: depth < 1 in all of the last N minutes; a window with no data at all (SQS
  stops publishing for idle queues) counts as idle.

Application Auto Scaling measures step bounds from the alarm threshold; above the threshold a
step's lower bound is inclusive and its upper bound exclusive. Message counts are integers, so
the step for k tasks covers depths (k-1)*target+1 .. k*target, i.e. offsets [(k-1)*target, k*target)
from the threshold of 1.

No Pulumi here: `opsctl scaling simulate --local` builds the same specs from a stack file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlw_config import PlatformConfig

SCALE_OUT_THRESHOLD = 1  # messages: any work at all wakes the service
PERIOD_SECONDS = 60
# Short on purpose: the alarm's window, not the cooldown, decides when the count falls; a long
# cooldown after a step down would hold the tasks that are no longer needed (scale-ins are blocked).
COOLDOWN_SECONDS = 60
DEPTH_METRICS = (("ApproximateNumberOfMessagesVisible", "visible"),
                 ("ApproximateNumberOfMessagesNotVisible", "inflight"))


@dataclass(frozen=True)
class Step:
    """One ExactCapacity step; bounds are offsets from the alarm threshold (None = unbounded)."""

    lower: float | None
    upper: float | None
    capacity: int

    def as_api(self) -> dict:
        step: dict = {"ScalingAdjustment": self.capacity}
        if self.lower is not None:
            step["MetricIntervalLowerBound"] = float(self.lower)
        if self.upper is not None:
            step["MetricIntervalUpperBound"] = float(self.upper)
        return step


def scale_out_steps(target_depth: int, max_capacity: int) -> list[Step]:
    """The scale-out policy's steps: depth d >= 1 gives min(ceil(d / target), max) tasks.

    With the threshold at 1, the step for k tasks covers offsets [(k-1)*target, k*target).
    """
    if target_depth < 1 or max_capacity < 1:
        raise ValueError("target depth and max capacity must both be >= 1")
    return [Step(lower=(k - 1) * target_depth, upper=None if k == max_capacity else k * target_depth, capacity=k)
            for k in range(1, max_capacity + 1)]


def scale_in_steps() -> list[Step]:
    """The scale-in policy's single step: below the threshold (no work for long enough) -> 0 tasks."""
    return [Step(lower=None, upper=0, capacity=0)]


def expected_tasks(depth: int, target_depth: int, min_capacity: int, max_capacity: int) -> int:
    """The table the steps encode: ceil(depth / target) within min..max."""
    return min(max(math.ceil(depth / target_depth), min_capacity), max_capacity)


def consumed_queue_names(cfg: PlatformConfig) -> list[str]:
    names = cfg.names
    return ([names.priority_queue] if cfg.priority_queue else []) + [names.queue]


def depth_queries(queue_names: list[str]) -> list[dict]:
    """Metric math: SUM of FILL(visible, 0) and FILL(in flight, 0) over every consumed queue, as `depth`."""
    queries, terms = [], []
    for i, queue_name in enumerate(queue_names):
        for metric_name, short in DEPTH_METRICS:
            query_id = f"{short}{i}"
            terms.append(f"FILL({query_id}, 0)")
            queries.append({
                "Id": query_id,
                "ReturnData": False,
                "MetricStat": {
                    "Metric": {"Namespace": "AWS/SQS", "MetricName": metric_name,
                               "Dimensions": [{"Name": "QueueName", "Value": queue_name}]},
                    "Period": PERIOD_SECONDS,
                    # The highest sample of the minute: a burst that lands and is received within the
                    # minute still counts.
                    "Stat": "Maximum",
                },
            })
    queries.append({"Id": "depth", "Expression": f"SUM([{', '.join(terms)}])", "Label": "visible + in-flight messages",
                    "ReturnData": True})
    return queries


def scaling_policies(cfg: PlatformConfig) -> list[dict]:
    """PutScalingPolicy requests (without the target's ids): scale-out, then scale-in."""
    def policy(name: str, steps: list[Step]) -> dict:
        return {
            "PolicyName": f"{cfg.names.service}-{name}",
            "PolicyType": "StepScaling",
            "StepScalingPolicyConfiguration": {
                "AdjustmentType": "ExactCapacity",
                "MetricAggregationType": "Maximum",
                "Cooldown": COOLDOWN_SECONDS,
                "StepAdjustments": [s.as_api() for s in steps],
            },
        }

    return [policy("scale-out", scale_out_steps(cfg.target_queue_depth, cfg.max_capacity)),
            policy("scale-in", scale_in_steps())]


def scaling_alarms(cfg: PlatformConfig) -> list[dict]:
    """PutMetricAlarm requests; each AlarmActions names its policy (the program swaps in the ARN)."""
    window = cfg.scale_in_after_minutes
    out, in_ = (p["PolicyName"] for p in scaling_policies(cfg))
    queries = depth_queries(consumed_queue_names(cfg))
    return [
        {
            "AlarmName": f"{cfg.names.service}-scale-out",
            "AlarmDescription": (f"ML worker queue depth (visible + in-flight) >= 1 in any of the last {window} "
                                 f"minutes: tasks = ceil(highest depth of those minutes / {cfg.target_queue_depth})"),
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "Threshold": float(SCALE_OUT_THRESHOLD),
            "EvaluationPeriods": window,
            "DatapointsToAlarm": 1,
            "Metrics": queries,
            "TreatMissingData": "notBreaching",
            "AlarmActions": [out],
        },
        {
            "AlarmName": f"{cfg.names.service}-scale-in",
            "AlarmDescription": f"ML worker queue depth (visible + in-flight) 0 for {window} minutes: scale to zero",
            "ComparisonOperator": "LessThanThreshold",
            "Threshold": float(SCALE_OUT_THRESHOLD),
            "EvaluationPeriods": window,
            "DatapointsToAlarm": window,
            "Metrics": queries,
            # SQS publishes nothing for a queue idle for hours: no data is no work.
            "TreatMissingData": "breaching",
            "AlarmActions": [in_],
        },
    ]
