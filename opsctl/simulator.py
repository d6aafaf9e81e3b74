"""What the scaling alarms and step policies do to the desired count, minute by minute.

A pure model of CloudWatch alarms driving Application Auto Scaling step policies, fed with alarms
and policies in the shape the APIs take and return (PutMetricAlarm / DescribeAlarms,
PutScalingPolicy / DescribeScalingPolicies), so the same function runs on the Pulumi program's
registered resources (tests/platform) and on a deployed stack (`opsctl scaling simulate`).

What it models, each from AWS's documentation (docs/deployment.md cites the pages):
- one datapoint per metric per minute (the trace gives it); metric math with +, -, *, /,
  comparisons, IF, FILL and SUM([...]); a term of +, -, *, / without a datapoint makes the
  result's datapoint missing, while SUM adds the series that have one; FILL(m, c) fills the
  minutes m has no datapoint, but only if m has some datapoint in the alarm's window (a series
  with no data at all gives FILL nothing to fill: the conservative reading);
- M out of N evaluation (DatapointsToAlarm of EvaluationPeriods) and TreatMissingData
  (breaching / notBreaching count missing datapoints as such; missing / ignore evaluate the
  present ones, and with none give INSUFFICIENT_DATA / keep the state);
- an alarm in ALARM invokes an Auto Scaling action every minute, not only on the transition;
- the policy aggregates the alarm's datapoints with MetricAggregationType (Average by default)
  and applies the step whose interval holds (value - threshold): above the threshold the lower
  bound is inclusive, below it the upper bound is;
- ExactCapacity, ChangeInCapacity, PercentChangeInCapacity (MinAdjustmentMagnitude), clamped to
  the scalable target's min..max;
- cooldowns: a scale-in is blocked until the cooldown of the last scale-in has passed; a scale-out
  is never blocked and ends a scale-in cooldown; while a scale-out cooldown runs, a
  ChangeInCapacity counts the capacity already added by the activity that started it.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

MetricKey = tuple[str, str, frozenset]
Trace = Sequence[Mapping[MetricKey, float | None]]
Series = list[float | None]

MISSING_TREATMENTS = {"breaching", "notBreaching", "ignore", "missing"}
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
    "GreaterThanThreshold": lambda v, t: v > t,
    "LessThanThreshold": lambda v, t: v < t,
    "LessThanOrEqualToThreshold": lambda v, t: v <= t,
}
AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {
    "Average": lambda values: sum(values) / len(values),
    "Minimum": min,
    "Maximum": max,
}


class SimulationError(ValueError):
    """An alarm or policy the model cannot run (unknown operator, function or treatment)."""


def metric_key(metric: Mapping) -> MetricKey:
    """A metric's identity from its API shape: namespace, name and dimensions."""
    dimensions = frozenset((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))
    return metric["Namespace"], metric["MetricName"], dimensions


def queue_metric(metric_name: str, queue_name: str) -> MetricKey:
    return "AWS/SQS", metric_name, frozenset({("QueueName", queue_name)})


def depth_trace(depths: Sequence[int | None], queue_name: str) -> list[dict[MetricKey, float | None]]:
    """A trace for one queue: `depth` messages visible and none in flight; None = SQS published nothing."""
    trace = []
    for depth in depths:
        minute: dict[MetricKey, float | None] = {}
        if depth is not None:
            minute[queue_metric("ApproximateNumberOfMessagesVisible", queue_name)] = float(depth)
            minute[queue_metric("ApproximateNumberOfMessagesNotVisible", queue_name)] = 0.0
        trace.append(minute)
    return trace


# -- metric math --------------------------------------------------------------------------------
def _elementwise(op: Callable[..., float], *series: Series) -> Series:
    return [None if any(v is None for v in values) else float(op(*values)) for values in zip(*series, strict=True)]


_BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b if b else math.nan}
_COMPARE = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
            ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b}


