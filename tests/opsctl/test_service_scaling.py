"""service status, redeploy and scaling show against moto's ECS and Application Auto Scaling."""

from __future__ import annotations

import json

from botocore.awsrequest import AWSResponse


def run_worker_task(stack) -> str:
    """A task on FARGATE_SPOT. moto fails on awsvpc tasks (ENI without private_dns_name), so bridge mode."""
    ecs = stack.client("ecs")
    ecs.register_task_definition(family="test-ml-worker-bridge", networkMode="bridge", containerDefinitions=[
        {"name": "worker", "image": "worker:v1", "essential": True, "cpu": 256, "memory": 512}])
    response = ecs.run_task(cluster=stack.cluster, taskDefinition="test-ml-worker-bridge", count=1,
                            startedBy="ecs-svc/123",
                            capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}])
    return response["tasks"][0]["taskArn"]


def test_service_status_json(stack, opsctl):
    arn = run_worker_task(stack)
    result = opsctl("service", "status", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    service = data["service"]
    assert (service["name"], service["cluster"], service["status"]) == ("test-ml-worker", "test-ml-worker", "ACTIVE")
    assert (service["desired"], service["running"], service["pending"]) == (0, 0, 0)
    assert service["capacity_provider_strategy"] == []  # moto does not keep the service's strategy
    assert data["deployments"][0]["status"] == "PRIMARY" and data["deployments"][0]["rollout_state"] == "COMPLETED"
    [task] = data["tasks"]
    assert task["arn"] == arn and task["capacity_provider"] == "FARGATE_SPOT" and task["last_status"]
    # moto has no GetTaskProtection: the column falls back to unknown, with a note.
    assert task["protected"] is None
    assert data["notes"] == ["task protection: not available from this endpoint"]


def test_service_status_table(stack, opsctl):
    run_worker_task(stack)
    result = opsctl("service", "status")
    assert result.exit_code == 0, result.output
    assert "test-ml-worker on test-ml-worker: ACTIVE, desired 0, running 0, pending 0" in result.stdout
    assert "FARGATE_SPOT" in result.stdout  # the task's capacity provider
    assert "Deployments" in result.stdout and "PRIMARY" in result.stdout and "COMPLETED" in result.stdout
    assert "Tasks" in result.stdout
    assert "task protection: not available" in result.stderr


def test_service_status_with_task_protection(stack, opsctl, hook):
    arn = run_worker_task(stack)
    hook("before-call.ecs.GetTaskProtection", lambda **kw: (AWSResponse("http://ecs", 200, {}, None), {
        "protectedTasks": [{"taskArn": arn, "protectionEnabled": True}], "failures": []}))
    data = json.loads(opsctl("service", "status", "--json").stdout)
    assert data["tasks"][0]["protected"] is True and data["notes"] == []


def test_service_status_missing_service_and_cluster(stack, opsctl):
    missing = opsctl("service", "status", "--service", "nope")
    assert missing.exit_code == 1
    assert "ECS service nope not found in cluster test-ml-worker" in missing.stderr
    no_cluster = opsctl("service", "status", "--cluster", "nowhere")
    assert no_cluster.exit_code == 1
    assert "nowhere" in no_cluster.stderr and no_cluster.stderr.count("\n") == 1


def test_redeploy_forces_a_new_deployment(stack, opsctl):
    before = stack.client("ecs").describe_services(cluster=stack.cluster, services=[stack.service])
    old_id = before["services"][0]["deployments"][0]["id"]
    result = opsctl("redeploy", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["outcome"] == "new deployment started" and data["deployment_id"] != old_id


def test_redeploy_wait_until_stable(stack, opsctl):
    result = opsctl("redeploy", "--wait", "--interval", "0.1")
    assert result.exit_code == 0, result.output
    assert "rollout COMPLETED" in result.stdout
    assert "test-ml-worker: stable (deployment ecs-svc/" in result.stdout


def test_redeploy_wait_times_out_when_tasks_do_not_start(make_stack, opsctl):
    make_stack(desired=1)  # moto runs no task: the rollout stays IN_PROGRESS
    result = opsctl("redeploy", "--wait", "--timeout", "0.3", "--interval", "0.1")
    assert result.exit_code == 1
    assert "rollout IN_PROGRESS: running 0/1" in result.stdout
    assert "not stable after 0s" in result.stderr and "hint:" in result.stderr


def test_redeploy_wait_reports_a_failed_rollout(stack, opsctl, hook):
    def failed(parsed, **kwargs):
        for deployment in parsed.get("services", [{}])[0].get("deployments", []):
            deployment.update(rolloutState="FAILED", rolloutStateReason="tasks failed to start")

    hook("after-call.ecs.DescribeServices", failed)
    result = opsctl("redeploy", "--wait", "--interval", "0.1")
    assert result.exit_code == 1
    assert "failed: tasks failed to start" in result.stderr


def test_scaling_show_json(stack, opsctl):
    result = opsctl("scaling", "show", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["resource_id"] == "service/test-ml-worker/test-ml-worker"
    assert (data["target"]["min"], data["target"]["max"]) == (0, 4)
    policies = {p["name"]: p for p in data["policies"]}
    assert policies["test-ml-worker-scale-out"]["adjustments"] == \
        "ChangeInCapacity: [0..50) +1, [50..+inf) +3; cooldown 60s"
    assert policies["test-ml-worker-scale-in"]["alarms"] == ["test-ml-worker-scale-in"]
    alarms = {a["name"]: a for a in data["alarms"]}
    assert set(alarms) == {"test-ml-worker-scale-out", "test-ml-worker-scale-in", "test-ml-worker-dlq-not-empty"}
    assert alarms["test-ml-worker-scale-out"]["condition"] == "GreaterThanOrEqualToThreshold 1.0"
    assert alarms["test-ml-worker-scale-out"]["metric"] == "visible + in-flight messages"
    assert alarms["test-ml-worker-dlq-not-empty"]["condition"] == "Maximum GreaterThanOrEqualToThreshold 1.0"
    assert alarms["test-ml-worker-dlq-not-empty"]["metric"] == "ApproximateNumberOfMessagesVisible"
    # moto has no DescribeScalingActivities: reported as unavailable, not as an error.
    assert data["activities"] is None


def test_scaling_show_table_with_alarm_states(stack, opsctl):
    stack.client("cloudwatch").set_alarm_state(AlarmName="test-ml-worker-dlq-not-empty", StateValue="ALARM",
                                               StateReason="1 message in the DLQ")
    result = opsctl("scaling", "show")
    assert result.exit_code == 0, result.output
    assert "service/test-ml-worker/test-ml-worker: capacity 0..4" in result.stdout
    assert "Policies" in result.stdout and "Alarms" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "dlq-not-empty" in line)
    assert "ALARM" in row and "1 message in the DLQ" in row
    assert "scaling activities: not available" in result.stderr


def test_scaling_show_activities_where_supported(stack, opsctl, hook):
    hook("before-call.application-auto-scaling.DescribeScalingActivities",
         lambda **kw: (AWSResponse("http://aas", 200, {}, None), {"ScalingActivities": [
             {"StartTime": "2026-11-28T10:00:00Z", "StatusCode": "Successful",
              "Description": "Setting desired count to 1."}]}))
    result = opsctl("scaling", "show")
    assert "Recent activity" in result.stdout and "Setting desired count to 1." in result.stdout


def test_scaling_show_without_a_target(make_stack, opsctl):
    make_stack(scaling=False)
    result = opsctl("scaling", "show")
    assert result.exit_code == 0
    assert "No scalable target registered for service/test-ml-worker/test-ml-worker" in result.stdout
