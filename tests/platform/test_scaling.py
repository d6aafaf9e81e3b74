"""Queue-depth scaling: the step table generated from config, and the alarms and policies as registered.

What the registered alarms and policies *do* minute by minute is test_scaling_simulation.py; this
file pins the shape: the step bands, FILL on every term, the statistic, the windows.
"""

from __future__ import annotations

import math

import pytest
from mlw_mocks import run_program
from mlw_requests import requests
from mlw_scaling_rules import (
    SCALE_OUT_THRESHOLD,
    Step,
    expected_tasks,
    scale_in_steps,
    scale_out_steps,
)

from opsctl.simulator import step_for

DEPTHS = [0, 1, 5, 6, 10, 11, 15, 50]


def tasks_for(depth: int, target: int, min_capacity: int, max_capacity: int) -> int:
    """What the scale-out steps give for a depth (the scale-in step below the threshold)."""
    below = depth < SCALE_OUT_THRESHOLD
    steps = [s.as_api() for s in (scale_in_steps() if below else scale_out_steps(target, max_capacity))]
    step = step_for(steps, depth - SCALE_OUT_THRESHOLD, below)
    assert step is not None, depth
    return min(max(step["ScalingAdjustment"], min_capacity), max_capacity)


def test_default_table_depth_to_tasks():
    """The seed table: target depth 5, max 3."""
    got = [tasks_for(d, 5, 0, 3) for d in DEPTHS]
    print("\ndepth -> tasks (target 5, max 3):", dict(zip(DEPTHS, got, strict=True)))
    assert got == [0, 1, 1, 2, 2, 3, 3, 3]


def test_default_steps_are_exact_capacity_bands():
    assert scale_out_steps(5, 3) == [Step(0, 5, 1), Step(5, 10, 2), Step(10, None, 3)]
    assert scale_in_steps() == [Step(None, 0, 0)]


@pytest.mark.parametrize("target,max_capacity", [(1, 1), (1, 5), (3, 4), (5, 3), (10, 10), (7, 2)])
def test_steps_give_ceil_depth_over_target_capped(target, max_capacity):
    for depth in range(0, target * max_capacity * 2 + 3):
        assert tasks_for(depth, target, 0, max_capacity) == expected_tasks(depth, target, 0, max_capacity)
        assert expected_tasks(depth, target, 0, max_capacity) == min(math.ceil(depth / target), max_capacity)


@pytest.mark.parametrize("target,max_capacity", [(1, 1), (5, 3), (4, 6)])
def test_steps_cover_every_depth_without_gaps_or_overlaps(target, max_capacity):
    steps = scale_out_steps(target, max_capacity)
    assert steps[0].lower == 0 and steps[-1].upper is None
    for a, b in zip(steps, steps[1:], strict=False):
        assert a.upper == b.lower
    assert [s.capacity for s in steps] == list(range(1, max_capacity + 1))


def test_steps_refuse_nonsense():
    with pytest.raises(ValueError):
        scale_out_steps(0, 3)


def _policy(prog, name: str) -> dict:
    [req] = [r.params for r in requests(prog) if r.operation == "PutScalingPolicy"
             and r.params["PolicyName"].endswith(name)]
    return req


def _alarm(prog, name: str) -> dict:
    [req] = [r.params for r in requests(prog) if r.operation == "PutMetricAlarm"
             and r.params["AlarmName"].endswith(name)]
    return req


def test_registered_policies(program):
    out = _policy(program, "-scale-out")
    assert out["PolicyType"] == "StepScaling"
    assert out["StepScalingPolicyConfiguration"] == {
        "AdjustmentType": "ExactCapacity", "MetricAggregationType": "Maximum", "Cooldown": 60,
        "StepAdjustments": [
            {"ScalingAdjustment": 1, "MetricIntervalLowerBound": 0.0, "MetricIntervalUpperBound": 5.0},
            {"ScalingAdjustment": 2, "MetricIntervalLowerBound": 5.0, "MetricIntervalUpperBound": 10.0},
            {"ScalingAdjustment": 3, "MetricIntervalLowerBound": 10.0}]}
    scale_in = _policy(program, "-scale-in")
    assert scale_in["StepScalingPolicyConfiguration"] == {
        "AdjustmentType": "ExactCapacity", "MetricAggregationType": "Maximum", "Cooldown": 60,
        "StepAdjustments": [{"ScalingAdjustment": 0, "MetricIntervalUpperBound": 0.0}]}


