"""Least-privilege IAM for the worker: the execution role, the task role and the API role's send grant.

The policy documents are pure functions of ARNs, so a test can read them as data. No `*` action
anywhere; the only `*` resource is ecr:GetAuthorizationToken, which AWS defines on no resource.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from mlw_config import Names
from mlw_preflight import AwsContext

# Actions AWS defines on no resource type, so their statement must say Resource "*".
STAR_RESOURCE_ACTIONS = frozenset({"ecr:GetAuthorizationToken"})

CONSUME_ACTIONS = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"]
ECR_PULL_ACTIONS = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]


def ecs_tasks_trust(account_id: str) -> dict:
    """Trust ecs-tasks.amazonaws.com, only on behalf of this account (confused-deputy guard)."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
        }],
    }


def execution_policy(repository_arn: str, log_group_arn: str, parameter_arns: list[str]) -> dict:
    """Pull the worker image, write its log streams, read the database secrets it is given."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "EcrAuthToken", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
            {"Sid": "EcrPull", "Effect": "Allow", "Action": ECR_PULL_ACTIONS, "Resource": [repository_arn]},
            {"Sid": "Logs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": [f"{log_group_arn}:*"]},
            {"Sid": "Secrets", "Effect": "Allow", "Action": ["ssm:GetParameters"], "Resource": sorted(parameter_arns)},
        ],
    }


def task_policy(consumed_queue_arns: list[str], dlq_arn: str, task_arn_pattern: str) -> dict:
    """Consume the job queues, send to the DLQ, protect its own tasks from scale-in."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Consume", "Effect": "Allow", "Action": CONSUME_ACTIONS, "Resource": list(consumed_queue_arns)},
            {"Sid": "DeadLetter", "Effect": "Allow", "Action": ["sqs:SendMessage", "sqs:GetQueueAttributes"],
             "Resource": [dlq_arn]},
            {"Sid": "TaskProtection", "Effect": "Allow", "Action": ["ecs:UpdateTaskProtection"],
             "Resource": [task_arn_pattern]},
        ],
    }


def api_send_policy(queue_arns: list[str]) -> dict:
    """The API may send to the main (and priority) queue, nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "SendJobs", "Effect": "Allow", "Action": ["sqs:SendMessage"],
                       "Resource": list(queue_arns)}],
    }


def role_name_from_arn(role_arn: str) -> str:
    """arn:aws:iam::123456789012:role/path/name -> name."""
    return role_arn.rpartition("/")[2]


@dataclass
class IamArgs:
    names: Names
    aws: AwsContext
    worker_repository_arn: pulumi.Input[str]
    consumed_queue_arns: list[str]
    dlq_arn: str
    api_role_arn: str


class WorkerIam(pulumi.ComponentResource):
    def __init__(self, name: str, args: IamArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("zivo:mlworker:Iam", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        names, ctx = args.names, args.aws

        trust = json.dumps(ecs_tasks_trust(ctx.account_id))
        self.execution_role = aws.iam.Role(
            "execution-role", name=f"{names.service}-execution", assume_role_policy=trust,
            description="ECS pulls the ML worker image, writes its logs, injects its database secrets", opts=child,
        )
        self.task_role = aws.iam.Role(
            "task-role", name=f"{names.service}-task", assume_role_policy=trust,
            description="The ML worker's own permissions: its queues and its task protection", opts=child,
        )

        log_group_arn = ctx.arn("logs", f"log-group:{names.log_group}")
        parameter_arns = [ctx.arn("ssm", f"parameter{p}")
                          for p in (names.database_user_parameter, names.database_password_parameter)]
        aws.iam.RolePolicy(
            "execution-policy", name="ml-worker-execution", role=self.execution_role.id,
            policy=pulumi.Output.from_input(args.worker_repository_arn).apply(
                lambda repo: json.dumps(execution_policy(repo, log_group_arn, parameter_arns))),
            opts=child,
        )

        task_arns = ctx.arn("ecs", f"task/{names.cluster}/*")
        aws.iam.RolePolicy(
            "task-policy", name="ml-worker-task", role=self.task_role.id,
            policy=json.dumps(task_policy(args.consumed_queue_arns, args.dlq_arn, task_arns)),
            opts=child,
        )

        # The API role lives elsewhere (the app's stack); this adds one inline policy to it.
        aws.iam.RolePolicy(
            "api-send-policy", name=f"{names.service}-send", role=role_name_from_arn(args.api_role_arn),
            policy=json.dumps(api_send_policy(args.consumed_queue_arns)),
            opts=child,
        )
        self.register_outputs({"execution_role_arn": self.execution_role.arn, "task_role_arn": self.task_role.arn})
