"""Normalisation of report-style names and units (no model needed)."""

from __future__ import annotations

import pytest

from worker.mapping.normalize import (
    SpellingCorrector,
    is_qualitative_value,
    normalise_name,
    normalise_unit,
    split_trailing_unit,
    split_unit_note,
    unit_class,
)


@pytest.mark.parametrize(("raw", "text", "specimen"), [
    ("S. Creatinine", "creatinine", "serum"),
    ("Sr. Iron", "iron", "serum"),
    ("Serum Albumin", "albumin", "serum"),
    ("Creatinine, Serum", "creatinine", "serum"),
    ("Glucose Fasting (Plasma)", "glucose fasting", "serum"),
    ("Blood Urea", "urea", "blood"),
    ("Urea Nitrogen, Blood", "urea nitrogen", "blood"),
    ("Sodium, Whole Blood", "sodium", "wholeblood"),
    ("Urine Creatinine", "creatinine", "urine"),
    ("U. Albumin", "albumin", "urine"),
    ("Stool for Ova & Cyst", "ova and cyst", "stool"),
    ("CSF Protein", "protein", "csf"),
    ("Occult Blood", "occult blood", None),
    ("Red Blood Cells", "red blood cells", None),
    ("Blood Group (ABO)", "blood group abo", None),
    ("Plasma Cells", "plasma cells", None),
])
def test_prefixes_and_specimen_words(raw, text, specimen):
    norm = normalise_name(raw)
    assert norm.is_test
    assert norm.text == text
    assert norm.specimen == specimen


@pytest.mark.parametrize(("raw", "expanded"), [
    ("HAEMOGLOBIN", "hemoglobin"),
    ("Hb", "hemoglobin"),
    ("Haematocrit", "hematocrit"),
    ("PCV", "hematocrit"),
    ("Total Leucocyte Count", "total leukocyte count"),
    ("TLC", "leukocytes"),
    ("SGPT", "alanine aminotransferase"),
    ("S.G.O.T.", "aspartate aminotransferase"),
    ("M.C.V.", "erythrocyte mean corpuscular volume"),
    ("Polymorphs", "neutrophils"),
    ("FBS", "glucose fasting"),
    ("PPBS", "glucose post prandial"),
    ("RBS", "glucose random"),
    ("Oestradiol", "estradiol"),
    ("DHEA Sulphate", "dehydroepiandrosterone sulfate"),
    ("Luteinising Hormone", "lutropin"),
    ("Glycosylated Haemoglobin", "hemoglobin a1c"),
    ("CA 125", "cancer antigen 125"),
    ("Calcium", "calcium"),
])
def test_abbreviations_local_terms_and_british_spellings(raw, expanded):
    assert normalise_name(raw).expanded == expanded


@pytest.mark.parametrize(("raw", "text"), [
    ("Creatinine*", "creatinine"),
    ("**Creatinine", "creatinine"),
    ("Creatinine †", "creatinine"),
    ("Creatinine #", "creatinine"),
    ("Cholesterol - Total (CHOD-PAP)", "cholesterol total"),
    ("Creatinine (Jaffe, Kinetic)", "creatinine"),
    ("Glucose, by Hexokinase", "glucose"),
    ("E.S.R. (Westergren)", "esr"),
    ("LDL Cholesterol (Friedewald)", "ldl cholesterol calculated"),
    ("Globulin (calc.)", "globulin calculated"),
])
def test_footnotes_and_method_suffixes(raw, text):
    assert normalise_name(raw).text == text


def test_absolute_counts_and_percentages():
    assert normalise_name("Abs. Neutrophils").absolute is True
    assert normalise_name("Absolute Lymphocyte Count").absolute is True
    assert normalise_name("NEUT#").absolute is True
    assert normalise_name("Lymphocytes %").absolute is False
    assert normalise_name("LYMPH%").absolute is False
    assert normalise_name("Lymphocytes").absolute is None
    assert normalise_name("Abs. Neutrophils").text == normalise_name("Neutrophils %").text == "neutrophils"


def test_24_hour_collections():
    norm = normalise_name("24 hr Urine Protein")
    assert (norm.text, norm.specimen, norm.timed_24h) == ("protein", "urine", True)
    assert normalise_name("Protein, 24 Hours Urine").timed_24h
    assert not normalise_name("Urine Protein").timed_24h


