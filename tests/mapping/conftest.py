"""Fixtures for the mapping engine: a small, hand-checked fixture reference and engines built once per session."""

from __future__ import annotations

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
    from worker.mapping.engine import SentenceEncoder
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
