"""The program refuses what cannot deploy, in one line naming the key, before it creates anything."""

from __future__ import annotations

import pulumi
import pytest
from mlw_mocks import ACCOUNT, SUBNETS, FakeAccount, ProgramRefused, _route, run_program

SUBNET_A, SUBNET_B = list(SUBNETS)


def refused(overrides: dict | None = None, filled: bool = True, account: FakeAccount | None = None) -> str:
    with pytest.raises(ProgramRefused) as stopped:
        run_program(overrides, filled=filled, account=account)
    error = stopped.value
    assert isinstance(error.error, pulumi.RunError), repr(error.error)  # a clean exit, not a traceback
    message = str(error.error)
    assert "\n" not in message, message
    custom = [r for r in error.resources if r.custom or r.remote]
    assert custom == [], f"created before refusing: {[r.name for r in custom]}"
    return message


def test_the_committed_stack_file_is_refused_naming_every_placeholder():
    message = refused(filled=False)
    print("\n" + message)
    assert message.startswith("the stack config still holds placeholder values: ")
    for key in ("vpcId", "privateSubnetIds", "databaseHost", "apiRoleArn", "alarmTopicArn"):
        assert message.count(key) == 1, key  # named once, even where two kinds of placeholder meet
    assert "docs/deployment.md" in message


@pytest.mark.parametrize("key,value", [
    ("vpcId", "vpc-0123456789abcdef0"),
    ("privateSubnetIds", [SUBNET_A, "subnet-0123456789abcdef1"]),
    ("databaseHost", "db.cluster-xxxxxxxxxxxx.ap-south-1.rds.amazonaws.com"),
    ("apiRoleArn", "arn:aws:iam::123456789012:role/api"),
    ("databaseName", "TO-FILL"),
    ("operatorRoleArns", ["arn:aws:iam::123456789012:role/ops"]),
])
def test_each_kind_of_placeholder_is_refused(key, value):
    message = refused({key: value})
    assert message.startswith("the stack config still holds placeholder values: " + key)


def test_a_production_stack_without_an_alarm_target_is_refused():
    message = refused({"alarmTopicArn": None, "alarmEmail": ""})
    assert "alarmTopicArn" in message and "alarmEmail" in message and "production" in message


def test_a_staging_stack_may_go_without_alarm_target():
    prog = run_program({"environment": "staging", "alarmTopicArn": None,
                        "apiRoleArn": f"arn:aws:iam::{ACCOUNT}:role/zivohealth-staging-api"})
    assert prog.outputs["alarm_topic_arn"] is None


def test_an_invalid_value_is_refused_before_anything_is_created():
    assert refused({"maxCapacity": 0}).startswith("invalid ml-worker stack config: maxCapacity")


@pytest.mark.parametrize("other", ["555566667777", "111122223333"])
def test_api_role_of_another_account(other):
    message = refused({"apiRoleArn": f"arn:aws:iam::{other}:role/zivohealth-production-api"})
    assert message.startswith("preflight: apiRoleArn: ") and other in message and ACCOUNT in message


def test_api_role_that_does_not_exist():
    message = refused({"apiRoleArn": f"arn:aws:iam::{ACCOUNT}:role/no-such-role"})
    assert message.startswith("preflight: apiRoleArn: role no-such-role not found")


def test_operator_role_that_does_not_exist():
    message = refused({"operatorRoleArns": [f"arn:aws:iam::{ACCOUNT}:role/gone"]})
    assert message.startswith("preflight: operatorRoleArns: role gone not found")


@pytest.mark.parametrize("other", ["vpc-0other00000000000", "vpc-00000000000000001"])
def test_subnet_of_another_vpc(other):
    account = FakeAccount()
    account.subnets[SUBNET_B]["vpcId"] = other
    message = refused(account=account)
    assert message == f"preflight: privateSubnetIds: {SUBNET_B} belongs to {other}, not vpcId vpc-0a1b2c3d4e5f60718"


def test_subnet_that_maps_public_ips():
    account = FakeAccount()
    account.subnets[SUBNET_A]["mapPublicIpOnLaunch"] = True
    assert refused(account=account).startswith(f"preflight: privateSubnetIds: {SUBNET_A} maps public IPs")


def test_subnet_that_does_not_exist():
    assert refused({"privateSubnetIds": ["subnet-0dead00000000000d"]}).startswith(
        "preflight: privateSubnetIds: subnet subnet-0dead00000000000d not found")


def test_missing_database_secret():
    account = FakeAccount()
    del account.parameter_types["/zivohealth/production/database/password"]
    message = refused(account=account)
    assert message.startswith("preflight: environment: SSM parameter /zivohealth/production/database/password "
                              "not found")


def test_database_secret_that_is_not_a_securestring():
    account = FakeAccount()
    account.parameter_types["/zivohealth/production/database/user"] = "String"
    assert "is a String, not a SecureString" in refused(account=account)


def test_no_nat_route_without_endpoints_is_refused():
    account = FakeAccount()
    account.subnet_routes[SUBNET_B] = [_route("10.20.0.0/16", gatewayId="local")]
    message = refused(account=account)
    assert message.startswith(f"preflight: vpcEndpoints: {SUBNET_B}'s route table rtb-for-{SUBNET_B} has no default "
                              "route to a NAT gateway")


def test_an_internet_gateway_route_is_not_a_nat_route():
    account = FakeAccount()
    account.subnet_routes[SUBNET_A] = [_route("0.0.0.0/0", gatewayId="igw-0123")]
    assert "no default route to a NAT gateway" in refused(account=account)


def test_a_subnet_on_the_main_route_table_is_checked_there():
    account = FakeAccount()
    del account.subnet_routes[SUBNET_A]
    assert "route table rtb-main has no default route" in refused(account=account)
    account.main_routes.append(_route("0.0.0.0/0", natGatewayId="nat-0main"))
    run_program(account=account)


def test_with_endpoints_no_nat_is_needed_but_dns_is():
    account = FakeAccount()
    account.subnet_routes.clear()
    endpoints = {"vpcEndpoints": True, "privateRouteTableIds": ["rtb-0cc3333333333333c"]}
    prog = run_program(endpoints, account=account)
    assert not [t for t, _ in account.invokes if t == "aws:ec2/getRouteTable:getRouteTable"]
    assert len(prog.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")) == 6
    account.vpcs["vpc-0a1b2c3d4e5f60718"]["enableDnsHostnames"] = False
    assert refused(endpoints, account=account).startswith("preflight: vpcEndpoints: vpc-0a1b2c3d4e5f60718 needs DNS")


def test_the_healthy_account_passes_every_check(program):
    looked_up = {(t.split(":")[1].split("/")[-1], str(a.get("name") or a.get("id") or a.get("subnetId") or ""))
                 for t, a in program.account.invokes}
    assert ("getRole", "zivohealth-production-api") in looked_up
    assert ("getSubnet", SUBNET_A) in looked_up and ("getSubnet", SUBNET_B) in looked_up
    assert ("getParameter", "/zivohealth/production/database/user") in looked_up
    assert ("getParameter", "/zivohealth/production/database/password") in looked_up
    assert ("getRouteTable", SUBNET_A) in looked_up and ("getRouteTable", SUBNET_B) in looked_up
    params = [a for t, a in program.account.invokes if t.endswith("getParameter")]
    assert all(a.get("withDecryption") is False for a in params)  # the preview never reads the secrets
