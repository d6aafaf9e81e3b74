"""Options shared by several commands (Annotated aliases, as Typer recommends)."""

from __future__ import annotations

from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output (same as the global --json).")]
QueueUrlOpt = Annotated[str | None, typer.Option("--queue-url", help="Main queue URL [env ML_WORKER_SQS_QUEUE_URL].")]
PriorityQueueUrlOpt = Annotated[str | None, typer.Option(
    "--priority-queue-url", help="Priority queue URL [env ML_WORKER_PRIORITY_QUEUE_URL].")]
DlqUrlOpt = Annotated[str | None, typer.Option("--dlq-url", help="Dead-letter queue URL [env ML_WORKER_DLQ_URL].")]
ClusterOpt = Annotated[str | None, typer.Option("--cluster", help="ECS cluster [env ML_WORKER_CLUSTER].")]
ServiceOpt = Annotated[str | None, typer.Option("--service", help="ECS service [env ML_WORKER_SERVICE].")]
LogGroupOpt = Annotated[str | None, typer.Option("--log-group", help="Log group [env ML_WORKER_LOG_GROUP].")]


def examples(*lines: str) -> str:
    """An epilog listing example invocations."""
    return "[bold]Examples[/bold]\n\n" + "\n\n".join(f"  $ {line}" for line in lines)
DatabaseUrlOpt = Annotated[str | None, typer.Option(
    "--database-url", help="The worker's database [env DATABASE_URL; else SSM /zivohealth/{env}/database/*].")]
