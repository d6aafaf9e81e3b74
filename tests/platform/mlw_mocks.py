"""Run the Pulumi program under `pulumi.runtime.set_mocks` and record everything it registers.

No Pulumi CLI and no AWS: the mock monitor answers each resource registration with its inputs
plus the few outputs AWS would compute (ARNs, URLs), and we keep the registrations (type, name,
inputs, ignore_changes, parent) for the tests to assert on. awsx components are remote: under
mocks only their inputs are visible, which is what the image tests check.

The program directory `platform/` is not a package (`platform` is a stdlib name); its modules are
named `mlw_*`, so putting the directory on sys.path shadows nothing.
"""

from __future__ import annotations

import json
import runpy
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PROGRAM_DIR = REPO_ROOT / "platform"
PROJECT = "zivo-ml-worker"
ACCOUNT = "210987654321"
VPC_ID = "vpc-0a1b2c3d4e5f60718"
SUBNETS = {"subnet-0aa1111111111111a": "ap-south-1a", "subnet-0bb2222222222222b": "ap-south-1b"}
ROUTE_TABLES = ["rtb-0cc3333333333333c"]
VPC_CIDR = "10.20.0.0/16"

# The committed stack file with its example values replaced: what an operator deploys.
FILLED = {
    "vpcId": VPC_ID,
    "privateSubnetIds": list(SUBNETS),
    "databaseHost": "zivohealth-production.cluster-c1a2b3c4d5e6.ap-south-1.rds.amazonaws.com",
    "apiRoleArn": f"arn:aws:iam::{ACCOUNT}:role/zivohealth-production-api",
    "alarmTopicArn": f"arn:aws:sns:ap-south-1:{ACCOUNT}:oncall",
}

if str(PROGRAM_DIR) not in sys.path:
    sys.path.insert(0, str(PROGRAM_DIR))

import pulumi  # noqa: E402
from pulumi.runtime import settings as pulumi_settings  # noqa: E402
from pulumi.runtime.mocks import MockMonitor  # noqa: E402
from pulumi.runtime.stack import run_pulumi_func  # noqa: E402
from pulumi.runtime.sync_await import _sync_await  # noqa: E402


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict
    outputs: dict
    custom: bool
    remote: bool = False
    ignore_changes: list[str] = field(default_factory=list)
    parent: str = ""
    protect: bool = False
    retain_on_delete: bool = False
    dependencies: list[str] = field(default_factory=list)

    def json(self, key: str) -> Any:
        """An input holding a JSON document (policies, container definitions), parsed."""
        return json.loads(self.inputs[key])


SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


def unwrap_secrets(value: Any) -> Any:
    """Inputs the provider schema marks secret (an SSM parameter's value) arrive wrapped; unwrap them."""
    if isinstance(value, dict):
        if SECRET_SIG in value.values() and "value" in value:
            return unwrap_secrets(value["value"])
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value


def _route(cidr: str, **targets: str) -> dict:
    keys = ("carrierGatewayId", "coreNetworkArn", "destinationPrefixListId", "egressOnlyGatewayId", "gatewayId",
            "instanceId", "ipv6CidrBlock", "localGatewayId", "natGatewayId", "networkInterfaceId", "odbNetworkArn",
            "transitGatewayId", "vpcEndpointId", "vpcPeeringConnectionId")
    return {"cidrBlock": cidr, **{k: targets.get(k, "") for k in keys}}


