"""`opsctl dlq`: look at, redrive and purge dead-lettered jobs without losing any."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from opsctl import render
from opsctl.errors import AWS_ERRORS, DENIED_CODES, SEND_DENIED_HINT, OpsError, error_code, is_unsupported
from opsctl.guards import check_same_environment, confirm_production
from opsctl.options import DlqUrlOpt, JsonOpt, PriorityQueueUrlOpt, QueueUrlOpt, examples
from opsctl.queues import queue_attributes, queue_name
from opsctl.state import State, get_state

app = typer.Typer(help="The dead-letter queue: peek, redrive, purge.", no_args_is_help=True,
                  epilog=examples("opsctl dlq peek -n 5", "opsctl dlq redrive --dry-run", "opsctl dlq purge"))

# Attributes the worker sets when it dead-letters a poison message itself; SQS redrive sets none.
DEAD_LETTER_ATTRIBUTES = ("FailureReason", "SourceMessageId", "SourceQueueUrl")
PEEK_VISIBILITY_S = 30
REDRIVE_VISIBILITY_S = 120
EMPTY_RECEIVES_BEFORE_DONE = 2
# A short long-poll: on real SQS a zero wait samples only some servers and can miss messages.
RECEIVE_WAIT_S = 1


def _attribute(message: dict, name: str) -> str | None:
    return message.get("MessageAttributes", {}).get(name, {}).get("StringValue")


def _receive(state: State, url: str, count: int, visibility: int) -> list[dict]:
    response = state.client("sqs").receive_message(
        QueueUrl=url, MaxNumberOfMessages=max(1, min(10, count)), VisibilityTimeout=visibility,
        WaitTimeSeconds=RECEIVE_WAIT_S,
        MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"])
    return response.get("Messages", [])


def _release(state: State, url: str, messages: list[dict]) -> None:
    """Make received messages visible again at once (best effort: else they return after the timeout)."""
    sqs = state.client("sqs")
    for start in range(0, len(messages), 10):
        chunk = messages[start:start + 10]
        try:
            sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(chunk)])
        except (ClientError, BotoCoreError):
            pass


def _parsed(body: str):
    """The body as JSON when it is JSON that can be shown again; else the text (a poison body may be
    nested deeper than Python's recursion allows)."""
    try:
        parsed = json.loads(body)
        json.dumps(parsed, indent=2)
    except (ValueError, RecursionError):
        return body
    return parsed


def describe_message(message: dict) -> dict:
    system = message.get("Attributes", {})
    body = _parsed(message.get("Body", ""))
    reason = _attribute(message, "FailureReason")
    return {
        "message_id": message["MessageId"],
        "receive_count": int(system.get("ApproximateReceiveCount", 0)),
        "sent_at": system.get("SentTimestamp"),
        "first_receive_at": system.get("ApproximateFirstReceiveTimestamp"),
        # The worker dead-letters a poison message right after receiving it, so the DLQ's send time
        # is its last receive; SQS redrive keeps the original send time, so it is unknown then.
        "last_receive_at": system.get("SentTimestamp") if reason else None,
        "failure_reason": reason,
        "source_message_id": _attribute(message, "SourceMessageId"),
        "source_queue_url": _attribute(message, "SourceQueueUrl"),
        "dead_letter_source_arn": system.get("DeadLetterQueueSourceArn"),
        "body": body,
    }


def fetch_peek(state: State, count: int) -> dict:
    url = state.resources.get("dlq_url")
    queue_attributes(state, url, ["QueueArn"])
    seen: dict[str, dict] = {}
    held: list[dict] = []
    empty = 0
    try:
        while len(seen) < count and empty < EMPTY_RECEIVES_BEFORE_DONE:
            batch = _receive(state, url, count - len(seen), PEEK_VISIBILITY_S)
            held.extend(batch)
            empty = 0 if batch else empty + 1
            for message in batch:
                seen.setdefault(message["MessageId"], message)
    finally:
        _release(state, url, held)
    return {"queue": url, "messages": [describe_message(m) for m in list(seen.values())[:count]]}


@app.command(epilog=examples("opsctl dlq peek", "opsctl dlq peek -n 3 --json"))
def peek(
    ctx: typer.Context,
    count: Annotated[int, typer.Option("-n", "--count", min=1, max=100, help="How many messages to show.")] = 10,
    dlq_url: DlqUrlOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Show dead-lettered messages without losing them; they are made visible again right away.

    Shows the pretty body, receive count (this peek included), first and last receive time and
    the worker's FailureReason (messages SQS moved after 3 receives carry none: "—"; their last
    receive time is unknown too).
    """
    state = get_state(ctx, json_output, dlq_url=dlq_url)
    render.dlq_peek(state, fetch_peek(state, count))


# -- redrive ----------------------------------------------------------------------------------
def move_task_supported(state: State, dlq_arn: str) -> bool:
    """Probe with the read-only ListMessageMoveTasks; emulators (moto) lack the message-move API."""
    try:
        state.client("sqs", retries=False).list_message_move_tasks(SourceArn=dlq_arn, MaxResults=1)
        return True
    except AWS_ERRORS as error:
        if is_unsupported(error):
            return False
        raise


def redrive_with_move_task(state: State, dlq_arn: str, destination_arn: str, available: int,
                           poll_s: float = 2.0) -> int:
    sqs = state.client("sqs")
    handle = sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=destination_arn)["TaskHandle"]
    with _progress(state) as progress:
        bar = progress.add_task("moving", total=available or None)
        while True:
            tasks = sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=10).get("Results", [])
            task = next((t for t in tasks if t.get("TaskHandle") == handle), tasks[0] if tasks else {})
            moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
            total = task.get("ApproximateNumberOfMessagesToMove")
            progress.update(bar, completed=moved, total=int(total) if total else (available or None))
            status = task.get("Status", "RUNNING")
            if status == "COMPLETED":
                return moved
            if status in {"FAILED", "CANCELLED", "CANCELLING"}:
                raise OpsError(f"the message-move task {status.lower()} after {moved} message(s): "
                               f"{task.get('FailureReason', 'no reason given')}",
                               hint="the remaining messages are still in the DLQ; rerun opsctl dlq redrive")
            time.sleep(poll_s)


def _destination(message: dict, known: set[str], default: str) -> str:
    """Back to the queue the worker recorded (main or priority), else the main queue."""
    source = _attribute(message, "SourceQueueUrl")
    return source if source in known else default


def _fresh_attributes(message: dict) -> dict:
    return {name: value for name, value in message.get("MessageAttributes", {}).items()
            if name not in DEAD_LETTER_ATTRIBUTES}


def redrive_message_by_message(state: State, dlq_url: str, main_url: str, known: set[str], limit: int,
                               expected: int) -> int:
    """Receive, send to the source queue, then delete from the DLQ: only what was sent is deleted.

    Interrupted at any point, a message is either still in the DLQ (made visible again at once,
    or after the visibility timeout at worst) or already in the source queue; at worst a message
    is in both, never in neither. The worker is idempotent on job_id.
    """
    sqs = state.client("sqs")
    moved = 0
    empty = 0
    with _progress(state) as progress:
        bar = progress.add_task("moving", total=min(limit, expected) or None)
        while moved < limit and empty < EMPTY_RECEIVES_BEFORE_DONE:
            batch = _receive(state, dlq_url, limit - moved, REDRIVE_VISIBILITY_S)
            if not batch:
                empty += 1
                continue
            empty = 0
            pending = {m["MessageId"]: m for m in batch}  # received, not yet sent
            try:
                by_destination: dict[str, list[dict]] = {}
                for message in batch:
                    by_destination.setdefault(_destination(message, known, main_url), []).append(message)
                for destination, messages in by_destination.items():
                    try:
                        response = sqs.send_message_batch(QueueUrl=destination, Entries=[
                            {"Id": str(i), "MessageBody": m["Body"], "MessageAttributes": _fresh_attributes(m)}
                            for i, m in enumerate(messages)])
                    except ClientError as error:
                        if error_code(error) in DENIED_CODES:
                            raise OpsError(f"not allowed to send to {queue_name(destination)} (moved {moved}; the "
                                           "rest stay in the DLQ)", hint=SEND_DENIED_HINT) from None
                        raise
                    sent = [messages[int(entry["Id"])] for entry in response.get("Successful", [])]
                    if sent:
                        deleted = sqs.delete_message_batch(QueueUrl=dlq_url, Entries=[
                            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(sent)])
                        if deleted.get("Failed"):
                            render.note(f"{len(deleted['Failed'])} moved message(s) could not be deleted from the "
                                        "DLQ and will show there again (duplicates, not losses)")
                    for message in sent:
                        pending.pop(message["MessageId"], None)
                    moved += len(sent)
                    progress.update(bar, completed=moved)
                    failed = response.get("Failed", [])
                    if failed:
                        raise OpsError(f"SQS refused {len(failed)} message(s) for {queue_name(destination)}: "
                                       f"{failed[0].get('Code')}: {failed[0].get('Message', '')}; moved {moved}",
                                       hint="they are back in the DLQ; fix the cause and rerun opsctl dlq redrive")
            except BaseException:
                _release(state, dlq_url, list(pending.values()))
                raise
    return moved


def _progress(state: State) -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=render.console(stderr=True),
                    disable=state.json or not render.console(stderr=True).is_terminal, transient=False)


def run_redrive(state: State, limit: int | None, dry_run: bool, yes: bool = False) -> dict:
    dlq_url = state.resources.get("dlq_url")
    main_url = state.resources.get("queue_url")
    check_same_environment(state, "dlq_url", "queue_url")
    if not dry_run:
        confirm_production(state, "queue_url", "Move the DLQ's messages into", "not redriven", yes)
    priority_url = state.resources.optional("priority_queue_url")
    dlq = queue_attributes(state, dlq_url, ["QueueArn", "ApproximateNumberOfMessages"])
    main = queue_attributes(state, main_url, ["QueueArn"])
    available = int(dlq.get("ApproximateNumberOfMessages", 0))
    notes: list[str] = []
    if limit is not None:
        method = "message by message"
        notes.append("--max means message by message (a message-move task cannot stop at a count)")
    elif move_task_supported(state, dlq["QueueArn"]):
        method = "SQS message-move task"
    else:
        method = "message by message"
        notes.append("this endpoint has no SQS message-move task, so message by message")
    data = {"dlq": dlq_url, "destination": main_url, "method": method, "available": available,
            "dry_run": dry_run, "moved": 0, "notes": notes}
    if dry_run:
        if limit is not None:
            data["available"] = min(available, limit)
        return data
    if method == "SQS message-move task":
        data["moved"] = redrive_with_move_task(state, dlq["QueueArn"], main["QueueArn"], available)
    else:
        known = {main_url} | ({priority_url} if priority_url else set())
        # Without --max, stop at about what was there (new arrivals wait for the next redrive).
        data["moved"] = redrive_message_by_message(state, dlq_url, main_url, known,
                                                   limit if limit is not None else available + 10, available)
    return data


@app.command(epilog=examples("opsctl dlq redrive --dry-run", "opsctl dlq redrive", "opsctl dlq redrive --max 10",
                             "opsctl --env production dlq redrive --yes"))
def redrive(
    ctx: typer.Context,
    max_messages: Annotated[int | None, typer.Option("--max", min=1, help="Move at most N messages.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would move; move nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before moving into production.")] = False,
    dlq_url: DlqUrlOpt = None,
    queue_url: QueueUrlOpt = None,
    priority_queue_url: PriorityQueueUrlOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Move dead-lettered messages back to the source queue, with a progress bar.

    Uses SQS's message-move task where the endpoint supports it (and no --max is given);
    otherwise moves message by message, deleting from the DLQ only after the send succeeded,
    so nothing is lost if it is interrupted. Moving message by message, a message the worker
    dead-lettered goes back to the queue in its SourceQueueUrl (main or priority); everything
    else, and everything the message-move task moves, goes to the main queue. Into production it
    asks first (--yes to skip); between two environments' queues it refuses.
    """
    state = get_state(ctx, json_output, dlq_url=dlq_url, queue_url=queue_url, priority_queue_url=priority_queue_url)
    render.redrive(state, run_redrive(state, max_messages, dry_run, yes))


@app.command(epilog=examples("opsctl dlq purge", "opsctl --env staging dlq purge --yes"))
def purge(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    dlq_url: DlqUrlOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Delete every message in the DLQ (asks first; --yes to skip). This cannot be undone."""
    state = get_state(ctx, json_output, dlq_url=dlq_url)
    url = state.resources.get("dlq_url")
    count = int(queue_attributes(state, url, ["ApproximateNumberOfMessages"]).get("ApproximateNumberOfMessages", 0))
    if not yes and not typer.confirm(f"Purge {count} message(s) from {render.clean(queue_name(url))}? "
                                     "This cannot be undone", err=True):
        raise OpsError("not purged", hint="pass --yes to purge without asking")
    state.client("sqs").purge_queue(QueueUrl=url)
    render.purge(state, {"queue": url, "approximate_messages": count, "purged": True})
