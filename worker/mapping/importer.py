"""Import the official LOINC table (``LoincTable/Loinc.csv``) as a user extension of the reference.

Only ACTIVE laboratory codes (CLASSTYPE 1) are kept, panels excluded. Each becomes a reference row; its app
category is inferred by ``categorize`` (system, class and names). The output is a CSV in the
reference's own format, written by default to ``<index dir>/reference/loinc_import.csv``, which
``MappingEngine.load`` picks up. For a code the package already holds, the import refreshes the long
common name and axes; the package's category and units stay.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from worker.mapping.categorize import reference_category
from worker.mapping.loinc import is_valid_code
from worker.mapping.reference import COLUMNS, Reference

REQUIRED = ("LOINC_NUM", "COMPONENT", "PROPERTY", "SYSTEM", "SCALE_TYP", "CLASS", "STATUS", "LONG_COMMON_NAME",
            "CLASSTYPE")
IMPORT_FILE_NAME = "loinc_import.csv"


@dataclass(frozen=True)
class ImportSummary:
    read: int
    written: int
    skipped_inactive: int
    skipped_not_lab: int
    skipped_invalid: int
    skipped_panels: int
    path: Path


def default_import_path(index_dir: Path) -> Path:
    return index_dir / "reference" / IMPORT_FILE_NAME


def count_data_rows(path: Path) -> int:
    with open(path, "rb") as handle:
        return max(0, sum(1 for _ in handle) - 1)


def _rows(path: Path) -> Iterator[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} is not a LOINC table: missing columns {', '.join(missing)}")
        yield from reader


def to_reference_row(row: dict[str, str]) -> dict[str, str]:
    units = row.get("EXAMPLE_UCUM_UNITS") or row.get("EXAMPLE_UNITS") or ""
    units = "|".join(u.strip() for u in units.replace(";", "|").split("|") if u.strip())
    out = {"code": row["LOINC_NUM"].strip(), "long_common_name": row["LONG_COMMON_NAME"].strip(),
           "short_name": (row.get("SHORTNAME") or "").strip(), "component": row["COMPONENT"].strip(),
           "property": row["PROPERTY"].strip(), "time": (row.get("TIME_ASPCT") or "").strip() or "Pt",
           "system": row["SYSTEM"].strip(), "scale": row["SCALE_TYP"].strip(),
           "method": (row.get("METHOD_TYP") or "").strip(), "class": row["CLASS"].strip(), "units": units,
           "category": ""}
    [entry] = Reference.from_rows([out]).entries
    out["category"] = reference_category(entry)
    return out


def import_loinc_table(source: str | Path, into: str | Path,
                       progress: Callable[[Iterator[dict[str, str]], int], Iterator[dict[str, str]]] | None = None
                       ) -> ImportSummary:
    """Read ``source`` (official Loinc.csv), write the active lab rows to ``into`` (atomically)."""
    source, into = Path(source), Path(into)
    rows: Iterator[dict[str, str]] = _rows(source)
    if progress is not None:
        rows = progress(rows, count_data_rows(source))
    read = written = inactive = not_lab = invalid = panels = 0
    into.parent.mkdir(parents=True, exist_ok=True)
    tmp = into.with_name(f".{into.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            read += 1
            if (row.get("STATUS") or "").strip().upper() != "ACTIVE":
                inactive += 1
                continue
            if (row.get("CLASSTYPE") or "").strip() != "1":
                not_lab += 1
                continue
            if (row.get("CLASS") or "").upper().startswith("PANEL") or (row.get("PROPERTY") or "").strip() == "-":
                panels += 1  # panels name a group of tests, never a result row on a report
                continue
            code = (row.get("LOINC_NUM") or "").strip()
            if not is_valid_code(code) or not (row.get("LONG_COMMON_NAME") or "").strip():
                invalid += 1
                continue
            writer.writerow(to_reference_row(row))
            written += 1
    os.replace(tmp, into)
    return ImportSummary(read, written, inactive, not_lab, invalid, panels, into)
