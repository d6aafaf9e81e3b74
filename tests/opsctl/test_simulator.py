"""The scaling model itself, on small hand-made alarms and policies (API shapes)."""

from __future__ import annotations

import pytest

from opsctl.simulator import SimulationError, changes, depth_trace, queue_metric, simulate

Q = "q"
VISIBLE = {"Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible",
           "Dimensions": [{"Name": "QueueName", "Value": Q}]}


def alarm(name="a", op="GreaterThanOrEqualToThreshold", threshold=1, periods=1, needed=None, missing="missing",
          actions=("p",), **metric):
    spec = {"AlarmName": name, "ComparisonOperator": op, "Threshold": threshold, "EvaluationPeriods": periods,
            "DatapointsToAlarm": needed or periods, "TreatMissingData": missing, "AlarmActions": list(actions)}
    spec.update(metric or VISIBLE)
    return spec


def math_alarm(expression: str, **kwargs):
    queries = [{"Id": "v", "ReturnData": False, "MetricStat": {"Metric": VISIBLE, "Period": 60, "Stat": "Maximum"}},
               {"Id": "f", "ReturnData": False, "MetricStat": {"Metric": {**VISIBLE, "MetricName": "Other"},
                                                                "Period": 60, "Stat": "Maximum"}},
               {"Id": "e", "Expression": expression, "ReturnData": True}]
    return alarm(Metrics=queries, **kwargs)


def policy(name="p", kind="ExactCapacity", steps=((0, None, 2),), cooldown=60, aggregation="Maximum", **extra):
    adjustments = []
    for low, high, adjustment in steps:
        step = {"ScalingAdjustment": adjustment}
        if low is not None:
            step["MetricIntervalLowerBound"] = low
        if high is not None:
            step["MetricIntervalUpperBound"] = high
        adjustments.append(step)
    config = {"AdjustmentType": kind, "StepAdjustments": adjustments, "Cooldown": cooldown,
              "MetricAggregationType": aggregation, **extra}
    return {"PolicyName": name, "StepScalingPolicyConfiguration": config}


def run(depths, alarms, policies, lo=0, hi=10, start=None):
    return [m.desired for m in simulate(depth_trace(depths, Q), alarms, policies, lo, hi, start=start)]


def test_an_alarm_in_alarm_acts_every_minute():
    """ChangeInCapacity +1 with a 60 s cooldown: one more task every minute the alarm stays in ALARM."""
    assert run([5] * 4, [alarm()], [policy(kind="ChangeInCapacity", steps=((0, None, 1),))]) == [1, 2, 3, 4]


def test_scale_out_cooldown_counts_what_it_added():
    """During a 5-minute cooldown a re-fired +2 adds nothing; a larger step adds only the difference."""
    pol = policy(kind="ChangeInCapacity", steps=((0, 10, 2), (10, None, 3)), cooldown=300)
    assert run([5, 5, 20, 5, 5, 5, 5, 5], [alarm()], [pol]) == [2, 2, 3, 3, 3, 3, 3, 5]


def test_scale_in_is_blocked_by_the_cooldown_of_the_last_scale_in():
    out = policy("out", steps=((0, None, 3),))
    in_ = policy("in", steps=((None, 0, 1),), kind="ChangeInCapacity", cooldown=180)
    in_["StepScalingPolicyConfiguration"]["StepAdjustments"][0]["ScalingAdjustment"] = -1
    alarms = [alarm("out", actions=("out",)), alarm("in", op="LessThanThreshold", actions=("in",))]
    assert run([5] + [0] * 7, alarms, [out, in_]) == [3, 2, 2, 2, 1, 1, 1, 0]


def test_a_scale_out_is_never_blocked_and_ends_the_scale_in_cooldown():
    out = policy("out", steps=((0, None, 3),))
    in_ = policy("in", steps=((None, 0, 0),), cooldown=3600)
    alarms = [alarm("out", actions=("out",)), alarm("in", op="LessThanThreshold", actions=("in",))]
    assert run([5, 0, 5, 0, 0], alarms, [out, in_]) == [3, 0, 3, 0, 0]
    step_down = policy("out", steps=((0, 5, 1), (5, None, 3)), cooldown=3600)  # a step down is a scale-in too
    assert run([9, 2, 2, 0, 0], [alarm("out", actions=("out",)), alarms[1]], [step_down, in_]) == [3, 1, 1, 1, 1]


def test_m_out_of_n():
    desired = run([5, 0, 0, 0, 0, 0], [alarm(periods=3, needed=1)], [policy()])
    assert desired == [2] * 6  # ExactCapacity keeps 2; only an action could lower it


