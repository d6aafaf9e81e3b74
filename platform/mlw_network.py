"""The worker's network: its security group and, with `vpcEndpoints: true`, its way to AWS's APIs.

Tasks run in private subnets without public IPs. To pull the image, write logs, read their
secrets and consume the queues they need ECR (api and dkr), CloudWatch Logs, SSM and SQS, plus S3
for ECR's image layers: either through the VPC's NAT gateway (preflight checks the routes) or
through the endpoints made here. Task scale-in protection goes through the ECS agent, which Fargate
runs outside the task's network, so no ECS endpoint is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from mlw_config import PlatformConfig
from mlw_preflight import NetworkFacts

INTERFACE_ENDPOINTS = ("ecr.api", "ecr.dkr", "logs", "ssm", "sqs")
HTTPS = 443


@dataclass
class NetworkArgs:
    cfg: PlatformConfig
    facts: NetworkFacts


class WorkerNetwork(pulumi.ComponentResource):
    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("zivo:mlworker:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg, names = args.cfg, args.cfg.names

        self.security_group = aws.ec2.SecurityGroup(
            "security-group",
            name=names.service,
            description="ML worker tasks: no ingress; HTTPS out to AWS APIs, PostgreSQL inside the VPC",
            vpc_id=cfg.vpc_id,
            ingress=[],
            egress=[
                {"description": "AWS APIs (SQS, ECR, CloudWatch Logs, SSM) over HTTPS",
                 "protocol": "tcp", "from_port": HTTPS, "to_port": HTTPS, "cidr_blocks": ["0.0.0.0/0"]},
                {"description": "PostgreSQL", "protocol": "tcp", "from_port": cfg.database_port,
                 "to_port": cfg.database_port, "cidr_blocks": [args.facts.vpc_cidr]},
            ],
            opts=child,
        )
        self.endpoints: list[aws.ec2.VpcEndpoint] = []
        if cfg.vpc_endpoints:
            self._endpoints(cfg, args.facts)
        self.register_outputs({"security_group_id": self.security_group.id})

    def _endpoints(self, cfg: PlatformConfig, facts: NetworkFacts) -> None:
        child = pulumi.ResourceOptions(parent=self)
        endpoint_group = aws.ec2.SecurityGroup(
            "endpoint-security-group",
            name=f"{cfg.names.service}-endpoints",
            description="ML worker VPC endpoints: HTTPS from the worker tasks only",
            vpc_id=cfg.vpc_id,
            ingress=[],
            egress=[],
            opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            "endpoint-https-from-worker",
            security_group_id=endpoint_group.id,
            referenced_security_group_id=self.security_group.id,
            ip_protocol="tcp",
            from_port=HTTPS,
            to_port=HTTPS,
            description="HTTPS from the ML worker tasks",
            opts=child,
        )
        for service in INTERFACE_ENDPOINTS:
            self.endpoints.append(aws.ec2.VpcEndpoint(
                f"endpoint-{service.replace('.', '-')}",
                vpc_id=cfg.vpc_id,
                service_name=f"com.amazonaws.{cfg.region}.{service}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=list(facts.endpoint_subnet_ids),
                security_group_ids=[endpoint_group.id],
                opts=child,
            ))
        self.endpoints.append(aws.ec2.VpcEndpoint(
            "endpoint-s3",
            vpc_id=cfg.vpc_id,
            service_name=f"com.amazonaws.{cfg.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=list(cfg.private_route_table_ids),
            opts=child,
        ))
