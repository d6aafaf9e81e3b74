"""The LOINC reference the engine maps onto: packaged CSVs plus optional user extensions.

A reference is a plain list of rows read from CSV files with the header
``code,long_common_name,short_name,component,property,time,system,scale,method,class,units,category``
(units ``|``-separated). The packaged rows live in ``worker/mapping/data/loinc/*.csv``; rows
imported from the official LOINC table (``python -m worker loinc import``) live in CSVs under
``<index dir>/reference/``. When both hold a code, the imported row (the official release) gives
LOINC's own fields (long common name and axes) and the packaged row keeps the app's category and
the typical units.

The reference's *version* is a short hash of its content, so an embedding index computed for
one reference is never reused for another.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from worker.mapping.types import CATEGORIES, OTHERS

DATA_DIR = Path(__file__).resolve().parent / "data"
PACKAGED_LOINC_DIR = DATA_DIR / "loinc"
COLUMNS = ("code", "long_common_name", "short_name", "component", "property", "time", "system", "scale", "method",
           "class", "units", "category")


@dataclass(frozen=True, slots=True)
class ReferenceEntry:
    code: str
    long_common_name: str
    component: str
    property: str
    system: str
    scale: str
    loinc_class: str
    units: tuple[str, ...]
    category: str
    source: str = "packaged"
    short_name: str = ""  # LOINC's short name, a name record systems print
    time: str = "Pt"
    method: str = ""


def _row_to_entry(row: dict[str, str], source: str) -> ReferenceEntry | None:
    code = (row.get("code") or "").strip()
    name = (row.get("long_common_name") or "").strip()
    if not code or not name:
        return None
    category = (row.get("category") or "").strip()
    if category not in CATEGORIES:
        category = OTHERS
    units = tuple(u.strip() for u in (row.get("units") or "").split("|") if u.strip())
    return ReferenceEntry(
        code=code,
        long_common_name=name,
        component=(row.get("component") or "").strip(),
        property=(row.get("property") or "").strip(),
        system=(row.get("system") or "").strip(),
        scale=(row.get("scale") or "").strip(),
        loinc_class=(row.get("class") or "").strip(),
        units=units,
        category=category,
        source=source,
        short_name=(row.get("short_name") or "").strip(),
        time=(row.get("time") or "").strip() or "Pt",
        method=(row.get("method") or "").strip(),
    )


def read_reference_csv(path: str | Path, source: str = "packaged") -> list[ReferenceEntry]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [e for e in (_row_to_entry(r, source) for r in csv.DictReader(handle)) if e is not None]


def reference_files(extra_dirs: Iterable[str | Path] = ()) -> list[tuple[Path, str]]:
    """Every reference CSV, packaged first (sorted by name), then the extension directories."""
    files: list[tuple[Path, str]] = []
    if PACKAGED_LOINC_DIR.is_dir():
        files += [(p, "packaged") for p in sorted(PACKAGED_LOINC_DIR.glob("*.csv"))]
    for directory in extra_dirs:
        directory = Path(directory)
        if directory.is_dir():
            files += [(p, "imported") for p in sorted(directory.glob("*.csv"))]
    return files


def refreshed(packaged: ReferenceEntry, official: ReferenceEntry) -> ReferenceEntry:
    """A packaged row with the official release's name and axes (a newer release may reword a name)."""
    return dataclasses.replace(packaged, long_common_name=official.long_common_name, component=official.component,
                               property=official.property, system=official.system, scale=official.scale,
                               loinc_class=official.loinc_class, short_name=official.short_name or packaged.short_name,
                               time=official.time, method=official.method)


class Reference:
    """An ordered, de-duplicated set of reference entries with a content version."""

    def __init__(self, entries: Sequence[ReferenceEntry]):
        seen: dict[str, ReferenceEntry] = {}
        for entry in entries:  # packaged rows come first
            known = seen.get(entry.code)
            if known is None:
                seen[entry.code] = entry
            elif known.source == "packaged" and entry.source == "imported":
                seen[entry.code] = refreshed(known, entry)
        self.entries: list[ReferenceEntry] = list(seen.values())
        self.by_code: dict[str, ReferenceEntry] = seen
        self.index_of: dict[str, int] = {e.code: i for i, e in enumerate(self.entries)}
        digest = hashlib.sha256()
        for e in self.entries:
            digest.update("\x1f".join((e.code, e.long_common_name, e.short_name, e.component, e.property, e.time,
                                       e.system, e.scale, e.method, e.loinc_class, "|".join(e.units),
                                       e.category)).encode())
            digest.update(b"\n")
        self.version = digest.hexdigest()[:12]

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, code: object) -> bool:
        return code in self.by_code

    @classmethod
    def load(cls, extra_dirs: Iterable[str | Path] = ()) -> Reference:
        entries: list[ReferenceEntry] = []
        for path, source in reference_files(extra_dirs):
            entries += read_reference_csv(path, source)
        return cls(entries)

    @classmethod
    def from_rows(cls, rows: Iterable[dict[str, str]]) -> Reference:
        """Build from dicts with the CSV's columns (tests build small fixture references this way)."""
        return cls([e for e in (_row_to_entry({k: str(v) for k, v in r.items()}, "packaged") for r in rows) if e])
