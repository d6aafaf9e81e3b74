"""The engine's own knowledge files: synonyms, lexicon, category rules, calibration."""

from __future__ import annotations

import csv
from collections import defaultdict

from worker.mapping.categorize import categorize, load_rules
from worker.mapping.decide import Calibration, calibration_path
from worker.mapping.loinc import is_valid_code
from worker.mapping.names import system_group, token_key
from worker.mapping.normalize import KINDS, LEXICON_PATH, SCALE_HINTS, UNIT_CLASS_PROPERTIES, normalise_name
from worker.mapping.reference import Reference
from worker.mapping.synonyms import SYNONYMS_PATH, read_synonyms
from worker.mapping.types import CATEGORIES


def test_every_synonym_points_to_a_code_of_the_shipped_reference():
    reference = Reference.load()
    synonyms = read_synonyms()
    assert len(synonyms) > 500
    missing = sorted({s.code for s in synonyms if s.code not in reference})
    assert not missing, f"synonyms point to codes that are not in worker/mapping/data/loinc/*.csv: {missing}"
    assert all(is_valid_code(s.code) for s in synonyms)


def test_synonym_file_shape():
    with open(SYNONYMS_PATH, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and set(rows[0]) == {"code", "terms"}
    codes = [r["code"] for r in rows]
    assert len(codes) == len(set(codes)), "one row per code"
    for row in rows:
        terms = row["terms"].split("|")
        assert all(t.strip() == t and t for t in terms), row


# Abbreviations that name two tests of one specimen on purpose: the unit tells them apart.
UNIT_DECIDES = {"pct"}  # procalcitonin (ng/mL) or plateletcrit (%)


def test_synonyms_do_not_send_one_name_to_two_tests_of_the_same_specimen():
    reference = Reference.load()
    concepts = defaultdict(set)
    for synonym in read_synonyms():
        if synonym.term in UNIT_DECIDES:
            continue
        entry = reference.by_code[synonym.code]
        norm = normalise_name(synonym.term)
        # a method the term names tells its rows apart ("Malaria PCR" and "Rapid malaria test")
        key = (token_key(norm.expanded), norm.absolute, norm.methods, system_group(entry.system))
        concepts[key].add(entry.component.split("/")[0].lower())
    clashes = {k: v for k, v in concepts.items() if len(v) > 1}
    assert not clashes


def test_lexicon_rows_are_well_formed():
    with open(LEXICON_PATH, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["kind"] for r in rows} == set(KINDS)
    for row in rows:
        assert row["term"].strip(), row
        if row["kind"] in ("spelling", "abbreviation"):
            assert row["replacement"].strip(), row
        if row["kind"] == "property":
            properties = set().union(*UNIT_CLASS_PROPERTIES.values())
            assert row["replacement"] in SCALE_HINTS | properties, row
        if row["kind"] == "noise":
            assert not row["replacement"], row


def test_category_rules_name_only_app_categories():
    assert load_rules()
    assert categorize("hemoglobin", "Bld", "HEM/BC") == "Complete Blood Count (CBC)"
    assert categorize("creatinine", "Urine", "CHEM") == "Urine & Stool Tests"
    assert categorize("troponin i cardiac", "Ser/Plas", "CHEM") == "Cardiac Markers"
    assert categorize("prothrombin time", "PPP", "COAG") == "Others"
    assert categorize("zzz") == "Others"


def test_reference_categories_are_app_categories():
    assert {e.category for e in Reference.load().entries} <= set(CATEGORIES)


def test_the_packaged_models_calibration_loads_and_is_monotonic_in_score():
    assert calibration_path("all-MiniLM-L6-v2").is_file()
    calibration = Calibration.for_model("all-MiniLM-L6-v2")
    assert calibration.model == "all-MiniLM-L6-v2"
    base = {name: 0.0 for name, _ in calibration.weights} | {"score": 0.5}
    low = calibration.confidence(base)
    high = calibration.confidence({**base, "score": 1.4})
    assert 0.0 <= low < high <= 1.0
    assert 0.0 < calibration.threshold < 1.0
