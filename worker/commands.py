"""Worker runtime commands: db upgrade, healthcheck, selfcheck, demo, memory set.

Each command imports its heavy modules inside its body, so ``--help`` and ``healthcheck`` stay fast.
"""

from __future__ import annotations

import json

import typer

db_app = typer.Typer(help="The worker's database: migrations.", no_args_is_help=True)
memory_app = typer.Typer(help="The mapping memory: reviewed (manual) mappings.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Argument("head", help="Alembic revision to upgrade to."),
    database_url: str = typer.Option(None, "--database-url", envvar="DATABASE_URL",
                                     help="Defaults to DATABASE_URL or the POSTGRES_* variables."),
) -> None:
    """Run the migrations under a PostgreSQL advisory lock.

    The worker also runs this at start, under the same lock (see worker.store.db.upgrade): a
    separate step is optional, and several tasks starting at once never race.
    """
    from worker.settings import WorkerSettings
    from worker.store.db import make_engine, upgrade

    settings = WorkerSettings(database_url_env=database_url) if database_url else WorkerSettings()
    try:
        url = settings.database_url()
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    engine = make_engine(url)
    try:
        current = upgrade(engine, revision)
    finally:
        engine.dispose()
    typer.echo(f"database at revision {current}")


def healthcheck(
    max_age: float = typer.Option(None, "--max-age", help="Seconds without progress that count as unhealthy."),
) -> None:
    """Exit non-zero when the worker loop has not made progress recently (the image's HEALTHCHECK)."""
    from worker.health import HealthFile
    from worker.settings import WorkerSettings

    settings = WorkerSettings()
    healthy, detail = HealthFile(settings.health_file).check(max_age or settings.health_max_age or 380)
    typer.echo(("healthy: " if healthy else "unhealthy: ") + detail, err=not healthy)
    raise typer.Exit(0 if healthy else 1)


SELFCHECK_QUERY = {"name": "Hemoglobin", "unit": "g/dL", "value": "14.5"}
SELFCHECK_CODE = "718-7"


def selfcheck(
    model: str = typer.Option(None, "--model", help="Model id or directory (default: ML_WORKER_MODEL, packaged)."),
) -> None:
    """Load the engine and map Hemoglobin g/dL; exit 0 only if it maps to 718-7. Needs no DB, no AWS."""
    import os
    import time

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from worker.mapping.engine import MappingEngine
    from worker.mapping.model import resolve_model
    from worker.mapping.types import LabTestQuery

    chosen = resolve_model(model)
    started = time.monotonic()
    try:
        engine = MappingEngine.load(chosen)
    except Exception as error:  # report any load failure as one JSON line
        typer.echo(json.dumps({"ok": False, "model": chosen, "error": f"{type(error).__name__}: {error}"}))
        raise typer.Exit(1) from None
    load_seconds = time.monotonic() - started
    started = time.monotonic()
    [result] = engine.map([LabTestQuery(**SELFCHECK_QUERY)])
    ok = result.loinc_code == SELFCHECK_CODE
    typer.echo(json.dumps({
        "ok": ok, "model": chosen, "model_version": engine.model_version, "load_seconds": round(load_seconds, 2),
        "map_seconds": round(time.monotonic() - started, 3), "query": SELFCHECK_QUERY,
        "result": {"category": result.category, "loinc_code": result.loinc_code, "loinc_name": result.loinc_name,
                   "confidence": round(float(result.confidence), 4), "match_method": result.match_method},
    }))
    raise typer.Exit(0 if ok else 1)


def demo(
    report: str = typer.Option("us_cmp", "--report", help="Which sample report to send with the guide sample."),
    timeout: float = typer.Option(180.0, "--timeout", help="Seconds to wait for the jobs."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the worker's JSON log lines."),
    model: str = typer.Option(None, "--model", help="Model id or directory (default: the packaged model)."),
) -> None:
    """Run the whole pipeline locally (moto SQS, SQLite, the worker) on two jobs and print the results."""
    from worker.local.demo import run_demo

    raise typer.Exit(run_demo(report=report, timeout=timeout, verbose=verbose, model=model))


@memory_app.command("set")
def memory_set(
    test_name: str = typer.Argument(..., help="The test name as reports print it."),
    loinc_code: str = typer.Argument(..., help="The reviewed LOINC code."),
    unit: str = typer.Option(None, "--unit", help="The unit as reports print it."),
    category: str = typer.Option(None, "--category", help="Default: the code's category in the reference."),
) -> None:
    """Record a reviewed mapping: it wins over the model for this normalised (name, unit)."""
    from worker.mapping.engine import MappingEngine
    from worker.mapping.types import CATEGORIES, LabTestQuery
    from worker.settings import WorkerSettings
    from worker.store.db import make_engine
    from worker.store.repository import set_manual_mapping

    engine = MappingEngine.load(WorkerSettings().model)
    described = engine.describe(loinc_code)
    if described is None and category is None:
        typer.echo(f"error: {loinc_code} is not in the reference; give --category", err=True)
        raise typer.Exit(2)
    loinc_name, reference_category = described or (None, None)
    category = category or reference_category
    if category not in CATEGORIES:
        typer.echo(f"error: unknown category {category!r}", err=True)
        raise typer.Exit(2)
    row = manual_row(engine, LabTestQuery(test_name, unit), loinc_code, loinc_name, category)
    db = make_engine(WorkerSettings().database_url())
    try:
        set_manual_mapping(db, row)
    finally:
        db.dispose()
    typer.echo(f"{row.normalized_name!r} [{row.unit_key or '-'}] -> {loinc_code} ({category})")


def manual_row(engine, query, loinc_code: str | None, loinc_name: str | None, category: str):
    """The memory row of a reviewed mapping for ``query``, keyed as the engine normalises it."""
    from worker.store.repository import MemoryRow

    name, unit = engine.key(query)
    return MemoryRow(normalized_name=name, unit_key=unit or "", category=category, loinc_code=loinc_code,
                     loinc_name=loinc_name, confidence=1.0, match_method="override", source="manual",
                     model_version=None)


def register(app: typer.Typer) -> None:
    """Add the runtime's commands to the worker CLI."""
    app.add_typer(db_app, name="db")
    app.add_typer(memory_app, name="memory")
    app.command("healthcheck")(healthcheck)
    app.command("selfcheck")(selfcheck)
    app.command("demo")(demo)
