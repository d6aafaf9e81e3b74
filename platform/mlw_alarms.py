"""Alarms to an SNS topic (and an optional e-mail subscription): any DLQ message; jobs waiting too long."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from mlw_config import PlatformConfig
from mlw_queues import WorkerQueues


@dataclass(frozen=True)
class AlarmsArgs:
    cfg: PlatformConfig
    queues: WorkerQueues


class WorkerAlarms(pulumi.ComponentResource):
    def __init__(self, name: str, args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("zivo:mlworker:Alarms", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg, names = args.cfg, args.cfg.names

        # Not KMS-encrypted on purpose: CloudWatch alarms cannot publish to a topic under the
        # AWS-managed SNS key, and a customer key is more than alarm notices need.
        self.topic = aws.sns.Topic("topic", name=names.alarm_topic, opts=child)
        if cfg.alarm_email:
            aws.sns.TopicSubscription(
                "email", topic=self.topic.arn, protocol="email", endpoint=cfg.alarm_email, opts=child,
            )
        actions = [self.topic.arn]

        def queue_alarm(resource_name: str, queue_name: str, metric: str, threshold: float,
                        periods: int, description: str) -> aws.cloudwatch.MetricAlarm:
            return aws.cloudwatch.MetricAlarm(
                resource_name,
                name=f"{names.service}-{resource_name}",
                alarm_description=description,
                namespace="AWS/SQS",
                metric_name=metric,
                dimensions={"QueueName": queue_name},
                statistic="Maximum",
                period=60,
                evaluation_periods=periods,
                comparison_operator="GreaterThanThreshold",
                threshold=threshold,
                treat_missing_data="notBreaching",
                alarm_actions=actions,
                ok_actions=actions,
                opts=child,
            )

        self.dlq_alarm = queue_alarm(
            "dlq-messages", names.dlq, "ApproximateNumberOfMessagesVisible", 0, 1,
            f"A job failed {cfg.max_receive_count} times and landed in {names.dlq}: "
            "inspect with `opsctl dlq peek`, fix, then `opsctl dlq redrive`",
        )
        age_queues = [("oldest-message-age", names.queue)]
        if cfg.priority_queue:
            age_queues.append(("priority-oldest-message-age", names.priority_queue))
        self.age_alarms = [
            queue_alarm(
                resource_name, queue_name, "ApproximateAgeOfOldestMessage", cfg.oldest_message_alarm_seconds, 5,
                f"The oldest job in {queue_name} has waited over {cfg.oldest_message_alarm_seconds} s "
                "for 5 minutes: is the service scaling out (Spot capacity, image pull, crash loop)?",
            )
            for resource_name, queue_name in age_queues
        ]
        self.register_outputs({"topic_arn": self.topic.arn})
