"""The engine on the packaged all-MiniLM-L6-v2 model: well-known names, non-tests, the contract's shape."""

from __future__ import annotations

import pytest

from worker.mapping.types import CATEGORIES, MATCH_METHODS, LabTestQuery, MappingResult

WELL_KNOWN = [
    ("Hemoglobin", "g/dL", None, "718-7"),
    ("S. Creatinine", "mg/dL", None, "2160-0"),
    ("creatinine", "umol/L", None, "14682-9"),
    ("Serum Creatinine", "µmol/L", None, "14682-9"),
    ("Urine creatinine", "mg/dL", None, "2161-8"),
    ("SGPT", "U/L", None, "1742-6"),
    ("S.G.O.T.", "IU/L", None, "1920-8"),
    ("HAEMOGLOBIN (Hb)*", "gm/dl", None, "718-7"),
    ("Polymorphs", "%", None, "770-8"),
    ("Abs. Neutrophils", "x10^3/uL", None, "751-8"),
    ("Total Leucocyte Count (TLC)", "cells/cumm", None, "6690-2"),
    ("FBS", "mg/dL", None, "1558-6"),
    ("Glycosylated Haemoglobin (HbA1c), HPLC", "%", None, "4548-4"),
    ("TSH - Ultrasensitive", "uIU/mL", None, "3016-3"),
    ("Sodium (Na+)", "mmol/L", None, "2951-2"),
    ("Packed Cell Volume", "%", None, "4544-3"),
    ("Protein", "mg/dL", "Urine", "2888-6"),
    ("Total Protein", "g/dL", None, "2885-2"),
]
NON_TESTS = ["Doctor's remarks", "Page 2 of 3", "Sample type", "Remarks:", "Page 1/2", "** End of Report **",
             "Specimen", "Interpretation"]


@pytest.mark.parametrize(("name", "unit", "specimen", "code"), WELL_KNOWN)
def test_well_known_names_on_fixture_reference(fixture_engine, name, unit, specimen, code):
    [result] = fixture_engine.map([LabTestQuery(name=name, unit=unit, specimen=specimen)])
    assert result.loinc_code == code, result
    assert not result.needs_review
    assert result.match_method in ("exact", "synonym", "lexical", "embedding")
    assert result.candidates[0] == code
    assert result.loinc_name == fixture_engine.describe(code)[0]


def test_non_tests_never_get_a_code(fixture_engine):
    results = fixture_engine.map([LabTestQuery(name=n) for n in NON_TESTS])
    for name, result in zip(NON_TESTS, results, strict=True):
        assert result.loinc_code is None, (name, result)
        assert result.match_method == "none"
        assert result.category == "Others"


def test_map_keeps_order_and_shape(fixture_engine):
    queries = [LabTestQuery("Hemoglobin", "g/dL"), LabTestQuery("Page 2 of 3"), LabTestQuery("SGPT", "U/L"),
               LabTestQuery("Hemoglobin", "g/dL")]
    results = fixture_engine.map(queries)
    assert len(results) == 4
    assert [r.loinc_code for r in results] == ["718-7", None, "1742-6", "718-7"]
    for result in results:
        assert isinstance(result, MappingResult)
        assert result.category in CATEGORIES
        assert result.match_method in MATCH_METHODS
        assert 0.0 <= result.confidence <= 1.0
        assert len(result.candidates) <= 5
        assert len(result.candidate_scores) == len(result.candidates)
        assert list(result.candidate_scores) == sorted(result.candidate_scores, reverse=True)
    assert results[0].candidate_scores[0] > 0.5
    assert fixture_engine.map([]) == []


def test_gibberish_abstains(fixture_engine):
    [result] = fixture_engine.map([LabTestQuery("Zorblax quantum flux", "furlongs")])
    assert result.loinc_code is None
    assert result.needs_review
    assert result.match_method == "none"
    assert result.category in CATEGORIES


def test_key_is_normalised(fixture_engine):
    key = fixture_engine.key
    assert key(LabTestQuery("S. Creatinine", "mg/dl")) == key(LabTestQuery("Serum Creatinine", "mg/dL"))
    assert key(LabTestQuery("Creatinine*", "mg/dL")) == key(LabTestQuery("CREATININE", "mg/dL"))
    assert key(LabTestQuery("Urine Creatinine", "mg/dL")) != key(LabTestQuery("Creatinine", "mg/dL"))
    assert key(LabTestQuery("Creatinine", "umol/L")) != key(LabTestQuery("Creatinine", "mg/dL"))
    name, unit = key(LabTestQuery("Haemoglobin", "gm/dl"))
    assert (name, unit) == key(LabTestQuery("Hb", "g/dL"))


def test_describe(fixture_engine):
    assert fixture_engine.describe("718-7") == ("Hemoglobin [Mass/volume] in Blood", "Complete Blood Count (CBC)")
    assert fixture_engine.describe("0000-0") is None


def test_model_version_names_model_and_reference(fixture_engine):
    assert fixture_engine.model_version.startswith("all-MiniLM-L6-v2+ref-")
