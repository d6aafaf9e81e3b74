"""Worker runtime commands: db upgrade, healthcheck, selfcheck, demo."""

import typer


def register(app: typer.Typer) -> None:
    """Add the runtime's commands to the worker CLI."""
