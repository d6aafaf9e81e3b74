"""Step 4, decide: answer with the best candidate or abstain, and flag what a person should check.

Confidence is a logistic regression on the ranking's features, fitted on development lists
(``python -m worker.mapping.calibrate``). Below its threshold the engine abstains: no code,
``needs_review``, and the category from the query's own words or the best candidate. A confident
answer still asks for review when its variant is a guess (no unit, and a close runner-up is the same
analyte in another property).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from worker.mapping.names import ReferenceViews
from worker.mapping.normalize import NormalisedName, is_qualitative_value, unit_class
from worker.mapping.reference import DATA_DIR, Reference
from worker.mapping.rerank import INTERCHANGEABLE_PROPERTIES, Candidate, Ranking
from worker.mapping.types import CATEGORIES, OTHERS, LabTestQuery, MappingResult

CALIBRATION_DIR = DATA_DIR / "calibration"
# A runner-up this close that is the same analyte in another property makes a unit-less answer a guess.
VARIANT_DOUBT_GAP = 0.10

NOT_A_TEST = MappingResult(category=OTHERS, loinc_code=None, loinc_name=None, confidence=0.0, match_method="none",
                           candidates=(), needs_review=False)


class MissingCalibrationError(RuntimeError):
    """The model has no fitted confidence calibration: another model's would be silently wrong."""


def calibration_path(model_label: str) -> Path:
    return CALIBRATION_DIR / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', model_label)}.json"


@dataclass(frozen=True)
class Calibration:
    """P(top-1 is right) = sigmoid(intercept + sum of weight * feature), fitted for one model on
    development data (``python -m worker.mapping.calibrate``): the features are the ranking's, and a
    model's scores mean nothing on another model's scale."""

    model: str
    intercept: float
    weights: tuple[tuple[str, float], ...]  # (feature name, weight)
    threshold: float = 0.5  # below it the engine abstains: no code
    review_threshold: float = 0.8  # below it a code is given for a person to confirm (needs_review)
    category_floor: float = 0.55  # below this score an abstention's category comes from the query's own words
    knowledge: str = ""  # the fingerprint of the reference, synonyms and lexicon it was fitted on

    @classmethod
    def for_model(cls, model_label: str, path: str | Path | None = None) -> Calibration:
        """The calibration fitted for this model; MissingCalibrationError names the command that fits one."""
        path = Path(path) if path else calibration_path(model_label)
        if not path.is_file():
            raise MissingCalibrationError(
                f"no confidence calibration is fitted for model {model_label!r} (looked for {path}); fit one with "
                f"`python -m worker.mapping.calibrate tests/mapping/data/dev_*.csv --model <the model> --write`")
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(model=data["model"], intercept=float(data["intercept"]),
                   weights=tuple((name, float(value)) for name, value in data["weights"].items()),
                   threshold=float(data["threshold"]), review_threshold=float(data["review_threshold"]),
                   category_floor=float(data["category_floor"]), knowledge=data.get("knowledge", ""))

    def save(self, path: str | Path | None = None, **facts) -> Path:
        """Write the calibration (and facts about its fit, e.g. cross-validated figures) as JSON."""
        path = Path(path) if path else calibration_path(self.model)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"model": self.model, "knowledge": self.knowledge, "intercept": round(self.intercept, 4),
                "weights": {name: round(value, 4) for name, value in self.weights},
                "threshold": self.threshold, "review_threshold": self.review_threshold,
                "category_floor": self.category_floor, **facts}
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return path

    def confidence(self, features: Mapping[str, float]) -> float:
        z = self.intercept + sum(weight * float(features[name]) for name, weight in self.weights)
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


class Decider:
    def __init__(self, reference: Reference, views: ReferenceViews, calibration: Calibration):
        self.reference = reference
        self.views = views
        self.calibration = calibration

    def decide(self, query: LabTestQuery, norm: NormalisedName, ranking: Ranking) -> MappingResult:
        """Answer with the best candidate, or abstain. A code below the review threshold, or whose variant is a
        guess, is given for a person to confirm: a wrong code is worse than none, a reviewed one is better."""
        scored, features = ranking.candidates, ranking.features
        if not scored:
            return MappingResult(self.fallback_category(norm), None, None, 0.0, "none", (), True)
        best_score, best_i, method, _ = scored[0]
        best = self.reference.entries[best_i]
        confidence = self.calibration.confidence(features)
        candidates = tuple(self.reference.entries[i].code for _, i, _, _ in scored[:5])
        scores = tuple(round(score, 4) for score, _, _, _ in scored[:5])
        if confidence >= self.calibration.threshold:
            doubt = confidence < self.calibration.review_threshold or self._variant_in_doubt(query, norm, scored)
            return MappingResult(best.category, best.code, best.long_common_name, round(confidence, 4), method,
                                 candidates, needs_review=doubt, candidate_scores=scores)
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
        if unit_class(query.unit) is not None or norm.absolute is not None or is_qualitative_value(query.value) \
                or norm.hint is not None:
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
