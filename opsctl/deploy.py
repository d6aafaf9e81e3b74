"""`opsctl deploy`: `pulumi up` for the stack, through the Pulumi CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from opsctl.errors import OpsError
from opsctl.options import examples
from opsctl.resources import find_project
from opsctl.state import get_state


def deploy(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Skip Pulumi's preview confirmation.")] = False,
    cwd: Annotated[Path | None, typer.Option("--cwd", help="The Pulumi project directory (default: the nearest "
                                             "one holding Pulumi.yaml).")] = None,
) -> None:
    """Run `pulumi up --stack {env}` for the platform (needs the Pulumi CLI)."""
    state = get_state(ctx)
    binary = shutil.which("pulumi")
    if binary is None:
        raise OpsError("the Pulumi CLI is not installed, so opsctl cannot deploy from here",
                       hint="install it (https://www.pulumi.com/docs/install/) and log in, or deploy from CI")
    project = cwd or find_project(Path.cwd())
    if project is None or not (project / "Pulumi.yaml").is_file():
        raise OpsError("no Pulumi project (Pulumi.yaml) here or in a parent directory",
                       hint="run from the repository, or pass --cwd")
    command = [binary, "up", "--stack", state.env, "--cwd", str(project)] + (["--yes"] if yes else [])
    environment = dict(os.environ)
    if state.profile:
        environment["AWS_PROFILE"] = state.profile
    if state.region:
        environment["AWS_REGION"] = environment["AWS_DEFAULT_REGION"] = state.region
    try:
        code = subprocess.run(command, env=environment).returncode
    except OSError as error:
        raise OpsError(f"could not run pulumi: {error}", hint="check the Pulumi CLI installation") from None
    if code != 0:
        raise OpsError(f"pulumi up --stack {state.env} failed (exit {code})", hint="see Pulumi's output above")


def register(root: typer.Typer) -> None:
    root.command(epilog=examples("opsctl deploy", "opsctl --env staging deploy --yes"))(deploy)