@pytest.mark.parametrize("raw", ["Doctor's remarks", "Page 2 of 3", "Page 1/2", "Sample type", "Specimen",
                                 "Remarks:", "Interpretation", "** End of Report **", "Comments", "Reference Range",
                                 "Differential Leucocyte Count", "Physical Examination", "", "---", "12.5",
                                 "Method: Photometry", "Westergren", "Sample Type: Serum", "Specimen : EDTA Blood",
                                 "Remarks: Please correlate clinically", "Ref. Range: 13-17", "Normal: 70 - 110 mg/dL"])
def test_non_tests(raw):
    assert not normalise_name(raw).is_test


@pytest.mark.parametrize("raw", ["Prothrombin Time", "Bleeding Time", "Blood Group", "Sodium", "pH", "Rh Type",
                                 "Glucose: Fasting", "Glucose Fasting (Hexokinase)"])
def test_tests_that_look_like_non_tests(raw):
    assert normalise_name(raw).is_test


def test_bracketed_and_slashed_readings():
    assert "mcv" in normalise_name("Mean Corpuscular Volume (MCV)").alternatives
    # two names of one analyte joined by a slash read as that analyte, spaced or not
    for raw in ("SGOT / AST", "AST/SGOT", "SGOT/AST"):
        assert normalise_name(raw).expanded == "aspartate aminotransferase", raw
    assert normalise_name("SGPT/ALT").expanded == "alanine aminotransferase"
    assert "anticardiolipin igg" in normalise_name("Anticardiolipin Antibody IgG").alternatives


def test_misspellings_are_corrected_against_a_vocabulary():
    corrector = SpellingCorrector(["cholesterol", "bilirubin", "triglycerides", "aspartate", "aminotransferase",
                                   "creatinine", "hemoglobin"])
    assert normalise_name("Cholestrol, Total", vocabulary=corrector).text == "cholesterol total"
    assert normalise_name("Billirubin", vocabulary=corrector).text == "bilirubin"
    assert normalise_name("Trigylcerides", vocabulary=corrector).text == "triglycerides"
    assert normalise_name("Asparate Aminotransferase", vocabulary=corrector).text == "aspartate aminotransferase"
    assert normalise_name("Creatinne", vocabulary=corrector).text == "creatinine"
    assert corrector.correct_word("sodium") == "sodium"  # unknown but no close neighbour: unchanged
    assert corrector.correct_word("ggt") == "ggt"  # short words are never "corrected"


@pytest.mark.parametrize(("unit", "normalised", "klass"), [
    ("mg/dL", "mg/dl", "mass"), ("gm/dl", "g/dl", "mass"), ("g%", "g%", "mass"), ("mcg/dL", "ug/dl", "mass"),
    ("µmol/L", "umol/l", "molar"), ("mEq/L", "meq/l", "molar"),
    ("x10^3/uL", "10*3/ul", "count"), ("10^3/µL", "10*3/ul", "count"), ("K/uL", "10*3/ul", "count"),
    ("cells/cumm", "cells/ul", "count"), ("lakhs/cumm", "10*5/ul", "count"), ("mill/cumm", "10*6/ul", "count"),
    ("%", "%", "percent"), ("ratio", "ratio", "ratio"), ("U/L", "u/l", "activity"), ("IU/L", "iu/l", "activity"),
    ("uIU/mL", "uiu/ml", "activity"), ("fL", "fl", "entvol"), ("pg", "pg", "entmass"),
    ("mm/1st hr", "mm/h", "velocity"), ("sec", "sec", "time"), ("mL/min/1.73m2", "ml/min/1.73m2", "rate"),
    ("mg/24 hrs", "mg/24h", "excretion"), ("/hpf", "/hpf", "field"), (None, "", None), ("", "", None),
])
def test_units(unit, normalised, klass):
    assert normalise_unit(unit) == normalised
    assert unit_class(unit) == klass


def test_qualitative_values():
    assert is_qualitative_value("Positive") is True
    assert is_qualitative_value("Non Reactive") is True
    assert is_qualitative_value("Nil") is True
    assert is_qualitative_value("++") is True
    assert is_qualitative_value("14.5") is False
    assert is_qualitative_value("<0.5") is False
    assert is_qualitative_value(None) is None


