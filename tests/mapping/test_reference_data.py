"""Every row of every curated LOINC reference CSV in worker/mapping/data/loinc/ is well formed.

Covers all helpers' files (a_*.csv, b_*.csv, ...): the engine loads every CSV in that folder.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from worker.mapping.loinc import is_valid_code
from worker.mapping.types import CATEGORIES

DATA_DIR = Path(__file__).resolve().parents[2] / "worker" / "mapping" / "data" / "loinc"
HEADER = ["code", "long_common_name", "short_name", "component", "property", "time", "system", "scale", "method",
          "class", "units", "category"]
REQUIRED = [column for column in HEADER if column not in ("units", "short_name", "method", "class")]
SCALES = {"Qn", "Ord", "OrdQn", "Nom", "Nar", "Doc", "Multi", "Set", "-"}
MIN_TOTAL_ROWS = 2000

CSV_FILES = sorted(DATA_DIR.glob("*.csv"))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _all_rows() -> list[tuple[str, int, dict[str, str]]]:
    return [(path.name, line, row) for path in CSV_FILES for line, row in enumerate(_rows(path), start=2)]


def test_reference_folder_has_csv_files():
    assert CSV_FILES, f"no CSV files in {DATA_DIR}"


@pytest.mark.parametrize("path", CSV_FILES, ids=lambda p: p.name)
def test_header_is_exact(path: Path):
    with path.open(newline="", encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == HEADER


@pytest.mark.parametrize("path", CSV_FILES, ids=lambda p: p.name)
def test_every_row_is_complete_and_valid(path: Path):
    problems = []
    for line, row in enumerate(_rows(path), start=2):
        where = f"{path.name}:{line}"
        if None in row or len(row) != len(HEADER):
            problems.append(f"{where}: wrong number of columns")
            continue
        for column in REQUIRED:
            if not (row[column] or "").strip():
                problems.append(f"{where}: empty {column}")
        if row["long_common_name"] != row["long_common_name"].strip():
            problems.append(f"{where}: long_common_name has surrounding whitespace")
        if not is_valid_code(row["code"]):
            problems.append(f"{where}: {row['code']!r} is not a LOINC code with a valid check digit")
        if row["category"] not in CATEGORIES:
            problems.append(f"{where}: unknown category {row['category']!r}")
        if row["scale"] not in SCALES:
            problems.append(f"{where}: unknown scale {row['scale']!r}")
    assert not problems, "\n".join(problems)


def test_no_duplicate_codes_across_files():
    seen: dict[str, str] = {}
    duplicates = []
    for name, line, row in _all_rows():
        code = row["code"]
        if code in seen:
            duplicates.append(f"{code}: {seen[code]} and {name}:{line}")
        else:
            seen[code] = f"{name}:{line}"
    assert not duplicates, "\n".join(duplicates)


def test_reference_has_at_least_2000_rows():
    total = len(_all_rows())
    assert total >= MIN_TOTAL_ROWS, f"only {total} reference rows; the reference promises at least {MIN_TOTAL_ROWS}"


def test_every_category_is_the_one_the_written_rules_give():
    """Categories are set by rule (data/category_rules.csv), never by hand, so they stay consistent."""
    from worker.mapping.categorize import reference_category
    from worker.mapping.reference import Reference

    wrong = [f"{e.code} {e.long_common_name}: {e.category!r}, the rules say {reference_category(e)!r}"
             for e in Reference.load().entries if reference_category(e) != e.category]
    assert not wrong, "\n".join(wrong[:30])


# How a long common name spells the axes (LOINC builds the name from them): "Component [Property] in
# <time> System by Method --challenge". Each bracket names one property; each system phrase one system.
BRACKET_PROPERTIES = {
    "mass/volume": {"MCnc"}, "moles/volume": {"SCnc"}, "#/volume": {"NCnc"}, "enzymatic activity/volume": {"CCnc"},
    "units/volume": {"ACnc"}, "presence": {"PrThr"}, "titer": {"Titr"}, "mass/time": {"MRat"},
    "moles/time": {"SRat"}, "volume": {"Vol"}, "mass ratio": {"MRto"}, "molar ratio": {"SRto"}, "ratio": {"Ratio"},
    "entitic volume": {"EntVol"}, "entitic mass": {"EntMass"}, "entitic mean volume": {"EntMeanVol"},
    "entitic mass/volume": {"EntMCnc"}, "distwidth": {"DistWidth"}, "velocity": {"Vel"},
    "volume fraction": {"VFr"}, "mass fraction": {"MFr"}, "molar fraction": {"SFr"}, "#/area": {"Naric"},
    "identifier": {"Prid"}, "type": {"Type"}, "multiple of the median": {"MoM"}, "osmolality": {"Osmol"},
    "partial pressure": {"PPres"}, "volume rate": {"VRat"}, "volume rate/area": {"ArVRat"},
    "enzymatic activity/mass": {"CCnt"}, "units/mass": {"ACnt"}, "moles/mass": {"SCnt"}, "mass/mass": {"MCnt"},
    "time": {"Time"}, "interpretation": {"Imp"}, "mass or moles/volume": {"MSCnc"}, "# ratio": {"NRto"},
    "#": {"Num"}, "length": {"Len"}, "relative time": {"RelTime"}, "catalytic activity/volume": {"CCnc"},
    "time ratio": {"RelTime"},
}
SCALE_OF_PROPERTY = {"PrThr": {"Ord", "Qn", "OrdQn"}, "Type": {"Nom"}, "Prid": {"Nom"}, "Imp": {"Nar", "Nom", "Ord"}}
SYSTEM_PHRASES = {
    "serum or plasma": "Ser/Plas", "serum": "Ser", "plasma": "Plas", "blood": "Bld", "venous blood": "BldV",
    "arterial blood": "BldA", "capillary blood": "BldC", "cord blood": "BldCo", "mixed venous blood": "BldMV",
    "urine": "Urine", "urine sediment": "Urine sed", "stool": "Stool", "cerebral spinal fluid": "CSF",
    "body fluid": "Body fld", "pleural fluid": "Plr fld", "peritoneal fluid": "Periton fld",
    "synovial fluid": "Synv fld", "amniotic fluid": "Amnio fld", "platelet poor plasma": "PPP",
    "platelet rich plasma": "PRP", "red blood cells": "RBC", "semen": "Semen", "serum, plasma or blood": "Ser/Plas/Bld",
}
TIME_PHRASES = {**{f"{hours} hour": f"{hours}H" for hours in (1, 2, 4, 6, 8, 10, 12, 24, 48, 72)},
                "unspecified time": "XXX"}


def _axes_problems(row: dict[str, str]) -> list[str]:
    name = re.sub(r" (?:Nominal|Narrative|Qualitative)$", "", row["long_common_name"].split(" --")[0])
    problems = []
    by = name.split(" by ", 1)
    if (by[1].strip() if len(by) > 1 else "") != row["method"]:
        problems.append(f"method {row['method']!r} is not the name's 'by ...'")
    bracket = re.search(r"\[([^\]]+)\]", name)
    if re.search(r"actual/normal", name, re.IGNORECASE):  # a share of normal: of an antigen, a time, an activity
        wanted = "RelMCnc" if " Ag actual/normal" in name else (
            "RelTime" if re.search(r"(?:aPTT|time) actual/normal", name, re.IGNORECASE) else "RelACnc")
        if row["property"] != wanted:
            problems.append(f"property {row['property']!r} for an actual/normal ratio ({wanted})")
    if bracket:
        allowed = BRACKET_PROPERTIES.get(bracket.group(1).lower())
        if allowed is None or row["property"] not in allowed:
            problems.append(f"property {row['property']!r} does not match [{bracket.group(1)}]")
    allowed_scales = SCALE_OF_PROPERTY.get(row["property"], {"Qn", "Ord", "Nom", "Nar", "OrdQn"})
    if row["scale"] not in allowed_scales:
        problems.append(f"scale {row['scale']!r} does not fit property {row['property']!r}")
    place = re.search(r"\s(?:in|of)\s+((?:\d+ hour |unspecified time )?[A-Z][^\[]*?)$", by[0])
    if place:
        phrase = place.group(1)
        time = next((code for words, code in TIME_PHRASES.items() if phrase.startswith(words + " ")), "Pt")
        if time != row["time"]:
            problems.append(f"time {row['time']!r} does not match {phrase!r}")
        phrase = phrase.removeprefix(next((w + " " for w in TIME_PHRASES if phrase.startswith(w + " ")), ""))
        system = SYSTEM_PHRASES.get(phrase.lower())
        if system is not None and system != row["system"]:
            problems.append(f"system {row['system']!r} does not match {phrase!r}")
    elif row["time"] != "Pt":
        problems.append(f"time {row['time']!r} but the name names no timed collection")
    return problems


@pytest.mark.parametrize("path", CSV_FILES, ids=lambda p: p.name)
def test_the_axes_agree_with_the_long_common_name(path: Path):
    problems = [f"{path.name}:{line} {row['code']}: {problem}" for line, row in enumerate(_rows(path), start=2)
                for problem in _axes_problems(row)]
    assert not problems, "\n".join(problems[:40])


@pytest.mark.parametrize("path", CSV_FILES, ids=lambda p: p.name)
def test_antibody_components_are_written_as_loinc_writes_them(path: Path):
    """The long common name says "Hepatitis A virus IgM Ab"; the component axis says "Hepatitis A virus Ab.IgM"
    (the engine groups a test's variants by component, so one spelling per analyte matters)."""
    written_like_the_name = [row["code"] for row in _rows(path)
                             if re.search(r"\bIg[GMAE](?:\+Ig[GMAE])? Ab$", row["component"])]
    assert not written_like_the_name
