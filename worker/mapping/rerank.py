"""Step 3, re-rank: retrieval's candidates scored with the evidence beyond the name.

The unit class against the LOINC property (mass, molar, count, percent, ratio, enzyme or arbitrary
activity, entitic volume or mass, velocity, rates, fields), the specimen against the system, the
scale against the value (``Positive`` is ordinal), the method and timing in the long name, and small
priors (serum/plasma over whole blood, a synonym's usual variant, the generic body-fluid code when no
fluid is named, the excretion code for a 24-hour collection printed without a unit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from worker.mapping.names import ReferenceViews, stems
from worker.mapping.normalize import (
    BLOOD_SPECIMENS,
    IG_CLASS,
    SCALE_HINTS,
    UNIT_CLASS_PROPERTIES,
    NormalisedName,
    is_qualitative_value,
    normalise_unit,
    property_class,
    unit_class,
)
from worker.mapping.reference import Reference, ReferenceEntry
from worker.mapping.retrieve import Evidence
from worker.mapping.types import LabTestQuery

# Properties that are alternative readings of one measurement (entitic indices like MCH are other tests).
INTERCHANGEABLE_PROPERTIES = frozenset({"MCnc", "SCnc", "ACnc", "CCnc", "NCnc", "NFr", "MFr", "VFr", "PrThr"})
VARIANT_MARGIN_CAP = 0.5  # no rival variant at all counts as this margin
SPECIFIC_BLOOD_FIT = 0.12  # "Hgb Ven", "pH Art", "Glucose fingerstick": the blood named, not blood in general
# Words a unit carries that name the component's variant: D-dimer in fibrinogen-equivalent or D-dimer units
UNIT_VARIANT_WORDS = frozenset({"feu", "ddu"})


class Candidate(NamedTuple):
    score: float
    index: int  # the reference row
    method: str  # how it was found: exact, synonym, lexical or embedding
    direct: bool  # an exact or synonym name match


@dataclass(frozen=True)
class Ranking:
    candidates: list[Candidate]  # best first
    features: dict  # what the decision's confidence model reads (empty when there is no candidate)


@lru_cache(maxsize=16384)  # asked for every candidate of a name
def _ig_classes(text: str) -> frozenset[str]:
    return frozenset(IG_CLASS.findall(text))


class Reranker:
    def __init__(self, reference: Reference, views: ReferenceViews):
        self.reference = reference
        self.views = views
        self.ig_classes = [_ig_classes(e.component.lower()) for e in reference.entries]

    def adjustment(self, entry: ReferenceEntry, norm: NormalisedName, uclass: str | None, unit_norm: str,
                   qualitative: bool | None, unit_words: frozenset[str] = frozenset()) -> float:
        """Re-ranking evidence beyond the name: unit class, specimen, scale, method and timing."""
        adj = 0.0
        index = self.reference.index_of[entry.code]
        prop = entry.property
        if norm.hint and norm.hint not in SCALE_HINTS:  # LOINC's "-sCnc", "NFr": the name names the property
            adj += 0.06 if prop == norm.hint else 0.0
        scale = entry.scale.lower()
        if uclass:
            if self.unit_fits(index, uclass, unit_norm):
                adj += 0.10
                if unit_norm and unit_norm in self.views.units[index]:
                    adj += 0.04
                if uclass == "field" and prop in ("Naric", "NFld"):
                    adj += 0.03  # a number per field is a count per area; presence rows only also fit "few /HPF"
            else:
                adj -= 0.35
            if scale and scale != "qn" and uclass not in ("field", "titer"):
                adj -= 0.08
        else:
            if qualitative is True:
                adj += 0.06 if scale in ("ord", "nom", "ordqn", "nar") else -0.08
            elif qualitative is False:
                adj += 0.0 if scale == "qn" else -0.05
            if qualitative is None and scale in ("ord", "nom"):
                adj += 0.03  # a result printed without a unit is more often a qualitative one
            if norm.timed_24h:  # a 24-hour collection is reported as what it excretes: mg/24 h
                adj += 0.03 if prop in UNIT_CLASS_PROPERTIES["excretion"] else 0.0
            else:
                adj += {"MCnc": 0.02, "NFr": 0.02, "SCnc": 0.01, "CCnc": 0.01, "ACnc": 0.01,
                        "VFr": 0.02, "MFr": 0.02}.get(prop, 0.0)
        if norm.absolute is True:
            adj += 0.08 if prop in ("NCnc", "Num") else (-0.10 if prop in ("NFr",) else 0.0)
        elif norm.absolute is False:
            adj += 0.08 if prop in ("NFr", "MFr", "VFr") else (-0.10 if prop in ("NCnc",) else 0.0)
        # specimen: the query's (or serum/blood by default) against the entry's system
        group = self.views.groups[index]
        system = self.views.systems[index]
        wanted = norm.specimen
        if wanted is None and not self.views.in_blood[index]:
            # a test no one measures in blood, printed without a specimen (Specific Gravity, Urobilinogen):
            # not a blood test gone wrong; urine is what a report usually means
            adj += 0.02 if group == "urine" else 0.0
        elif wanted is None or wanted in BLOOD_SPECIMENS:
            if group == "blood":
                adj += self._blood_fit(system, wanted, norm.loinc_style)
            elif group == "arterial":
                adj += SPECIFIC_BLOOD_FIT if wanted == "arterial" else -0.03
            elif group == "other":
                adj -= 0.12
            else:
                adj -= 0.25
        elif wanted == "fluid":  # a body fluid not named: the generic body-fluid code first
            # (by more than a synonym's usual-variant bonus: "Protein, body fluid" is not pleural fluid)
            adj += 0.03 if group == "fluid" else -0.04 if group in ("pleural", "peritoneal", "synovial") else (
                -0.10 if group == "blood" else -0.25)
        else:  # an explicit urine, stool, CSF or body-fluid specimen: other systems are near impossible
            adj += 0.05 if group == wanted else (-0.08 if group == "fluid" and wanted in (
                "pleural", "peritoneal", "synovial") else -0.5)
        timed = "24 hour" in entry.long_common_name.lower()
        if norm.timed_24h:
            adj += 0.10 if timed else -0.06
        elif timed:
            adj -= 0.10
        adj += self._method_evidence(index, norm, wanted)
        adj += self._antibody_class_fit(index, norm)
        tags = UNIT_VARIANT_WORDS.intersection(unit_words)
        if tags:
            adj += 0.08 if tags & set(entry.component.lower().split()) else -0.04
        timing = self.views.timings[index]
        if timing and not (timing & stems(norm.cleaned + " " + norm.expanded)):
            adj -= 0.04
        return adj

    @staticmethod
    def _blood_fit(system: str, wanted: str | None, loinc_style: bool) -> float:
        """Which blood system a blood-like specimen means: whole, venous and capillary blood name theirs; LOINC's
        'Ser' and 'SerPl' differ; a report's 'serum' (or none) means serum or plasma."""
        exact = {"wholeblood": "bld", "venous": "bldv", "capillary": "bldc", "serplas": "ser/plas"}.get(wanted)
        if exact:
            if system == exact:  # venous or capillary blood named outright outweighs a usual whole-blood code
                return SPECIFIC_BLOOD_FIT if wanted in ("venous", "capillary") else 0.08
            # venous or capillary blood named, no row of its own: whole blood is the nearest reading, nearer
            # than a plasma the lab would have to spin ("INR POC" is the meter's INR in blood)
            if system == "bld" and wanted in ("venous", "capillary"):
                return SPECIFIC_BLOOD_FIT / 2  # less than the named blood's own row, with a usual-variant bonus
            # platelet-poor plasma is a plasma; venous, capillary and whole blood are all blood
            return 0.03 if system.startswith(exact[:3]) or (system == "ppp" and wanted == "serplas") else 0.0
        if wanted == "serum" and loinc_style:
            return 0.05 if system == "ser" else (0.03 if system == "ser/plas" else 0.0)
        if "ser" in system or "plas" in system or system == "ppp":
            return 0.03
        return -0.03 if system in ("bldv", "bldc", "blda") else 0.0

    def _antibody_class_fit(self, index: int, norm: NormalisedName) -> float:
        """An antibody class the name names (IgG, IgM) is the analyte's, not a detail: the row of another
        class is another test; a row with no class (total antibody) is a weaker reading."""
        named = _ig_classes(norm.expanded)
        if not named:
            return 0.0
        row = self.ig_classes[index]
        return (0.05 if row & named else -0.15) if row else -0.03

    def _method_evidence(self, index: int, norm: NormalisedName, wanted: str | None) -> float:
        """A method the name names picks the row with that method; LOINC's short names name theirs, so one that
        names none means the row without; a report's name usually leaves the routine method unsaid."""
        named = frozenset(w[:6] for w in norm.methods)
        row_method = self.views.method_named[index]
        if named:
            return 0.08 if row_method & named else (-0.05 if row_method else -0.01)
        if norm.loinc_style:
            return -0.04 if row_method else 0.04
        method = self.views.methods[index]
        if not method:
            return 0.0
        if method & stems(norm.cleaned):
            return 0.05
        if wanted == "urine" and "strip" in self.views.method_text[index]:
            return 0.02  # urine routine chemistry is a dipstick
        return -0.05 if "manua" in method else -0.02

    def unit_fits(self, index: int, uclass: str, unit_norm: str | None) -> bool:
        """The unit's class is one the row's property is printed in, or the unit is one of the row's own
        ("index" for an antibody's arbitrary units, whose class is otherwise a ratio's)."""
        return (self.reference.entries[index].property in UNIT_CLASS_PROPERTIES.get(uclass, frozenset())
                or bool(unit_norm) and unit_norm in self.views.units[index])

    def rank(self, query: LabTestQuery, norm: NormalisedName, evidence: Evidence) -> Ranking:
        """Candidates best first and the confidence features of the best."""
        uclass = unit_class(query.unit) or property_class(norm.hint)
        unit_norm = normalise_unit(query.unit)
        qualitative = is_qualitative_value(query.value)
        unit_words = frozenset(re.findall(r"[a-z]+", (query.unit or "").lower()))
        if qualitative is None and norm.hint in ("qualitative", "quantitative"):  # LOINC's Ql / Qn
            qualitative = norm.hint == "qualitative"
        scored: list[Candidate] = []
        for i in evidence.lexical:
            entry = self.reference.entries[i]
            lex = evidence.lexical[i]
            emb = evidence.embedding[i]
            base = 0.45 * lex + 0.55 * max(emb, 0.0)
            direct = i in evidence.exact or i in evidence.synonym
            if direct:
                base += 0.30
            if i in evidence.synonym:
                base += 0.05  # the variant a report usually means
            if i in evidence.short:
                base += 0.15  # LOINC's own short name names one variant exactly
            method = ("synonym" if i in evidence.synonym or norm.text != norm.expanded else "exact") if direct else (
                "lexical" if lex >= emb else "embedding")
            score = base + self.adjustment(entry, norm, uclass, unit_norm, qualitative, unit_words)
            scored.append(Candidate(score, i, method, direct))
        scored.sort(key=lambda s: (-s[0], s[1]))
        if not scored:
            return Ranking(scored, {})
        best_score, best_i, _, direct = scored[0]
        best = self.reference.entries[best_i]
        concept = self.views.concept
        other_concept = next((s for s, i, _, _ in scored[1:] if concept[i] != concept[best_i]), 0.0)
        # a real rival is the same analyte in a variant a report could mean instead (another specimen, method,
        # or an interchangeable property); MCH is not a rival of haemoglobin, its unit tells them apart
        rival = next((s for s, i, _, _ in scored[1:] if concept[i] == concept[best_i] and (
            self.reference.entries[i].property == best.property
            or {self.reference.entries[i].property, best.property} <= INTERCHANGEABLE_PROPERTIES)), None)
        fit = 0 if uclass is None else (1 if self.unit_fits(best_i, uclass, unit_norm) else -1)
        variant_margin = VARIANT_MARGIN_CAP if rival is None else min(best_score - rival, VARIANT_MARGIN_CAP)
        features = {"score": best_score, "concept_margin": min(best_score - other_concept, 1.0),
                    "variant_margin": variant_margin, "direct": direct, "usual": best_i in evidence.synonym,
                    "short": best_i in evidence.short, "unit_fit": fit,
                    "coverage": evidence.coverage.get(best_i, 0.0), "unknown": norm.unknown}
        return Ranking(scored, features)
