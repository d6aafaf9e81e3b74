"""The per-invocation state: global options, boto3 clients and the resource resolver."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import typer
from botocore.config import Config

from worker import aws

# Probing whether an endpoint implements an API must not wait through five retries of a 500.
NO_RETRY = Config(retries={"mode": "standard", "max_attempts": 1})


@dataclass
class State:
    profile: str | None = None
    region: str | None = None
    env: str = "production"
    json: bool = False
    _clients: dict[tuple[str, bool], Any] = field(default_factory=dict)
    _resolver: Any = None

    def client(self, service: str, retries: bool = True):
        """A boto3 client built through worker.aws (standard retries, AWS_ENDPOINT_URL honoured)."""
        key = (service, retries)
        if key not in self._clients:
            config = None if retries else NO_RETRY
            self._clients[key] = aws.client(service, profile=self.profile, region=self.region, config=config)
        return self._clients[key]

    @property
    def resources(self):
        if self._resolver is None:
            from opsctl.resources import Resolver

            self._resolver = Resolver(self)
        return self._resolver


def get_state(ctx: typer.Context, json_flag: bool = False, **flags: str | None) -> State:
    """The root's state, with this command's ``--json`` and resource flags folded in."""
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    state: State = root.obj
    state.json = state.json or json_flag
    for name, value in flags.items():
        if value:
            state.resources.flags[name] = value
    return state
