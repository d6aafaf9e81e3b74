"""Step 2, retrieve: the candidate reference rows for each normalised name, with their raw scores.

Two ways: rapidfuzz over every row's names and the synonym table's report terms, and cosine
similarity of sentence embeddings. An exact or synonym name match is a direct match for the whole
concept: every variant of that component in the same specimen group (and in the query's own
specimen), so that re-ranking can still pick the variant from the unit, specimen and method.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from worker.mapping.cache import DEFAULT_SIZE, LRU
from worker.mapping.names import ReferenceViews, alias_text, entry_aliases, token_key
from worker.mapping.normalize import Lexicon, NormalisedName, SpellingCorrector, basic_clean, normalise_name
from worker.mapping.reference import Reference
from worker.mapping.synonyms import Synonym

TOP_K = 25


@dataclass
class Evidence:
    """Per distinct normalised name: candidate reference rows and their raw retrieval scores."""

    lexical: dict[int, float]
    embedding: dict[int, float]
    exact: set[int]
    synonym: set[int]
    coverage: dict[int, float]  # share of the query's words the candidate's names account for
    short: set[int] = field(default_factory=set)  # the name is the row's LOINC short name ("WBC # Bld Auto")


_FILLER = frozenset({"of", "the", "in", "and", "by", "for", "on", "with", "to", "is", "at"})


@lru_cache(maxsize=65_536)
def _words(text: str) -> tuple[str, ...]:
    return tuple(w for w in re.split(r"[\s/]+", text) if w and w not in _FILLER)


FUZZY_WORD_MIN = 5  # words this long or longer match a word within a typo of them
FUZZY_WORD_RATIO = 85


class WordMatcher:
    """Which words of a query and of each alias account for each other: equal, or both long and within
    a typo.

    Built over the aliases' words: each query word's typo neighbours are looked up once, in C, and
    each vocabulary word knows the aliases that hold it, so comparing a query with every alias
    touches only the aliases that share a word with it.
    """

    def __init__(self, aliases: list[tuple[str, ...]]):
        vocabulary = sorted({w for words in aliases for w in words})
        self._number = {w: n for n, w in enumerate(vocabulary)}
        self._long_words = [w for w in vocabulary if len(w) >= FUZZY_WORD_MIN]
        self._near: dict[str, tuple[int, ...]] = {}
        holders: list[list[int]] = [[] for _ in vocabulary]
        for alias, words in enumerate(aliases):
            for word in words:  # once per occurrence: an alias's word count counts repeats
                holders[self._number[word]].append(alias)
        self._holders = [np.array(h, dtype=np.int64) for h in holders]
        self._counts = np.array([len(words) for words in aliases], dtype=np.float64)

    def near(self, word: str) -> tuple[int, ...]:
        """The vocabulary's words equal to the word or within a typo of it (their numbers)."""
        found = self._near.get(word)
        if found is None:
            from rapidfuzz import fuzz, process

            alike = [] if len(word) < FUZZY_WORD_MIN else [
                match for match, _, _ in process.extract(word, self._long_words, scorer=fuzz.ratio,
                                                         score_cutoff=FUZZY_WORD_RATIO, limit=None)]
            found = tuple(sorted({self._number[w] for w in (word, *alike) if w in self._number}))
            if len(self._near) >= DEFAULT_SIZE:
                self._near.clear()
            self._near[word] = found
        return found

    def shares(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Per alias: the share of the text's words found in it, and the share of its words the text accounts
        for (both 0 when either has no words, or they share none)."""
        q_share, a_share = np.zeros(len(self._counts)), np.zeros(len(self._counts))
        words = _words(text)
        reach: set[int] = set()
        found = np.zeros(len(self._counts), dtype=np.int64)
        for word in words:
            near = self.near(word)
            if near:
                reach.update(near)
                found[np.unique(np.concatenate([self._holders[n] for n in near]))] += 1
        if reach:  # an alias holds a word some query word accounts for exactly when it holds a found word
            accounted = np.bincount(np.concatenate([self._holders[n] for n in reach]), minlength=len(self._counts))
            touched = found > 0
            q_share[touched] = found[touched] / len(words)
            a_share[touched] = accounted[touched] / self._counts[touched]
        return q_share, a_share


class TokenSetRatios:
    """rapidfuzz's ``token_set_ratio`` of texts against fixed aliases, as ``cdist`` with ``dtype=uint8``
    returns it, bit for bit, in a fraction of the time.

    Two texts with no word in common and no word twice score the ratio of their sorted words, which
    ``token_sort_ratio`` has already measured: only the few pairs that share a word (found through an
    index of the aliases' words) need token_set_ratio's own, much slower, pass.
    """

    def __init__(self, aliases: list[str]):
        self.aliases = aliases
        self._by_word: dict[str, list[int]] = {}
        self._repeating: set[int] = set()  # aliases with a word twice: always scored in full
        for column, alias in enumerate(aliases):
            words = alias.split()
            if len(set(words)) != len(words):
                self._repeating.add(column)
            for word in set(words):
                self._by_word.setdefault(word, []).append(column)
        self._lengths = np.array([_sorted_length(a) for a in aliases], dtype=np.float64)
        self._wordless = np.array([not a.split() for a in aliases], dtype=bool)  # token_set_ratio: 0

    def scores(self, texts: list[str], token_sort: np.ndarray) -> np.ndarray:
        """``token_sort`` is ``cdist(texts, aliases, scorer=token_sort_ratio, dtype=float64)``."""
        from rapidfuzz import fuzz, process

        lensum = np.array([_sorted_length(t) for t in texts], dtype=np.float64)[:, None] + self._lengths
        # token_sort_ratio = 100 (1 - d / lensum) for the Indel distance d; token_set_ratio computes the
        # same score as 100 - 100 d / lensum, whose rounding can differ in the last bit: recover d
        distance = np.rint(lensum * (1.0 - token_sort / 100.0))
        scores = 100.0 - 100.0 * distance / np.maximum(lensum, 1.0)
        scores[:, self._wordless] = 0.0
        for row, text in enumerate(texts):
            words = text.split()
            if not words:
                scores[row] = 0.0
                continue
            if len(set(words)) != len(words):
                columns = list(range(len(self.aliases)))
            else:
                columns = sorted(self._repeating.union(*(self._by_word.get(w, ()) for w in set(words))))
            if columns:
                scores[row, columns] = process.cdist([text], [self.aliases[c] for c in columns],
                                                     scorer=fuzz.token_set_ratio, dtype=np.float64, workers=1)[0]
        return np.floor(scores + 0.5).astype(np.uint8)  # cdist's integer dtypes round half up


def _sorted_length(text: str) -> int:
    return len(" ".join(sorted(text.split())))


class Retriever:
    """Candidates for a normalised name: fuzzy matches over every reference row's names (component, core
    long name, the synonym table's report terms) and the nearest rows by sentence embedding. What it finds
    is cached per reading and specimen, so a name's evidence never depends on the batch it came in."""

    def __init__(self, reference: Reference, views: ReferenceViews, encoder, embeddings: np.ndarray,
                 synonyms: list[Synonym], lexicon: Lexicon):
        self.reference = reference
        self.views = views
        self.encoder = encoder
        self.embeddings = embeddings
        self.lexicon = lexicon
        self.synonyms = synonyms
        self._query_vectors: LRU[str, np.ndarray] = LRU()
        # vectors of names the reference itself uses (stored with the index): such a name costs a lookup
        self._known_rows: dict[str, int] = {}
        self._known_vectors = np.zeros((0, 0), np.float32)
        self._evidence: LRU[str, Evidence] = LRU()
        corrector_words: set[str] = set()
        aliases: list[tuple[str, int]] = []
        self._exact: dict[str, set[int]] = {}
        self._synonym_terms: dict[str, set[int]] = {}
        self._short_names: dict[str, set[int]] = {}
        lex = self.lexicon
        for i, entry in enumerate(self.reference.entries):
            if entry.short_name:  # record systems print LOINC's short names as they are: "Glucose SerPl-mCnc"
                self._short_names.setdefault(basic_clean(entry.short_name), set()).add(i)
                corrector_words.update(basic_clean(entry.short_name).split())
            texts = {alias_text(t, lex) for t in entry_aliases(entry)}
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
        self._alias_texts = [a[0] for a in aliases]
        self._token_set = TokenSetRatios(self._alias_texts)
        self._alias_codes = np.array([a[1] for a in aliases], dtype=np.int64)
        # start offset of each entry's alias run, for per-entry max via reduceat
        self._alias_starts = np.searchsorted(self._alias_codes, np.arange(len(self.reference)))
        self._has_alias = np.isin(np.arange(len(self.reference)), self._alias_codes)
        self._word_matcher = WordMatcher([_words(t) for t in self._alias_texts])
        # rows grouped by concept, so that each concept's best embedding score is one reduceat
        concepts = {key: number for number, key in enumerate(dict.fromkeys(views.concept))}
        self._concept_of = np.array([concepts[key] for key in views.concept], dtype=np.int64)
        self._by_concept = np.argsort(self._concept_of, kind="stable")
        self._concept_starts = np.searchsorted(self._concept_of[self._by_concept], np.arange(len(concepts)))
        bounds = np.append(self._alias_starts, len(self._alias_texts))
        self._alias_positions = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(self._alias_starts))]

    def known_names(self) -> list[str]:
        """The names the reference and the synonym table use, as the normaliser writes them: a report name
        that reads as one of them needs no forward pass once ``use_known_vectors`` holds their vectors."""
        return sorted(set(self._alias_texts))

    def use_known_vectors(self, names: list[str], vectors: np.ndarray) -> None:
        """The encoder's vectors of ``known_names()`` (computed once, with the reference index)."""
        if len(names) != len(vectors):
            raise ValueError(f"{len(names)} names but {len(vectors)} vectors")
        self._known_rows = {name: row for row, name in enumerate(names)}
        self._known_vectors = np.asarray(vectors, dtype=np.float32)

    def knows(self, text: str) -> bool:
        """True when this normalised name's vector is a lookup (one of ``known_names``)."""
        return text in self._known_rows

    def _vector(self, text: str) -> np.ndarray:
        row = self._known_rows.get(text)
        return self._known_vectors[row] if row is not None else self._query_vectors[text]

    def evidence(self, norm: NormalisedName) -> Evidence:
        """What ``gather`` found for this name (call ``gather`` first)."""
        return self._evidence[self._key(norm)]

    def _key(self, norm: NormalisedName) -> str:
        """What the evidence depends on: the readings, the specimen, and a LOINC short name it is."""
        short = basic_clean(norm.raw)
        return f"{norm.lookup_key}\x1fshort={short}" if short in self._short_names else norm.lookup_key

    def gather(self, norms: Iterable[NormalisedName]) -> None:
        """Find and cache the evidence of every name not seen before. A name the reference's names or the
        synonym table match as a whole is decided by that (no fuzzy pass, no forward pass); the others go
        through one encoder call for them all."""
        wanted = {self._key(n): n for n in norms if n.is_test and n.expanded}
        searched = []
        for key, norm in wanted.items():
            if self._evidence.get(key) is not None:
                continue
            direct = self._direct(norm)
            if direct is not None:
                self._evidence.put(key, direct)
            else:
                searched.append(norm)
        if searched:
            self._search(searched)

    def _matches(self, readings, specimen: str | None) -> tuple[set[int], set[int]]:
        exact: set[int] = set()
        synonym: set[int] = set()
        for reading in readings:
            for key in (reading, token_key(reading)):
                exact.update(self._exact.get(key, ()))
                synonym.update(self._synonym_terms.get(key, ()))
        return exact, synonym

    def _with_variants(self, norm: NormalisedName, exact: set[int], synonym: set[int]) -> set[int]:
        """A synonym names a concept and its usual variant: every variant of the concept is a direct match,
        so that unit, specimen and method evidence can still pick another variant (and its variants in the
        query's own specimen: "Pleural fluid WBC count")."""
        exact = set(exact)
        for i in synonym:
            group = self.views.groups[i]
            exact.update(j for j in self.views.concept_members[i] if self.views.groups[j] == group
                         or (norm.specimen and self.views.specimen_fits(j, norm.specimen)))
        return exact

    def _direct(self, norm: NormalisedName) -> Evidence | None:
        """The evidence of a name that the reference's names, the synonym table or a LOINC short name match
        as a whole, every word known, in a specimen the rows fit; None for any other name."""
        short = self._short_names.get(basic_clean(norm.raw), set())
        exact, synonym = self._matches((norm.expanded, norm.text), norm.specimen)
        fits = any(self.views.specimen_fits(i, norm.specimen) for i in exact | synonym)
        if norm.unknown or not (short or fits):
            return None
        exact = self._with_variants(norm, exact, synonym) | short
        perfect = dict.fromkeys(exact | synonym, 1.0)
        return Evidence(dict(perfect), dict(perfect), exact, synonym, dict(perfect), short)

    def _search(self, norms: list[NormalisedName]) -> None:
        """Fuzzy matching over every row's names and the nearest rows by embedding, for names not decided
        by a whole-name match."""
        missing = list(dict.fromkeys(n.expanded for n in norms))
        to_embed = [t for t in missing if t not in self._known_rows and self._query_vectors.get(t) is None]
        if to_embed:
            vectors = self.encoder.encode(to_embed)  # one forward pass for the batch's new names
            for text, vector in zip(to_embed, vectors, strict=True):
                self._query_vectors.put(text, vector)
        q = np.stack([self._vector(t) for t in missing])
        emb_all = q @ self.embeddings.T if len(self.embeddings) else np.zeros((len(missing), 0), np.float32)
        lex_all, token_sort_all = self._lexical_scores(missing)
        row_of = {t: r for r, t in enumerate(missing)}
        k = min(TOP_K, len(self.reference))
        for norm in norms:
            row = row_of[norm.expanded]
            e = emb_all[row]
            lx = lex_all[row]
            top_e = np.argpartition(-e, k - 1)[:k] if k else []
            top_l = np.argpartition(-lx, k - 1)[:k] if k else []
            exact, synonym = self._matches((norm.expanded, norm.text), norm.specimen)
            if not any(self.views.specimen_fits(i, norm.specimen) for i in exact | synonym):
                # the whole name found nothing that fits: its other readings (brackets, slashes, known words)
                more = self._matches(norm.alternatives, norm.specimen)
                exact, synonym = exact | more[0], synonym | more[1]
            exact = self._with_variants(norm, exact, synonym)
            short = self._short_names.get(basic_clean(norm.raw), set())
            exact |= short
            ids = set(map(int, top_e)) | set(map(int, top_l)) | exact | synonym
            # variants of one concept (units, specimens, methods) share its best name similarity:
            # the embedding finds the concept, the unit/specimen/method evidence picks the variant
            concept_best = np.maximum.reduceat(e[self._by_concept], self._concept_starts) if len(e) else e
            concept_emb = {i: float(concept_best[self._concept_of[i]]) for i in ids}
            # a method the report names ("calculated") is evidence for the method, not words of the analyte
            method_words = self.lexicon.method_words
            similarity = self._name_similarity(" ".join(w for w in norm.expanded.split() if w not in method_words),
                                               token_sort_all[row], sorted(ids))
            lexical = {i: sim for i, (sim, _) in similarity.items()}
            coverage = {i: share for i, (_, share) in similarity.items()}
            for i in exact | synonym:  # an exact or synonym name match is a perfect name match
                lexical[i] = concept_emb[i] = coverage[i] = 1.0
            self._evidence.put(self._key(norm), Evidence(lexical, concept_emb, exact, synonym, coverage, short))

    def _name_similarity(self, text: str, token_sort: np.ndarray, ids: list[int]) -> dict[int, tuple[float, float]]:
        """Per candidate row, over its aliases: the best name similarity, the mean of the character
        similarity of word-sorted names (``token_sort``, the query's row of the lexical pass, per alias) and
        of word coverage both ways (so 'hemoglobin f' is not 'hemoglobin', and 'hepatitis a' is not
        'hepatitis c'); and the largest share of the query's words an alias accounts for."""
        q_share, a_share = self._word_matcher.shares(text)
        named = [i for i in ids if len(self._alias_positions[i])]
        out = {i: (0.0, 0.0) for i in ids}
        if not named:
            return out
        positions = np.concatenate([self._alias_positions[i] for i in named])
        offsets = np.cumsum([0] + [len(self._alias_positions[i]) for i in named[:-1]])
        q, a = q_share[positions], a_share[positions]
        both = (q > 0) & (a > 0)
        f1 = np.where(both, 2 * q * a / np.where(both, q + a, 1.0), 0.0)
        similarity = np.maximum.reduceat(0.5 * token_sort[positions] / 100.0 + 0.5 * f1, offsets)
        coverage = np.maximum.reduceat(q, offsets)
        out.update((i, (float(sim), float(share))) for i, sim, share in zip(named, similarity, coverage, strict=True))
        return out

    def _lexical_scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per entry, the best fuzzy score of the texts against its aliases; and the per-alias token-sort ratios."""
        from rapidfuzz import fuzz, process

        n = len(self.reference)
        if not self._alias_texts:
            return np.zeros((len(texts), n), np.float32), np.zeros((len(texts), 0))
        token_sort = process.cdist(texts, self._alias_texts, scorer=fuzz.token_sort_ratio, dtype=np.float64, workers=1)
        token_set = self._token_set.scores(texts, token_sort)
        per_alias = (0.5 * token_set.astype(np.float32) + 0.5 * np.rint(token_sort).astype(np.float32)) / 100.0
        starts = np.minimum(self._alias_starts, len(self._alias_texts) - 1)
        per_entry = np.maximum.reduceat(per_alias, starts, axis=1)
        per_entry[:, ~self._has_alias] = 0.0
        return per_entry, token_sort
