"""The opsctl Typer app: global options, the sub-apps (one per noun) and error handling in one place."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from opsctl import errors, render
from opsctl.options import examples
from opsctl.state import State
from worker import __version__


class OpsGroup(TyperGroup):
    """The root command. Its ``main`` is the one place where failures become one-line errors."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra: Any):
        try:
            result = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                  standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except typer.Abort:
            render.error("aborted", None)
            code = 1
        except errors.NoArgsIsHelpError as error:
            code = error.exit_code  # the help was printed already
        except Exception as error:  # noqa: BLE001 - every failure becomes one line, never a traceback
            if os.environ.get("OPSCTL_DEBUG"):
                raise
            message, hint, code = errors.describe(error)
            render.error(message, hint)
        if standalone_mode:
            raise SystemExit(code)
        return code


app = typer.Typer(
    name="opsctl",
    cls=OpsGroup,
    help="Operate the ML worker: queues, DLQ, logs, service, scaling, deploys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples("opsctl doctor", "opsctl queue depth --watch", "opsctl --env staging dlq peek -n 5",
                    "opsctl logs tail --follow --filter ERROR", "opsctl --install-completion"),
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"opsctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    profile: Annotated[str | None, typer.Option("--profile",
                                                help="AWS profile (default: AWS_PROFILE / the default chain).")] = None,
    region: Annotated[str | None, typer.Option("--region", help="AWS region (default: AWS_REGION / profile).")] = None,
    env: Annotated[str, typer.Option("--env", envvar="OPSCTL_ENV",
                                     help="Stack environment: names {env}-ml-worker-*, SSM /zivohealth/{env}/.")
                   ] = "production",
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Operate the ML worker: its queues and DLQ, logs, ECS service, scaling and deploys.

    Resources are found from flags, then ML_WORKER_* environment variables, then the SSM
    parameters under /zivohealth/{env}/ml_worker/, then `pulumi stack output`.
    """
    ctx.obj = State(profile=profile, region=region, env=env, json=json_output)


def _register() -> None:
    from opsctl import deploy, dlq, doctor, logs, queues, review, scaling, sendtest, service

    app.add_typer(queues.app, name="queue")
    app.add_typer(dlq.app, name="dlq")
    app.add_typer(logs.app, name="logs")
    app.add_typer(service.app, name="service")
    app.add_typer(scaling.app, name="scaling")
    app.add_typer(review.app, name="review")
    sendtest.register(app)
    service.register(app)
    deploy.register(app)
    doctor.register(app)


_register()


def main() -> None:
    app()
