"""The app's category from evidence other than a matched reference row.

Rules (``data/category_rules.csv``: field, regex, category; first match wins) look at a row's
system, LOINC class and names. They categorise rows imported from the official LOINC table and
give an abstaining engine a category from the query's own words.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from worker.mapping.types import CATEGORIES, OTHERS

RULES_PATH = Path(__file__).resolve().parent / "data" / "category_rules.csv"


@dataclass(frozen=True)
class Rule:
    field: str
    pattern: re.Pattern[str]
    category: str


@lru_cache(maxsize=1)
def load_rules(path: Path = RULES_PATH) -> tuple[Rule, ...]:
    with open(path, newline="", encoding="utf-8") as handle:
        rules = tuple(Rule(r["field"], re.compile(r["pattern"], re.IGNORECASE), r["category"])
                      for r in csv.DictReader(handle))
    unknown = [r.category for r in rules if r.category not in CATEGORIES]
    if unknown:
        raise ValueError(f"category rules name unknown categories: {unknown}")
    return rules


def categorize(name: str, system: str = "", loinc_class: str = "") -> str:
    """The first rule matching the system, the class or the (normalised, lower-case) name; else Others."""
    fields = {"system": system or "", "class": loinc_class or "", "name": name or ""}
    for rule in load_rules():
        if rule.pattern.search(fields[rule.field]):
            return rule.category
    return OTHERS


def specimen_system(specimen: str | None) -> str:
    return {"urine": "Urine", "stool": "Stool"}.get(specimen or "", "")
