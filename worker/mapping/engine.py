"""The mapping engine: report-style lab test names to the app's category and a LOINC code.

Built once from the reference (``MappingEngine.load``), then ``map(batch)`` returns one typed
``MappingResult`` per query, in order. Retrieval is hybrid: rapidfuzz over the reference's names
and the synonym table, plus cosine similarity of sentence embeddings; candidates are re-ranked by
unit class (mass, molar, count, percent, ratio, enzyme activity, ...), specimen and scale, and a
calibrated confidence decides whether to answer or abstain.

The reference's embeddings are computed once per (model, reference version) and stored as
``.npy`` under the index directory. A batch embeds only its distinct, not-yet-seen normalised
names, in one ``encode`` call; query embeddings are kept in a bounded in-process LRU.

Pure: no boto3, no SQL, no module-level state; numpy, rapidfuzz and sentence-transformers only.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from worker.mapping.model import load_sentence_model, model_identity, model_label, resolve_index_dir, resolve_model
from worker.mapping.normalize import (
    STOPWORDS,
    UNIT_CLASS_PROPERTIES,
    Lexicon,
    NormalisedName,
    SpellingCorrector,
    basic_clean,
    default_lexicon,
    is_qualitative_value,
    normalise_name,
    normalise_unit,
    phrase_sub,
    unit_class,
)
from worker.mapping.reference import DATA_DIR, Reference, ReferenceEntry
from worker.mapping.types import CATEGORIES, OTHERS, LabTestQuery, MappingResult

RECIPE_VERSION = "1"  # bump when the text embedded for reference entries changes
SYNONYMS_PATH = DATA_DIR / "synonyms.csv"
CALIBRATION_PATH = DATA_DIR / "calibration.csv"
TOP_K = 25
QUERY_CACHE_SIZE = 50_000
# A runner-up this close that is the same analyte in another property makes a unit-less answer a guess.
VARIANT_DOUBT_GAP = 0.10
# Properties that are alternative readings of one measurement (entitic indices like MCH are other tests).
INTERCHANGEABLE_PROPERTIES = frozenset({"MCnc", "SCnc", "ACnc", "CCnc", "NCnc", "NFr", "MFr", "VFr", "PrThr"})


# ---- encoders ----------------------------------------------------------------------------------

class SentenceEncoder:
    """A thin wrapper over a SentenceTransformer: L2-normalised float32 rows; counts its calls."""

    def __init__(self, model, batch_size: int = 64):
        self.model = model
        self.batch_size = batch_size
        self.calls = 0
        self.texts_encoded = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.texts_encoded += len(texts)
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


# ---- synonyms ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Synonym:
    term: str
    code: str


def read_synonyms(path: str | Path = SYNONYMS_PATH) -> list[Synonym]:
    """``code,terms`` rows (terms ``|``-separated) -> one Synonym per term."""
    path = Path(path)
    if not path.is_file():
        return []
    synonyms: list[Synonym] = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            code = (row.get("code") or "").strip()
            for term in (row.get("terms") or "").split("|"):
                if code and term.strip():
                    synonyms.append(Synonym(term.strip(), code))
    return synonyms


# ---- reference text views ----------------------------------------------------------------------

_BRACKETS = re.compile(r"\[[^\]]*\]")


_OF_SPECIMEN = re.compile(r"\s+of\s+[^/]*\b(?:blood|serum|plasma|urine|fluid|stool|saliva)\b.*$", re.IGNORECASE)


def entry_core_name(entry: ReferenceEntry) -> str:
    """The analyte part of a long common name: no [property], no 'in <system>', no 'by <method>'."""
    name = _BRACKETS.sub(" ", entry.long_common_name)
    suffix = ""
    if "--" in name:
        name, suffix = name.split("--", 1)
    name = re.split(r"\s+by\s+", name, maxsplit=1)[0]
    parts = re.split(r"\s+in\s+", name)
    if len(parts) > 1:
        name = " in ".join(parts[:-1])
    else:  # "Hematocrit [Volume Fraction] of Cerebral spinal fluid", "pH of Urine"
        name = _OF_SPECIMEN.sub("", name)
    return f"{name} {suffix}".strip()


def entry_aliases(entry: ReferenceEntry) -> list[str]:
    """Names a report may use for an entry: its component, its core long name, and for fractions
    like 'Neutrophils/100 leukocytes' the numerator alone."""
    component = entry.component.replace("^", " ").replace(".", " ")
    aliases = [component, entry_core_name(entry)]
    for text in list(aliases):
        match = re.match(r"^(.+?)/(?:100 )?(leukocytes|erythrocytes)\b", text, re.IGNORECASE)
        if match:
            aliases.append(match.group(1))
        elif entry.property.endswith("Fr") and "/" in text:  # a fraction is named by its numerator: HbA1c
            aliases.append(text.split("/", 1)[0])
    return aliases


_FILLER = frozenset({"of", "the", "in", "and", "by", "for", "on", "with", "to", "is", "at"})


@lru_cache(maxsize=65_536)
def _words(text: str) -> tuple[str, ...]:
    return tuple(w for w in re.split(r"[\s/]+", text) if w and w not in _FILLER)


FUZZY_WORD_MIN = 5  # words this long or longer match a word within a typo of them
FUZZY_WORD_RATIO = 85


class WordMatcher:
    """Which words of a query and of a name account for each other: equal, or both long and within a typo.

    Built over a fixed vocabulary (the reference's alias words): each query word's typo neighbours
    are looked up once, in C, so that comparing a query with hundreds of names is set arithmetic.
    """

    def __init__(self, vocabulary: Iterable[str]):
        self._long_words = sorted({w for w in vocabulary if len(w) >= FUZZY_WORD_MIN})
        self._near: dict[str, frozenset[str]] = {}

    def near(self, word: str) -> frozenset[str]:
        """The word and the vocabulary's words within a typo of it."""
        found = self._near.get(word)
        if found is None:
            from rapidfuzz import fuzz, process

            alike = () if len(word) < FUZZY_WORD_MIN else (
                match for match, _, _ in process.extract(word, self._long_words, scorer=fuzz.ratio,
                                                         score_cutoff=FUZZY_WORD_RATIO, limit=None))
            found = frozenset((word, *alike))
            if len(self._near) >= QUERY_CACHE_SIZE:
                self._near.clear()
            self._near[word] = found
        return found

    def query(self, text: str) -> QueryWords:
        words = _words(text)
        near = tuple(self.near(w) for w in words)
        return QueryWords(words, near, frozenset().union(*near))


@dataclass(frozen=True, slots=True)
class QueryWords:
    words: tuple[str, ...]
    near: tuple[frozenset[str], ...]  # per word: itself and its typo neighbours
    reach: frozenset[str]  # every word some query word accounts for

    def shares(self, alias_words: tuple[str, ...], alias_set: frozenset[str]) -> tuple[float, float]:
        """(share of the query's words found in the alias, share of the alias's words found in the query);
        the alias's words must come from the matcher's vocabulary."""
        if not self.words or not alias_words:
            return 0.0, 0.0
        q_found = sum(1 for near in self.near if not near.isdisjoint(alias_set))
        a_found = sum(1 for w in alias_words if w in self.reach)
        return q_found / len(self.words), a_found / len(alias_words)


def token_key(text: str) -> str:
    """Word order and plural '-s' ignored: 'Protein, Total' ~ 'total proteins', 'Blood, Occult' ~ 'occult blood'."""
    words = [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")) else w
             for w in text.split() if w not in STOPWORDS]
    return " ".join(sorted(words))


def concept_key(component_alias: str) -> str:
    """Entries that measure the same thing share a concept: 'lymphocytes/leukocytes' ~ 'lymphocytes'."""
    return re.sub(r"/(?:100 )?(?:leukocytes|erythrocytes)\b", "", component_alias).strip()


def entry_embedding_text(entry: ReferenceEntry) -> str:
    return re.sub(r"\s+", " ", _BRACKETS.sub(" ", entry.long_common_name)).strip()


def system_group(system: str) -> str:
    s = system.lower().replace(" ", "")
    if "urine" in s:
        return "urine"
    if "stool" in s or "fec" in s:
        return "stool"
    if "csf" in s:
        return "csf"
    if "plrfld" in s or "pleural" in s:
        return "pleural"
    if "peritonfld" in s or "periton" in s or "ascit" in s:
        return "peritoneal"
    if "synvfld" in s or "synov" in s:
        return "synovial"
    if "fld" in s or "fluid" in s:
        return "fluid"
    if s.startswith("blda") or "art" in s:
        return "arterial"
    if any(k in s for k in ("ser", "plas", "bld", "rbc", "wbc", "plt", "ppp", "patient")) or not s:
        return "blood"
    return "other"


def entry_method(entry: ReferenceEntry) -> str:
    """The 'by <method>' part of a long common name, lower-case ('' when there is none)."""
    name = _BRACKETS.sub(" ", entry.long_common_name)
    parts = re.split(r"\s+by\s+", name, maxsplit=1)
    return parts[1].lower().strip() if len(parts) > 1 else ""


def entry_timing(entry: ReferenceEntry) -> str:
    """The '--<timing>' suffix of a long common name ('fasting', '2 hours post meal'), lower-case."""
    return entry.long_common_name.split("--", 1)[1].lower().strip() if "--" in entry.long_common_name else ""


_METHOD_NOISE = frozenset({"automated", "count", "method", "assay", "with", "probe", "detection", "and", "of", "the",
                           "formula", "based", "sq", "m", "by", "in", "or", "light", "microscopy", "field", "power",
                           "high", "low", "test", "strip", "among", "population", "immunoassay", "naa", "1", "73"})


def _stems(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _METHOD_NOISE and len(w) > 1}


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


@dataclass
class _Evidence:
    """Per distinct normalised text: candidate reference rows and their raw retrieval scores."""

    lexical: dict[int, float]
    embedding: dict[int, float]
    exact: set[int]
    synonym: set[int]
    coverage: dict[int, float]  # share of the query's words the candidate's names account for


class MappingEngine:
    model_version: str

    def __init__(self, reference: Reference, encoder, reference_embeddings: np.ndarray, model_label_: str,
                 synonyms: Iterable[Synonym] = (), lexicon: Lexicon | None = None,
                 calibration: Calibration | None = None):
        self.reference = reference
        self.encoder = encoder
        self.embeddings = reference_embeddings
        self.lexicon = lexicon or default_lexicon()
        self.calibration = calibration or Calibration.load()
        self.synonyms = [s for s in synonyms if s.code in reference]
        self._build_text_views()
        # model_version changes whenever anything that can change a result changes
        knowledge = hashlib.sha256("|".join((reference.version, RECIPE_VERSION, *(f"{s.term}>{s.code}" for s in
                                   self.synonyms), self.lexicon.fingerprint(), repr(self.calibration))).encode())
        self.model_version = f"{model_label_}+ref-{knowledge.hexdigest()[:6]}"
        self._query_vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._evidence: OrderedDict[str, _Evidence] = OrderedDict()
        self._decisions: OrderedDict[tuple, MappingResult] = OrderedDict()
        self._normalised: OrderedDict[tuple[str, str, str], NormalisedName] = OrderedDict()

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def load(cls, model: str | None = None, index_dir: str | Path | None = None, *,
             reference: Reference | None = None, synonyms: Iterable[Synonym] | None = None,
             encoder=None, progress: bool = False) -> MappingEngine:
        """Load the model and the reference's embedding index (computed and stored on first use)."""
        model_name = resolve_model(model)
        directory = resolve_index_dir(index_dir)
        if reference is None:
            reference = Reference.load([directory / "reference"])
        if encoder is None:
            encoder = SentenceEncoder(load_sentence_model(model_name))
        embeddings = load_or_build_index(reference, encoder, model_name, directory, progress=progress)
        return cls(reference, encoder, embeddings, model_label(model_name),
                   read_synonyms() if synonyms is None else synonyms)

    def _build_text_views(self) -> None:
        corrector_words: set[str] = set()
        aliases: list[tuple[str, int]] = []
        self._exact: dict[str, set[int]] = {}
        self._synonym_terms: dict[str, set[int]] = {}
        lex = self.lexicon
        self._entry_units = [{normalise_unit(u) for u in e.units} for e in self.reference.entries]
        self._entry_groups = [system_group(e.system) for e in self.reference.entries]
        self._entry_systems = [e.system.lower().replace(" ", "") for e in self.reference.entries]
        self._entry_method_text = [entry_method(e) for e in self.reference.entries]
        # method words that are not also analyte words ("by Glucometer" must not match "glucose")
        self._entry_methods = [_stems(t) - _stems(e.component) for t, e in
                               zip(self._entry_method_text, self.reference.entries, strict=True)]
        self._entry_timings = [_stems(entry_timing(e)) for e in self.reference.entries]
        self._concept = [concept_key(self._alias_text(e.component.replace("^", " ").replace(".", " ")))
                         for e in self.reference.entries]
        concepts: dict[str, list[int]] = {}
        for i, concept in enumerate(self._concept):
            concepts.setdefault(concept, []).append(i)
        self._concept_members = [concepts[c] for c in self._concept]
        for i, entry in enumerate(self.reference.entries):
            texts = {self._alias_text(t) for t in entry_aliases(entry)}
            for text in texts:
                if text:
                    aliases.append((text, i))
                    self._exact.setdefault(text, set()).add(i)
                    self._exact.setdefault(token_key(text), set()).add(i)
            corrector_words.update(basic_clean(entry.long_common_name).split())
        for term in set(lex.abbreviations) | set(lex.abbreviations.values()) | set(lex.spellings.values()):
            corrector_words.update(term.split())
        for synonym in self.synonyms:
            i = self.reference.index_of[synonym.code]
            norm = normalise_name(synonym.term, lexicon=lex)
            for text in {norm.text, norm.expanded}:
                if text:
                    self._synonym_terms.setdefault(text, set()).add(i)
                    self._synonym_terms.setdefault(token_key(text), set()).add(i)
                    aliases.append((text, i))
            corrector_words.update(norm.cleaned.split())
        self.corrector = SpellingCorrector(corrector_words)
        aliases = sorted(set(aliases), key=lambda a: (a[1], a[0]))
        self._entry_alias_texts: list[list[str]] = [[] for _ in self.reference.entries]
        for text, i in aliases:
            self._entry_alias_texts[i].append(text)
        self._alias_texts = [a[0] for a in aliases]
        self._alias_codes = np.array([a[1] for a in aliases], dtype=np.int64)
        # start offset of each entry's alias run, for per-entry max via reduceat
        self._alias_starts = np.searchsorted(self._alias_codes, np.arange(len(self.reference)))
        self._has_alias = np.isin(np.arange(len(self.reference)), self._alias_codes)
        self._entry_alias_words = [[(_words(t), frozenset(_words(t))) for t in texts]
                                   for texts in self._entry_alias_texts]
        self._word_matcher = WordMatcher(w for texts in self._entry_alias_texts for t in texts for w in _words(t))

    def _alias_text(self, text: str) -> str:
        """A reference name written the way normalised queries are: spellings fixed, abbreviations expanded."""
        cleaned = phrase_sub(basic_clean(text), self.lexicon.spellings)
        expanded = phrase_sub(cleaned, self.lexicon.abbreviations)
        return " ".join(dict.fromkeys(expanded.split()))

    # -- public API ----------------------------------------------------------------------------

    def normalise(self, query: LabTestQuery) -> NormalisedName:
        uclass = unit_class(query.unit)
        cache_key = (query.name or "", query.specimen or "", uclass or "")
        norm = self._normalised.get(cache_key)
        if norm is None:
            norm = normalise_name(query.name or "", query.specimen, self.lexicon, self.corrector)
            if uclass == "field" and norm.is_test and norm.specimen in (None, "blood", "serum"):
                norm = dataclasses.replace(norm, specimen="urine")  # cells per high/low power field: urine sediment
            if uclass == "excretion" and norm.is_test and not norm.timed_24h:
                norm = dataclasses.replace(norm, timed_24h=True)  # mg/24 h: a timed collection
            self._remember(self._normalised, cache_key, norm)
        return norm

    def key(self, query: LabTestQuery) -> tuple[str, str]:
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
        norms = [self.normalise(q) for q in queries]
        self._gather_evidence(list({n.lookup_key: n for n in norms if n.is_test and n.expanded}.values()))
        return [self._decide(q, n) for q, n in zip(queries, norms, strict=True)]

    # -- retrieval -----------------------------------------------------------------------------

    def _gather_evidence(self, norms: list[NormalisedName]) -> None:
        for norm in norms:
            if norm.lookup_key in self._evidence:
                self._evidence.move_to_end(norm.lookup_key)
        missing_norms = [n for n in norms if n.lookup_key not in self._evidence]
        if not missing_norms:
            return
        missing = list(dict.fromkeys(n.expanded for n in missing_norms))
        to_embed = [t for t in missing if t not in self._query_vectors]
        if to_embed:
            vectors = self.encoder.encode(to_embed)  # one forward pass for the batch's new names
            for text, vector in zip(to_embed, vectors, strict=True):
                self._remember(self._query_vectors, text, vector)
        q = np.stack([self._query_vectors[t] for t in missing])
        emb_all = q @ self.embeddings.T if len(self.embeddings) else np.zeros((len(missing), 0), np.float32)
        lex_all, token_sort_all = self._lexical_scores(missing)
        row_of = {t: r for r, t in enumerate(missing)}
        n = len(self.reference)
        k = min(TOP_K, n)
        for norm in missing_norms:
            row = row_of[norm.expanded]
            e = emb_all[row]
            lx = lex_all[row]
            top_e = np.argpartition(-e, k - 1)[:k] if k else []
            top_l = np.argpartition(-lx, k - 1)[:k] if k else []
            exact: set[int] = set()
            synonym: set[int] = set()
            for readings in ((norm.expanded, norm.text), norm.alternatives):
                for reading in readings:  # the whole name first; its other readings only if it found nothing
                    for key in (reading, token_key(reading)):
                        exact.update(self._exact.get(key, ()))
                        synonym.update(self._synonym_terms.get(key, ()))
                if any(self._specimen_fits(i, norm.specimen) for i in exact | synonym):
                    break
            # a synonym names a concept and its usual variant: every variant of the concept is a direct
            # match, so that unit, specimen and method evidence can still pick another variant
            # (and its variants in the query's own specimen: "Pleural fluid WBC count")
            for i in list(synonym):
                group = self._entry_groups[i]
                exact.update(j for j in self._concept_members[i] if self._entry_groups[j] == group
                             or (norm.specimen and self._specimen_fits(j, norm.specimen)))
            ids = set(map(int, top_e)) | set(map(int, top_l)) | exact | synonym
            # variants of one concept (units, specimens, methods) share its best name similarity:
            # the embedding finds the concept, the unit/specimen/method evidence picks the variant
            concept_emb = {i: max(float(e[j]) for j in self._concept_members[i]) for i in ids}
            # a method the report names ("calculated") is evidence for the method, not words of the analyte
            method_words = self.lexicon.method_words
            words = self._word_matcher.query(" ".join(w for w in norm.expanded.split() if w not in method_words))
            similarity = {i: self._name_similarity(words, token_sort_all[row], i) for i in ids}
            lexical = {i: sim for i, (sim, _) in similarity.items()}
            coverage = {i: share for i, (_, share) in similarity.items()}
            for i in exact | synonym:  # an exact or synonym name match is a perfect name match
                lexical[i] = concept_emb[i] = coverage[i] = 1.0
            evidence = _Evidence(lexical, concept_emb, exact, synonym, coverage)
            self._remember(self._evidence, norm.lookup_key, evidence)

    def _specimen_fits(self, i: int, specimen: str | None) -> bool:
        """Whether entry i can be the test for a query with this specimen (serum/blood when none is named)."""
        group = self._entry_groups[i]
        if specimen in (None, "blood", "serum", "wholeblood", "arterial"):
            return group in ("blood", "arterial", "other")
        if specimen == "fluid":
            return group in ("fluid", "pleural", "peritoneal", "synovial")
        return group == specimen

    def _name_similarity(self, query: QueryWords, token_sort: np.ndarray, i: int) -> tuple[float, float]:
        """Re-scores a retrieved candidate: character similarity of word-sorted names (``token_sort``, the
        query's row of the lexical pass, per alias), and word coverage both ways (so 'hemoglobin f' is not
        'hemoglobin', and 'hepatitis a' is not 'hepatitis c')."""
        best, best_share = 0.0, 0.0
        start = int(self._alias_starts[i])
        for offset, (words, word_set) in enumerate(self._entry_alias_words[i]):
            q_share, a_share = query.shares(words, word_set)
            f1 = 0.0 if not q_share or not a_share else 2 * q_share * a_share / (q_share + a_share)
            best = max(best, 0.5 * float(token_sort[start + offset]) / 100.0 + 0.5 * f1)
            best_share = max(best_share, q_share)
        return best, best_share

    def _lexical_scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per entry, the best fuzzy score of the texts against its aliases; and the per-alias token-sort ratios."""
        from rapidfuzz import fuzz, process

        n = len(self.reference)
        if not self._alias_texts:
            return np.zeros((len(texts), n), np.float32), np.zeros((len(texts), 0))
        token_set = process.cdist(texts, self._alias_texts, scorer=fuzz.token_set_ratio, dtype=np.uint8, workers=1)
        token_sort = process.cdist(texts, self._alias_texts, scorer=fuzz.token_sort_ratio, dtype=np.float64, workers=1)
        per_alias = (0.5 * token_set.astype(np.float32) + 0.5 * np.rint(token_sort).astype(np.float32)) / 100.0
        starts = np.minimum(self._alias_starts, len(self._alias_texts) - 1)
        per_entry = np.maximum.reduceat(per_alias, starts, axis=1)
        per_entry[:, ~self._has_alias] = 0.0
        return per_entry, token_sort

    # -- re-ranking and decision ---------------------------------------------------------------

    def _adjustment(self, entry: ReferenceEntry, norm: NormalisedName, uclass: str | None, unit_norm: str,
                    qualitative: bool | None) -> float:
        """Re-ranking evidence beyond the name: unit class, specimen, scale, method and timing."""
        adj = 0.0
        index = self.reference.index_of[entry.code]
        prop = entry.property
        scale = entry.scale.lower()
        if uclass:
            if prop in UNIT_CLASS_PROPERTIES.get(uclass, frozenset()):
                adj += 0.10
                if unit_norm and unit_norm in self._entry_units[index]:
                    adj += 0.04
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
        group = self._entry_groups[index]
        system = self._entry_systems[index]
        wanted = norm.specimen
        if wanted in (None, "blood", "serum", "arterial", "wholeblood"):
            if group == "blood":
                if wanted == "wholeblood":
                    adj += 0.08 if system == "bld" else (0.03 if system.startswith("bld") else 0.0)
                elif "ser" in system or "plas" in system:
                    adj += 0.03
                elif system in ("bldv", "bldc", "blda"):
                    adj -= 0.03
            elif group == "arterial":
                adj += 0.03 if wanted == "arterial" else -0.03
            elif group == "other":
                adj -= 0.12
            else:
                adj -= 0.25
        elif wanted == "fluid":  # a body fluid not named: the generic body-fluid code first
            adj += 0.03 if group == "fluid" else 0.01 if group in ("pleural", "peritoneal", "synovial") else (
                -0.10 if group == "blood" else -0.25)
        else:  # an explicit urine, stool, CSF or body-fluid specimen: other systems are near impossible
            adj += 0.05 if group == wanted else (-0.08 if group == "fluid" and wanted in (
                "pleural", "peritoneal", "synovial") else -0.5)
        timed = "24 hour" in entry.long_common_name.lower()
        if norm.timed_24h:
            adj += 0.10 if timed else -0.06
        elif timed:
            adj -= 0.10
        # method: a named method the report did not ask for costs a little; one it did ask for helps
        method = self._entry_methods[index]
        if method:
            query_stems = _stems(norm.cleaned)
            if method & query_stems:
                adj += 0.05
            elif wanted == "urine" and "strip" in self._entry_method_text[index]:
                adj += 0.02  # urine routine chemistry is a dipstick
            else:
                adj -= 0.05 if "manua" in method else 0.02
        timing = self._entry_timings[index]
        if timing and not (timing & _stems(norm.cleaned + " " + norm.expanded)):
            adj -= 0.04
        return adj

    def _rank(self, query: LabTestQuery, norm: NormalisedName) -> tuple[list[tuple[float, int, str, bool]], dict]:
        """Candidates best first (score, entry index, method, direct) and the confidence features of the best."""
        evidence = self._evidence[norm.lookup_key]
        uclass = unit_class(query.unit)
        unit_norm = normalise_unit(query.unit)
        qualitative = is_qualitative_value(query.value)
        scored: list[tuple[float, int, str, bool]] = []
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
            method = ("synonym" if i in evidence.synonym or norm.text != norm.expanded else "exact") if direct else (
                "lexical" if lex >= emb else "embedding")
            score = base + self._adjustment(entry, norm, uclass, unit_norm, qualitative)
            scored.append((score, i, method, direct))
        scored.sort(key=lambda s: (-s[0], s[1]))
        if not scored:
            return scored, {}
        best_score, best_i, _, direct = scored[0]
        runner_up = scored[1][0] if len(scored) > 1 else 0.0
        other_concept = next((s for s, i, _, _ in scored[1:] if self._concept[i] != self._concept[best_i]), 0.0)
        features = {"score": best_score, "margin": best_score - runner_up, "concept_margin": best_score - other_concept,
                    "direct": direct, "coverage": evidence.coverage.get(best_i, 0.0)}
        return scored, features

    def ranking_features(self, queries: Sequence[LabTestQuery]) -> list[tuple[str | None, dict]]:
        """For calibration: each query's top-1 code (before abstention) and its confidence features."""
        norms = [self.normalise(q) for q in queries]
        self._gather_evidence(list({n.lookup_key: n for n in norms if n.is_test and n.expanded}.values()))
        out: list[tuple[str | None, dict]] = []
        for query, norm in zip(queries, norms, strict=True):
            if not norm.is_test or not norm.expanded:
                out.append((None, {}))
                continue
            scored, features = self._rank(query, norm)
            out.append((self.reference.entries[scored[0][1]].code if scored else None, features))
        return out

    def _decide(self, query: LabTestQuery, norm: NormalisedName) -> MappingResult:
        """The result for one query; identical (name, unit, value kind) queries share one decision."""
        key = (norm, normalise_unit(query.unit), is_qualitative_value(query.value))
        result = self._decisions.get(key)
        if result is None:
            result = self._decide_uncached(query, norm)
            self._remember(self._decisions, key, result)
        return result

    def _decide_uncached(self, query: LabTestQuery, norm: NormalisedName) -> MappingResult:
        if not norm.is_test or not norm.expanded:
            return MappingResult(category=OTHERS, loinc_code=None, loinc_name=None, confidence=0.0,
                                 match_method="none", candidates=(), needs_review=False)
        scored, features = self._rank(query, norm)
        if not scored:
            return MappingResult(self._fallback_category(norm), None, None, 0.0, "none", (), True)
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
        category = self._fallback_category(norm)
        if category == OTHERS and best_score >= self.calibration.category_floor:
            category = best.category
        return MappingResult(category if category in CATEGORIES else OTHERS, None, None, round(confidence, 4),
                             "none", candidates, needs_review=True, candidate_scores=scores)

    def _variant_in_doubt(self, query: LabTestQuery, norm: NormalisedName,
                          scored: list[tuple[float, int, str, bool]]) -> bool:
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
            if (self._concept[i] == self._concept[best_i] and other != best.property
                    and {other, best.property} <= INTERCHANGEABLE_PROPERTIES):
                return True
        return False

    def _fallback_category(self, norm: NormalisedName) -> str:
        from worker.mapping.categorize import categorize, specimen_system

        return categorize(f"{norm.expanded} {norm.cleaned}", specimen_system(norm.specimen))

    @staticmethod
    def _remember(cache: OrderedDict, key, value) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > QUERY_CACHE_SIZE:
            cache.popitem(last=False)


# ---- the on-disk embedding index ---------------------------------------------------------------

def index_key(reference: Reference, model_name: str) -> str:
    digest = hashlib.sha256()
    for part in (RECIPE_VERSION, model_identity(model_name), reference.version):
        digest.update(part.encode())
        digest.update(b"\x00")
    for entry in reference.entries:
        digest.update(entry_embedding_text(entry).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def index_path(reference: Reference, model_name: str, index_dir: str | Path) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_label(model_name))
    return Path(index_dir) / f"{slug}-{index_key(reference, model_name)}.npy"


def load_or_build_index(reference: Reference, encoder, model_name: str, index_dir: str | Path,
                        progress: bool = False) -> np.ndarray:
    """The reference's embeddings: read from ``index_dir`` if a matching file exists, else computed and stored."""
    path = index_path(reference, model_name, index_dir)
    if path.is_file():
        array = np.load(path)
        if array.shape[0] == len(reference):
            return array.astype(np.float32, copy=False)
    texts = [entry_embedding_text(e) for e in reference.entries]
    if not texts:
        return np.zeros((0, 1), np.float32)
    if progress and hasattr(encoder, "model"):
        vectors = np.asarray(encoder.model.encode(texts, batch_size=64, convert_to_numpy=True,
                                                  normalize_embeddings=True, show_progress_bar=True), np.float32)
    else:
        vectors = encoder.encode(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)
    meta = {"model": model_label(model_name), "model_identity": model_identity(model_name),
            "reference_version": reference.version, "entries": len(reference), "dim": int(vectors.shape[1])}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return vectors
