"""`opsctl review`: uncertain results become a reviewer's work list; one decision fixes every occurrence.

The worker stores, on each result, the mapping-memory key it used and, when it was unsure, the
engine's candidates; so this needs neither the model nor the normaliser: a code is checked against
the LOINC check digit and the reference CSVs (packaged, plus imported ones under the index
directory's ``reference/``), both cheap to read.
"""

from __future__ import annotations

import csv
import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opsctl import render
from opsctl.database import connect
from opsctl.errors import OpsError
from opsctl.options import DatabaseUrlOpt, JsonOpt, examples
from opsctl.state import get_state

if TYPE_CHECKING:  # the statements import sqlalchemy: only the commands that reach the database load them
    from opsctl.review_store import Key, Mapping

app = typer.Typer(
    help="Uncertain results: the work list, decisions (past and future results), their history and undo.",
    no_args_is_help=True,
    epilog=examples("opsctl review list", "opsctl review resolve haemoglobin --unit g/dl --code 718-7 "
                    "--note 'Hb on the CBC panel'", "opsctl review resolve 'sample type' --no-code",
                    "opsctl review export backlog.csv", "opsctl review import backlog.csv --dry-run",
                    "opsctl review history --json", "opsctl review undo 12"))

NO_CODE = "none"
EXPORT_COLUMNS = ("name", "unit", "results", "documents", "examples", "candidates", "first_seen", "last_seen",
                  "decision", "note")
IMPORT_COLUMNS = ("name", "unit", "decision")

ReviewerOpt = Annotated[str | None, typer.Option("--reviewer", help="Who decides (default: $USER).")]
LimitOpt = Annotated[int | None, typer.Option("--limit", "-n", min=1, help="Show at most N.")]


# -- checking a decision ---------------------------------------------------------------------------
@cache
def reference_dir() -> Path:
    from worker.mapping.model import resolve_index_dir

    return resolve_index_dir(None) / "reference"


@cache
def reference():
    """The packaged LOINC reference plus the imported tables, read once (CSV only: no model)."""
    from worker.mapping.reference import Reference

    return Reference.load([reference_dir()])


def mapping_for(decision: str) -> Mapping | None:
    """The mapping a decision names: a valid code in the reference, or None for 'none' (no code).

    Raises ValueError with the reason otherwise.
    """
    from opsctl.review_store import Mapping
    from worker.mapping.loinc import CODE_PATTERN, check_digit, is_valid_code

    code = decision.strip()
    if code.lower() == NO_CODE:
        return None
    match = CODE_PATTERN.match(code)
    if not match:
        raise ValueError(f"{code!r} is not a LOINC code (digits, a dash, a check digit: 718-7) nor {NO_CODE!r}")
    if not is_valid_code(code):
        raise ValueError(f"{code} has a wrong check digit (the digits {match.group(1)} need "
                         f"{check_digit(match.group(1))})")
    entry = reference().by_code.get(code)
    if entry is None:
        raise ValueError(f"{code} is not in the reference (packaged, or imported under {reference_dir()}); "
                         "import the official table with 'python -m worker loinc import Loinc.csv'")
    return Mapping(entry.category, entry.code, entry.long_common_name)


def reviewer_name(explicit: str | None) -> str:
    who = (explicit or os.environ.get("USER") or "").strip()
    if not who:
        raise OpsError("who is deciding? no --reviewer and no $USER", hint="pass --reviewer NAME", code=2)
    return who


def _no_code_mapping(connection, key: Key) -> Mapping:
    from opsctl import review_store as store
    from worker.mapping.types import OTHERS

    return store.Mapping(store.current_category(connection, key) or OTHERS, None, None)


