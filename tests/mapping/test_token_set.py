"""The retriever's fast token_set_ratio is rapidfuzz's, bit for bit (it decides which rows are candidates)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz import fuzz, process

from worker.mapping.retrieve import TokenSetRatios

# few, short words: texts often share a word, repeat one, or differ by a letter
WORDS = st.sampled_from(["a", "b", "ab", "ba", "abc", "hemoglobin", "haemoglobin", "total", "free", "t4", "s", ""])
TEXTS = st.lists(WORDS, min_size=0, max_size=6).map(" ".join)


def _rapidfuzz(texts: list[str], aliases: list[str]) -> np.ndarray:
    return process.cdist(texts, aliases, scorer=fuzz.token_set_ratio, dtype=np.uint8, workers=1)


def _fast(texts: list[str], aliases: list[str]) -> np.ndarray:
    token_sort = process.cdist(texts, aliases, scorer=fuzz.token_sort_ratio, dtype=np.float64, workers=1)
    return TokenSetRatios(aliases).scores(texts, token_sort)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(TEXTS, min_size=1, max_size=5), aliases=st.lists(TEXTS, min_size=1, max_size=8))
def test_equal_to_rapidfuzz_on_any_texts(texts, aliases):
    assert (_fast(texts, aliases) == _rapidfuzz(texts, aliases)).all()


def test_equal_to_rapidfuzz_where_rounding_is_on_the_edge():
    """token_sort_ratio says 22.4999..., token_set_ratio 22.5: the integer scores differ by one."""
    texts, aliases = ["lutropin a0000 00"], ["glomerular filtration rate/1 73 sq m predicted among non blacks"]
    assert fuzz.token_sort_ratio(texts[0], aliases[0]) < 22.5 == fuzz.token_set_ratio(texts[0], aliases[0])
    assert _fast(texts, aliases).tolist() == _rapidfuzz(texts, aliases).tolist() == [[23]]


def test_equal_to_rapidfuzz_on_the_shipped_aliases(engine):
    aliases = engine.retriever._alias_texts
    texts = ["hemoglobin", "total leukocytes count", "liver enzyme alanine aminotransferase", "thyrotropin thyrotropin",
             "free t4", "glucose fasting", "hba1c", "vitamin b12 level", "x"]
    assert (_fast(texts, aliases) == _rapidfuzz(texts, aliases)).all()
