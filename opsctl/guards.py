"""Guards against acting on the wrong environment.

Resource names follow the platform's convention (``{env}-ml-worker-queue``, ``/ecs/{env}-ml-worker``,
...), so a resource's name says which environment it belongs to. opsctl uses that to refuse a
resource from an environment variable that belongs to another environment than ``--env``, to
refuse moving messages between environments, and to ask before it changes production.
"""

from __future__ import annotations

import typer

from opsctl import render
from opsctl.errors import OpsError
from opsctl.resources import SPECS

PRODUCTION = "production"


def environment_of(key: str, value: str) -> str | None:
    """The environment a resource belongs to, by its name; None when the name does not follow the convention."""
    prefix, suffix = SPECS[key].convention.split("{env}")
    # Queues are URLs and clusters or services may be ARNs: their name is the last part.
    name = value if key == "log_group" else value.rstrip("/").rsplit("/", 1)[-1]
    if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
        return name[len(prefix):len(name) - len(suffix)]
    return None


def check_env_variable(key: str, value: str, env: str) -> None:
    """Refuse a resource from an environment variable that belongs to another environment than --env."""
    other = environment_of(key, value)
    if other is not None and other != env:
        variable = SPECS[key].env_var
        raise OpsError(f"{variable} points to environment {other!r} ({render.clean(value)}) but --env is {env!r}",
                       hint=f"pass --env {other}, or unset {variable}", code=2)


def check_same_environment(state, source_key: str, destination_key: str) -> None:
    """Refuse to move messages between two environments' queues."""
    source, destination = state.resources.get(source_key), state.resources.get(destination_key)
    source_env, destination_env = environment_of(source_key, source), environment_of(destination_key, destination)
    if source_env and destination_env and source_env != destination_env:
        raise OpsError(f"{render.clean(source)} belongs to {source_env!r} but {render.clean(destination)} to "
                       f"{destination_env!r}: messages never move between environments",
                       hint="check --env and the queue flags or ML_WORKER_* variables", code=2)


def confirm_production(state, key: str, question: str, refused: str, yes: bool) -> None:
    """Ask before changing production (the resource's name says so, else --env); --yes answers for the operator.

    The question goes to stderr, so that stdout stays the command's output (--json).
    """
    value = state.resources.get(key)
    target = environment_of(key, value) or state.env
    if yes or target != PRODUCTION:
        return
    try:
        confirmed = typer.confirm(f"{question} {render.clean(value)} ({target})?", err=True)
    except typer.Abort:  # no terminal to ask on
        confirmed = False
    if not confirmed:
        raise OpsError(f"{refused}: {render.clean(value)} is {target}'s", hint="answer y, or pass --yes")
