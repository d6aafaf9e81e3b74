"""The engine on the shipped reference and synonyms with the packaged model."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.mapping.types import CATEGORIES, LabTestQuery

DEV_LISTS = [Path(__file__).parent / "data" / name for name in ("dev_reports.csv", "dev_paraphrases.csv")]


@pytest.mark.parametrize(("name", "unit", "specimen", "code"), [
    ("Hemoglobin", "g/dL", None, "718-7"),
    ("Plasma Cells", "%", None, "13047-6"),  # "plasma" names the cells here, not the specimen
    ("Anticardiolipin Antibody IgG", "GPL U/mL", None, "8065-5"),
    ("CSF Glucose", "mg/dL", None, "2342-4"),
    ("Pleural fluid WBC count", "cells/uL", None, "26467-1"),  # the synonym's concept, in the named fluid
    ("WBC", "/uL", "Body fluid", "26466-3"),
    ("Factor VIII", "%", None, "3209-4"),
    ("Teardrop cells", None, None, "7791-7"),
    ("Vancomycin", "ug/mL", None, "20578-1"),  # no timing named: not the trough code
    ("S. Creatinine", "mg/dL", None, "2160-0"),
    ("creatinine", "umol/L", None, "14682-9"),
    ("Creatinine", "mg/dL", "Urine", "2161-8"),
    ("Glucose", "mmol/L", None, "14749-6"),
    ("Lymphocytes", "%", None, "736-9"),
    ("Lymphocytes", "10^3/uL", None, "731-0"),
    ("Sodium, Whole Blood", "mmol/L", None, "2947-0"),
    ("PCT", "ng/mL", None, "33959-8"),
    ("PCT", "%", None, "51637-7"),
    ("HGB VEN", "g/dL", None, "30350-3"),  # the named blood beats the usual whole-blood code
    ("HGB ART", "g/dL", None, "30313-1"),
    ("Glucose fingerstick", "mg/dL", None, "41653-7"),
    ("Protein, body fluid", "g/dL", None, "2881-1"),  # no fluid named: the generic code, not pleural
    ("Amylase, Fluid", "U/L", None, "1795-4"),
    ("D-Dimer", "ng/mL DDU", None, "48066-5"),  # the unit names the D-dimer units variant
    ("D-Dimer", "ug/mL FEU", None, "48065-7"),
    ("UA Blood", None, None, "5794-3"),
    ("Blood Culture #1", None, None, "600-7"),
    ("Sodium mmol/L", None, None, "2951-2"),  # the unit printed in the name
    ("METHYLMALONIC ACID", "nmol/L", None, "13964-2"),  # LOINC's anion name: Methylmalonate
    ("Nucleated red cells", "x10^9/L", None, "771-6"),  # a count, not per 100 leukocytes
    ("Urine dipstick blood", None, None, "5794-3"),
])
def test_well_known_names(engine, name, unit, specimen, code):
    [result] = engine.map([LabTestQuery(name=name, unit=unit, specimen=specimen)])
    assert result.loinc_code == code, result


@pytest.mark.parametrize(("name", "unit", "code"), [
    ("Hemoglobin", "g/dL", "718-7"), ("S. Creatinine", "mg/dL", "2160-0"), ("Glucose", "mmol/L", "14749-6"),
    ("SGPT", "U/L", "1742-6"), ("TSH", "uIU/mL", "3016-3"), ("Factor VIII", "%", "3209-4"),
])
def test_common_names_with_their_unit_need_no_review(engine, name, unit, code):
    [result] = engine.map([LabTestQuery(name=name, unit=unit)])
    assert result.loinc_code == code, result
    assert not result.needs_review, result


@pytest.mark.parametrize("name", ["Doctor's remarks", "Page 2 of 3", "Sample type"])
def test_non_tests_get_no_code(engine, name):
    [result] = engine.map([LabTestQuery(name=name)])
    assert result.loinc_code is None and result.match_method == "none" and result.category == "Others"


def test_unknown_tests_abstain_with_a_category(engine):
    [widal, nonsense] = engine.map([LabTestQuery("Widal - S. Typhi 'O'", value="1:80"),
                                    LabTestQuery("Quux frobnication index", "zz")])
    assert widal.loinc_code is None and widal.needs_review and widal.category == "Infection Markers"
    assert nonsense.loinc_code is None and nonsense.needs_review and nonsense.category in CATEGORIES


def test_development_list_does_not_regress(engine):
    """Our own development lists (not the held-out list): guard against regressions while tuning."""
    from worker.mapping.evaluate import evaluate_file

    for path in DEV_LISTS:
        report = evaluate_file(engine, path)
        assert report.coverage == 1.0, path
        assert report.top1 >= 0.95, path
        assert report.category_accuracy >= 0.97, path
        assert report.no_code_rows == 0 or report.no_code_accuracy == 1.0, path


def test_sample_jobs_map_to_app_categories(engine):
    from worker.local.sample_jobs import load_sample, sample_names

    for sample in sample_names():
        tests = load_sample(sample)
        results = engine.map([LabTestQuery(t["test_name"], t.get("test_unit"), t.get("test_value"),
                                           t.get("specimen")) for t in tests])
        assert len(results) == len(tests)
        assert all(r.category in CATEGORIES for r in results)
        answered = [r for r in results if r.loinc_code]
        assert len(answered) >= 0.6 * len(results), sample


def test_per_field_units_mean_urine_sediment(engine):
    [pus, rbc, wbc] = engine.map([LabTestQuery("Pus cells", "/HPF"), LabTestQuery("RBC", "/hpf"),
                                  LabTestQuery("WBC", "10^3/uL")])
    assert (pus.loinc_code, rbc.loinc_code, wbc.loinc_code) == ("5821-4", "13945-1", "6690-2")
    assert engine.key(LabTestQuery("Pus cells", "/hpf"))[0].endswith("[urine]")


@pytest.mark.parametrize(("name", "unit", "specimen", "code"), [
    ("Creatinine", "mg/dL", "24 hr Urine", "20624-3"),
    ("Protein", "mg/24 hr", "Urine", "2889-4"),
    ("Urine Calcium, 24 hours", None, None, "6874-2"),  # no unit: a timed collection reports excretion
    ("Glucose", "mg/dL", "Whole Blood", "2339-0"),
    ("Glucose", "mg/dL", "Fluoride Plasma", "2345-7"),
])
def test_specimen_field_and_timed_units(engine, name, unit, specimen, code):
    [result] = engine.map([LabTestQuery(name=name, unit=unit, specimen=specimen)])
    assert result.loinc_code == code, result


@pytest.mark.parametrize(("name", "unit", "value", "specimen", "code", "in_doubt"), [
    ("Lymphocytes", None, None, None, "736-9", True),   # percent or absolute count: nothing says which
    ("Creatinine", None, "0.9", None, "2160-0", True),  # mg/dL or umol/L
    ("Albumin", None, None, "Urine", "20454-5", True),  # dipstick or a measured concentration
    ("Albumin", None, "Trace", "Urine", "20454-5", False),
    ("Lymphocytes", "%", None, None, "736-9", False),
    ("Creatinine", "umol/L", None, None, "14682-9", False),
    ("Absolute Lymphocyte Count", None, None, None, "731-0", False),
    ("Hemoglobin", None, None, None, "718-7", False),   # MCH shares the component, but it is another test
])
def test_a_unitless_variant_guess_keeps_its_code_but_asks_for_review(engine, name, unit, value, specimen, code,
                                                                     in_doubt):
    result = engine.map([LabTestQuery(name, unit, value=value, specimen=specimen)])[0]
    assert result.loinc_code == code
    # a variant guess is always flagged; otherwise only a confidence below the review threshold flags it
    assert result.needs_review is (in_doubt or result.confidence < engine.calibration.review_threshold)


def test_a_name_s_answer_does_not_depend_on_its_batch(engine):
    """Evidence is cached per reading and specimen: 'Bands' in a body fluid is not 'Bands' in blood."""
    from worker.mapping.engine import MappingEngine

    def fresh() -> MappingEngine:  # the same knowledge, empty caches
        return MappingEngine(engine.reference, engine.encoder, engine.retriever.embeddings, "fresh", engine.synonyms,
                             engine.lexicon, engine.calibration)

    fluid = LabTestQuery("Bands", None, None, "Other Body Fluid")
    blood = LabTestQuery("Bands", "%", None, "Blood")
    blood_first, fluid_first = fresh().map([blood, fluid]), fresh().map([fluid, blood])
    assert blood_first == fluid_first[::-1]
    assert [r.loinc_code for r in blood_first] == ["764-1", "26510-8"]


def test_a_named_method_is_not_part_of_the_analyte(engine):
    [bicarbonate, ldl] = engine.map([LabTestQuery("Calculated Bicarbonate", "mmol/L", None, "Whole Blood"),
                                     LabTestQuery("LDL Cholesterol (Calculated)", "mg/dL")])
    assert bicarbonate.loinc_code == "1959-6"
    assert ldl.loinc_code == "13457-7"  # the method still picks the variant


def test_names_written_x_of_specimen_match_their_analyte(engine):
    [hematocrit] = engine.map([LabTestQuery("Hematocrit", "%", None, "CSF")])
    assert hematocrit.loinc_code == "30398-2"


@pytest.mark.parametrize(("name", "klass"), [("Hepatitis A Ab, IgM", "IgM"), ("Measles antibody (IgM)", "IgM"),
                                             ("EBV VCA antibody (IgG)", "IgG")])
def test_an_antibody_class_named_is_the_answer_s_class(engine, name, klass):
    [result] = engine.map([LabTestQuery(name=name)])
    top = engine.describe(result.candidates[0])[0]
    assert f"{klass} Ab" in top, (result, top)  # not total IgM, not another class


@pytest.mark.parametrize(("name", "unit", "code"), [
    ("LDL-CHOLESTEROL", "mg/dL (calc)", "13457-7"),  # the method printed beside the unit
    ("CaOx Cry UrnS Ql Micro", None, "5774-5"),  # LOINC's short-name abbreviations
    ("FVIII Inhib PPP-aCnc", "[Beth'U]/mL", "3204-5"),
    ("Amylase.P SerPl-cCnc", "U/L", "1805-1"),
    ("INR POC", None, "34714-6"),  # a point-of-care meter's INR is in blood, not platelet-poor plasma
    ("HEPATITIS B SURFACE ANTIBODY, QUALITATIVE", None, "22322-2"),  # the scale spelled out
    ("Quantitative CRP", "mg/L", "1988-5"),
    ("COMPLEMENT COMPONENT C3C", "mg/dL", "4485-9"),  # C3c: the fragment immunoassays measure for C3
    ("BACTERIA", "/HPF", "5769-5"),  # a number per high-power field is a count per area, not presence
])
def test_what_record_systems_print_beside_the_name(engine, name, unit, code):
    assert engine.map([LabTestQuery(name, unit)])[0].loinc_code == code


@pytest.mark.parametrize(("name", "unit", "code"), [
    ("Lyme IgG", "index", "7817-0"),  # an antibody index: one of the row's own units, not a ratio
    ("Plasma Renin Activity", "ng/mL/h", "2915-7"),  # mass per volume per hour: an enzymatic activity
    ("Fecal Elastase", "ug/g", "25907-7"),  # mass content
    ("Factor VIII:C", "IU/dL", "3209-4"),  # a factor's activity: 1 IU/dL is 1% of normal
    ("Factor VIII inhibitor", "BU/mL", "3204-5"),  # Bethesda units
])
def test_a_unit_the_row_is_printed_in_is_evidence_for_it(engine, name, unit, code):
    assert engine.map([LabTestQuery(name, unit)])[0].loinc_code == code