class _Window:
    """The series an alarm's queries give over its evaluation window (oldest first)."""

    def __init__(self, alarm: Mapping, trace: Trace, minutes: list[int]):
        self.trace, self.minutes = trace, minutes
        self.queries = {q["Id"]: q for q in alarm.get("Metrics") or []}
        self.cache: dict[str, Series] = {}

    def metric(self, metric: Mapping) -> Series:
        key = metric_key(metric)
        return [self.trace[m].get(key) if 0 <= m < len(self.trace) else None for m in self.minutes]

    def query(self, query_id: str) -> Series:
        if query_id not in self.cache:
            if query_id not in self.queries:
                raise SimulationError(f"metric math refers to an unknown id {query_id!r}")
            query = self.queries[query_id]
            if "MetricStat" in query:
                self.cache[query_id] = self.metric(query["MetricStat"]["Metric"])
            else:
                self.cache[query_id] = self.expression(query["Expression"])
        return self.cache[query_id]

    def expression(self, text: str) -> Series:
        try:
            tree = ast.parse(text.replace("&&", " and ").replace("||", " or "), mode="eval")
        except SyntaxError:
            raise SimulationError(f"cannot read the metric math {text!r}") from None
        return self._eval(tree.body, text)

    def _eval(self, node: ast.AST, text: str) -> Series:
        size = len(self.minutes)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return [float(node.value)] * size
        if isinstance(node, ast.Name):
            return self.query(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _elementwise(_BINARY[type(node.op)], self._eval(node.left, text), self._eval(node.right, text))
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
            compare = _COMPARE[type(node.ops[0])]
            return _elementwise(lambda a, b: float(compare(a, b)), self._eval(node.left, text),
                                self._eval(node.comparators[0], text))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "SUM" \
                and len(node.args) == 1 and isinstance(node.args[0], ast.List):
            # An array function: at each minute, the sum of the series that have a value there.
            columns = zip(*(self._eval(a, text) for a in node.args[0].elts), strict=True)
            return [None if all(v is None for v in col) else sum(v for v in col if v is not None) for col in columns]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [self._eval(a, text) for a in node.args]
            if node.func.id == "FILL" and len(args) == 2:
                series, filler = args
                if all(v is None for v in series):
                    return series  # nothing to fill from: the series has no data in the window
                return [f if v is None else v for v, f in zip(series, filler, strict=True)]
            if node.func.id == "IF" and len(args) == 3:
                return _elementwise(lambda c, a, b: a if c else b, *args)
        raise SimulationError(f"the metric math {text!r} uses what the simulator does not model: {ast.unparse(node)}")


# -- the model ----------------------------------------------------------------------------------
@dataclass
class Alarm:
    spec: Mapping
    state: str = "INSUFFICIENT_DATA"

    @property
    def name(self) -> str:
        return self.spec["AlarmName"]

    def datapoints(self, trace: Trace, minute: int) -> Series:
        periods = int(self.spec.get("EvaluationPeriods", 1))
        window = _Window(self.spec, trace, list(range(minute - periods + 1, minute + 1)))
        if self.spec.get("Metrics"):
            [returned] = [q["Id"] for q in self.spec["Metrics"] if q.get("ReturnData", True)]
            return window.query(returned)
        return window.metric(self.spec)

    def evaluate(self, trace: Trace, minute: int) -> Series:
        points = self.datapoints(trace, minute)
        periods = len(points)
        needed = int(self.spec.get("DatapointsToAlarm") or periods)
        treatment = self.spec.get("TreatMissingData") or "missing"
        if treatment not in MISSING_TREATMENTS:
            raise SimulationError(f"{self.name}: unknown TreatMissingData {treatment!r}")
        operator = self.spec["ComparisonOperator"]
        if operator not in COMPARISONS:
            raise SimulationError(f"{self.name}: comparison {operator} is not modelled")
        breaches = COMPARISONS[operator]
        threshold = float(self.spec["Threshold"])
        present = [v for v in points if v is not None]
        breaching = sum(1 for v in present if breaches(v, threshold))
        if treatment == "breaching":
            breaching += periods - len(present)
        elif not present and treatment in ("missing", "ignore"):
            self.state = "INSUFFICIENT_DATA" if treatment == "missing" else self.state
            return points
        self.state = "ALARM" if breaching >= min(needed, periods) else "OK"
        return points


@dataclass
class Target:
    desired: int
    min_capacity: int
    max_capacity: int
    scale_in_blocked_until: int = -1
    scale_out_until: int = -1
    scale_out_base: int = 0


@dataclass(frozen=True)
class Minute:
    minute: int
    depth: float | None
    desired: int
    alarms: dict[str, str]
    events: tuple[str, ...] = field(default_factory=tuple)


def step_for(steps: Sequence[Mapping], offset: float | None, below: bool) -> Mapping | None:
    """The step adjustment for (value - threshold); None offset = no datapoint, take the breach side."""
    for step in steps:
        low, high = step.get("MetricIntervalLowerBound"), step.get("MetricIntervalUpperBound")
        if offset is None:
            if (below and low is None) or (not below and high is None):
                return step
            continue
        lo = -math.inf if low is None else float(low)
        hi = math.inf if high is None else float(high)
        if offset >= 0 and lo <= offset < hi:
            return step
        if offset < 0 and lo < offset <= hi:
            return step
    return None


def _new_capacity(config: Mapping, adjustment: int, target: Target, minute: int) -> int:
    kind = config.get("AdjustmentType")
    current = target.desired
    if kind == "ExactCapacity":
        return adjustment
    if kind == "ChangeInCapacity":
        if adjustment > 0 and minute < target.scale_out_until:
            return max(current, target.scale_out_base + adjustment)  # what the cooldown's activity added counts
        return current + adjustment
    if kind == "PercentChangeInCapacity":
        change = int(current * adjustment / 100)
        magnitude = int(config.get("MinAdjustmentMagnitude") or 0)
        if adjustment and abs(change) < magnitude:
            change = magnitude if adjustment > 0 else -magnitude
        return current + change
    raise SimulationError(f"adjustment type {kind!r} is not modelled")


def _apply(policy: Mapping, alarm: Alarm, points: Series, target: Target, minute: int) -> str | None:
    config = policy.get("StepScalingPolicyConfiguration")
    name = policy.get("PolicyName", "?")
    if not config:
        raise SimulationError(f"policy {name} is not a step scaling policy")
    aggregation = config.get("MetricAggregationType") or "Average"
    if aggregation not in AGGREGATIONS:
        raise SimulationError(f"policy {name}: unknown MetricAggregationType {aggregation!r}")
    present = [v for v in points if v is not None]
    value = AGGREGATIONS[aggregation](present) if present else None
    threshold = float(alarm.spec["Threshold"])
    below = alarm.spec["ComparisonOperator"].startswith("Less")
    step = step_for(config.get("StepAdjustments", []), None if value is None else value - threshold, below)
    if step is None:
        return None
    wanted = _new_capacity(config, int(step["ScalingAdjustment"]), target, minute)
    wanted = min(max(wanted, target.min_capacity), target.max_capacity)
    cooldown_minutes = math.ceil(int(config.get("Cooldown", 300)) / 60)
    shown = "no data" if value is None else format(value, "g")
    if wanted > target.desired:
        if minute >= target.scale_out_until:
            target.scale_out_base = target.desired
        target.scale_out_until = minute + cooldown_minutes
        target.scale_in_blocked_until = -1
        target.desired = wanted
        return f"{name}: {shown} → {wanted}"
    if wanted < target.desired:
        if minute < target.scale_in_blocked_until:
            return f"{name}: {shown} → {wanted} blocked by cooldown until minute {target.scale_in_blocked_until}"
        target.scale_in_blocked_until = minute + cooldown_minutes
        target.desired = wanted
        return f"{name}: {shown} → {wanted}"
    return None


def simulate(trace: Trace, alarms: Sequence[Mapping], policies: Sequence[Mapping], min_capacity: int,
             max_capacity: int, start: int | None = None, depths: Sequence[float | None] | None = None) -> list[Minute]:
    """The desired count after each minute of `trace` (one dict of metric datapoints per minute)."""
    by_action: dict[str, Mapping] = {}
    for policy in policies:
        for key in (policy.get("PolicyARN"), policy.get("PolicyName")):
            if key:
                by_action[key] = policy
    models = [Alarm(spec) for spec in sorted(alarms, key=lambda a: a["AlarmName"])]
    target = Target(desired=min_capacity if start is None else start, min_capacity=min_capacity,
                    max_capacity=max_capacity)
    minutes = []
    for minute in range(len(trace)):
        events = []
        evaluated = [(alarm, alarm.evaluate(trace, minute)) for alarm in models]
        for alarm, points in evaluated:
            if alarm.state != "ALARM":
                continue
            for action in alarm.spec.get("AlarmActions", []):
                policy = by_action.get(action)
                if policy is not None:
                    event = _apply(policy, alarm, points, target, minute)
                    if event:
                        events.append(event)
        depth = depths[minute] if depths is not None else None
        minutes.append(Minute(minute, depth, target.desired, {a.name: a.state for a in models}, tuple(events)))
    return minutes


def changes(minutes: Sequence[Minute], start: int = 0) -> int:
    """How often the desired count changed (the first minute compared with `start`)."""
    counts = [start] + [m.desired for m in minutes]
    return sum(1 for a, b in zip(counts, counts[1:], strict=False) if a != b)
