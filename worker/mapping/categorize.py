"""The app's category, by written rule.

Rules (``data/category_rules.csv``: field, regex, category; first match wins) look at a test's
system, its LOINC class and its text (the analyte and method, written the way normalised names are:
abbreviations expanded). Every row of the curated reference carries the category these rules give
it (a test checks that), rows imported from the official LOINC table get theirs the same way, and an
abstaining engine takes the category of the query's own words.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from worker.mapping.reference import ReferenceEntry
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


def categorize(text: str, system: str = "", loinc_class: str = "") -> str:
    """The first rule matching the system, the class or the (normalised, lower-case) text; else Others."""
    fields = {"system": (system or "").lower(), "class": (loinc_class or "").lower(), "text": (text or "").lower()}
    for rule in load_rules():
        if rule.pattern.search(fields[rule.field]):
            return rule.category
    return OTHERS


def reference_category(entry: ReferenceEntry) -> str:
    """The category the rules give a reference row: its component and method, its system and class."""
    from worker.mapping.names import alias_text, entry_method
    from worker.mapping.normalize import default_lexicon

    # a single letter in a LOINC component is never a report abbreviation ("K Ab" is the Kell antigen, not potassium)
    lexicon = default_lexicon()
    words = [w for w in f"{entry.component.replace('^', ' ')} {entry_method(entry)}".split()
             if not (len(w) == 1 and w.lower() in lexicon.abbreviations)]
    text = alias_text(" ".join(words), lexicon)
    return categorize(text, entry.system, entry.loinc_class)


def specimen_system(specimen: str | None) -> str:
    """The LOINC system of a normalised specimen, as far as the category rules care."""
    return {"urine": "Urine", "stool": "Stool", "csf": "CSF", "fluid": "Body fld", "pleural": "Plr fld",
            "peritoneal": "Periton fld", "synovial": "Synv fld"}.get(specimen or "", "")