def test_aggregation_over_the_window():
    steps = ((0, 5, 1), (5, None, 3))
    alarms = [alarm(periods=3, needed=1)]
    assert run([9, 1, 1, 1], alarms, [policy(steps=steps)], start=0) == [3, 3, 3, 1]
    assert run([9, 1, 1, 1], alarms, [policy(steps=steps, aggregation="Minimum")], start=0) == [3, 1, 1, 1]
    assert run([9, 1, 1, 1], alarms, [policy(steps=steps, aggregation="Average")], start=0) == [3, 1, 1, 1]


@pytest.mark.parametrize("missing,expected_state", [("breaching", "ALARM"), ("notBreaching", "OK"),
                                                    ("missing", "INSUFFICIENT_DATA"), ("ignore", "INSUFFICIENT_DATA")])
def test_missing_data_treatments(missing, expected_state):
    minutes = simulate(depth_trace([None, None], Q), [alarm(missing=missing)], [policy(steps=((None, None, 1),))],
                       0, 5)
    assert minutes[-1].alarms == {"a": expected_state}


def test_ignore_keeps_the_state():
    minutes = simulate(depth_trace([3, None, None], Q), [alarm(missing="ignore")], [policy()], 0, 5)
    assert [m.alarms["a"] for m in minutes] == ["ALARM", "ALARM", "ALARM"]


def test_no_datapoint_takes_the_breach_side_step():
    in_alarm = alarm(op="LessThanThreshold", missing="breaching")
    assert run([None, None], [in_alarm], [policy(steps=((None, 0, 0),))], start=3) == [0, 0]


def test_metric_math_fill_sum_if():
    trace = [{queue_metric("ApproximateNumberOfMessagesVisible", Q): 4.0}] * 3  # "Other" never has data
    for expression, fires in [("v + f", False), ("v + FILL(f, 0)", False), ("SUM([v, FILL(f, 0)])", True),
                              ("IF(v == 4, 1, 0)", True), ("IF(v > 4, 1, 0)", False), ("v * 2 - 7", True)]:
        minutes = simulate(trace, [math_alarm(expression)], [policy()], 0, 5)
        assert (minutes[-1].alarms["a"] == "ALARM") is fires, expression


def test_fill_fills_the_gaps_of_a_series_with_data():
    trace = depth_trace([3, None, None], Q)
    minutes = simulate(trace, [math_alarm("FILL(v, 0)", periods=3, needed=3, op="LessThanThreshold",
                                          missing="notBreaching")], [policy()], 0, 5)
    assert [m.alarms["a"] for m in minutes] == ["OK", "OK", "OK"]
    trace = depth_trace([0, None, None], Q)
    minutes = simulate(trace, [math_alarm("FILL(v, 0)", periods=3, needed=3, op="LessThanThreshold",
                                          missing="notBreaching")], [policy()], 0, 5)
    assert minutes[-1].alarms["a"] == "ALARM"  # 0 and two filled zeros


def test_percent_change_with_min_magnitude():
    pol = policy(kind="PercentChangeInCapacity", steps=((0, None, 10),), MinAdjustmentMagnitude=2)
    assert run([5, 5], [alarm()], [pol], start=4) == [6, 8]


def test_clamped_to_the_target():
    assert run([5], [alarm()], [policy(steps=((0, None, 9),))], hi=3) == [3]
    assert run([0], [alarm(op="LessThanThreshold")], [policy(steps=((None, 0, 0),))], lo=1, start=2) == [1]


@pytest.mark.parametrize("bad,message", [
    (alarm(missing="breach"), "TreatMissingData"),
    (alarm(op="LessThanLowerThreshold"), "not modelled"),
    (math_alarm("RATE(v)"), "does not model"),
    (math_alarm("v +"), "cannot read"),
    (math_alarm("w"), "unknown id"),
])
def test_what_is_not_modelled_is_refused(bad, message):
    with pytest.raises(SimulationError, match=message):
        simulate(depth_trace([1], Q), [bad], [policy()], 0, 5)


def test_unknown_aggregation_and_adjustment_are_refused():
    with pytest.raises(SimulationError, match="MetricAggregationType"):
        simulate(depth_trace([1], Q), [alarm()], [policy(aggregation="Median")], 0, 5)
    with pytest.raises(SimulationError, match="adjustment type"):
        simulate(depth_trace([1], Q), [alarm()], [policy(kind="Exact")], 0, 5)


def test_changes_counts_from_the_start():
    minutes = simulate(depth_trace([5, 0], Q), [alarm(), alarm("b", op="LessThanThreshold", actions=("z",))],
                       [policy(), policy("z", steps=((None, 0, 0),))], 0, 5)
    assert [m.desired for m in minutes] == [2, 0] and changes(minutes) == 2 and changes(minutes, start=2) == 1
