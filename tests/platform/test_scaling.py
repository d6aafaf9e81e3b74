"""Queue-depth scaling: the step table generated from config, and the alarms' metric math."""

from __future__ import annotations

import math

import pytest
from mlw_scaling import (
    SCALE_OUT_THRESHOLD,
    Step,
    apply_steps,
    desired_tasks,
    scale_in_steps,
    scale_out_steps,
)

DEPTHS = [0, 1, 5, 6, 10, 11, 15, 50]


def test_default_table_depth_to_tasks():
    """The issue's table: target depth 5, max 3."""
    got = [desired_tasks(d, target_depth=5, min_capacity=0, max_capacity=3) for d in DEPTHS]
    print("\ndepth -> tasks (target 5, max 3):", dict(zip(DEPTHS, got, strict=True)))
    assert got == [0, 1, 1, 2, 2, 3, 3, 3]


def test_default_steps_are_exact_capacity_bands():
    assert scale_out_steps(5, 3) == [Step(0, 5, 1), Step(5, 10, 2), Step(10, None, 3)]
    assert scale_in_steps() == [Step(None, 0, 0)]


@pytest.mark.parametrize("target,max_capacity", [(1, 1), (1, 5), (3, 4), (5, 3), (10, 10), (7, 2)])
def test_steps_give_ceil_depth_over_target_capped(target, max_capacity):
    for depth in range(0, target * max_capacity * 2 + 3):
        expected = min(math.ceil(depth / target), max_capacity)
        assert desired_tasks(depth, target, 0, max_capacity) == expected, (depth, target, max_capacity)


@pytest.mark.parametrize("target,max_capacity", [(1, 1), (5, 3), (4, 6)])
def test_steps_cover_every_depth_without_gaps_or_overlaps(target, max_capacity):
    steps = scale_out_steps(target, max_capacity)
    assert steps[0].lower == 0 and steps[-1].upper is None
    for a, b in zip(steps, steps[1:], strict=False):
        assert a.upper == b.lower
    assert [s.capacity for s in steps] == list(range(1, max_capacity + 1))


def test_min_capacity_floor():
    assert desired_tasks(0, 5, 1, 3) == 1


def test_scale_in_step_fires_only_below_threshold():
    assert apply_steps(scale_in_steps(), 0, SCALE_OUT_THRESHOLD) == 0
    assert apply_steps(scale_out_steps(5, 3), 0, SCALE_OUT_THRESHOLD) is None


def test_registered_policies_use_the_generated_steps(program):
    out = program.one("aws:appautoscaling/policy:Policy", "scale-out")
    conf = out.inputs["stepScalingPolicyConfiguration"]
    assert out.inputs["policyType"] == "StepScaling"
    assert conf["adjustmentType"] == "ExactCapacity"
    steps = [(s.get("metricIntervalLowerBound"), s.get("metricIntervalUpperBound"), s["scalingAdjustment"])
             for s in conf["stepAdjustments"]]
    assert steps == [("0", "5", 1), ("5", "10", 2), ("10", None, 3)]

    scale_in = program.one("aws:appautoscaling/policy:Policy", "scale-in")
    conf = scale_in.inputs["stepScalingPolicyConfiguration"]
    assert conf["adjustmentType"] == "ExactCapacity"
    assert conf["stepAdjustments"] == [{"metricIntervalUpperBound": "0", "scalingAdjustment": 0}]


def test_scalable_target_from_zero_to_max(program):
    target = program.one("aws:appautoscaling/target:Target")
    assert target.inputs["serviceNamespace"] == "ecs"
    assert target.inputs["scalableDimension"] == "ecs:service:DesiredCount"
    assert target.inputs["resourceId"] == "service/production-ml-worker/production-ml-worker"
    assert (target.inputs["minCapacity"], target.inputs["maxCapacity"]) == (0, 3)


def _depth_metrics(alarm):
    queries = alarm.inputs["metricQueries"]
    metrics = {(q["metric"]["metricName"], q["metric"]["dimensions"]["QueueName"]): q["id"]
               for q in queries if "metric" in q}
    [expression] = [q for q in queries if q.get("returnData")]
    return metrics, expression


@pytest.mark.parametrize("fixture", ["program", "priority_program"])
def test_alarms_count_visible_plus_in_flight_never_visible_alone(fixture, request):
    prog = request.getfixturevalue(fixture)
    queues = ["production-ml-worker-queue"]
    if fixture == "priority_program":
        queues.append("production-ml-worker-priority")
    for name in ("scale-out-alarm", "scale-in-alarm"):
        alarm = prog.one("aws:cloudwatch/metricAlarm:MetricAlarm", name)
        assert "metricName" not in alarm.inputs, "scaling alarms use metric math only"
        metrics, expression = _depth_metrics(alarm)
        terms = {t.strip() for t in expression["expression"].split("+")}
        for queue in queues:
            visible = metrics[("ApproximateNumberOfMessagesVisible", queue)]
            in_flight = metrics[("ApproximateNumberOfMessagesNotVisible", queue)]
            assert {visible, in_flight} <= terms
        assert len(terms) == 2 * len(queues)


def test_scale_out_fast_scale_in_only_after_quiet_minutes(program):
    out = program.one("aws:cloudwatch/metricAlarm:MetricAlarm", "scale-out-alarm")
    in_ = program.one("aws:cloudwatch/metricAlarm:MetricAlarm", "scale-in-alarm")
    assert out.inputs["comparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert out.inputs["threshold"] == SCALE_OUT_THRESHOLD and out.inputs["evaluationPeriods"] == 1
    assert in_.inputs["comparisonOperator"] == "LessThanThreshold"
    assert in_.inputs["threshold"] == SCALE_OUT_THRESHOLD
    assert in_.inputs["evaluationPeriods"] == in_.inputs["datapointsToAlarm"] == 10
    assert in_.inputs["evaluationPeriods"] > out.inputs["evaluationPeriods"]
    assert out.inputs["alarmActions"] == [program.one("aws:appautoscaling/policy:Policy", "scale-out").outputs["arn"]]
    assert in_.inputs["alarmActions"] == [program.one("aws:appautoscaling/policy:Policy", "scale-in").outputs["arn"]]
