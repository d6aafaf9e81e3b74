"""Alarms that reach someone: any job in the DLQ, jobs waiting too long, tasks that cannot start.

They notify `alarmTopicArn` (an existing topic, such as the on-call one) and/or a topic of this
stack with `alarmEmail` subscribed; a production stack with neither is refused by the config.
Every alarm also says when it is resolved (OK actions).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from mlw_config import PlatformConfig

PERIOD_SECONDS = 60
TASKS_NOT_STARTING_MINUTES = 10


def metric(query_id: str, namespace: str, metric_name: str, dimensions: dict[str, pulumi.Input[str]],
           stat: str = "Maximum") -> dict:
    return {"id": query_id, "return_data": False,
            "metric": {"namespace": namespace, "metric_name": metric_name, "dimensions": dimensions,
                       "period": PERIOD_SECONDS, "stat": stat}}


def expression(expr: str, label: str) -> dict:
    return {"id": "result", "expression": expr, "label": label, "return_data": True}


@dataclass
class AlarmsArgs:
    cfg: PlatformConfig
    cluster_name: pulumi.Input[str]
    service_name: pulumi.Input[str]


class WorkerAlarms(pulumi.ComponentResource):
    def __init__(self, name: str, args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("zivo:mlworker:Alarms", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg, names = args.cfg, args.cfg.names

        self.topic: aws.sns.Topic | None = None
        actions: list[pulumi.Input[str]] = [cfg.alarm_topic_arn] if cfg.alarm_topic_arn else []
        if cfg.alarm_email:
            # Not KMS-encrypted on purpose: CloudWatch alarms cannot publish to a topic under the
            # AWS-managed SNS key, and a customer key is more than alarm notices need.
            self.topic = aws.sns.Topic("topic", name=names.alarm_topic, opts=child)
            aws.sns.TopicSubscription(
                "email", topic=self.topic.arn, protocol="email", endpoint=cfg.alarm_email, opts=child,
            )
            actions.append(self.topic.arn)
        self.topic_arn: pulumi.Input[str] | None = actions[0] if actions else None

        def alarm(resource_name: str, description: str, threshold: float, periods: int,
                  **query) -> aws.cloudwatch.MetricAlarm:
            return aws.cloudwatch.MetricAlarm(
                resource_name,
                name=f"{names.service}-{resource_name}",
                alarm_description=description,
                comparison_operator="GreaterThanThreshold",
                threshold=threshold,
                evaluation_periods=periods,
                datapoints_to_alarm=periods,
                treat_missing_data="notBreaching",
                alarm_actions=actions,
                ok_actions=actions,
                opts=child,
                **query,
            )

        dlq = {"QueueName": names.dlq}
        self.dlq_alarm = alarm(
            "dlq-messages",
            f"A job failed {cfg.max_receive_count} times and landed in {names.dlq}: inspect with `opsctl dlq peek`, "
            "fix, then `opsctl dlq redrive`. Counts visible and in-flight messages, so a peek does not resolve it.",
            0, 1, metric_queries=[
                metric("visible", "AWS/SQS", "ApproximateNumberOfMessagesVisible", dlq),
                metric("inflight", "AWS/SQS", "ApproximateNumberOfMessagesNotVisible", dlq),
                expression("SUM([FILL(visible, 0), FILL(inflight, 0)])", "DLQ messages (visible + in flight)"),
            ])

        age_queues = [("oldest-message-age", names.queue)]
        if cfg.priority_queue:
            age_queues.append(("priority-oldest-message-age", names.priority_queue))
        self.age_alarms = [
            alarm(resource_name,
                  f"The oldest job in {queue_name} has waited over {cfg.oldest_message_alarm_seconds} s for 5 "
                  "minutes: is the service scaling out (Spot capacity, image pull, crash loop)?",
                  cfg.oldest_message_alarm_seconds, 5, namespace="AWS/SQS",
                  metric_name="ApproximateAgeOfOldestMessage", dimensions={"QueueName": queue_name},
                  statistic="Maximum", period=PERIOD_SECONDS)
            for resource_name, queue_name in age_queues
        ]

        service = {"ClusterName": args.cluster_name, "ServiceName": args.service_name}
        self.not_starting_alarm = alarm(
            "tasks-not-starting",
            f"Tasks are wanted but none has run for {TASKS_NOT_STARTING_MINUTES} minutes: no network path to ECR/"
            "Logs/SSM (ResourceInitializationError), a missing secret, no Spot capacity or a crash loop. "
            "See `opsctl service status` and its stopped tasks' reasons.",
            0, TASKS_NOT_STARTING_MINUTES, metric_queries=[
                metric("desired", "ECS/ContainerInsights", "DesiredTaskCount", service),
                metric("running", "ECS/ContainerInsights", "RunningTaskCount", service),
                expression("IF(FILL(running, 0) == 0, FILL(desired, 0), 0)", "tasks wanted while none runs"),
            ])
        self.arns = [a.arn for a in (self.dlq_alarm, *self.age_alarms, self.not_starting_alarm)]
        self.register_outputs({})
