"""Report terms for reference codes (``data/synonyms.csv``: ``code,terms``, terms ``|``-separated)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from worker.mapping.reference import DATA_DIR

SYNONYMS_PATH = DATA_DIR / "synonyms.csv"


@dataclass(frozen=True)
class Synonym:
    term: str
    code: str


def read_synonyms(path: str | Path = SYNONYMS_PATH) -> list[Synonym]:
    """``code,terms`` rows (terms ``|``-separated) -> one Synonym per term."""
    path = Path(path)
    if not path.is_file():
        return []
    synonyms: list[Synonym] = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            code = (row.get("code") or "").strip()
            for term in (row.get("terms") or "").split("|"):
                if code and term.strip():
                    synonyms.append(Synonym(term.strip(), code))
    return synonyms
