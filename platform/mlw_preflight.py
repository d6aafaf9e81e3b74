"""Look-ups that must pass before anything is created, each failure one line naming the config key.

`pulumi preview` runs them too (invokes are read-only): the API and operator roles exist in the
deploying account, the private subnets belong to `vpcId` and map no public IPs, the database
SecureStrings exist, and the tasks have a way to AWS's APIs (VPC endpoints we create, or a NAT
gateway on every private subnet's route table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pulumi
import pulumi_aws as aws
from mlw_config import PlatformConfig

T = TypeVar("T")


@dataclass(frozen=True)
class AwsContext:
    """Partition, account and region, for the ARNs of resources this program does not create."""

    partition: str
    account_id: str
    region: str

    def arn(self, service: str, resource: str, region: bool = True) -> str:
        return f"arn:{self.partition}:{service}:{self.region if region else ''}:{self.account_id}:{resource}"


@dataclass(frozen=True)
class NetworkFacts:
    vpc_cidr: str
    # One private subnet per availability zone: an interface endpoint takes at most one per zone.
    endpoint_subnet_ids: tuple[str, ...]


@dataclass(frozen=True)
class Preflight:
    aws: AwsContext
    network: NetworkFacts


def refuse(key: str, message: str) -> pulumi.RunError:
    return pulumi.RunError(f"preflight: {key}: {message}")


def look_up(key: str, what: str, call: Callable[[], T]) -> T:
    """An invoke whose failure (not found, access denied) becomes one line naming the key."""
    try:
        return call()
    except pulumi.RunError:
        raise
    except Exception as error:  # noqa: BLE001 - the provider's error text varies; the key is what matters
        detail = " ".join(str(error).split())[:200]
        raise refuse(key, f"{what}: {detail}") from None


def account_of(arn: str) -> str:
    return arn.split(":")[4]


def check_roles(cfg: PlatformConfig, account: str) -> None:
    for key, arn in [("apiRoleArn", cfg.api_role_arn)] + [("operatorRoleArns", a) for a in cfg.operator_role_arns]:
        if account_of(arn) != account:
            raise refuse(key, f"{arn} is in account {account_of(arn)}, but this stack deploys to account {account}")
        name = arn.rpartition("/")[2]
        look_up(key, f"role {name} not found in account {account}", lambda name=name: aws.iam.get_role(name=name))


def check_subnets(cfg: PlatformConfig) -> tuple[str, ...]:
    """The subnets' zones; refuses a subnet of another VPC or one that gives tasks public IPs."""
    per_zone: dict[str, str] = {}
    for subnet_id in cfg.private_subnet_ids:
        subnet = look_up("privateSubnetIds", f"subnet {subnet_id} not found",
                         lambda s=subnet_id: aws.ec2.get_subnet(id=s))
        if subnet.vpc_id != cfg.vpc_id:
            raise refuse("privateSubnetIds", f"{subnet_id} belongs to {subnet.vpc_id}, not vpcId {cfg.vpc_id}")
        if subnet.map_public_ip_on_launch:
            raise refuse("privateSubnetIds", f"{subnet_id} maps public IPs on launch: it is not a private subnet")
        per_zone.setdefault(subnet.availability_zone, subnet_id)
    return tuple(per_zone.values())


def check_secrets(cfg: PlatformConfig) -> None:
    names = cfg.names
    for name in (names.database_user_parameter, names.database_password_parameter):
        parameter = look_up("environment", f"SSM parameter {name} not found (the app team creates it)",
                            lambda name=name: aws.ssm.get_parameter(name=name, with_decryption=False))
        if parameter.type != "SecureString":
            raise refuse("environment", f"SSM parameter {name} is a {parameter.type}, not a SecureString")


def route_table_of(cfg: PlatformConfig, subnet_id: str):
    """The subnet's route table: its explicit association, else the VPC's main table."""
    try:
        return aws.ec2.get_route_table(subnet_id=subnet_id)
    except Exception:  # noqa: BLE001 - no explicit association: the subnet uses the main route table
        return look_up("privateSubnetIds", f"no route table for {subnet_id}", lambda: aws.ec2.get_route_table(
            vpc_id=cfg.vpc_id, filters=[{"name": "association.main", "values": ["true"]}]))


def check_network_path(cfg: PlatformConfig, vpc) -> None:
    if cfg.vpc_endpoints:
        if not (vpc.enable_dns_support and vpc.enable_dns_hostnames):
            raise refuse("vpcEndpoints", f"{cfg.vpc_id} needs DNS support and DNS hostnames for private endpoints")
        return
    for subnet_id in cfg.private_subnet_ids:
        table = route_table_of(cfg, subnet_id)
        if not any(r.cidr_block == "0.0.0.0/0" and r.nat_gateway_id for r in table.routes):
            raise refuse("vpcEndpoints", f"{subnet_id}'s route table {table.route_table_id} has no default route "
                         "to a NAT gateway: tasks could not reach ECR, Logs, SSM or SQS; set vpcEndpoints: true "
                         "or add the NAT route")


def preflight(cfg: PlatformConfig) -> Preflight:
    identity = aws.get_caller_identity()
    partition = aws.get_partition().partition
    check_roles(cfg, identity.account_id)
    endpoint_subnets = check_subnets(cfg)
    vpc = look_up("vpcId", f"VPC {cfg.vpc_id} not found", lambda: aws.ec2.get_vpc(id=cfg.vpc_id))
    check_network_path(cfg, vpc)
    check_secrets(cfg)
    return Preflight(aws=AwsContext(partition, identity.account_id, cfg.region),
                     network=NetworkFacts(vpc_cidr=vpc.cidr_block, endpoint_subnet_ids=endpoint_subnets))