@dataclass
class FakeAccount:
    """What the preflight's look-ups find: a healthy account unless a test breaks something."""

    account: str = ACCOUNT
    roles: set[str] = field(default_factory=lambda: {"zivohealth-production-api", "zivohealth-staging-api", "ops"})
    subnets: dict[str, dict] = field(default_factory=lambda: {
        sid: {"vpcId": VPC_ID, "availabilityZone": az, "mapPublicIpOnLaunch": False} for sid, az in SUBNETS.items()})
    vpcs: dict[str, dict] = field(default_factory=lambda: {
        VPC_ID: {"cidrBlock": VPC_CIDR, "enableDnsSupport": True, "enableDnsHostnames": True}})
    parameter_types: dict[str, str] = field(default_factory=lambda: {
        f"/zivohealth/{env}/database/{what}": "SecureString"
        for env in ("production", "staging") for what in ("user", "password")})
    # Explicit subnet associations (subnet -> routes); other subnets use the main table.
    subnet_routes: dict[str, list[dict]] = field(default_factory=lambda: {
        sid: [_route("10.20.0.0/16", gatewayId="local"), _route("0.0.0.0/0", natGatewayId="nat-0123abcd")]
        for sid in SUBNETS})
    main_routes: list[dict] = field(default_factory=lambda: [_route("10.20.0.0/16", gatewayId="local")])
    invokes: list[tuple[str, dict]] = field(default_factory=list)

    def not_found(self, what: str):
        return {}, [("id", f"{what}: couldn't find resource")]

    def answer(self, token: str, args: dict):
        self.invokes.append((token, dict(args)))
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": self.account, "arn": f"arn:aws:iam::{self.account}:user/ci", "userId": "AIDAMOCK",
                    "id": self.account}
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "reverseDnsPrefix": "com.amazonaws", "id": "aws"}
        if token == "aws:iam/getRole:getRole":
            if args["name"] not in self.roles:
                return self.not_found(f"reading IAM Role ({args['name']}): NoSuchEntity")
            return {"name": args["name"], "arn": f"arn:aws:iam::{self.account}:role/{args['name']}", "id": args["name"]}
        if token == "aws:ec2/getSubnet:getSubnet":
            subnet = self.subnets.get(args["id"])
            return self.not_found(f"no matching EC2 Subnet {args['id']}") if subnet is None else \
                {"id": args["id"], **subnet}
        if token == "aws:ec2/getVpc:getVpc":
            vpc = self.vpcs.get(args["id"])
            return self.not_found(f"no matching EC2 VPC {args['id']}") if vpc is None else {"id": args["id"], **vpc}
        if token == "aws:ssm/getParameter:getParameter":
            kind = self.parameter_types.get(args["name"])
            return self.not_found(f"SSM Parameter {args['name']} ParameterNotFound") if kind is None else \
                {"name": args["name"], "type": kind, "value": "*****", "id": args["name"]}
        if token == "aws:ec2/getRouteTable:getRouteTable":
            subnet = args.get("subnetId")
            if subnet:
                if subnet not in self.subnet_routes:
                    return self.not_found("no matching Route Table found")
                return {"routeTableId": f"rtb-for-{subnet}", "routes": self.subnet_routes[subnet], "id": "rtb"}
            return {"routeTableId": "rtb-main", "routes": self.main_routes, "id": "rtb-main"}
        raise AssertionError(f"unexpected invoke {token}")


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, region: str, account: FakeAccount):
        self.region = region
        self.account = account
        self.resources: list[Registered] = []

    def _arn(self, service: str, resource: str, region: bool = True) -> str:
        return f"arn:aws:{service}:{self.region if region else ''}:{self.account.account}:{resource}"

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        inputs = dict(args.inputs)
        out = dict(inputs)
        name = inputs.get("name", args.name)
        t = args.typ
        if t == "aws:sqs/queue:Queue":
            out["arn"] = self._arn("sqs", name)
            out["url"] = f"https://sqs.{self.region}.amazonaws.com/{self.account.account}/{name}"
        elif t == "aws:ecr/repository:Repository":
            out["arn"] = self._arn("ecr", f"repository/{name}")
            out["repositoryUrl"] = f"{self.account.account}.dkr.ecr.{self.region}.amazonaws.com/{name}"
        elif t == "awsx:ecr:Image":
            digest = "sha256:" + ("b" if "base" in args.name else "w") * 64
            out["imageUri"] = f"{inputs['repositoryUrl']}@{digest}"
        elif t == "aws:iam/role:Role":
            out["arn"] = self._arn("iam", f"role/{name}", region=False)
        elif t == "aws:ecs/cluster:Cluster":
            out["arn"] = self._arn("ecs", f"cluster/{name}")
        elif t == "aws:ecs/taskDefinition:TaskDefinition":
            out["arn"] = self._arn("ecs", f"task-definition/{inputs['family']}:1")
        elif t == "aws:cloudwatch/logGroup:LogGroup":
            out["arn"] = self._arn("logs", f"log-group:{name}")
        elif t == "aws:sns/topic:Topic":
            out["arn"] = self._arn("sns", name)
        elif t == "aws:cloudwatch/metricAlarm:MetricAlarm":
            out["arn"] = self._arn("cloudwatch", f"alarm:{name}")
        elif t == "aws:appautoscaling/policy:Policy":
            out["arn"] = self._arn("autoscaling", f"scalingPolicy:mock:resource/ecs/policyName/{name}")
        else:
            out.setdefault("arn", self._arn("mock", f"{t}/{args.name}"))
        self.resources.append(Registered(t, args.name, unwrap_secrets(inputs), unwrap_secrets(out), bool(args.custom)))
        return [f"{args.name}-id", out]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return self.account.answer(args.token, args.args)


