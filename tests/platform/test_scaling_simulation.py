"""The registered scaling alarms and policies, run through the simulator minute by minute.

The alarms and policies are the program's own registrations (under mocks), turned into the API
requests they stand for; the simulator (opsctl/simulator.py) models how CloudWatch and Application
Auto Scaling act on them. Default config: target depth 5, max 3 tasks, 10 quiet minutes.
"""

from __future__ import annotations

import pytest
from mlw_mocks import run_program
from mlw_requests import requests

from opsctl.simulator import changes, depth_trace, queue_metric, simulate

QUEUE = "production-ml-worker-queue"
PRIORITY = "production-ml-worker-priority"


def scaling_of(prog) -> dict:
    """Alarms and policies as the APIs take them, the policies with the ARNs the alarms act on."""
    arns = {r.inputs["name"]: r.outputs["arn"] for r in prog.of_type("aws:appautoscaling/policy:Policy")}
    reqs = requests(prog)
    policies = [{**r.params, "PolicyARN": arns[r.params["PolicyName"]]}
                for r in reqs if r.operation == "PutScalingPolicy"]
    alarms = [r.params for r in reqs if r.operation == "PutMetricAlarm" and r.params["AlarmName"].endswith(
        ("-scale-out", "-scale-in"))]
    target = prog.one("aws:appautoscaling/target:Target").inputs
    assert len(policies) == 2 and len(alarms) == 2
    return {"alarms": alarms, "policies": policies, "min_capacity": int(target["minCapacity"]),
            "max_capacity": int(target["maxCapacity"])}


def run(scaling: dict, depths: list[int | None], queue: str = QUEUE, start: int | None = None) -> list[int]:
    minutes = simulate(depth_trace(depths, queue), start=start, **scaling)
    return [m.desired for m in minutes]


@pytest.fixture(scope="module")
def scaling(program) -> dict:
    return scaling_of(program)


def test_hovering_at_a_band_edge_changes_the_count_at_most_twice_in_ten_minutes(scaling):
    depths = [5, 6] * 15
    desired = run(scaling, depths)
    print("\ndepth 5/6 hovering:", desired)
    assert desired[:3] == [1, 2, 2] and set(desired[1:]) == {2}
    for start in range(len(desired) - 10):
        assert changes(simulate(depth_trace(depths, QUEUE), **scaling)[start:start + 10],
                       start=desired[start - 1] if start else 0) <= 2


def test_hovering_from_one_task_is_one_change(scaling):
    desired = run(scaling, [5] * 12 + [6, 5] * 10)
    assert desired[:12] == [1] * 12 and set(desired[12:]) == {2}


def test_the_old_tables_flap_as_the_review_found(scaling):
    """The simulator reproduces the finding: a 1-minute window with ExactCapacity flaps at 5/6."""
    old = {**scaling, "alarms": [{**a, "EvaluationPeriods": 1, "DatapointsToAlarm": 1}
                                 if a["AlarmName"].endswith("scale-out") else a for a in scaling["alarms"]]}
    minutes = simulate(depth_trace([5, 6] * 5, QUEUE), **old)
    assert changes(minutes) == 10


def test_a_burst_scales_out_at_once_and_drains_only_after_the_quiet_window(scaling):
    depths = [0, 0, 12, 15, 9, 4] + [0] * 14
    desired = run(scaling, depths)
    print("\nburst 12, 15, 9, 4 then idle:", desired)
    # 3 tasks in the burst's first minute, held while 15 is in the 10-minute window (minutes 3..12),
    # then one step per minute as 9 and 4 leave it, and zero once the whole window is idle.
    assert desired == [0, 0, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 1, 0, 0, 0, 0, 0]


def test_a_task_started_for_work_is_kept_for_the_whole_window(scaling):
    desired = run(scaling, [0, 4, 0] + [0] * 12)
    assert desired[1:11] == [1] * 10 and desired[11] == 0


@pytest.fixture(scope="module")
def priority_scaling(priority_program) -> dict:
    return scaling_of(priority_program)


def test_a_busy_main_queue_scales_out_while_the_priority_queue_is_idle(priority_scaling):
    """SQS publishes nothing for the idle priority queue: FILL makes its terms 0 instead of blanking the sum."""
    trace = depth_trace([7] * 6 + [0] * 12, QUEUE)  # no datapoint at all for the priority queue
    desired = [m.desired for m in simulate(trace, **priority_scaling)]
    assert desired[:6] == [2] * 6
    assert desired[16] == 0


def test_priority_and_main_queue_depths_add_up(priority_scaling):
    trace = [{**minute, queue_metric("ApproximateNumberOfMessagesNotVisible", PRIORITY): 4.0}
             for minute in depth_trace([3] * 4, QUEUE)]
    assert [m.desired for m in simulate(trace, **priority_scaling)] == [2] * 4


def test_scale_to_zero_exactly_after_the_quiet_period(scaling):
    desired = run(scaling, [3, 3, 3] + [0] * 15)
    assert desired[:12] == [1] * 12 and desired[12:] == [0] * 6


def test_scale_to_zero_when_sqs_stops_publishing(scaling):
    """An idle queue's metrics stop: a window with no data at all counts as idle (missing = breaching)."""
    desired = run(scaling, [3, 3, 3] + [None] * 15)
    assert desired[:12] == [1] * 12 and desired[12:] == [0] * 6


def test_a_second_burst_after_zero_scales_in_again_on_time(scaling):
    """No cooldown left over from the first scale-in holds the second burst's tasks."""
    desired = run(scaling, [3, 3] + [0] * 12 + [8, 8] + [0] * 14)
    assert desired[11] == 0 and desired[14:16] == [2, 2]
    assert desired[25] == 0 and desired[24] == 2


def test_idle_from_the_start_stays_at_zero(scaling):
    assert set(run(scaling, [None] * 5 + [0] * 5)) == {0}


def test_depth_table_in_steady_state(scaling):
    """The seed table: 0 -> 0, 1-5 -> 1, 6-10 -> 2, 11+ -> 3 (after a steady minute at each depth)."""
    for depth, tasks in [(1, 1), (5, 1), (6, 2), (10, 2), (11, 3), (15, 3), (50, 3)]:
        assert run(scaling, [depth])[-1] == tasks, depth
    assert run(scaling, [0] * 3)[-1] == 0


def test_other_targets_follow_the_config():
    prog = run_program({"targetQueueDepth": 3, "maxCapacity": 5, "scaleInAfterMinutes": 4, "minCapacity": 1})
    scaling = scaling_of(prog)
    desired = run(scaling, [0, 7, 16, 2] + [0] * 8)
    assert desired == [1, 3, 5, 5, 5, 5, 1, 1, 1, 1, 1, 1]  # never below minCapacity 1
