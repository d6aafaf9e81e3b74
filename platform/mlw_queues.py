"""The job queues: the main queue (and an optional priority queue) redriving to a DLQ after 3 receives.

Order matters to SQS: a queue's redrive policy naming the DLQ is refused unless the DLQ's
redrive-allow policy already lists that queue. The allow policy is therefore built from the queue
names (ARNs are known before the queues exist) and the job queues depend on it, so that turning
`priorityQueue` on later updates the allow policy first, then creates the queue.

Queues hold jobs: they are protected from `pulumi destroy` and kept if removed from the program.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from mlw_config import Names
from mlw_preflight import AwsContext
from mlw_stateful import stateful

FOUR_DAYS = 4 * 24 * 3600
FOURTEEN_DAYS = 14 * 24 * 3600


@dataclass
class QueuesArgs:
    names: Names
    aws: AwsContext
    visibility_timeout: int
    wait_time: int
    max_receive_count: int
    priority: bool
    # Principals allowed to send to the job queues: the API role first, then any operator roles.
    sender_role_arns: tuple[str, ...]


def send_only_policy(queue_arn: str, sender_role_arns: list[str]) -> dict:
    """A queue policy under which only the listed roles can send (everyone else is denied SendMessage)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowSendersOnly",
                "Effect": "Allow",
                "Principal": {"AWS": list(sender_role_arns)},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
            },
            {
                "Sid": "DenySendFromAnyoneElse",
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnNotEquals": {"aws:PrincipalArn": list(sender_role_arns)}},
            },
        ],
    }


class WorkerQueues(pulumi.ComponentResource):
    """Main queue, optional priority queue, DLQ; all encrypted (SSE-SQS)."""

    def __init__(self, name: str, args: QueuesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("zivo:mlworker:Queues", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        names = args.names
        # The queues the worker consumes, highest priority first.
        consumed_names = ([names.priority_queue] if args.priority else []) + [names.queue]
        self.consumed_arns = [args.aws.arn("sqs", queue_name) for queue_name in consumed_names]
        self.dlq_arn = args.aws.arn("sqs", names.dlq)

        self.dlq = aws.sqs.Queue(
            "dlq",
            name=names.dlq,
            message_retention_seconds=FOURTEEN_DAYS,
            sqs_managed_sse_enabled=True,
            opts=stateful(self),
        )
        allow = aws.sqs.RedriveAllowPolicy(
            "dlq-redrive-allow",
            queue_url=self.dlq.url,
            redrive_allow_policy=json.dumps({"redrivePermission": "byQueue", "sourceQueueArns": self.consumed_arns}),
            opts=child,
        )
        redrive = json.dumps({"deadLetterTargetArn": self.dlq_arn, "maxReceiveCount": args.max_receive_count})

        def job_queue(resource_name: str, queue_name: str) -> aws.sqs.Queue:
            return aws.sqs.Queue(
                resource_name,
                name=queue_name,
                visibility_timeout_seconds=args.visibility_timeout,
                receive_wait_time_seconds=args.wait_time,
                message_retention_seconds=FOUR_DAYS,
                sqs_managed_sse_enabled=True,
                redrive_policy=redrive,
                opts=stateful(self, depends_on=[allow]),
            )

        self.queue = job_queue("queue", names.queue)
        self.priority = job_queue("priority", names.priority_queue) if args.priority else None

        for resource_name, queue in (("queue", self.queue), ("priority", self.priority)):
            if queue is None:
                continue
            aws.sqs.QueuePolicy(
                f"{resource_name}-send-policy",
                queue_url=queue.url,
                policy=queue.arn.apply(lambda arn: json.dumps(send_only_policy(arn, list(args.sender_role_arns)))),
                opts=child,
            )

        self.register_outputs({"queue_url": self.queue.url, "dlq_url": self.dlq.url})
