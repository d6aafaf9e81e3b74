"""The opsctl Typer app."""

import typer

from worker import __version__

app = typer.Typer(help="Operate the ML worker: queues, DLQ, logs, service, scaling, deploys.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"opsctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Operate the ML worker."""


def main() -> None:
    app()
