"""Worker runtime commands: db upgrade, healthcheck, selfcheck, demo, memory set; and :func:`run_cli`,
the one place where any command's failure becomes one line on stderr.

Each command imports its heavy modules inside its body, so ``--help`` and ``healthcheck`` stay fast.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

try:  # Typer 0.2x ships its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older Typer on top of click
    from click.exceptions import ClickException, NoArgsIsHelpError

from worker.mapping.model import EncoderUnavailableError
from worker.settings import ConfigError, describe_validation_error, load_settings

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
    from alembic.util import CommandError

    from worker.store.db import make_engine, upgrade

    settings = load_settings(database_url_env=database_url) if database_url else load_settings()
    engine = make_engine(settings.database_url())
    try:
        current = upgrade(engine, revision)
    except CommandError as error:  # an unknown revision: the operator's input
        raise typer.BadParameter(str(error), param_hint="'REVISION'") from None
    finally:
        engine.dispose()
    typer.echo(f"database at revision {current}")


def healthcheck(
    max_age: float = typer.Option(None, "--max-age", help="Seconds without progress that count as unhealthy."),
) -> None:
    """Exit non-zero when the worker loop has not made progress recently (the image's HEALTHCHECK)."""
    from worker.health import HealthFile

    settings = load_settings()
    healthy, detail = HealthFile(settings.health_file).check(max_age or settings.health_max_age or 380)
    typer.echo(("healthy: " if healthy else "unhealthy: ") + detail, err=not healthy)
    raise typer.Exit(0 if healthy else 1)


SELFCHECK_QUERY = {"name": "Hemoglobin", "unit": "g/dL", "value": "14.5"}
SELFCHECK_CODE = "718-7"


def selfcheck(
    model: str = typer.Option(None, "--model", help="Model id or directory (default: ML_WORKER_MODEL, packaged)."),
    require_index: bool = typer.Option(False, "--require-index",
                                       help="Fail if loading had to embed anything: the index must be built."),
) -> None:
    """Load the engine and map Hemoglobin g/dL; exit 0 only if it maps to 718-7. Needs no DB, no AWS.

    Reports how many texts the load embedded (0 when the reference index was found in the index
    directory); with --require-index any is a failure (the image's runtime stage must not rebuild it)."""
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
        raise typer.Exit(2 if isinstance(error, EncoderUnavailableError) else 1) from None
    load_seconds = time.monotonic() - started
    embedded = int(getattr(engine.encoder, "texts_encoded", 0))
    started = time.monotonic()
    [result] = engine.map([LabTestQuery(**SELFCHECK_QUERY)])
    ok = result.loinc_code == SELFCHECK_CODE and not (require_index and embedded)
    typer.echo(json.dumps({
        "ok": ok, "model": chosen, "model_version": engine.model_version,
        "encoder": getattr(engine.encoder, "kind", "torch"),
        "load_seconds": round(load_seconds, 2), "embedded_at_load": embedded,
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
    from worker.store.db import make_engine
    from worker.store.repository import set_manual_mapping, usable_key

    settings = load_settings()
    url = settings.database_url()  # a configuration error before the model loads
    engine = MappingEngine.load(settings.model)
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
    if not usable_key(row.normalized_name):
        # Every emoji, blank or punctuation-only name normalises to this same empty key.
        raise typer.BadParameter("the name has no letters or digits, so it cannot key a mapping",
                                 param_hint="'TEST_NAME'")
    db = make_engine(url)
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


class WorkerGroup(TyperGroup):
    """The worker CLI's root. Its ``main`` is the one place where a command's failure becomes one line
    on stderr: exit 2 for usage and configuration, 1 for failures; never a traceback, and never a
    configuration value (the environment holds the database password)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra: Any):
        try:
            result = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                  standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except NoArgsIsHelpError as error:
            code = error.exit_code  # the help was printed already
        except ClickException as error:
            code = _fail(error.format_message(), error.exit_code)
        except typer.Abort:
            code = _fail("aborted", 1)
        except (ConfigError, EncoderUnavailableError) as error:
            code = _fail(f"configuration: {error}", 2)
        except ValidationError as error:
            code = _fail(f"configuration: {describe_validation_error(error)}", 2)
        except Exception as error:  # noqa: BLE001 - every failure becomes one line, never a traceback
            code = _fail(_describe(error), 1)
        if standalone_mode:
            raise SystemExit(code)
        return code


def _describe(error: Exception) -> str:
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(error, SQLAlchemyError):  # the driver's own message, without SQLAlchemy's wrapping
        cause = getattr(error, "orig", None) or error
        return f"database: {type(cause).__name__}: {str(cause)[:300]}"
    return f"{type(error).__name__}: {str(error)[:300]}"


def _fail(message: str, code: int) -> int:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    return code


def register(app: typer.Typer) -> None:
    """Add the runtime's commands to the worker CLI."""
    app.add_typer(db_app, name="db")
    app.add_typer(memory_app, name="memory")
    app.command("healthcheck")(healthcheck)
    app.command("selfcheck")(selfcheck)
    app.command("demo")(demo)
