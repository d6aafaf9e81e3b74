"""Engine commands: ``map``, ``eval``, ``loinc import``, ``index build``.

Each command imports the engine (and so torch) inside its body: ``python -m worker --help``
stays fast. Data is fetched through one function and rendered in one place (rich or ``--json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

ModelOption = Annotated[str | None, typer.Option("--model", help="Model id or local directory "
                                                    "(default: ML_WORKER_MODEL, else the packaged MiniLM)")]
IndexDirOption = Annotated[Path | None, typer.Option("--index-dir", help="Where the reference index "
                                                        "lives (default: ML_WORKER_INDEX_DIR or ~/.cache)")]

loinc_app = typer.Typer(help="The LOINC reference.", no_args_is_help=True)
index_app = typer.Typer(help="The reference's embedding index.", no_args_is_help=True)

RESULT_COLUMNS = ("category", "loinc_code", "loinc_name", "confidence", "match_method", "needs_review",
                  "candidates")


def _engine(model: str | None, index_dir: Path | None):
    from worker.mapping.engine import MappingEngine

    return MappingEngine.load(model=model, index_dir=index_dir)


def _result_dict(result) -> dict:
    return {"category": result.category, "loinc_code": result.loinc_code, "loinc_name": result.loinc_name,
            "confidence": result.confidence, "match_method": result.match_method,
            "candidates": list(result.candidates), "needs_review": result.needs_review}


def map_command(
    name: Annotated[str | None, typer.Argument(help="A test name as printed on a report")] = None,
    unit: Annotated[str | None, typer.Option("--unit", "-u")] = None,
    specimen: Annotated[str | None, typer.Option("--specimen", "-s")] = None,
    value: Annotated[str | None, typer.Option("--value")] = None,
    input_csv: Annotated[Path | None, typer.Option("--input", "-i", help="CSV with test_name,test_unit")] = None,
    output_csv: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the mapped CSV")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    model: ModelOption = None,
    index_dir: IndexDirOption = None,
) -> None:
    """Map one test name (NAME --unit U), or a CSV (--input IN.csv --output OUT.csv)."""
    if (name is None) == (input_csv is None):
        raise typer.BadParameter("give either a NAME or --input FILE")
    from worker.mapping.types import LabTestQuery

    engine = _engine(model, index_dir)
    if name is not None:
        [result] = engine.map([LabTestQuery(name=name, unit=unit, value=value, specimen=specimen)])
        data = _result_dict(result) | {"test_name": name, "test_unit": unit, "model_version": engine.model_version}
        if as_json:
            typer.echo(json.dumps(data, indent=2))
        else:
            _render_result(data)
        return
    import csv

    with open(input_csv, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    if "test_name" not in fields:
        raise typer.BadParameter(f"{input_csv} has no test_name column")
    queries = [LabTestQuery(name=r.get("test_name") or "", unit=r.get("test_unit") or None,
                            value=r.get("test_value") or None, specimen=r.get("specimen") or None) for r in rows]
    results = engine.map(queries)
    out_fields = fields + [c for c in RESULT_COLUMNS if c not in fields]
    out_rows = []
    for row, result in zip(rows, results, strict=True):
        d = _result_dict(result)
        d["candidates"] = "|".join(d["candidates"])
        out_rows.append(row | {c: ("" if d[c] is None else d[c]) for c in RESULT_COLUMNS})
    if output_csv is None:
        import sys

        writer = csv.DictWriter(sys.stdout, fieldnames=out_fields)
        writer.writeheader()
        writer.writerows(out_rows)
        return
    with open(output_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=out_fields)
        writer.writeheader()
        writer.writerows(out_rows)
    typer.echo(f"mapped {len(out_rows)} rows -> {output_csv} ({engine.model_version})", err=True)


def _render_result(data: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text  # not markup: "[#/volume]" in a LOINC name is text

    table = Table(show_header=False, box=None)
    for key in ("test_name", "test_unit", "category", "loinc_code", "loinc_name", "confidence", "match_method",
                "needs_review", "candidates", "model_version"):
        value = data.get(key)
        table.add_row(key, Text(", ".join(value) if isinstance(value, list) else str(value)))
    Console().print(table)


def eval_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="MIMIC D_LABITEMS or test_name,... CSV")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    errors: Annotated[int, typer.Option("--errors", help="Also list up to N misses")] = 0,
    model: ModelOption = None,
    index_dir: IndexDirOption = None,
) -> None:
    """Top-1/top-3 LOINC accuracy, category accuracy and coverage on a labelled file."""
    from worker.mapping.evaluate import evaluate_file

    try:
        report = evaluate_file(_engine(model, index_dir), file)
    except (ValueError, UnicodeError) as error:  # a file of another shape or encoding: the caller's input
        raise typer.BadParameter(f"{file}: {error}" if str(file) not in str(error) else str(error),
                                 param_hint="'FILE'") from None
    if as_json:
        data = report.as_dict(with_errors=errors > 0)
        if errors:
            data["errors"] = data["errors"][:errors]
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{file} ({report.format}, {report.model_version})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("rows / labelled / in reference", f"{report.rows} / {report.labelled} / {report.covered}")
    table.add_row("coverage", f"{report.coverage:.1%}")
    table.add_row("top-1 (covered rows)", f"{report.top1:.1%}")
    table.add_row("top-3 (covered rows)", f"{report.top3:.1%}")
    table.add_row("top-1 same analyte (covered rows)", f"{report.same_analyte:.1%}")
    table.add_row("answered / precision", f"{report.answered:.1%} / {report.precision:.1%}")
    table.add_row(f"category accuracy ({report.category_rows} rows)", f"{report.category_accuracy:.1%}")
    if report.no_code_rows:
        table.add_row(f"no code when none expected ({report.no_code_rows} rows)", f"{report.no_code_accuracy:.1%}")
    console = Console()
    console.print(table)
    for miss in report.errors[:errors]:
        console.print(f"  {miss['name']!r} [{miss['unit'] or ''}|{miss['specimen'] or ''}] expected {miss['expected']}"
                      f" got {miss['got']} cands {miss['candidates']} conf {miss['confidence']}", markup=False)


@loinc_app.command("import")
def loinc_import(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The official LoincTable/Loinc.csv")],
    into: Annotated[Path | None, typer.Option("--into", help="Output CSV (default: "
                                                 "<index dir>/reference/loinc_import.csv)")] = None,
    index_dir: IndexDirOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Extend the reference with the ACTIVE laboratory codes of the official LOINC table."""
    from tqdm import tqdm

    from worker.mapping.importer import default_import_path, import_loinc_table
    from worker.mapping.model import resolve_index_dir

    target = into or default_import_path(resolve_index_dir(index_dir))

    def progress(rows, total):
        return tqdm(rows, total=total, unit="rows", desc="Loinc.csv", disable=as_json)

    summary = import_loinc_table(path, target, progress=progress)
    data = {"read": summary.read, "written": summary.written, "skipped_inactive": summary.skipped_inactive,
            "skipped_not_lab": summary.skipped_not_lab, "skipped_invalid": summary.skipped_invalid,
            "skipped_panels": summary.skipped_panels,
            "path": str(summary.path)}
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(f"imported {summary.written} active laboratory codes of {summary.read} rows -> {summary.path}")
        typer.echo("run `python -m worker index build` to embed them now (otherwise the next start does)")


