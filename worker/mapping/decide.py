"""Step 4, decide: answer with the best candidate or abstain, and flag what a person should check.

Confidence is a logistic regression on the ranking's features, fitted on development lists
(``python -m worker.mapping.calibrate``). Below its threshold the engine abstains: no code,
``needs_review``, and the category from the query's own words or the best candidate. A confident
answer still asks for review when its variant is a guess (no unit, and a close runner-up is the same
analyte in another property).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from worker.mapping.names import ReferenceViews
from worker.mapping.normalize import NormalisedName, is_qualitative_value, unit_class
from worker.mapping.reference import DATA_DIR, Reference
from worker.mapping.rerank import Candidate, Ranking
from worker.mapping.types import CATEGORIES, OTHERS, LabTestQuery, MappingResult

CALIBRATION_PATH = DATA_DIR / "calibration.csv"
# A runner-up this close that is the same analyte in another property makes a unit-less answer a guess.
VARIANT_DOUBT_GAP = 0.10
# Properties that are alternative readings of one measurement (entitic indices like MCH are other tests).
INTERCHANGEABLE_PROPERTIES = frozenset({"MCnc", "SCnc", "ACnc", "CCnc", "NCnc", "NFr", "MFr", "VFr", "PrThr"})

NOT_A_TEST = MappingResult(category=OTHERS, loinc_code=None, loinc_name=None, confidence=0.0, match_method="none",
                           candidates=(), needs_review=False)


@dataclass(frozen=True)
class Calibration:
    """P(top-1 is right) = sigmoid(w0 + w_score*score + w_margin*margin + w_concept*concept_margin
    + w_direct*direct + w_coverage*coverage), fitted on development data (``data/calibration.csv``)."""

    w0: float = -6.0
    w_score: float = 6.0
    w_margin: float = 4.0
    w_concept: float = 6.0
    w_direct: float = 1.5
    w_coverage: float = 0.0
    threshold: float = 0.5
    category_floor: float = 0.55  # below this score the category comes from the query's own words

    @classmethod
    def load(cls, path: Path = CALIBRATION_PATH) -> Calibration:
        if not path.is_file():
            return cls()
        with open(path, newline="", encoding="utf-8") as handle:
            values = {row["name"]: float(row["value"]) for row in csv.DictReader(handle)}
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})

    def save(self, path: Path = CALIBRATION_PATH) -> None:
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["name", "value"])
            for name in self.__dataclass_fields__:
                writer.writerow([name, round(float(getattr(self, name)), 4)])

    def logit(self, score: float, margin: float, concept_margin: float, direct: bool, coverage: float) -> float:
        return (self.w0 + self.w_score * score + self.w_margin * margin + self.w_concept * concept_margin
                + self.w_direct * float(direct) + self.w_coverage * coverage)

    def confidence(self, score: float, margin: float, concept_margin: float, direct: bool, coverage: float) -> float:
        z = self.logit(score, margin, concept_margin, direct, coverage)
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


class Decider:
    def __init__(self, reference: Reference, views: ReferenceViews, calibration: Calibration):
        self.reference = reference
        self.views = views
        self.calibration = calibration

    def decide(self, query: LabTestQuery, norm: NormalisedName, ranking: Ranking) -> MappingResult:
        """Answer with the best candidate, or abstain; flag a variant guess for review."""
        scored, features = ranking.candidates, ranking.features
        if not scored:
            return MappingResult(self.fallback_category(norm), None, None, 0.0, "none", (), True)
        best_score, best_i, method, _ = scored[0]
        best = self.reference.entries[best_i]
        confidence = self.calibration.confidence(**features)
        candidates = tuple(self.reference.entries[i].code for _, i, _, _ in scored[:5])
        scores = tuple(round(score, 4) for score, _, _, _ in scored[:5])
        if confidence >= self.calibration.threshold:
            return MappingResult(best.category, best.code, best.long_common_name, round(confidence, 4), method,
                                 candidates, needs_review=self._variant_in_doubt(query, norm, scored),
                                 candidate_scores=scores)
        # abstaining: the query's own words name the category if a rule knows them, else the best candidate's
        category = self.fallback_category(norm)
        if category == OTHERS and best_score >= self.calibration.category_floor:
            category = best.category
        return MappingResult(category if category in CATEGORIES else OTHERS, None, None, round(confidence, 4),
                             "none", candidates, needs_review=True, candidate_scores=scores)

    def _variant_in_doubt(self, query: LabTestQuery, norm: NormalisedName,
                          scored: list[Candidate]) -> bool:
        """The analyte is clear but its variant is a guess: no unit, no %/absolute word, no qualitative value
        ('Trace', 'Nil', '+' pick the ordinal reading), and a close
        runner-up is the same analyte in another property (percent vs count, mass vs molar). A wrong
        variant is a wrong LOINC code, so a person should look."""
        if unit_class(query.unit) is not None or norm.absolute is not None or is_qualitative_value(query.value):
            return False
        best_score, best_i = scored[0][0], scored[0][1]
        best = self.reference.entries[best_i]
        for score, i, _, _ in scored[1:]:
            if best_score - score > VARIANT_DOUBT_GAP:
                return False
            other = self.reference.entries[i].property
            if (self.views.concept[i] == self.views.concept[best_i] and other != best.property
                    and {other, best.property} <= INTERCHANGEABLE_PROPERTIES):
                return True
        return False

    def fallback_category(self, norm: NormalisedName) -> str:
        from worker.mapping.categorize import categorize, specimen_system

        return categorize(f"{norm.expanded} {norm.cleaned}", specimen_system(norm.specimen))
