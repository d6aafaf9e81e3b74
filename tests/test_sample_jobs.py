"""The bundled sample reports parse as jobs, and the held-out evaluation list is well formed."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from worker.contract import new_job
from worker.local.sample_jobs import load_sample, sample_names
from worker.mapping.loinc import is_valid_code
from worker.mapping.types import CATEGORIES, OTHERS

HELDOUT = Path(__file__).resolve().parent / "data" / "heldout_reports.csv"
HELDOUT_EXTENDED = HELDOUT.with_name("heldout_extended_reports.csv")
HELDOUT_COLUMNS = ["test_name", "test_unit", "specimen", "expected_loinc", "expected_category", "note"]
GUIDE_SAMPLE = [
    {"test_name": "Hemoglobin", "test_value": "14.5", "test_unit": "g/dL"},
    {"test_name": "WBC Count", "test_value": "7.2", "test_unit": "K/uL"},
]


def heldout_rows(path: Path = HELDOUT) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == HELDOUT_COLUMNS
        return list(reader)


def test_there_are_realistic_samples_besides_the_guide_sample():
    names = sample_names()
    assert "guide_sample" in names
    assert 8 <= len(names) - 1 <= 12


@pytest.mark.parametrize("name", sample_names())
def test_every_sample_parses_with_the_job_contract(name):
    tests = load_sample(name)
    job = new_job(123, 456, tests)
    assert job.test_count == len(tests)
    assert all(test.test_name for test in job.tests)
    if name != "guide_sample":
        assert 10 <= len(tests) <= 30


def test_guide_sample_is_exactly_the_operators_guide_job():
    assert load_sample("guide_sample") == GUIDE_SAMPLE
    assert load_sample("guide_sample.json") == GUIDE_SAMPLE


def test_unknown_sample_names_say_which_exist():
    with pytest.raises(KeyError, match="guide_sample"):
        load_sample("no_such_report")


def test_heldout_list_is_large_enough_and_covers_every_category():
    rows = heldout_rows()
    assert len(rows) >= 180
    counts = Counter(row["expected_category"] for row in rows)
    assert set(counts) == set(CATEGORIES)


@pytest.mark.parametrize("path", [HELDOUT, HELDOUT_EXTENDED], ids=lambda p: p.name)
def test_heldout_codes_have_valid_check_digits_and_categories_are_known(path):
    for row in heldout_rows(path):
        assert row["test_name"].strip(), row
        assert row["expected_category"] in CATEGORIES, row
        code = row["expected_loinc"]
        if code:
            assert is_valid_code(code), row


def test_heldout_non_tests_have_no_code_and_category_others():
    non_tests = [row for row in heldout_rows() if row["note"].startswith("not a test")]
    assert len(non_tests) >= 10
    for row in non_tests:
        assert row["expected_loinc"] == "", row
        assert row["expected_category"] == OTHERS, row
    # and every row without a code is one of the non-tests
    assert all(row["note"].startswith("not a test") for row in heldout_rows() if not row["expected_loinc"])


@pytest.mark.parametrize("path", [HELDOUT, HELDOUT_EXTENDED], ids=lambda p: p.name)
def test_heldout_rows_are_distinct(path):
    keys = [(row["test_name"].lower(), row["test_unit"].lower(), row["specimen"].lower())
            for row in heldout_rows(path)]
    assert len(keys) == len(set(keys))


def test_samples_do_not_leak_heldout_phrasings():
    heldout_names = {row["test_name"].strip().lower() for row in heldout_rows()}
    for name in sample_names():
        if name == "guide_sample":
            continue
        for test in load_sample(name):
            assert test["test_name"].strip().lower() not in heldout_names, (name, test["test_name"])


def test_extended_heldout_list_names_only_the_extension_s_codes():
    from worker.mapping.reference import PACKAGED_LOINC_DIR, read_reference_csv

    extension = {e.code: e.category for path in sorted(PACKAGED_LOINC_DIR.glob("c_*.csv"))
                 for e in read_reference_csv(path)}
    rows = heldout_rows(HELDOUT_EXTENDED)
    assert len(rows) >= 100
    assert all(extension.get(row["expected_loinc"]) == row["expected_category"] for row in rows)
