"""Measure the engine on a labelled file: top-1/top-3 LOINC accuracy, category accuracy, coverage.

Two formats are read, told apart by their header:

* the MIMIC-III ``D_LABITEMS`` table (``LABEL,FLUID,...,LOINC_CODE``): input = LABEL with FLUID as
  the specimen; expected = LOINC_CODE (rows without one are not counted); there is no expected
  category, so category accuracy is measured against the reference's category of the expected
  code, on the rows whose code is in the reference;
* our own lists (``test_name,test_unit,specimen,expected_loinc,expected_category``); an empty
  ``expected_loinc`` means "no code expected" (a non-test, or a test outside LOINC's reach).

Definitions: *coverage* is the share of expected codes present in the reference; *top-1* and
*top-3* are measured on the covered rows (an abstention counts as a miss; top-3 looks at the
candidates); *same analyte* counts a top-1 that names the expected LOINC component in another
variant (method, property or specimen) as well; *answered* is the share of covered rows that got a
code, and *precision* the share of those codes that are right.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from worker.mapping.types import LabTestQuery, MappingResult


@dataclass(frozen=True)
class Case:
    query: LabTestQuery
    expected_code: str | None
    expected_category: str | None


@dataclass
class Report:
    file: str
    format: str
    rows: int
    labelled: int
    covered: int
    coverage: float
    top1: float
    top3: float
    same_analyte: float  # top-1 names the expected analyte (same LOINC component), maybe another variant
    answered: float
    precision: float
    category_rows: int
    category_accuracy: float
    no_code_rows: int
    no_code_accuracy: float
    model_version: str = ""
    errors: list[dict] = field(default_factory=list)

    def as_dict(self, with_errors: bool = False) -> dict:
        data = asdict(self)
        if not with_errors:
            data.pop("errors")
        return data


def read_cases(path: str | Path) -> tuple[str, list[Case]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        rows = list(reader)
    if "LABEL" in header and "LOINC_CODE" in header:
        cases = [Case(LabTestQuery(name=r["LABEL"], specimen=(r.get("FLUID") or None)),
                      (r.get("LOINC_CODE") or "").strip() or None, None) for r in rows]
        return "mimic", cases
    if "test_name" in header:
        cases = [Case(LabTestQuery(name=r["test_name"], unit=(r.get("test_unit") or None),
                                   value=(r.get("test_value") or None), specimen=(r.get("specimen") or None)),
                      (r.get("expected_loinc") or "").strip() or None,
                      (r.get("expected_category") or "").strip() or None) for r in rows]
        return "reports", cases
    raise ValueError(f"{path}: unknown format (expected MIMIC D_LABITEMS columns or test_name,test_unit,...)")


def score(cases: Sequence[Case], results: Sequence[MappingResult], in_reference, category_of,
          file: str = "", fmt: str = "", component_of=lambda code: None) -> Report:
    """Compute the report; ``in_reference``, ``category_of`` and ``component_of`` look codes up in the reference."""
    labelled = covered = top1 = top3 = answered = right_answers = same_analyte = 0
    cat_rows = cat_right = no_code_rows = no_code_right = 0
    errors: list[dict] = []
    for case, result in zip(cases, results, strict=True):
        expected_category = case.expected_category
        if case.expected_code:
            labelled += 1
            if in_reference(case.expected_code):
                covered += 1
                hit = result.loinc_code == case.expected_code
                top1 += hit
                top3 += case.expected_code in result.candidates[:3] or hit
                same_analyte += hit or bool(result.loinc_code and component_of(result.loinc_code) is not None
                                            and component_of(result.loinc_code) == component_of(case.expected_code))
                if result.loinc_code:
                    answered += 1
                    right_answers += hit
                if not hit:
                    errors.append({"name": case.query.name, "unit": case.query.unit, "specimen": case.query.specimen,
                                   "expected": case.expected_code, "got": result.loinc_code,
                                   "candidates": list(result.candidates[:3]), "confidence": result.confidence})
                if expected_category is None:
                    expected_category = category_of(case.expected_code)
        elif fmt != "mimic":
            no_code_rows += 1
            no_code_right += result.loinc_code is None
        if expected_category:
            cat_rows += 1
            cat_right += result.category == expected_category
    ratio = lambda a, b: round(a / b, 4) if b else 0.0  # noqa: E731
    return Report(file=file, format=fmt, rows=len(cases), labelled=labelled, covered=covered,
                  coverage=ratio(covered, labelled), top1=ratio(top1, covered), top3=ratio(top3, covered),
                  same_analyte=ratio(same_analyte, covered),
                  answered=ratio(answered, covered), precision=ratio(right_answers, answered),
                  category_rows=cat_rows, category_accuracy=ratio(cat_right, cat_rows),
                  no_code_rows=no_code_rows, no_code_accuracy=ratio(no_code_right, no_code_rows), errors=errors)


def evaluate_file(engine, path: str | Path) -> Report:
    fmt, cases = read_cases(path)
    results = engine.map([c.query for c in cases])

    def category_of(code: str) -> str | None:
        described = engine.describe(code)
        return described[1] if described else None

    def component_of(code: str) -> str | None:
        entry = engine.reference.by_code.get(code)
        return entry.component.lower() if entry else None

    report = score(cases, results, lambda code: engine.describe(code) is not None, category_of, str(path), fmt,
                   component_of)
    report.model_version = engine.model_version
    return report