VOCABULARY = SpellingCorrector(["hemoglobin", "sodium", "potassium", "glucose", "cholesterol", "triglycerides",
                                "thyrotropin", "thyroid", "stimulating", "hormone", "aspartate", "aminotransferase",
                                "creatinine", "urea", "nitrogen", "ratio", "albumin", "globulin", "hdl", "count",
                                "erythrocytes", "leukocytes", "lepore"])


@pytest.mark.parametrize("raw, expected", [
    ("Potassium Lvl", "potassium"), ("Magnesium Level", "magnesium"), ("Creatinine Result", "creatinine"),
    ("Glucose Value", "glucose"), ("Glucose (POC)", "glucose"), ("Sodium (ISTAT)", "sodium"),
    ("Hemoglobin (ER)", "hemoglobin"), ("GLUCOSE POCT", "glucose"), ("Sodium - Main Lab", "sodium"),
])
def test_site_instrument_and_record_system_words_are_noise(raw, expected):
    norm = normalise_name(raw, vocabulary=VOCABULARY)
    assert norm.expanded == expected
    assert norm.unknown == 0


@pytest.mark.parametrize("raw, expected, specimen, hint", [
    ("Potassium SerPl Qn", "potassium", "serplas", "quantitative"),
    ("Potassium SerPl-sCnc", "potassium", "serplas", "SCnc"),
    ("AST SerPl Qn", "aspartate aminotransferase", "serplas", "quantitative"),
    ("Glucose Bld Qn", "glucose", "wholeblood", "quantitative"),  # LOINC's Bld is whole blood
    ("Hgb Bld-mCnc", "hemoglobin", "wholeblood", "MCnc"),
    ("WBC # Bld Auto", "leukocytes", "wholeblood", None),
    ("Glucose Ur Ql Strip", "glucose", "urine", "qualitative"),
    ("Sodium Ur-sCnc", "sodium", "urine", "SCnc"),
    ("Protein CSF-mCnc", "protein", "csf", "MCnc"),
])
def test_loinc_short_name_vocabulary(raw, expected, specimen, hint):
    norm = normalise_name(raw, vocabulary=VOCABULARY)
    assert (norm.expanded, norm.specimen, norm.hint) == (expected, specimen, hint)


@pytest.mark.parametrize("raw, expected", [
    ("H D L Cholesterol", "hdl cholesterol"), ("R B C Count", "erythrocytes count"),
    ("S G O T", "aspartate aminotransferase"), ("M C V", "erythrocyte mean corpuscular volume"),
    ("THYROID STIMULATING HORM ONE", "thyrotropin"), ("Triglycer ides", "triglycerides"),
])
def test_letter_spacing_and_split_words_are_repaired(raw, expected):
    assert normalise_name(raw, vocabulary=VOCABULARY).expanded == expected


def test_single_letters_a_report_separated_with_commas_stay_apart():
    assert "fsc" not in normalise_name("Hemoglobin F, S, C", vocabulary=VOCABULARY).cleaned


@pytest.mark.parametrize("raw", ["BUN/Creatinine Ratio", "Albumin/Globulin", "Total/HDL Cholesterol Ratio",
                                 "Urea Nitrogen/Creatinine"])
def test_true_ratios_stay_ratios(raw):
    norm = normalise_name(raw, vocabulary=VOCABULARY)
    assert "/" in norm.expanded or "ratio" in " ".join((norm.expanded, *norm.alternatives))


def test_a_labs_own_code_is_dropped_but_a_bracketed_analyte_is_not():
    assert normalise_name("Sodium [A1234]", vocabulary=VOCABULARY).expanded == "sodium"
    assert normalise_name("HAEMOGLOBIN (Hb) [A0417-03]", vocabulary=VOCABULARY).expanded == "hemoglobin"
    assert "t3" in normalise_name("Triiodothyronine (T3)", vocabulary=VOCABULARY).alternatives


