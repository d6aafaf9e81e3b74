"""`python -m worker`: with no command, run the SQS consumer (what the Fargate task runs).

Each area registers its own commands; every command imports its heavy modules inside its body
so that `--help` and `healthcheck` stay fast.
"""

from __future__ import annotations

import typer

from worker import commands
from worker.local import bench
from worker.mapping import cli as mapping_cli

app = typer.Typer(
    cls=commands.WorkerGroup,  # every failure is one line on stderr
    help="The ML worker. With no command it runs the SQS consumer.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def run(ctx: typer.Context) -> None:
    """Run the consumer loop until SIGTERM/SIGINT (the container's default command)."""
    if ctx.invoked_subcommand is None:
        from worker.runtime import run_worker

        raise typer.Exit(run_worker())


mapping_cli.register(app)
commands.register(app)
bench.register(app)


def main() -> None:
    app()
