"""The mapping engine: report-style lab test names to the app's category and a LOINC code.

A pipeline of four steps, each in its own module, composed here:

1. normalise (``normalize.py``): the name's analyte words, specimen, timing, absolute/percent;
2. retrieve (``retrieve.py``): candidate reference rows, lexically and by sentence embedding;
3. re-rank (``rerank.py``): unit, specimen, scale, method and timing evidence;
4. decide (``decide.py``): a calibrated confidence answers or abstains, and flags variant guesses.

Built once (``MappingEngine.load``), then ``map(batch)`` returns one typed ``MappingResult`` per query,
in order. Pure: no boto3, no SQL, no module-level state; numpy, rapidfuzz and sentence-transformers only.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from worker.mapping.cache import LRU
from worker.mapping.decide import NOT_A_TEST, Calibration, Decider
from worker.mapping.encoder import RECIPE_VERSION, load_encoder, load_or_build_index, load_or_build_name_vectors
from worker.mapping.model import (
    model_label,
    resolve_calibration_path,
    resolve_encoder,
    resolve_index_dir,
    resolve_model,
)
from worker.mapping.names import ReferenceViews
from worker.mapping.normalize import (
    BLOOD_SPECIMENS,
    Lexicon,
    NormalisedName,
    default_lexicon,
    is_qualitative_value,
    normalise_name,
    normalise_unit,
    split_trailing_unit,
    split_unit_note,
    unit_class,
)
from worker.mapping.reference import Reference
from worker.mapping.rerank import Ranking, Reranker
from worker.mapping.retrieve import Retriever
from worker.mapping.synonyms import Synonym, read_synonyms
from worker.mapping.types import LabTestQuery, MappingResult


def knowledge_fingerprint(reference: Reference, synonyms: Iterable[Synonym], lexicon: Lexicon) -> str:
    """What the ranking's features depend on besides the model: a calibration is fitted on one of these."""
    parts = (reference.version, RECIPE_VERSION, *(f"{s.term}>{s.code}" for s in synonyms), lexicon.fingerprint())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