def test_unknown_words_are_counted_and_a_reading_without_them_is_offered():
    norm = normalise_name("Hemoglobin xyz", vocabulary=VOCABULARY)
    assert norm.unknown == 1
    assert "hemoglobin" in norm.alternatives
    assert normalise_name("Hemoglobin Lepore", vocabulary=VOCABULARY).unknown == 0  # a word the reference knows
    assert normalise_name("Zorblax", vocabulary=VOCABULARY).alternatives == ()  # nothing left without it


@pytest.mark.parametrize(("raw", "text", "specimen"), [
    ("UA PH", "ph", "urine"),  # urinalysis: the panel names the specimen
    ("UA Blood", "blood", "urine"),
    ("UDS Opiates", "opiates", "urine"),  # urine drug screen
    ("UA", "ua", None),  # on its own it is uric acid's abbreviation
])
def test_urinalysis_and_drug_screen_prefixes_name_urine(raw, text, specimen):
    norm = normalise_name(raw)
    assert (norm.text, norm.specimen) == (text, specimen)


def test_pcr_is_a_method_beside_an_organism_and_the_ratio_on_its_own():
    covid = normalise_name("SARS-CoV-2 RT-PCR")
    assert covid.text == "sars cov 2" and "naa" in covid.methods
    assert normalise_name("Urine PCR").expanded == "protein/creatinine ratio"
    assert normalise_name("PCR, spot urine").expanded == "protein/creatinine ratio"


def test_a_sequence_number_is_neither_absolute_nor_part_of_the_name():
    norm = normalise_name("Blood Culture #2")
    assert norm.absolute is None and norm.text == "culture" and norm.specimen == "blood"
    assert normalise_name("Neutrophils #").absolute is True


def test_named_bloods_and_point_of_care():
    assert normalise_name("HGB VEN").specimen == "venous"
    assert normalise_name("Glucose fingerstick").specimen == "capillary"
    assert normalise_name("POC Glucose").specimen == "capillary"


def test_bracketed_exponents_in_units():
    assert normalise_unit("x10(3)/mcL") == "10*3/ul"
    assert unit_class("x10(9)/L") == "count"


@pytest.mark.parametrize(("name", "rest", "unit"), [
    ("Sodium mmol/L", "Sodium", "mmol/L"), ("Glucose Fasting mg/dl", "Glucose Fasting", "mg/dl"),
    ("Pus cells (WBC) /hpf", "Pus cells (WBC)", "/hpf"), ("Anti-HBs (mIU/mL)", "Anti-HBs", "mIU/mL"),
    ("Neutrophils %", "Neutrophils", "%"),
    ("SGPT/ALT", "SGPT/ALT", None), ("Albumin/Globulin", "Albumin/Globulin", None), ("Hb%", "Hb%", None),
    ("Retics/100 RBC", "Retics/100 RBC", None), ("mg/dL", "mg/dL", None),
])
def test_a_unit_printed_at_the_end_of_the_name(name, rest, unit):
    assert split_trailing_unit(name) == (rest, unit)


@pytest.mark.parametrize(("unit", "split"), [
    ("mg/dL (calc)", ("mg/dL", "calc")), ("10^3/uL (auto)", ("10^3/uL", "auto")),
    ("mg/dL", ("mg/dL", None)), ("x10(3)/uL", ("x10(3)/uL", None)), ("(calc)", ("(calc)", None)),
    ("U/L (37C)", ("U/L (37C)", None)), (None, (None, None)),
])
def test_a_word_printed_beside_the_unit_is_taken_from_it(unit, split):
    assert split_unit_note(unit) == split


def test_a_scanned_zero_for_o_and_blood_as_the_analyte_in_urine():
    assert normalise_name("S0dium").text == "sodium"
    assert normalise_name("Urine dipstick blood").text == "blood"
    assert normalise_name("Occult blood, stool").text == "occult blood"


def test_an_antibody_class_in_brackets_qualifies_the_name():
    norm = normalise_name("Measles Antibody (IgM)")
    assert "igm" not in norm.alternatives and "immunoglobulin m" not in norm.alternatives
    assert normalise_name("Mean Corpuscular Volume (MCV)").alternatives  # other brackets still are names


def test_per_hundred_cells_is_a_ratio_not_a_count():
    assert unit_class("/100 WBC") == "per100"
    assert unit_class("x10^9/L") == "count"
