"""Every piece of output opsctl prints: rich tables for people, JSON for machines.

Commands fetch a plain dict/list and hand it to one function here. Colour only on a terminal
(rich decides; NO_COLOR is honoured); off a terminal, lines are not wrapped at 80 columns.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

DASH = "—"


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and not os.environ.get("COLUMNS")
    return Console(file=stream, highlight=False, width=200 if wide else None, soft_wrap=wide)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def error(message: str, hint: str | None) -> None:
    line = f"opsctl: error: {message}" + (f" (hint: {hint})" if hint else "")
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def note(text: str) -> None:
    """Side remarks go to stderr so that stdout stays parseable."""
    console(stderr=True).print(escape(text))


def say(text: str) -> None:
    console().print(text)


# -- formatting helpers -----------------------------------------------------------------------
def when(value: Any) -> str:
    """Epoch milliseconds, an ISO string or a datetime, as 'YYYY-MM-DD HH:MM:SS UTC'."""
    if value in (None, ""):
        return DASH
    if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        moment = datetime.fromtimestamp(int(value) / 1000, UTC)
    elif isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def text(value: Any) -> str:
    return DASH if value in (None, "") else escape(str(value))


def _table(title: str | None, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


# -- queue ------------------------------------------------------------------------------------
def queue_table(data: dict, caption: str | None = None) -> Table:
    table = _table(None, "queue", "visible", "in flight", "delayed", "oldest")
    table.caption = caption
    for q in data["queues"]:
        table.add_row(text(q["name"]), str(q["visible"]), str(q["in_flight"]), str(q["delayed"]),
                      age(q["oldest_age_s"]))
    return table


def queue_depth(state, data: dict, caption: str | None = None) -> None:
    if state.json:
        return emit_json(data)
    console().print(queue_table(data, caption))


def watch(state, fetch, interval: float, table, sleep) -> None:
    """Refresh a view until Ctrl-C: in place on a terminal; off one (or with --json), once per refresh."""
    out = console()
    if state.json or not out.is_terminal:
        while True:
            data = fetch()
            emit_json(data) if state.json else out.print(table(data))
            sleep(interval)
    from rich.live import Live

    with Live(table(fetch()), console=out, auto_refresh=False) as live:
        while True:
            sleep(interval)
            live.update(table(fetch()), refresh=True)


# -- dlq --------------------------------------------------------------------------------------
def dlq_peek(state, data: dict) -> None:
    if state.json:
        return emit_json(data)
    out = console()
    if not data["messages"]:
        out.print(f"The DLQ {text(data['queue'])} is empty.")
        return
    out.print(f"{len(data['messages'])} message(s) in {text(data['queue'])}, made visible again:")
    for index, m in enumerate(data["messages"], 1):
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        table.add_row("message", text(m["message_id"]))
        table.add_row("receives", text(m["receive_count"]))
        table.add_row("sent", when(m["sent_at"]))
        table.add_row("first receive", when(m["first_receive_at"]))
        table.add_row("last receive", when(m["last_receive_at"]))
        table.add_row("failure reason", text(m["failure_reason"]))
        table.add_row("source message", text(m["source_message_id"]))
        table.add_row("source queue", text(m["source_queue_url"]))
        out.print()
        out.print(f"[bold]#{index}[/bold]")
        out.print(table)
        body = m["body"]
        if isinstance(body, dict | list):
            out.print(Syntax(json.dumps(body, indent=2), "json", theme="ansi_dark", background_color="default",
                             word_wrap=True))
        else:
            out.print(text(body))


def redrive(state, data: dict) -> None:
    if state.json:
        return emit_json(data)
    verb = "would move" if data["dry_run"] else "moved"
    count = data["available"] if data["dry_run"] else data["moved"]
    line = f"{verb} {count} message(s) from {data['dlq']} to {data['destination']} ({data['method']})"
    console().print(escape(line))
    for remark in data.get("notes", []):
        note(remark)


def purge(state, data: dict) -> None:
    if state.json:
        return emit_json(data)
    console().print(escape(f"purged {data['queue']} ({data['approximate_messages']} message(s)); "
                           "SQS finishes purging within 60 seconds"))


# -- logs -------------------------------------------------------------------------------------
LEVEL_STYLES = {"DEBUG": "dim", "INFO": "green", "WARNING": "yellow", "WARN": "yellow", "ERROR": "red bold",
                "CRITICAL": "red bold", "FATAL": "red bold"}
KNOWN_KEYS = ("job_id", "message_id", "user_id", "document_id", "receive_count")
SKIP_KEYS = {"ts", "timestamp", "time", "level", "levelname", "message", "msg", "logger", "name", "exception"}


def log_line(event: dict) -> str:
    """One CloudWatch event as one readable line (rich markup)."""
    raw = event.get("message", "").rstrip("\n")
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return f"[dim]{when(event.get('timestamp'))}[/dim] {escape(raw)}"
    stamp = record.get("ts") or record.get("timestamp") or record.get("time") or event.get("timestamp")
    level = str(record.get("level") or record.get("levelname") or "").upper()
    style = LEVEL_STYLES.get(level, "")
    message = record.get("message", record.get("msg", ""))
    extras = [f"{key}={record[key]}" for key in KNOWN_KEYS if record.get(key) not in (None, "")]
    extras += [f"{key}={value}" for key, value in record.items()
               if key not in SKIP_KEYS and key not in KNOWN_KEYS and value not in (None, "")]
    level_text = f"[{style}]{level:<7}[/{style}]" if style else escape(f"{level:<7}")
    tail = ("  [cyan]" + escape(" ".join(str(e) for e in extras)) + "[/cyan]") if extras else ""
    line = f"[dim]{when(stamp)}[/dim] {level_text} {escape(str(message))}{tail}"
    if record.get("exception"):  # the traceback under its line, indented
        line += "\n" + "\n".join("    " + escape(part) for part in str(record["exception"]).splitlines())
    return line


def log_events(state, events: list[dict]) -> None:
    if state.json:
        for event in events:
            sys.stdout.write(event.get("message", "").rstrip("\n") + "\n")
        sys.stdout.flush()
        return
    out = console()
    for event in events:
        out.print(log_line(event))


# -- send-test --------------------------------------------------------------------------------
def sent(state, data: dict, final: bool) -> None:
    """The send's receipt; with --json only when nothing follows (--wait prints one document at the end)."""
    if state.json:
        return emit_json(data) if final else None
    console().print(escape(f"sent job {data['job_id']} as message {data['message_id']} to {data['queue_url']}"))


