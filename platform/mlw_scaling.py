"""Scaling from zero on queue depth: the scalable target, and the alarms and policies of mlw_scaling_rules."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from mlw_config import PlatformConfig
from mlw_scaling_rules import scaling_alarms, scaling_policies


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def policy_args(spec: dict) -> dict:
    config = spec["StepScalingPolicyConfiguration"]
    return {
        "name": spec["PolicyName"],
        "policy_type": spec["PolicyType"],
        "step_scaling_policy_configuration": {
            "adjustment_type": config["AdjustmentType"],
            "metric_aggregation_type": config["MetricAggregationType"],
            "cooldown": config["Cooldown"],
            "step_adjustments": [{_snake(k): v for k, v in step.items()} for step in config["StepAdjustments"]],
        },
    }


def metric_query_args(query: dict) -> dict:
    args = {"id": query["Id"], "return_data": query["ReturnData"]}
    if "Expression" in query:
        args.update(expression=query["Expression"], label=query["Label"])
    else:
        stat = query["MetricStat"]
        metric = stat["Metric"]
        args["metric"] = {
            "namespace": metric["Namespace"],
            "metric_name": metric["MetricName"],
            "dimensions": {d["Name"]: d["Value"] for d in metric["Dimensions"]},
            "period": stat["Period"],
            "stat": stat["Stat"],
        }
    return args


def alarm_args(spec: dict, actions: list[pulumi.Input[str]]) -> dict:
    return {
        "name": spec["AlarmName"],
        "alarm_description": spec["AlarmDescription"],
        "comparison_operator": spec["ComparisonOperator"],
        "threshold": spec["Threshold"],
        "evaluation_periods": spec["EvaluationPeriods"],
        "datapoints_to_alarm": spec["DatapointsToAlarm"],
        "metric_queries": [metric_query_args(q) for q in spec["Metrics"]],
        "treat_missing_data": spec["TreatMissingData"],
        "alarm_actions": actions,
    }


@dataclass
class ScalingArgs:
    cfg: PlatformConfig
    cluster_name: pulumi.Input[str]
    service_name: pulumi.Input[str]


class QueueDepthScaling(pulumi.ComponentResource):
    def __init__(self, name: str, args: ScalingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("zivo:mlworker:Scaling", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg = args.cfg

        self.target = aws.appautoscaling.Target(
            "target",
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=pulumi.Output.concat("service/", args.cluster_name, "/", args.service_name),
            min_capacity=cfg.min_capacity,
            max_capacity=cfg.max_capacity,
            opts=child,
        )
        policies = {}
        for spec in scaling_policies(cfg):
            resource_name = spec["PolicyName"].removeprefix(f"{cfg.names.service}-")
            policies[spec["PolicyName"]] = aws.appautoscaling.Policy(
                resource_name,
                service_namespace=self.target.service_namespace,
                scalable_dimension=self.target.scalable_dimension,
                resource_id=self.target.resource_id,
                **policy_args(spec),
                opts=child,
            )
        self.alarms = [
            aws.cloudwatch.MetricAlarm(
                f"{spec['AlarmName'].removeprefix(cfg.names.service + '-')}-alarm",
                **alarm_args(spec, [policies[action].arn for action in spec["AlarmActions"]]),
                opts=child,
            )
            for spec in scaling_alarms(cfg)
        ]
        self.register_outputs({})
