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
ACCOUNT = "123456789012"
VPC_CIDR = "10.20.0.0/16"

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


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, region: str):
        self.region = region
        self.resources: list[Registered] = []

    def _arn(self, service: str, resource: str, region: bool = True) -> str:
        return f"arn:aws:{service}:{self.region if region else ''}:{ACCOUNT}:{resource}"

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        inputs = dict(args.inputs)
        out = dict(inputs)
        name = inputs.get("name", args.name)
        t = args.typ
        if t == "aws:sqs/queue:Queue":
            out["arn"] = self._arn("sqs", name)
            out["url"] = f"https://sqs.{self.region}.amazonaws.com/{ACCOUNT}/{name}"
        elif t == "aws:ecr/repository:Repository":
            out["arn"] = self._arn("ecr", f"repository/{name}")
            out["repositoryUrl"] = f"{ACCOUNT}.dkr.ecr.{self.region}.amazonaws.com/{name}"
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
        else:
            out.setdefault("arn", self._arn("mock", f"{t}/{args.name}"))
        self.resources.append(Registered(t, args.name, unwrap_secrets(inputs), unwrap_secrets(out), bool(args.custom)))
        return [f"{args.name}-id", out]

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/ci", "userId": "AIDAMOCK", "id": ACCOUNT}
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "reverseDnsPrefix": "com.amazonaws", "id": "aws"}
        if args.token == "aws:ec2/getVpc:getVpc":
            return {"id": args.args["id"], "cidrBlock": VPC_CIDR}
        raise AssertionError(f"unexpected invoke {args.token}")


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
        return response


@dataclass
class Program:
    config: dict[str, Any]
    resources: list[Registered]
    outputs: dict[str, Any]

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


def run_program(overrides: dict[str, Any] | None = None, stack: str = "production") -> Program:
    """Run platform/__main__.py under mocks with the production config (plus overrides)."""
    config = production_config()
    for key, value in (overrides or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if value is None:
            config.pop(full, None)
        else:
            config[full] = value

    pulumi_settings.ROOT.set(None)
    mocks = RecordingMocks(region=config["aws:region"])
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
        _sync_await(run_pulumi_func(program))
    _sync_await(resolve_outputs())
    return Program(config=config, resources=list(mocks.resources), outputs=outputs)
