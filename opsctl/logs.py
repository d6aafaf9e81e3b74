"""`opsctl logs`: the worker's CloudWatch log group, JSON lines rendered readably."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from botocore.exceptions import ClientError

from opsctl import render
from opsctl.errors import OpsError, error_code
from opsctl.options import JsonOpt, LogGroupOpt, examples
from opsctl.state import State, get_state

app = typer.Typer(help="The worker's logs.", no_args_is_help=True,
                  epilog=examples("opsctl logs tail --since 1h", "opsctl logs tail --follow"))

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# CloudWatch Logs keeps events at most ten years.
MAX_SINCE_S = 3653 * 86400


def parse_since(value: str) -> int:
    """'10m', '2h', '1d', '90s' or an ISO time -> epoch milliseconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", value)
    if match:
        seconds = int(match.group(1)) * UNITS[match.group(2)]
        if seconds > MAX_SINCE_S:
            raise typer.BadParameter(f"{value!r} reaches further back than the ten years CloudWatch keeps logs "
                                     "(at most 3653d)", param_hint="'--since'")
        return int((time.time() - seconds) * 1000)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither a duration like 10m/2h/1d nor an ISO time",
                                 param_hint="'--since'") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment.timestamp() < time.time() - MAX_SINCE_S:
        raise typer.BadParameter(f"{value!r} is further back than the ten years CloudWatch keeps logs",
                                 param_hint="'--since'")
    return int(moment.timestamp() * 1000)


def filter_pattern(text: str | None) -> str | None:
    """Plain text becomes a quoted CloudWatch term (exact phrase); a pattern with { or " is passed as is."""
    if not text:
        return None
    if text.startswith("{") or text.startswith('"') or text.startswith("?"):
        return text
    return '"' + text.replace('"', '\\"') + '"'


def fetch_events(state: State, group: str, start_ms: int, pattern: str | None, limit: int) -> list[dict]:
    """Events since start_ms, oldest first, at most the newest `limit` of them."""
    logs = state.client("logs")
    kwargs = {"logGroupName": group, "startTime": start_ms}
    if pattern:
        kwargs["filterPattern"] = pattern
    events: list[dict] = []
    try:
        for page in logs.get_paginator("filter_log_events").paginate(**kwargs):
            events.extend(page.get("events", []))
    except ClientError as error:
        if error_code(error) == "ResourceNotFoundException":
            raise OpsError(f"log group {group} does not exist",
                           hint="check --env/--region, or pass --log-group") from None
        raise
    events.sort(key=lambda e: (e.get("timestamp", 0), e.get("eventId", "")))
    return events[-limit:] if limit else events


@app.command(epilog=examples("opsctl logs tail", "opsctl logs tail --since 1h --filter ERROR",
                             "opsctl logs tail --follow", "opsctl logs tail --since 2h --json | jq .job_id"))
def tail(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events until Ctrl-C.")] = False,
    since: Annotated[str, typer.Option("--since", help="How far back: 30s, 10m, 2h, 1d or an ISO time.")] = "10m",
    filter_text: Annotated[str | None, typer.Option("--filter", help="Only events containing TEXT "
                                                    "(or a CloudWatch filter pattern).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most the newest N events (0: all).")] = 200,
    interval: Annotated[float, typer.Option("--interval", min=0.5, help="Seconds between polls with --follow.")
                        ] = 2.0,
    log_group: LogGroupOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """The worker's log group, newest last; JSON log lines rendered readably (raw with --json)."""
    start = parse_since(since)
    state = get_state(ctx, json_output, log_group=log_group)
    group = state.resources.get("log_group")
    pattern = filter_pattern(filter_text)
    events = fetch_events(state, group, start, pattern, limit)
    render.log_events(state, events)
    if not follow:
        return
    seen = {e.get("eventId") for e in events}
    last = max((e.get("timestamp", start) for e in events), default=start)
    try:
        while True:
            time.sleep(interval)
            fresh = [e for e in fetch_events(state, group, last, pattern, 0) if e.get("eventId") not in seen]
            seen.update(e.get("eventId") for e in fresh)
            last = max((e.get("timestamp", last) for e in fresh), default=last)
            render.log_events(state, fresh)
    except KeyboardInterrupt:
        return
