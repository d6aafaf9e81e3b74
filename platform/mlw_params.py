"""SSM parameters under /zivohealth/<env>/ml_worker/: what the API and opsctl read to find the worker.

Replaces the guide's manual `aws ssm put-parameter` step.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from mlw_config import Names


@dataclass
class ParamsArgs:
    names: Names
    queue_url: pulumi.Input[str]
    dlq_url: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    service_name: pulumi.Input[str]
    log_group: pulumi.Input[str]
    dashboard_url: pulumi.Input[str]
    priority_queue_url: pulumi.Input[str] | None = None


class WorkerParameters(pulumi.ComponentResource):
    def __init__(self, name: str, args: ParamsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("zivo:mlworker:Parameters", name, None, opts)
        values: dict[str, pulumi.Input[str]] = {
            "enabled": "true",
            "queue_url": args.queue_url,
            "dlq_url": args.dlq_url,
            "cluster_name": args.cluster_name,
            "service_name": args.service_name,
            "log_group": args.log_group,
            "dashboard_url": args.dashboard_url,
        }
        if args.priority_queue_url is not None:
            values["priority_queue_url"] = args.priority_queue_url
        self.parameters = {
            key: aws.ssm.Parameter(
                key.replace("_", "-"),
                name=f"{args.names.ssm_prefix}/{key}",
                type="String",
                value=value,
                description=f"ML worker {key.replace('_', ' ')} (managed by Pulumi)",
                opts=pulumi.ResourceOptions(parent=self),
            )
            for key, value in values.items()
        }
        self.register_outputs({})
