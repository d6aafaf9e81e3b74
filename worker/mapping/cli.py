"""Engine commands: map, eval, loinc import."""

import typer


def register(app: typer.Typer) -> None:
    """Add the engine's commands to the worker CLI."""
