"""The engine's typed inputs and outputs, and the app's category taxonomy."""

from __future__ import annotations

from dataclasses import dataclass, field

# The app's taxonomy: exactly these 14 names (DESIGN.md, "Categories").
CATEGORIES: tuple[str, ...] = (
    "Complete Blood Count (CBC)",
    "Liver Function Tests (LFT)",
    "Kidney Function Tests (KFT)",
    "Lipid Profile",
    "Thyroid Profile",
    "Diabetes Panel",
    "Electrolyte Panel",
    "Cardiac Markers",
    "Hormonal Panel",
    "Vitamin & Mineral Panel",
    "Infection Markers",
    "Urine & Stool Tests",
    "Tumor Markers",
    "Others",
)
OTHERS = "Others"

MATCH_METHODS = ("override", "memory", "exact", "synonym", "lexical", "embedding", "none")


@dataclass(frozen=True, slots=True)
class LabTestQuery:
    """A test as it appears on a report."""

    name: str
    unit: str | None = None
    value: str | None = None
    specimen: str | None = None


@dataclass(frozen=True, slots=True)
class MappingResult:
    category: str
    loinc_code: str | None
    loinc_name: str | None
    confidence: float
    match_method: str
    candidates: tuple[str, ...] = field(default_factory=tuple)  # the best codes, best first
    needs_review: bool = False
    candidate_scores: tuple[float, ...] = field(default_factory=tuple)  # the ranking's score of each candidate
