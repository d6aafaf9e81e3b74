"""The tasks' way to AWS's APIs: VPC endpoints when asked for, otherwise the NAT route preflight checked."""

from __future__ import annotations

from mlw_mocks import SUBNETS, FakeAccount, run_program

ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"
REGION = "ap-south-1"


def test_no_endpoints_by_default(program):
    assert program.of_type(ENDPOINT) == []
    assert [sg.name for sg in program.of_type("aws:ec2/securityGroup:SecurityGroup")] == ["security-group"]


def test_interface_endpoints_with_private_dns_behind_their_own_group(priority_program):
    endpoints = {e.inputs["serviceName"]: e.inputs for e in priority_program.of_type(ENDPOINT)}
    interface = {f"com.amazonaws.{REGION}.{s}" for s in ("ecr.api", "ecr.dkr", "logs", "ssm", "sqs")}
    assert set(endpoints) == interface | {f"com.amazonaws.{REGION}.s3"}
    for name in interface:
        e = endpoints[name]
        assert e["vpcEndpointType"] == "Interface" and e["privateDnsEnabled"] is True
        assert e["vpcId"] == "vpc-0a1b2c3d4e5f60718"
        assert e["subnetIds"] == list(SUBNETS)
        assert e["securityGroupIds"] == ["endpoint-security-group-id"]
    group = priority_program.one("aws:ec2/securityGroup:SecurityGroup", "endpoint-security-group").inputs
    assert group["ingress"] == [] and group["egress"] == []  # its only rule: HTTPS from the worker's group


def test_s3_gateway_endpoint_on_the_private_route_tables(priority_program):
    [s3] = [e.inputs for e in priority_program.of_type(ENDPOINT) if e.inputs["serviceName"].endswith(".s3")]
    assert s3["vpcEndpointType"] == "Gateway"
    assert s3["routeTableIds"] == ["rtb-0cc3333333333333c"]
    assert "subnetIds" not in s3 and "securityGroupIds" not in s3


def test_interface_endpoints_take_one_subnet_per_zone():
    account = FakeAccount()
    account.subnets["subnet-0ee5555555555555e"] = {"vpcId": "vpc-0a1b2c3d4e5f60718", "availabilityZone": "ap-south-1a",
                                                  "mapPublicIpOnLaunch": False}
    prog = run_program({"vpcEndpoints": True, "privateRouteTableIds": ["rtb-0cc3333333333333c"],
                        "privateSubnetIds": [*SUBNETS, "subnet-0ee5555555555555e"]}, account=account)
    for e in prog.of_type(ENDPOINT):
        if e.inputs["vpcEndpointType"] == "Interface":
            assert e.inputs["subnetIds"] == list(SUBNETS)  # the third shares a zone with the first
    service = prog.one("aws:ecs/service:Service").inputs
    assert len(service["networkConfiguration"]["subnets"]) == 3  # the tasks may still use all three