def test_scalable_target_from_zero_to_max(program):
    target = program.one("aws:appautoscaling/target:Target")
    assert target.inputs["serviceNamespace"] == "ecs"
    assert target.inputs["scalableDimension"] == "ecs:service:DesiredCount"
    assert target.inputs["resourceId"] == "service/production-ml-worker/production-ml-worker"
    assert (target.inputs["minCapacity"], target.inputs["maxCapacity"]) == (0, 3)
    for policy in program.of_type("aws:appautoscaling/policy:Policy"):
        assert policy.inputs["resourceId"] == target.inputs["resourceId"]


@pytest.mark.parametrize("fixture", ["program", "priority_program"])
def test_depth_is_the_sum_of_every_term_filled_with_zero(fixture, request):
    """visible + in flight over every consumed queue; every term FILLed (SQS is silent for idle queues)."""
    prog = request.getfixturevalue(fixture)
    queues = ["production-ml-worker-queue"] + (["production-ml-worker-priority"] if fixture != "program" else [])
    for name in ("-scale-out", "-scale-in"):
        alarm = _alarm(prog, name)
        assert "MetricName" not in alarm, "scaling alarms use metric math only"
        metrics = {(q["MetricStat"]["Metric"]["MetricName"], q["MetricStat"]["Metric"]["Dimensions"][0]["Value"]): q
                   for q in alarm["Metrics"] if "MetricStat" in q}
        [expression] = [q for q in alarm["Metrics"] if q["ReturnData"]]
        assert sorted(metrics) == sorted((m, q) for q in queues for m in (
            "ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible"))
        for query in metrics.values():
            assert query["ReturnData"] is False
            # The minute's highest sample, over one-minute periods: a burst inside a minute counts.
            assert (query["MetricStat"]["Stat"], query["MetricStat"]["Period"]) == ("Maximum", 60)
        terms = ", ".join(f"FILL({q['Id']}, 0)" for q in metrics.values())
        assert expression["Expression"] == f"SUM([{terms}])"


def test_scale_out_fast_and_holds_the_window_scale_in_after_quiet_minutes(program):
    out, in_ = _alarm(program, "-scale-out"), _alarm(program, "-scale-in")
    assert (out["ComparisonOperator"], out["Threshold"]) == ("GreaterThanOrEqualToThreshold", SCALE_OUT_THRESHOLD)
    assert (out["EvaluationPeriods"], out["DatapointsToAlarm"]) == (10, 1)
    assert out["TreatMissingData"] == "notBreaching"
    assert (in_["ComparisonOperator"], in_["Threshold"]) == ("LessThanThreshold", SCALE_OUT_THRESHOLD)
    assert in_["EvaluationPeriods"] == in_["DatapointsToAlarm"] == 10
    assert in_["TreatMissingData"] == "breaching"
    arns = {r.inputs["name"]: r.outputs["arn"] for r in program.of_type("aws:appautoscaling/policy:Policy")}
    assert out["AlarmActions"] == [arns["production-ml-worker-scale-out"]]
    assert in_["AlarmActions"] == [arns["production-ml-worker-scale-in"]]


def test_the_window_follows_scale_in_after_minutes():
    prog = run_program({"scaleInAfterMinutes": 4})
    assert _alarm(prog, "-scale-out")["EvaluationPeriods"] == 4
    assert _alarm(prog, "-scale-in")["EvaluationPeriods"] == _alarm(prog, "-scale-in")["DatapointsToAlarm"] == 4