def job_outcome(state, data: dict) -> None:
    if state.json:
        return emit_json(data)
    out = console()
    detail = f" ({data['detail']})" if data.get("detail") else ""
    out.print(escape(f"job {data['job_id']}: {data['status']}{detail}"))
    if data.get("results"):
        table = _table(None, "#", "test", "value", "unit", "category", "LOINC", "LOINC name", "confidence",
                       "method", "review")
        for r in data["results"]:
            confidence = r.get("confidence")
            table.add_row(str(r.get("test_index")), text(r.get("test_name")), text(r.get("test_value")),
                          text(r.get("test_unit")), text(r.get("category")), text(r.get("loinc_code")),
                          text(r.get("loinc_name")), DASH if confidence is None else f"{float(confidence):.2f}",
                          text(r.get("match_method")), "yes" if r.get("needs_review") else "no")
        out.print(table)


# -- service ----------------------------------------------------------------------------------
def service_status(state, data: dict) -> None:
    if state.json:
        return emit_json(data)
    out = console()
    s = data["service"]
    strategy = ", ".join(f"{c['capacityProvider']} (weight {c.get('weight', 0)})"
                         for c in s.get("capacity_provider_strategy") or []) or s.get("launch_type") or DASH
    out.print(escape(f"{s['name']} on {s['cluster']}: {s['status']}, desired {s['desired']}, running {s['running']}, "
                     f"pending {s['pending']}"))
    out.print(escape(f"task definition {s['task_definition']}; capacity {strategy}"))
    table = _table("Deployments", "id", "status", "rollout", "desired", "running", "pending", "failed",
                   "task definition", "updated")
    for d in data["deployments"]:
        table.add_row(text(d["id"]), text(d["status"]), text(d["rollout_state"]), str(d["desired"]),
                      str(d["running"]), str(d["pending"]), str(d["failed"]), text(d["task_definition"]),
                      when(d["updated_at"]))
    out.print(table)
    tasks = _table("Tasks", "task", "capacity provider", "last status", "desired status", "health", "started",
                   "protected")
    for t in data["tasks"]:
        protected = DASH if t["protected"] is None else ("yes" if t["protected"] else "no")
        tasks.add_row(text(t["id"]), text(t["capacity_provider"]), text(t["last_status"]),
                      text(t["desired_status"]), text(t["health"]), when(t["started_at"]), protected)
    if data["tasks"]:
        out.print(tasks)
    else:
        out.print("No tasks (the service is scaled to zero or starting).")
    for remark in data.get("notes", []):
        note(remark)


