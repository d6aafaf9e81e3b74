"""A CloudWatch dashboard of the worker: queues, tasks, jobs and alarms on one page.

Jobs, tests and latency come from the worker's JSON logs: one line per completed job
("completed lab categorization ...", with `test_count` and `seconds`), turned into metrics by
log metric filters in the stack's own namespace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from mlw_config import PlatformConfig
from mlw_scaling_rules import consumed_queue_names

COMPLETED_JOB = '{ $.message = "completed lab categorization*" }'
# (resource name, metric, value taken from the log line, unit)
JOB_METRICS = (
    ("jobs-completed", "JobsCompleted", "1", "Count"),
    ("tests-mapped", "TestsMapped", "$.test_count", "Count"),
    ("job-seconds", "JobSeconds", "$.seconds", "Seconds"),
)


def dashboard_url(region: str, name: str) -> str:
    return f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#dashboards:name={name}"


def dashboard_body(cfg: PlatformConfig, cluster: str, service: str, alarm_arns: list[str]) -> dict:
    names, region = cfg.names, cfg.region

    def graph(title: str, metrics: list, y: int, x: int, stat: str = "Maximum") -> dict:
        return {"type": "metric", "x": x, "y": y, "width": 12, "height": 6,
                "properties": {"title": title, "region": region, "view": "timeSeries", "stat": stat,
                               "period": 60, "metrics": metrics}}

    depth = []
    for queue in [*consumed_queue_names(cfg), names.dlq]:
        depth.append(["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", queue,
                      {"label": f"{queue} visible"}])
        depth.append(["AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "QueueName", queue,
                      {"label": f"{queue} in flight"}])
    age = [["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", q] for q in consumed_queue_names(cfg)]
    tasks = [["ECS/ContainerInsights", metric, "ClusterName", cluster, "ServiceName", service, {"label": label}]
             for metric, label in (("DesiredTaskCount", "desired"), ("RunningTaskCount", "running"))]
    ns = names.metric_namespace
    jobs = [[ns, "JobsCompleted", {"label": "jobs per minute"}], [ns, "TestsMapped", {"label": "tests per minute"}]]
    latency = [[ns, "JobSeconds", {"stat": "p50", "label": "p50"}], [ns, "JobSeconds", {"stat": "p95", "label": "p95"}],
               [ns, "JobSeconds", {"stat": "Maximum", "label": "max"}]]
    return {"widgets": [
        graph("Queue depth (visible and in flight), DLQ", depth, y=0, x=0),
        graph("Oldest message age (s)", age, y=0, x=12),
        graph("Tasks: desired vs running", tasks, y=6, x=0),
        graph("Jobs and tests per minute", jobs, stat="Sum", y=6, x=12),
        graph("Job latency (s)", latency, y=12, x=0),
        {"type": "alarm", "x": 12, "y": 12, "width": 12, "height": 6,
         "properties": {"title": "Alarms", "alarms": sorted(alarm_arns)}},
    ]}


@dataclass
class DashboardArgs:
    cfg: PlatformConfig
    log_group_name: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    service_name: pulumi.Input[str]
    alarm_arns: list[pulumi.Output[str]]


class WorkerDashboard(pulumi.ComponentResource):
    def __init__(self, name: str, args: DashboardArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("zivo:mlworker:Dashboard", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg, names = args.cfg, args.cfg.names

        for resource_name, metric_name, value, unit in JOB_METRICS:
            aws.cloudwatch.LogMetricFilter(
                resource_name,
                name=f"{names.service}-{resource_name}",
                log_group_name=args.log_group_name,
                pattern=COMPLETED_JOB,
                metric_transformation={"name": metric_name, "namespace": names.metric_namespace,
                                       "value": value, "unit": unit},
                opts=child,
            )
        body = pulumi.Output.all(args.cluster_name, args.service_name, *args.alarm_arns).apply(
            lambda v: json.dumps(dashboard_body(cfg, v[0], v[1], list(v[2:]))))
        self.dashboard = aws.cloudwatch.Dashboard("dashboard", dashboard_name=names.dashboard, dashboard_body=body,
                                                  opts=child)
        self.url = dashboard_url(cfg.region, names.dashboard)
        self.register_outputs({"url": self.url})