@index_app.command("build")
def index_build(model: ModelOption = None, index_dir: IndexDirOption = None,
                as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Compute and store the reference's embedding index (the Docker build runs this)."""
    import time

    from worker.mapping.encoder import index_path
    from worker.mapping.engine import MappingEngine
    from worker.mapping.model import resolve_index_dir, resolve_model

    started = time.perf_counter()
    engine = MappingEngine.load(model=model, index_dir=index_dir, progress=not as_json)
    path = index_path(engine.reference, resolve_model(model), resolve_index_dir(index_dir), engine.encoder.kind)
    data = {"model_version": engine.model_version, "entries": len(engine.reference), "path": str(path),
            "seconds": round(time.perf_counter() - started, 2)}
    typer.echo(json.dumps(data, indent=2) if as_json else
               f"index of {data['entries']} reference entries ready at {path} ({data['seconds']} s)")


@index_app.command("export-model")
def index_export_model(
    target: Annotated[Path, typer.Argument(help="The directory to write (ML_WORKER_MODEL where it runs)")],
    model: ModelOption = None, index_dir: IndexDirOption = None,
    encoder: Annotated[str | None, typer.Option("--encoder", help="onnx or onnx-int8 (default: "
                                                                  "ML_WORKER_ENCODER, onnx-int8)")] = None,
) -> None:
    """Write the model's ONNX export for one encoder (weights, tokenizer, encoder.json) to TARGET: a model
    directory that runs with ONNX Runtime alone, whose reference index is the original model's (the
    worker image's build stage runs this for its runtime stage)."""
    from worker.mapping.encoder import export_model
    from worker.mapping.model import resolve_encoder, resolve_index_dir, resolve_model

    kind = resolve_encoder(encoder)
    written = export_model(resolve_model(model), resolve_index_dir(index_dir), kind, target)
    size = sum(p.stat().st_size for p in written.iterdir() if p.is_file())
    typer.echo(f"{kind} export of {resolve_model(model)} written to {written} ({size / 2**20:.0f} MiB)")


def register(app: typer.Typer) -> None:
    """Add the engine's commands to the worker CLI."""
    app.command("map")(map_command)
    app.command("eval")(eval_command)
    app.add_typer(loinc_app, name="loinc")
    app.add_typer(index_app, name="index")