# -- commands --------------------------------------------------------------------------------------
@app.command("list", epilog=examples("opsctl review list", "opsctl review list --limit 5 --json"))
def list_groups(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show the N biggest groups.")] = 20,
    database_url: DatabaseUrlOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """The pending groups of uncertain results, the biggest first.

    Results with needs_review or no code, grouped by their memory key. Each group shows how many
    results and documents it covers, a few names as reports print them, the engine's candidates with
    their scores, and when it was first and last seen.
    """
    from opsctl import review_store as store

    state = get_state(ctx, json_output)
    with connect(state, database_url) as engine, engine.connect() as connection:
        data = {"items": store.pending_groups(connection, limit)}
        backlog = store.backlog(connection)
    render.review_list(state, data, backlog)


@app.command("resolve", epilog=examples(
    "opsctl review resolve haemoglobin --unit g/dl --code 718-7", "opsctl review resolve 'Hb%' --code 718-7",
    "opsctl review resolve 'sample type' --no-code --note 'not a test'"))
def resolve(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The group's name as 'review list' shows it (or a name as printed).")],
    unit: Annotated[str | None, typer.Option("--unit", help="The group's unit as 'review list' shows it.")] = None,
    code: Annotated[str | None, typer.Option("--code", help="The LOINC code these results are.")] = None,
    no_code: Annotated[bool, typer.Option("--no-code", help="These results have no LOINC code.")] = False,
    note: Annotated[str | None, typer.Option("--note", help="Why (kept in the history).")] = None,
    reviewer: ReviewerOpt = None,
    database_url: DatabaseUrlOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Decide a group: its past and future results take the code (or no code).

    In one transaction: the memory gets a reviewed mapping (future jobs use it), every result already
    written under the key takes it (match_method 'reviewed'), and the history records who, when, the
    mapping before and after, and the note.
    """
    from opsctl import review_store as store

    state = get_state(ctx, json_output)
    if (code is not None) == no_code:
        raise typer.BadParameter("give either --code CODE or --no-code", param_hint="'--code' / '--no-code'")
    if not name.strip():
        raise OpsError("the name is empty: an empty key would match every name that normalises to nothing",
                       code=2)
    try:
        mapping = mapping_for(code) if code is not None else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="'--code'") from None
    who = reviewer_name(reviewer)
    with connect(state, database_url) as engine, engine.begin() as connection:
        key = store.find_key(connection, name, unit)
        mapping = mapping or _no_code_mapping(connection, key)
        decision_id, changed = store.decide(connection, key, mapping, who, note)
    render.review_decided(state, {"decision": decision_id, "name": key[0], "unit": key[1] or None,
                                  "code": mapping.loinc_code, "loinc_name": mapping.loinc_name,
                                  "category": mapping.category, "results_changed": changed, "reviewer": who})


@app.command("export", epilog=examples("opsctl review export backlog.csv"))
def export(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The CSV to write (one row per group).", dir_okay=False)],
    limit: LimitOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Write the work list as CSV for a spreadsheet, one row per group.

    Fill in the decision column with a LOINC code, or 'none' for no code; rows left empty are skipped
    on import.
    """
    from opsctl import review_store as store

    state = get_state(ctx)
    with connect(state, database_url) as engine, engine.connect() as connection:
        groups = store.pending_groups(connection, limit)
    try:
        with open(file, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=EXPORT_COLUMNS)
            writer.writeheader()
            for group in groups:
                writer.writerow({**{column: group[column] for column in EXPORT_COLUMNS[:4]},
                                 "unit": group["unit"] or "", "examples": " | ".join(group["examples"]),
                                 "candidates": " | ".join(render.candidate(c) for c in group["candidates"]),
                                 "first_seen": group["first_seen"], "last_seen": group["last_seen"]})
    except OSError as error:
        raise OpsError(f"cannot write {file}: {error.strerror}") from None
    render.say(render.text(f"wrote {len(groups)} group(s) to {file}: fill in the decision column (a LOINC code, "
                           f"or '{NO_CODE}'), then run opsctl review import {file}"))


def read_decisions(file: Path) -> list[tuple[int, dict[str, str]]]:
    """The rows of a decisions CSV with their line numbers; a missing column is a usage error."""
    try:
        handle = open(file, newline="", encoding="utf-8-sig")  # a spreadsheet's UTF-8 may start with a BOM
    except OSError as error:
        raise typer.BadParameter(f"cannot read {file}: {error.strerror}", param_hint="'FILE'") from None
    with handle:
        reader = csv.DictReader(handle)
        missing = [column for column in IMPORT_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise typer.BadParameter(f"{file} has no {', '.join(missing)} column(s) (export a work list with "
                                     "'opsctl review export' and fill in its decision column)", param_hint="'FILE'")
        try:
            return [(reader.line_num, row) for row in reader]
        except (csv.Error, UnicodeDecodeError) as error:
            raise typer.BadParameter(f"{file} line {reader.line_num}: {error}", param_hint="'FILE'") from None


def _plan(connection, rows: list[tuple[int, dict[str, str]]]) -> tuple[list[dict], list[dict], int]:
    """Validate every row: (decisions to apply, errors with their line, rows left undecided)."""
    from opsctl import review_store as store

    planned: list[dict] = []
    errors: list[dict] = []
    seen: dict[Key, int] = {}
    skipped = 0
    for line, row in rows:
        decision = (row.get("decision") or "").strip()
        if not decision:
            skipped += 1
            continue
        try:
            mapping = mapping_for(decision)
            if not (row.get("name") or "").strip():
                raise ValueError("the name is empty: an empty key cannot be resolved")
            key = store.find_key(connection, row["name"], row.get("unit"))
        except ValueError as error:
            errors.append({"line": line, "reason": str(error)})
            continue
        except OpsError as error:
            errors.append({"line": line, "reason": error.message})
            continue
        if key in seen:
            errors.append({"line": line, "reason": f"the same group as line {seen[key]}"})
            continue
        seen[key] = line
        planned.append({"line": line, "key": key, "mapping": mapping, "note": (row.get("note") or "").strip() or None})
    return planned, errors, skipped


@app.command("import", epilog=examples("opsctl review import backlog.csv --dry-run",
                                       "opsctl review import backlog.csv --reviewer asha"))
def import_decisions(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A CSV with name, unit and decision columns (as exported).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check every row and count what would change; "
                                          "change nothing.")] = False,
    reviewer: ReviewerOpt = None,
    database_url: DatabaseUrlOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Apply the decisions of a CSV (as exported, its decision column filled in).

    Every row is checked first (line number and reason for each bad one), and nothing is applied
    unless all are valid; then all are applied in one transaction.
    """
    from opsctl import review_store as store

    state = get_state(ctx, json_output)
    rows = read_decisions(file)
    who = reviewer_name(reviewer)
    with connect(state, database_url) as engine, engine.connect() as connection, connection.begin() as transaction:
        planned, errors, skipped = _plan(connection, rows)
        applied = []
        if not errors:
            for item in planned:
                mapping = item["mapping"] or _no_code_mapping(connection, item["key"])
                decision_id, changed = store.decide(connection, item["key"], mapping, who, item["note"])
                applied.append({"line": item["line"], "name": item["key"][0], "unit": item["key"][1] or None,
                                "code": mapping.loinc_code, "results_changed": changed,
                                "decision": None if dry_run else decision_id})
        if errors or dry_run:
            transaction.rollback()
    data = {"file": str(file), "dry_run": dry_run, "applied": 0 if errors or dry_run else len(applied),
            "skipped": skipped, "rows": applied, "errors": errors}
    render.review_import(state, data)
    if errors:
        raise typer.Exit(1)


@app.command("history", epilog=examples("opsctl review history", "opsctl review history --limit 10 --json"))
def history(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show the N latest decisions.")] = 50,
    database_url: DatabaseUrlOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """The decisions, latest first.

    Who, when, the mapping before and after, how many results changed, the note, undone or not.
    """
    from opsctl import review_store as store

    state = get_state(ctx, json_output)
    with connect(state, database_url) as engine, engine.connect() as connection:
        data = {"items": store.history(connection, limit)}
    render.review_history(state, data)


@app.command("undo", epilog=examples("opsctl review undo 12"))
def undo(
    ctx: typer.Context,
    decision_id: Annotated[int, typer.Argument(metavar="ID", help="The decision's id (see 'review history').")],
    reviewer: ReviewerOpt = None,
    database_url: DatabaseUrlOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Undo a decision: the previous mapping and the results it changed come back.

    The memory gets back its previous row and the results the decision changed their values; results
    that jobs wrote from it since are flagged for review (or take the previous reviewed mapping).
    Only the latest decision on a key can be undone.
    """
    from opsctl import review_store as store

    state = get_state(ctx, json_output)
    who = reviewer_name(reviewer)
    with connect(state, database_url) as engine, engine.begin() as connection:
        data = store.undo(connection, decision_id, who)
    render.review_undone(state, data)
