"""Fixtures for the mapping engine: a small, hand-checked fixture reference and engines built once per session."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

FIXTURE_COLUMNS = ("code", "long_common_name", "component", "property", "system", "scale", "class", "units",
                   "category")
FIXTURE_ROWS = [
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "Hemoglobin", "MCnc", "Bld", "Qn", "HEM/BC", "g/dL",
     "Complete Blood Count (CBC)"),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "Creatinine", "MCnc", "Ser/Plas", "Qn", "CHEM",
     "mg/dL", "Kidney Function Tests (KFT)"),
    ("14682-9", "Creatinine [Moles/volume] in Serum or Plasma", "Creatinine", "SCnc", "Ser/Plas", "Qn", "CHEM",
     "umol/L", "Kidney Function Tests (KFT)"),
    ("2161-8", "Creatinine [Mass/volume] in Urine", "Creatinine", "MCnc", "Urine", "Qn", "CHEM", "mg/dL",
     "Urine & Stool Tests"),
    ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "Alanine aminotransferase",
     "CCnc", "Ser/Plas", "Qn", "CHEM", "U/L", "Liver Function Tests (LFT)"),
    ("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
     "Aspartate aminotransferase", "CCnc", "Ser/Plas", "Qn", "CHEM", "U/L", "Liver Function Tests (LFT)"),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "Leukocytes", "NCnc", "Bld", "Qn", "HEM/BC",
     "10*3/uL", "Complete Blood Count (CBC)"),
    ("770-8", "Neutrophils/100 leukocytes in Blood by Automated count", "Neutrophils/100 leukocytes", "NFr", "Bld",
     "Qn", "HEM/BC", "%", "Complete Blood Count (CBC)"),
    ("751-8", "Neutrophils [#/volume] in Blood by Automated count", "Neutrophils", "NCnc", "Bld", "Qn", "HEM/BC",
     "10*3/uL", "Complete Blood Count (CBC)"),
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "Glucose", "MCnc", "Ser/Plas", "Qn", "CHEM", "mg/dL",
     "Diabetes Panel"),
    ("1558-6", "Fasting glucose [Mass/volume] in Serum or Plasma", "Glucose^post CFst", "MCnc", "Ser/Plas", "Qn",
     "CHEM", "mg/dL", "Diabetes Panel"),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "Hemoglobin A1c/Hemoglobin.total", "MFr", "Bld", "Qn",
     "CHEM", "%", "Diabetes Panel"),
    ("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "Thyrotropin", "ACnc", "Ser/Plas", "Qn", "CHEM",
     "m[IU]/L|u[IU]/mL", "Thyroid Profile"),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "Cholesterol", "MCnc", "Ser/Plas", "Qn", "CHEM",
     "mg/dL", "Lipid Profile"),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "Sodium", "SCnc", "Ser/Plas", "Qn", "CHEM", "mmol/L",
     "Electrolyte Panel"),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "Potassium", "SCnc", "Ser/Plas", "Qn", "CHEM",
     "mmol/L", "Electrolyte Panel"),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "Platelets", "NCnc", "Bld", "Qn", "HEM/BC",
     "10*3/uL", "Complete Blood Count (CBC)"),
    ("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "Hematocrit", "VFr", "Bld", "Qn",
     "HEM/BC", "%", "Complete Blood Count (CBC)"),
    ("2885-2", "Protein [Mass/volume] in Serum or Plasma", "Protein", "MCnc", "Ser/Plas", "Qn", "CHEM", "g/dL",
     "Liver Function Tests (LFT)"),
    ("2888-6", "Protein [Mass/volume] in Urine", "Protein", "MCnc", "Urine", "Qn", "UA", "mg/dL",
     "Urine & Stool Tests"),
]


def fixture_reference():
    from worker.mapping.reference import Reference

    return Reference.from_rows(dict(zip(FIXTURE_COLUMNS, row, strict=True)) for row in FIXTURE_ROWS)


class CountingEncoder:
    """Wraps the real encoder and counts how many texts it embeds."""

    def __init__(self, inner):
        self.inner = inner
        self.model = inner.model
        self.calls = 0
        self.texts: list[str] = []

    def encode(self, texts):
        self.calls += 1
        self.texts.extend(texts)
        return self.inner.encode(texts)


@pytest.fixture(scope="session")
def sentence_encoder(packaged_model_dir):
    """The packaged all-MiniLM-L6-v2, loaded once for the whole session."""
    from worker.mapping.encoder import SentenceEncoder
    from worker.mapping.model import load_sentence_model

    return SentenceEncoder(load_sentence_model(packaged_model_dir))


@pytest.fixture(scope="session")
def fixture_engine(sentence_encoder, packaged_model_dir, tmp_path_factory):
    """An engine on the fixture reference (no synonyms file), independent of the shipped reference rows."""
    from worker.mapping.engine import MappingEngine

    return MappingEngine.load(packaged_model_dir, tmp_path_factory.mktemp("fixture-index"),
                              reference=fixture_reference(), synonyms=(), encoder=sentence_encoder)


@pytest.fixture(scope="session")
def engine(sentence_encoder, packaged_model_dir, tmp_path_factory):
    """An engine on the shipped reference and synonyms (skips while the reference is empty)."""
    from worker.mapping.engine import MappingEngine
    from worker.mapping.reference import Reference

    reference = Reference.load()
    if len(reference) == 0:
        pytest.skip("the packaged LOINC reference (worker/mapping/data/loinc/*.csv) is empty")
    return MappingEngine.load(packaged_model_dir, tmp_path_factory.mktemp("shipped-index"), reference=reference,
                              encoder=sentence_encoder)


# ---- the official LOINC table format (LoincTable/Loinc.csv), for import tests ----

OFFICIAL_COLUMNS = [
    "LOINC_NUM", "COMPONENT", "PROPERTY", "TIME_ASPCT", "SYSTEM", "SCALE_TYP", "METHOD_TYP", "CLASS",
    "VersionLastChanged", "CHNG_TYPE", "DefinitionDescription", "STATUS", "CONSUMER_NAME", "CLASSTYPE", "FORMULA",
    "EXMPL_ANSWERS", "SURVEY_QUEST_TEXT", "SURVEY_QUEST_SRC", "UNITSREQUIRED", "RELATEDNAMES2", "SHORTNAME",
    "ORDER_OBS", "HL7_FIELD_SUBFIELD_ID", "EXTERNAL_COPYRIGHT_NOTICE", "EXAMPLE_UNITS", "LONG_COMMON_NAME",
    "EXAMPLE_UCUM_UNITS", "STATUS_REASON", "STATUS_TEXT", "CHANGE_REASON_PUBLIC", "COMMON_TEST_RANK",
    "COMMON_ORDER_RANK", "HL7_ATTACHMENT_STRUCTURE", "EXTERNAL_COPYRIGHT_LINK", "PanelType", "AskAtOrderEntry",
    "AssociatedObservations", "VersionFirstReleased", "ValidHL7AttachmentRequest", "DisplayName",
]

# (code, component, property, time, system, scale, method, class, status, classtype, long name, ucum units)
SAMPLE_ROWS = [
    ("2160-0", "Creatinine", "MCnc", "Pt", "Ser/Plas", "Qn", "", "CHEM", "ACTIVE", "1",
     "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL"),
    ("14682-9", "Creatinine", "SCnc", "Pt", "Ser/Plas", "Qn", "", "CHEM", "ACTIVE", "1",
     "Creatinine [Moles/volume] in Serum or Plasma", "umol/L"),
    ("718-7", "Hemoglobin", "MCnc", "Pt", "Bld", "Qn", "", "HEM/BC", "ACTIVE", "1",
     "Hemoglobin [Mass/volume] in Blood", "g/dL"),
    ("2345-7", "Glucose", "MCnc", "Pt", "Ser/Plas", "Qn", "", "CHEM", "ACTIVE", "1",
     "Glucose [Mass/volume] in Serum or Plasma", "mg/dL"),
    ("5811-5", "Specific gravity", "Rden", "Pt", "Urine", "Qn", "Test strip", "UA", "ACTIVE", "1",
     "Specific gravity of Urine by Test strip", "{SG}"),
    ("5902-2", "Prothrombin time (PT)", "Time", "Pt", "PPP", "Qn", "Coag", "COAG", "ACTIVE", "1",
     "Prothrombin time (PT)", "s"),
    ("24323-8", "Comprehensive metabolic 2000 panel", "-", "Pt", "Ser/Plas", "-", "", "PANEL.CHEM", "ACTIVE", "1",
     "Comprehensive metabolic 2000 panel - Serum or Plasma", ""),
    ("8302-2", "Body height", "Len", "Pt", "^Patient", "Qn", "", "BDYHGT.ATOM", "ACTIVE", "2",
     "Body height", "cm;[in_i]"),
    ("1000-9", "DBG Ab", "Pr", "Pt", "Ser/Plas", "Ord", "", "BLDBK", "DEPRECATED", "1",
     "DBG Ab [Presence] in Serum or Plasma from donor", ""),
    ("2161-8", "Creatinine", "MCnc", "Pt", "Urine", "Qn", "", "CHEM", "ACTIVE", "1",
     "Creatinine [Mass/volume] in Urine", "mg/dL"),
    ("1742-6", "Alanine aminotransferase", "CCnc", "Pt", "Ser/Plas", "Qn", "", "CHEM", "ACTIVE", "1",
     "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L"),
]


def write_loinc_table(path: Path, rows=SAMPLE_ROWS) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=OFFICIAL_COLUMNS, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        for code, comp, prop, time, system, scale, method, cls, status, classtype, name, units in rows:
            row = dict.fromkeys(OFFICIAL_COLUMNS, "")
            row.update(LOINC_NUM=code, COMPONENT=comp, PROPERTY=prop, TIME_ASPCT=time, SYSTEM=system,
                       SCALE_TYP=scale, METHOD_TYP=method, CLASS=cls, STATUS=status, CLASSTYPE=classtype,
                       LONG_COMMON_NAME=name, EXAMPLE_UCUM_UNITS=units, SHORTNAME=name[:20])
            writer.writerow(row)
    return path


@pytest.fixture(scope="session")
def loinc_table():
    """``loinc_table(path)`` writes a small file in the official Loinc.csv format and returns its path."""
    return write_loinc_table


@pytest.fixture(scope="module")
def fixture_reference_only(tmp_path_factory):
    """Hide the packaged reference rows, so command tests see only the references they set up."""
    empty = tmp_path_factory.mktemp("no-packaged-reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("worker.mapping.reference.PACKAGED_LOINC_DIR", empty)
        yield


@pytest.fixture
def counting_encoder():
    """``counting_encoder(inner)`` wraps an encoder and counts its calls and texts."""
    return CountingEncoder


@pytest.fixture
def small_reference():
    return fixture_reference()