class MappingEngine:
    model_version: str

    def __init__(self, reference: Reference, encoder, reference_embeddings: np.ndarray, model_label_: str,
                 synonyms: Iterable[Synonym] = (), lexicon: Lexicon | None = None,
                 calibration: Calibration | None = None):
        self.reference = reference
        self.lexicon = lexicon or default_lexicon()
        self.synonyms = [s for s in synonyms if s.code in reference]
        self.knowledge = knowledge_fingerprint(reference, self.synonyms, self.lexicon)
        self.calibration = calibration or Calibration.for_model(model_label_)
        views = ReferenceViews.build(reference, self.lexicon)
        self.retriever = Retriever(reference, views, encoder, reference_embeddings, self.synonyms, self.lexicon)
        self.reranker = Reranker(reference, views)
        self.decider = Decider(reference, views, self.calibration)
        # model_version changes whenever anything that can change a result changes
        version = hashlib.sha256(f"{self.knowledge}|{self.calibration!r}".encode()).hexdigest()[:6]
        self.model_label = model_label_
        self.model_version = f"{model_label_}+ref-{version}"
        self._decisions: LRU[tuple, MappingResult] = LRU()
        self._normalised: LRU[tuple[str, str, str], NormalisedName] = LRU()

    @property
    def encoder(self):
        return self.retriever.encoder

    @classmethod
    def load(cls, model: str | None = None, index_dir: str | Path | None = None, *,
             reference: Reference | None = None, synonyms: Iterable[Synonym] | None = None,
             encoder=None, encoder_kind: str | None = None, calibration: Calibration | None = None,
             progress: bool = False) -> MappingEngine:
        """Load the model and the reference's embedding index (computed and stored on first use).

        ``encoder_kind`` (or ``ML_WORKER_ENCODER``) says how the model runs (``model.ENCODERS``). The
        model's own calibration is required (``MissingCalibrationError`` otherwise) unless one is given."""
        model_name = resolve_model(model)
        kind = getattr(encoder, "kind", "torch") if encoder is not None else resolve_encoder(encoder_kind)
        # a quantised or exported encoder's vectors differ (a little) from the model's: its results, and the
        # calibration of its scores, are its own
        label = model_label(model_name) if kind == "torch" else f"{model_label(model_name)}-{kind}"
        if calibration is None:  # before the slow part: fail fast
            calibration = Calibration.for_model(label, resolve_calibration_path())
        directory = resolve_index_dir(index_dir)
        if reference is None:
            reference = Reference.load([directory / "reference"])
        if encoder is None:
            encoder = load_encoder(model_name, kind, directory)
        embeddings = load_or_build_index(reference, encoder, model_name, directory, progress=progress)
        engine = cls(reference, encoder, embeddings, label,
                     read_synonyms() if synonyms is None else synonyms, calibration=calibration)
        names = engine.retriever.known_names()
        engine.retriever.use_known_vectors(
            names, load_or_build_name_vectors(names, encoder, model_name, directory, progress=progress))
        return engine

    # -- public API ----------------------------------------------------------------------------

    def normalise(self, query: LabTestQuery) -> NormalisedName:
        uclass = unit_class(query.unit)
        cache_key = (query.name or "", query.specimen or "", uclass or "")
        norm = self._normalised.get(cache_key)
        if norm is None:
            norm = normalise_name(query.name or "", query.specimen, self.lexicon, self.retriever.corrector)
            if uclass == "field" and norm.is_test and (norm.specimen is None or norm.specimen in BLOOD_SPECIMENS):
                norm = dataclasses.replace(norm, specimen="urine")  # cells per high/low power field: urine sediment
            if uclass == "excretion" and norm.is_test and not norm.timed_24h:
                norm = dataclasses.replace(norm, timed_24h=True)  # mg/24 h: a timed collection
            self._normalised.put(cache_key, norm)
        return norm

    def key(self, query: LabTestQuery) -> tuple[str, str]:
        query = with_unit_from_name(query)
        norm = self.normalise(query)
        name = norm.expanded if norm.is_test else norm.cleaned
        qualifiers = []
        if norm.specimen and norm.specimen not in ("blood", "serum"):
            qualifiers.append(norm.specimen)
        if norm.timed_24h:
            qualifiers.append("24h")
        if norm.absolute is True:
            qualifiers.append("absolute")
        if qualifiers:
            name = f"{name} [{' '.join(qualifiers)}]"
        return name, normalise_unit(query.unit)

    def describe(self, code: str) -> tuple[str, str] | None:
        entry = self.reference.by_code.get((code or "").strip())
        return (entry.long_common_name, entry.category) if entry else None

    def map(self, queries: Sequence[LabTestQuery]) -> list[MappingResult]:
        """One result per query, in order: normalise, retrieve (one encoder call for the batch's new names),
        re-rank, decide."""
        queries = [with_unit_from_name(q) for q in queries]
        norms = [self.normalise(q) for q in queries]
        self._gather(norms)
        return [self._decide(q, n) for q, n in zip(queries, norms, strict=True)]

    def ranking_features(self, queries: Sequence[LabTestQuery]) -> list[tuple[str | None, dict]]:
        """For calibration: each query's top-1 code (before abstention) and its confidence features."""
        queries = [with_unit_from_name(q) for q in queries]
        norms = [self.normalise(q) for q in queries]
        self._gather(norms)
        out: list[tuple[str | None, dict]] = []
        for query, norm in zip(queries, norms, strict=True):
            if not norm.is_test or not norm.expanded:
                out.append((None, {}))
                continue
            ranking = self._rank(query, norm)
            best = ranking.candidates[0].index if ranking.candidates else None
            out.append((self.reference.entries[best].code if best is not None else None, ranking.features))
        return out

    # -- the steps -----------------------------------------------------------------------------

    def _gather(self, norms: Sequence[NormalisedName]) -> None:
        self.retriever.gather(norms)

    def _rank(self, query: LabTestQuery, norm: NormalisedName) -> Ranking:
        return self.reranker.rank(query, norm, self.retriever.evidence(norm))

    def _decide(self, query: LabTestQuery, norm: NormalisedName) -> MappingResult:
        """The result for one query; identical (name, unit, value kind) queries share one decision."""
        if not norm.is_test or not norm.expanded:
            return NOT_A_TEST
        key = (norm, normalise_unit(query.unit), is_qualitative_value(query.value))
        result = self._decisions.get(key)
        if result is None:
            result = self.decider.decide(query, norm, self._rank(query, norm))
            self._decisions.put(key, result)
        return result


def with_unit_from_name(query: LabTestQuery) -> LabTestQuery:
    """A query whose name ends with its unit and has no unit of its own ("Sodium mmol/L"): the unit read
    from the name. A word printed beside the unit ("mg/dL (calc)") goes to the name."""
    if query.unit:
        unit, note = split_unit_note(query.unit)
        return dataclasses.replace(query, name=f"{query.name} ({note})", unit=unit) if note else query
    name, unit = split_trailing_unit(query.name or "")
    return dataclasses.replace(query, name=name, unit=unit) if unit else query