def redeploy_progress(state, snapshot: dict) -> None:
    if state.json:
        return
    console().print(escape(f"{snapshot['elapsed_s']:>4}s  rollout {snapshot['rollout_state']}: running "
                           f"{snapshot['running']}/{snapshot['desired']}, pending {snapshot['pending']}, "
                           f"failed {snapshot['failed']}, deployments {snapshot['deployments']}"))


def redeploy(state, data: dict) -> None:
    if state.json:
        return emit_json(data)
    console().print(escape(f"{data['service']}: {data['outcome']} (deployment {data['deployment_id']})"))


# -- scaling ----------------------------------------------------------------------------------
def scaling(state, data: dict) -> None:
    if state.json:
        return emit_json(data)
    out = console()
    t = data["target"]
    if t is None:
        out.print(escape(f"No scalable target registered for {data['resource_id']}."))
    else:
        suspended = [k for k, v in (t.get("suspended") or {}).items() if v]
        out.print(escape(f"{data['resource_id']}: capacity {t['min']}..{t['max']}"
                         + (f", suspended: {', '.join(suspended)}" if suspended else "")))
    policies = _table("Policies", "policy", "type", "adjustments", "alarms")
    for p in data["policies"]:
        policies.add_row(text(p["name"]), text(p["type"]), text(p["adjustments"]), text(", ".join(p["alarms"])))
    out.print(policies)
    alarms = _table("Alarms", "alarm", "state", "metric", "condition", "since", "reason")
    for a in data["alarms"]:
        style = {"ALARM": "red", "OK": "green"}.get(a["state"], "yellow")
        alarms.add_row(text(a["name"]), f"[{style}]{text(a['state'])}[/{style}]", text(a["metric"]),
                       text(a["condition"]), when(a["updated_at"]), text(a["reason"]))
    out.print(alarms)
    if data["activities"] is None:
        note("recent scaling activities: not available from this endpoint")
    elif data["activities"]:
        acts = _table("Recent activity", "started", "status", "description")
        for a in data["activities"]:
            acts.add_row(when(a["started_at"]), text(a["status"]), text(a["description"]))
        out.print(acts)


def simulation(state, data: dict) -> None:
    if state.json:
        return emit_json(data)
    out = console()
    out.print(escape(f"{data['source']}: capacity {data['min']}..{data['max']}, depth on {data['queue']}"))
    table = _table(None, "minute", "depth", "desired", "alarms in ALARM", "what happened")
    previous = data["start"]
    for m in data["minutes"]:
        desired = str(m["desired"]) if m["desired"] == previous else f"[bold]{m['desired']}[/bold]"
        previous = m["desired"]
        firing = [name for name, value in m["alarms"].items() if value == "ALARM"]
        table.add_row(str(m["minute"]), DASH if m["depth"] is None else str(m["depth"]), desired,
                      text(", ".join(firing)), text("; ".join(m["events"])))
    out.print(table)
    out.print(escape(f"{data['changes']} change(s) of the desired count in {len(data['minutes'])} minute(s)"))


# -- doctor -----------------------------------------------------------------------------------
def doctor(state, data: dict) -> None:
    if state.json:
        return emit_json(data)
    out = console()
    for check in data["checks"]:
        mark = "[green]PASS[/green]" if check["ok"] else "[red]FAIL[/red]"
        line = f"{mark}  {check['name']:<16} {escape(check['detail'])}"
        if not check["ok"] and check.get("hint"):
            line += f"  [dim](hint: {escape(check['hint'])})[/dim]"
        out.print(line)
    failed = sum(1 for c in data["checks"] if not c["ok"])
    out.print(f"{len(data['checks']) - failed} passed, {failed} failed")
