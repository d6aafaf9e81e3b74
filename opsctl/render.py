"""Every piece of output opsctl prints: rich tables for people, JSON for machines.

Commands fetch a plain dict/list and hand it to one function here. Colour only on a terminal
(rich decides; NO_COLOR is honoured); off a terminal, lines are not wrapped at 80 columns.
"""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

DASH = "—"
# C0 controls but tab, DEL and C1: what a terminal would act on (cursor moves, titles, colours).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def clean(value: Any) -> str:
    """Text from logs and messages, with every control character shown as \\xNN instead of acted on."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", str(value))


def safe(value: Any) -> str:
    """Text for a rich markup string: control characters shown, markup escaped."""
    return escape(clean(value))


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and not os.environ.get("COLUMNS")
    return Console(file=stream, highlight=False, width=200 if wide else None, soft_wrap=wide)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def error(message: str, hint: str | None) -> None:
    line = clean(f"opsctl: error: {message}" + (f" (hint: {hint})" if hint else ""))
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def note(text: str) -> None:
    """Side remarks go to stderr so that stdout stays parseable."""
    console(stderr=True).print(safe(text))


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
    return DASH if value in (None, "") else safe(value)


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
    console().print(safe(line))
    for remark in data.get("notes", []):
        note(remark)


def purge(state, data: dict) -> None:
    if state.json:
        return emit_json(data)
    console().print(safe(f"purged {data['queue']} ({data['approximate_messages']} message(s)); "
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
        return f"[dim]{when(event.get('timestamp'))}[/dim] {safe(raw)}"
    stamp = record.get("ts") or record.get("timestamp") or record.get("time") or event.get("timestamp")
    level = str(record.get("level") or record.get("levelname") or "").upper()
    style = LEVEL_STYLES.get(level, "")
    message = record.get("message", record.get("msg", ""))
    extras = [f"{key}={record[key]}" for key in KNOWN_KEYS if record.get(key) not in (None, "")]
    extras += [f"{key}={value}" for key, value in record.items()
               if key not in SKIP_KEYS and key not in KNOWN_KEYS and value not in (None, "")]
    level_text = f"[{style}]{level:<7}[/{style}]" if style else safe(f"{level:<7}")
    tail = ("  [cyan]" + safe(" ".join(str(e) for e in extras)) + "[/cyan]") if extras else ""
    line = f"[dim]{safe(when(stamp))}[/dim] {level_text} {safe(message)}{tail}"
    if record.get("exception"):  # the traceback under its line, indented
        line += "\n" + "\n".join("    " + safe(part) for part in str(record["exception"]).splitlines())
    return line


def log_events(state, events: list[dict]) -> None:
    if state.json:
        for event in events:  # raw, but never a raw control character (JSON lines carry theirs escaped)
            sys.stdout.write(clean(event.get("message", "").rstrip("\n")) + "\n")
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
    console().print(safe(f"sent job {data['job_id']} as message {data['message_id']} to {data['queue_url']}"))


def job_outcome(state, data: dict) -> None:
    if state.json:
        return emit_json(data)
    out = console()
    detail = f" ({data['detail']})" if data.get("detail") else ""
    out.print(safe(f"job {data['job_id']}: {data['status']}{detail}"))
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
    out.print(safe(f"{s['name']} on {s['cluster']}: {s['status']}, desired {s['desired']}, running {s['running']}, "
                     f"pending {s['pending']}"))
    out.print(safe(f"task definition {s['task_definition']}; capacity {strategy}"))
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
    console().print(safe(f"{snapshot['elapsed_s']:>4}s  rollout {snapshot['rollout_state']}: running "
                           f"{snapshot['running']}/{snapshot['desired']}, pending {snapshot['pending']}, "
                           f"failed {snapshot['failed']}, deployments {snapshot['deployments']}"))


def redeploy(state, data: dict) -> None:
    if state.json:
        return emit_json(data)
    console().print(safe(f"{data['service']}: {data['outcome']} (deployment {data['deployment_id']})"))


# -- scaling ----------------------------------------------------------------------------------
def scaling(state, data: dict) -> None:
    if state.json:
        return emit_json(data)
    out = console()
    t = data["target"]
    if t is None:
        out.print(safe(f"No scalable target registered for {data['resource_id']}."))
    else:
        suspended = [k for k, v in (t.get("suspended") or {}).items() if v]
        out.print(safe(f"{data['resource_id']}: capacity {t['min']}..{t['max']}"
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
        if check.get("warning"):
            mark = "[yellow]WARN[/yellow]"
        line = f"{mark}  {check['name']:<16} {safe(check['detail'])}"
        if (not check["ok"] or check.get("warning")) and check.get("hint"):
            line += f"  [dim](hint: {safe(check['hint'])})[/dim]"
        out.print(line)
    failed = sum(1 for c in data["checks"] if not c["ok"])
    warned = sum(1 for c in data["checks"] if c.get("warning"))
    out.print(f"{len(data['checks']) - failed - warned} passed, {failed} failed"
              + (f", {warned} warning(s)" if warned else ""))


# -- review -----------------------------------------------------------------------------------
LISTED_CANDIDATES = 3  # in the table; --json has them all
def candidate(c: dict) -> str:
    """A candidate as '718-7 Hemoglobin [Mass/volume] in Blood (0.82)'."""
    score = f" ({c['score']:.2f})" if isinstance(c.get("score"), int | float) else ""
    return f"{c['code']} {c.get('name') or '(not in the reference)'}{score}"


def _mapping(m: dict | None) -> str:
    if not m:
        return "no memory row"
    source = f"{m['source']}: " if m.get("source") else ""
    return f"{source}{m.get('loinc_code') or 'no code'} ({m.get('category')})"


def _group(name: str, unit: str | None) -> str:
    return f"{name} [{unit}]" if unit else name


def review_list(state, data: dict, backlog: dict) -> None:
    if state.json:
        return emit_json(data)
    out = console()
    if not data["items"]:
        out.print("Nothing waits for review.")
    else:
        table = _table(None, "group (printed as)", "results", "docs", "seen", f"best {LISTED_CANDIDATES} candidates")
        for item in data["items"]:
            group = safe(_group(item["name"], item["unit"]))
            group += "\n[dim]" + safe(", ".join(item["examples"])) + "[/dim]"
            seen = " to ".join(dict.fromkeys(when(item[k])[:10] for k in ("first_seen", "last_seen")))
            shown = item["candidates"][:LISTED_CANDIDATES]
            table.add_row(group, str(item["results"]), str(item["documents"]), seen,
                          safe("\n".join(candidate(c) for c in shown)) or DASH)
        table.caption = f"{len(data['items'])} of {backlog['groups']} group(s), {backlog['results']} result(s) waiting"
        out.print(table)
        out.print("[dim]decide a group: opsctl review resolve NAME [--unit U] (--code CODE | --no-code)[/dim]")
    if backlog.get("without_key"):
        note(f"{backlog['without_key']} uncertain result(s) have no key yet (written before migration 0002 or "
             "by an older worker): the next worker start keys them")


def review_decided(state, data: dict) -> None:
    if state.json:
        return emit_json(data)
    target = f"{data['code']} {data['loinc_name']}" if data["code"] else "no code"
    console().print(safe(f"decision #{data['decision']}: {data['name']!r} [{data['unit'] or '-'}] -> {target} "
                           f"({data['category']}); {data['results_changed']} result(s) changed"))


def review_undone(state, data: dict) -> None:
    if state.json:
        return emit_json(data)
    line = (f"undid decision #{data['decision']}: {data['name']!r} [{data['unit'] or '-'}] is back to "
            f"{_mapping(data['memory'])}; {data['restored']} result(s) restored")
    if data["later_results"]:
        line += f", {data['later_results']} later result(s) {data['later_results_action']}"
    console().print(safe(line))


def review_history(state, data: dict) -> None:
    if state.json:
        return emit_json(data)
    if not data["items"]:
        console().print("No decisions yet.")
        return
    table = _table(None, "id", "when", "reviewer", "group", "before", "after", "results", "note", "undone")
    for item in data["items"]:
        undone = f"{when(item['undone_at'])} by {item['undone_by']}" if item["undone_at"] else ""
        table.add_row(str(item["id"]), when(item["decided_at"]), text(item["reviewer"]),
                      text(_group(item["name"], item["unit"])), escape(_mapping(item["before"])),
                      escape(_mapping(item["after"])), str(item["results_changed"]), text(item["note"]), text(undone))
    console().print(table)


def review_import(state, data: dict) -> None:
    if state.json:
        return emit_json(data)
    for item in data["errors"]:
        note(f"line {item['line']}: {item['reason']}")
    if data["errors"]:
        error(f"{len(data['errors'])} invalid row(s) in {data['file']}: nothing applied", None)
        return
    out = console()
    for row in data["rows"]:
        out.print(escape(f"line {row['line']}: {row['name']!r} [{row['unit'] or '-'}] -> {row['code'] or 'no code'}: "
                         f"{row['results_changed']} result(s)"))
    verb = "would apply" if data["dry_run"] else "applied"
    changed = sum(row["results_changed"] for row in data["rows"])
    out.print(escape(f"{verb} {len(data['rows'])} decision(s), {changed} result(s) changed; "
                     f"{data['skipped']} row(s) without a decision skipped"))