class RecordingMonitor(MockMonitor):
    """Also keeps what the mocks don't see: resource options (ignore_changes, parent) and remoteness."""

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            # Registrations run on several threads: find this request's record by type and name.
            [reg] = [r for r in self.mocks.resources if (r.type, r.name) == (request.type, request.name)]
            reg.ignore_changes = list(request.ignoreChanges)
            reg.remote = bool(request.remote)
            reg.parent = request.parent
            reg.protect = bool(request.protect)
            reg.retain_on_delete = bool(request.retainOnDelete)
            reg.dependencies = list(request.dependencies)
        return response


@dataclass
class Program:
    config: dict[str, Any]
    resources: list[Registered]
    outputs: dict[str, Any]
    account: FakeAccount = field(default_factory=FakeAccount)

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> Registered:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {type_} {name or ''}, found {[r.name for r in found]}"
        return found[0]

    def named(self, type_: str, aws_name: str) -> Registered:
        found = [r for r in self.of_type(type_) if r.inputs.get("name") == aws_name]
        assert len(found) == 1, f"expected one {type_} named {aws_name}, found {len(found)}"
        return found[0]


def production_config() -> dict[str, Any]:
    """The committed production stack's config, as plain Python values."""
    doc = yaml.safe_load((REPO_ROOT / "Pulumi.production.yaml").read_text())
    return dict(doc["config"])


def _as_config_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value)


class ProgramRefused(Exception):
    """The program stopped with an error; `resources` is what it had registered by then."""

    def __init__(self, error: BaseException, resources: list[Registered]):
        super().__init__(str(error))
        self.error, self.resources = error, resources


def run_program(overrides: dict[str, Any] | None = None, stack: str = "production", filled: bool = True,
                account: FakeAccount | None = None) -> Program:
    """Run platform/__main__.py under mocks with the committed production config, its example values
    replaced (`filled`), plus overrides (None removes a key). Raises ProgramRefused if the program stops."""
    config = production_config()
    for key, value in {**(FILLED if filled else {}), **(overrides or {})}.items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if value is None:
            config.pop(full, None)
        else:
            config[full] = value

    account = account or FakeAccount()
    pulumi_settings.ROOT.set(None)
    mocks = RecordingMocks(region=config["aws:region"], account=account)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=RecordingMonitor(mocks))
    pulumi.runtime.set_all_config({k: _as_config_string(v) for k, v in config.items()})

    root = pulumi_settings.get_root_resource()
    outputs: dict[str, Any] = {}

    async def resolve_outputs():
        for key, value in root.outputs.items():
            outputs[key] = await pulumi.Output.from_input(value).future()

    def program():
        runpy.run_path(str(PROGRAM_DIR / "__main__.py"), run_name="__main__")

    with warnings.catch_warnings():
        # pulumi_aws.ec2 warns about one of its own deprecated resources when the module loads.
        warnings.filterwarnings("ignore", message=".*EncryptionControl.*", category=DeprecationWarning)
        try:
            _sync_await(run_pulumi_func(program))
        except Exception as error:  # noqa: BLE001 - the test inspects what stopped the program
            raise ProgramRefused(error, list(mocks.resources)) from error
    _sync_await(resolve_outputs())
    return Program(config=config, resources=list(mocks.resources), outputs=outputs, account=account)
