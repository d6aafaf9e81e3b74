"""Normalise test names and units the way lab reports write them.

The knowledge (abbreviations, local terms, British spellings, method words, non-test phrases)
lives in ``data/lexicon.csv``; this module only applies it. Everything here is cheap: no torch.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
LEXICON_PATH = DATA_DIR / "lexicon.csv"

KINDS = ("spelling", "method", "abbreviation", "non_test", "noise", "property")
# What a property row may name: a LOINC property, or the scale of the result.
SCALE_HINTS = frozenset({"qualitative", "quantitative"})
STOPWORDS = frozenset({"of", "the", "for", "in", "on", "and", "a", "an", "to", "by", "with", "is", "at", "type"})
PARENTHESES = re.compile(r"[(\[]([^)\]]*)[)\]]")

# Specimen words -> the specimen they denote. Matched as whole words/phrases.
SPECIMEN_PHRASES: tuple[tuple[str, str], ...] = (
    ("cerebrospinal fluid", "csf"), ("csf", "csf"),
    ("pleural fluid", "pleural"), ("ascitic fluid", "peritoneal"), ("peritoneal fluid", "peritoneal"),
    ("ascites", "peritoneal"), ("synovial fluid", "synovial"), ("joint fluid", "synovial"),
    ("other body fluid", "fluid"), ("other fluid", "fluid"), ("body fluid", "fluid"), ("fluid", "fluid"),
    ("pleural", "pleural"), ("peritoneal", "peritoneal"), ("ascitic", "peritoneal"), ("synovial", "synovial"),
    ("urine", "urine"), ("urinary", "urine"), ("urin", "urine"),
    ("stool", "stool"), ("stools", "stool"), ("feces", "stool"), ("fecal", "stool"), ("motion", "stool"),
    ("serum or plasma", "serplas"), ("platelet poor plasma", "serplas"),
    ("whole blood", "wholeblood"), ("venous blood", "venous"), ("arterial blood", "arterial"), ("arterial", "arterial"),
    ("capillary blood", "capillary"), ("saliva", "saliva"), ("oral fluid", "saliva"),
)
# Words removed anywhere (they name the specimen, not the analyte).
SERUM_WORDS = ("serum", "plasma", "sr", "ser", "ser/plas")
# Specimens that are blood or a part of it: a name without a specimen means one of these.
BLOOD_SPECIMENS = frozenset({"blood", "serum", "serplas", "wholeblood", "arterial", "venous", "capillary"})
SPECIMEN_WORDS = frozenset(w for phrase, _ in SPECIMEN_PHRASES for w in phrase.split()) | {"serum", "plasma", "sr",
                                                                                            "ser", "blood"}
# Phrases in which "blood" is part of the analyte and must stay.
BLOOD_PROTECTED = ("occult blood", "blood occult", "red blood", "white blood", "blood group", "blood grouping",
                   "blood cells")
_SPECIMEN_PATTERNS = tuple((re.compile(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])"), name)
                           for phrase, name in SPECIMEN_PHRASES)
# "plasma cells" are an analyte, not a specimen
_SERUM_PATTERNS = tuple(re.compile(rf"(?<![a-z0-9/]){re.escape(word)}(?![a-z0-9/])(?! cell)") for word in SERUM_WORDS)

TIMED_24H = re.compile(r"\b(?:24|twenty four)\s*-?\s*(?:h|hr|hrs|hour|hours)\b")
LABEL_PATTERN = re.compile(r"^\s*([A-Za-z][A-Za-z .'/]*?)\s*:\s*\S")
PAGE_PATTERN = re.compile(r"^\s*page\s*\d+(\s*(of|/)\s*\d+)?\s*$")
FOOTNOTE_CHARS = re.compile(r"[\*†‡§¶#¹²³⁴⁵⁶⁷⁸⁹⁰^~@!?]")
NON_WORD = re.compile(r"[^a-z0-9+/ ]+")
SPACES = re.compile(r"\s+")
QUALITATIVE_VALUES = re.compile(
    r"^\s*(pos|positive|neg|negative|reactive|non[\s-]*reactive|nil|absent|present|trace|detected|not detected|"
    r"normal|abnormal|seen|not seen|occasional|few|plenty|clear|turbid|hazy|pale yellow|yellow|straw|amber|"
    r"[+]{1,4}|[0-9]\+|o positive|a positive|b positive|ab positive|o negative|a negative|b negative|ab negative|"
    r"rh positive|rh negative)\s*$")


@dataclass(frozen=True)
class Lexicon:
    spellings: dict[str, str]
    methods: dict[str, str]
    abbreviations: dict[str, str]
    non_tests: frozenset[str]
    noise: frozenset[str] = frozenset()  # site, instrument and record-system words: not part of the analyte
    properties: dict[str, str] = field(default_factory=dict)  # LOINC property/scale abbreviations -> a unit hint

    @cached_property
    def method_words(self) -> frozenset[str]:
        """Words a method phrase leaves in a name ('calculated'): evidence for the method, not the analyte."""
        return frozenset(w for kept in self.methods.values() for w in kept.split())

    @cached_property
    def words(self) -> frozenset[str]:
        """Every word the lexicon knows, on either side of a row."""
        texts = [*self.spellings, *self.spellings.values(), *self.methods, *self.methods.values(),
                 *self.abbreviations, *self.abbreviations.values(), *self.non_tests, *self.noise, *self.properties]
        return frozenset(w for text in texts for w in text.replace("/", " ").split())

    def fingerprint(self) -> str:
        """A stable text of the whole lexicon (frozenset order varies between processes)."""
        parts = [sorted(self.spellings.items()), sorted(self.methods.items()), sorted(self.abbreviations.items()),
                 sorted(self.non_tests), sorted(self.noise), sorted(self.properties.items())]
        return repr(parts)

    @classmethod
    def load(cls, path: str | Path = LEXICON_PATH) -> Lexicon:
        kinds: dict[str, dict[str, str]] = {k: {} for k in KINDS}
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                term = basic_clean(row["term"])
                if term and row["kind"] in kinds:
                    replacement = row.get("replacement") or ""
                    kinds[row["kind"]][term] = replacement.strip() if row["kind"] == "property" else basic_clean(
                        replacement)
        return cls(kinds["spelling"], kinds["method"], kinds["abbreviation"], frozenset(kinds["non_test"]),
                   frozenset(kinds["noise"]), kinds["property"])


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    return Lexicon.load()


@lru_cache(maxsize=65536)  # retrieval keys every name by it, warm names included
def basic_clean(text: str) -> str:
    """Lower-case, fold accents, drop footnote marks and punctuation (keep + and /), squeeze spaces."""
    text = unicodedata.normalize("NFKD", text or "")
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    # dotted initialisms: "M.C.V." -> "mcv", "E.S.R." -> "esr" (but not "S. Typhi")
    text = re.sub(r"(?<![a-z])((?:[a-z]\.\s?){2,}(?:[a-z](?![a-z]))?)",
                  lambda m: m.group(1).replace(".", "").replace(" ", "") + " ", text)
    text = re.sub(r"(?<=\d)\+(?=\d)", " plus ", text).replace("+", " ").replace(" plus ", "+")
    text = text.replace("µ", "u").replace("μ", "u")
    text = re.sub(r"(?<=[a-z])0(?=[a-z])", "o", text)  # a scanned report's zero for O: "S0dium"
    text = FOOTNOTE_CHARS.sub(" ", text)
    text = text.replace("&", " and ").replace("'", "").replace("’", "")
    text = re.sub(r"\s:\s", "/", text)  # "BUN : Creatinine" is a ratio
    text = re.sub(r"\bw/?\s*refl(?:ex)?\b.*$", " ", text)  # "TSH W/Reflex to FT4": the reflex is an order rule
    text = NON_WORD.sub(" ", text)
    text = re.sub(r"\s*/\s*", "/", text)
    text = re.sub(r"(?<![a-z0-9])/|/(?![a-z0-9])", " ", text)
    return SPACES.sub(" ", text).strip()


def phrase_sub(text: str, mapping: dict[str, str]) -> str:
    """Replace whole-word phrases, longest first, in one pass (a replacement is not re-replaced)."""
    if not text or not mapping:
        return text
    pattern = _compiled(tuple(sorted(mapping, key=len, reverse=True)))
    return SPACES.sub(" ", pattern.sub(lambda m: mapping[m.group(0)], text)).strip()


@lru_cache(maxsize=64)
def _compiled(terms: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(re.escape(t) for t in terms) + r")(?![a-z0-9])")


@dataclass(frozen=True)
class NormalisedName:
    raw: str
    cleaned: str  # lower-case, punctuation-free, spelling-fixed; specimen words still in
    text: str  # analyte words only: specimen words, prefixes and method words removed
    expanded: str  # ``text`` with abbreviations expanded: what retrieval sees
    specimen: str | None  # blood, wholeblood, serum, urine, stool, csf, pleural, peritoneal, synovial, fluid, arterial
    timed_24h: bool
    absolute: bool | None  # True: name says absolute/#; False: name says % ; None: silent
    is_test: bool
    alternatives: tuple[str, ...] = ()  # other readings to look up (the name without/inside brackets)
    hint: str | None = None  # a LOINC property ("SCnc") or scale ("qualitative") an abbreviation in the name names
    unknown: int = 0  # words known neither to the reference, the synonyms nor the lexicon ("Hemoglobin xyz")
    methods: tuple[str, ...] = ()  # the methods the name names, as words ("manual", "immunoassay", "glucometer")
    loinc_style: bool = False  # written in LOINC's short-name style ("Glucose SerPl-mCnc"): it names its method

    @property
    def lookup_key(self) -> str:
        """What retrieval's evidence depends on: the readings and the specimen (direct matches are
        looked for in the specimen's own systems), so 'Bands' in blood and in a body fluid differ."""
        return "\x1f".join((self.expanded, *self.alternatives, f"specimen={self.specimen}"))


def is_non_test(cleaned: str, lexicon: Lexicon) -> bool:
    if not cleaned or not re.search(r"[a-z]", cleaned):
        return True
    if PAGE_PATTERN.match(cleaned) or cleaned in lexicon.non_tests:
        return True
    words = [w for w in re.split(r"[ /]", cleaned) if w and w not in STOPWORDS and not w.isdigit()]
    return bool(words) and all(w in lexicon.non_tests for w in words)


# "S. Creatinine", "U. Albumin": one-letter specimen prefixes (dots already gone); "UA pH", "UA Blood"
# (urinalysis), "UDS Opiates" (urine drug screen): the panel names the specimen
SPECIMEN_PREFIX = re.compile(r"^(?:(s|u|p)\s+(?=[a-z]{3})|(ua|uds)\s+(?=[a-z]{2}))")


def _strip_specimen(text: str) -> tuple[str, str | None]:
    specimen: str | None = None
    match = SPECIMEN_PREFIX.match(text)
    if match:
        specimen = {"s": "serum", "p": "serum"}.get(match.group(1), "urine")
        text = text[match.end():]
    for pattern, name in _SPECIMEN_PATTERNS:
        if pattern.search(text):
            stripped = SPACES.sub(" ", pattern.sub(" ", text)).strip()
            if stripped:
                specimen = specimen or name
                text = stripped
    for pattern in _SERUM_PATTERNS:
        if pattern.search(text):
            stripped = SPACES.sub(" ", pattern.sub(" ", text)).strip()
            if stripped:
                specimen = specimen or "serum"
                text = stripped
    if specimen not in ("urine", "stool") and not any(p in text for p in BLOOD_PROTECTED):
        # (in urine or stool, "blood" is what is looked for: "Urine dipstick blood")
        # "blood" as a specimen word: "Blood Urea", "Urea Nitrogen, Blood", LOINC's "Glucose Bld Qn"
        stripped = SPACES.sub(" ", re.sub(r"(?<![a-z0-9])blood(?![a-z0-9])", " ", text)).strip()
        if stripped and stripped != text:
            specimen = specimen or "blood"
            text = stripped
    # "S. Creatinine", "Sr. Iron", "U. Albumin": one-letter specimen prefixes (dots already gone)
    return text, specimen


# An immunoglobulin class: "IgG", "IgM", "immunoglobulin g" (the class letter is the group)
IG_CLASS = re.compile(r"\b(?:ig|immunoglobulin )([gmaed])\b")
SEQUENCE_NUMBER = re.compile(r"#\s*\d+\b")

# "PCR" is the urine protein/creatinine ratio on its own, and the method (nucleic acid amplification) beside
# an organism's name
PCR = re.compile(r"\b(?:rt )?pcr\b")
PCR_AS_RATIO = frozenset({"protein", "creatinine", "ratio", "spot", "random"})

# "Neutrophils/leuk", "Retics/100 RBC": a share of the cells (LOINC's short names), not a ratio of two tests
PER_CELLS = re.compile(r"/(?:100 )?(?:leuk|leuks|leukocytes?|wbcs?|rbcs?|erythrocytes?)(?![a-z0-9])")


def _flag_absolute(raw: str, cleaned: str) -> bool | None:
    low = raw.lower()
    if re.search(r"\babs\b|\babsolute\b|#(?!\s*\d)", low) or re.search(r"\bcount\b", cleaned) and re.search(
            r"neutro|lympho|mono|eosino|baso|polymorph", cleaned):
        return True
    if "%" in low or re.search(r"\bpercent(age)?\b", low) or PER_CELLS.search(cleaned):
        return False
    return None


def normalise_name(raw: str, specimen: str | None = None, lexicon: Lexicon | None = None,
                   vocabulary: SpellingCorrector | None = None, _alternatives: bool = True) -> NormalisedName:
    lexicon = lexicon or default_lexicon()
    label = LABEL_PATTERN.match(raw or "")
    if label and is_non_test(basic_clean(label.group(1)), lexicon):  # "Sample Type: Serum", "Method: ECLIA"
        return NormalisedName(raw, basic_clean(raw), "", "", None, False, None, False)
    raw = SEQUENCE_NUMBER.sub(" ", raw or "")  # "Blood Culture #2", "Troponin #1": which draw, not the test
    codes = 0
    if vocabulary is not None:  # "Sodium [A1234]", "HAEMOGLOBIN (Hb) [A0417-03]": a lab's own code is not the analyte
        raw, codes = _drop_bracketed_codes(raw, lexicon, vocabulary)
    cleaned = join_spaced_letters(basic_clean(raw), raw)
    cleaned = phrase_sub(cleaned, lexicon.spellings)
    if vocabulary is not None:
        cleaned = vocabulary.correct(cleaned)
    if is_non_test(cleaned, lexicon):
        return NormalisedName(raw, cleaned, "", "", None, False, None, False)
    absolute = _flag_absolute(raw, cleaned)
    timed = bool(TIMED_24H.search(cleaned)) or bool(specimen and TIMED_24H.search(basic_clean(specimen)))
    hint = next((lexicon.properties[w] for w in cleaned.split() if w in lexicon.properties), None)
    text = TIMED_24H.sub(" ", PER_CELLS.sub(" ", cleaned))
    text = re.sub(r"\b(?:absolute|abs|count|percent|percentage|number|no)\b", " ", text) if absolute is not None \
        else text
    # site, instrument and record-system words, and LOINC's property and scale abbreviations, are not the analyte
    without_noise = phrase_sub(text, {**dict.fromkeys(lexicon.noise, ""), **dict.fromkeys(lexicon.properties, "")})
    if not without_noise.strip():
        return NormalisedName(raw, cleaned, "", "", None, False, None, False)  # "POC", "Result"
    text, found_specimen = _strip_specimen(SPACES.sub(" ", without_noise).strip())
    if specimen:
        spec_clean = basic_clean(specimen)
        stripped, given = _strip_specimen(spec_clean + " x")
        given = given or ("blood" if "blood" in spec_clean else None)
        if given and not (given in ("blood", "serum") and found_specimen not in (None, "blood", "serum")):
            found_specimen = given  # the given specimen wins unless the name is more specific ("whole blood")
    methods = tuple(dict.fromkeys(w for phrase in _phrases_in(text, lexicon.methods)
                                  for w in (lexicon.methods[phrase] or phrase).split()))
    if PCR.search(text) and set(PCR.sub(" ", text).split()) - PCR_AS_RATIO:  # "HSV PCR": the method, not the ratio
        text, methods = SPACES.sub(" ", PCR.sub(" ", text)).strip(), (*methods, "naa")
    stripped = phrase_sub(text, lexicon.methods)
    if not stripped.strip() and not phrase_sub(cleaned, lexicon.methods).strip():
        return NormalisedName(raw, cleaned, "", "", None, False, None, False)  # "Method: Photometry", "Westergren"
    text = stripped if stripped.strip() else text
    if found_specimen == "urine":  # the collection, not the analyte: "Urine Sugar - Fasting", "Spot urine"
        text = re.sub(r"\b(?:spot|random|fasting|pp|post prandial|postprandial|early morning|first morning)\b",
                      " ", text)
    text = re.sub(rf"^(?:(?:{'|'.join(STOPWORDS)})\s+)+|(?:\s+(?:{'|'.join(STOPWORDS)}))+$", "", text.strip())
    text = SPACES.sub(" ", text).strip() or cleaned
    expanded = phrase_sub(text, lexicon.abbreviations)
    expanded = " ".join(dict.fromkeys(expanded.split()))  # "ph ph" -> "ph"
    if "/" in expanded and "ratio" not in expanded and len({side.strip() for side in expanded.split("/")}) == 1:
        expanded = expanded.split("/")[0].strip()  # "SGPT/ALT", "AST/SGOT": two names of one analyte, not a ratio
        text = text.split("/")[0].strip()
    parts: list[str] = []
    if PARENTHESES.search(raw):
        # "Mean Corpuscular Volume (MCV)": the name outside the brackets and the bracketed part
        # are looked up on their own as well
        # ("Measles Antibody (IgM)": an antibody class in brackets qualifies the name, it is not another name)
        parts = [PARENTHESES.sub(" ", raw)] + [p for p in PARENTHESES.findall(raw) if not IG_CLASS.fullmatch(
            basic_clean(p))]
    elif "/" in raw and "ratio" not in cleaned and re.search(r"\s/|/\s", raw):
        parts = raw.split("/")  # "SGOT / AST": two names for one test
    if _alternatives and re.search(r"\banti\b", text) and re.search(r"\bantibod(y|ies)\b", text):
        parts.append(re.sub(r"\banti\b", " ", raw, flags=re.IGNORECASE))  # "Anti HCV Antibody" ~ "HCV antibody"
    if _alternatives and re.search(r"\bantibod(y|ies)\b", text) and re.search(r"\banti|\big[gmae]\b", text):
        parts.append(re.sub(r"\bantibod(?:y|ies)\b", " ", raw, flags=re.IGNORECASE))  # "Anticardiolipin Antibody IgG"
    if _alternatives and not lexicon.method_words.isdisjoint(text.split()):  # "Calculated Bicarbonate"
        parts.append(" ".join(w for w in text.split() if w not in lexicon.method_words))
    if _alternatives and re.search(r"\btotal\b", text):
        parts.append(re.sub(r"\btotal\b", " ", raw, flags=re.IGNORECASE))  # "Alkaline Phosphatase, Total"
    if _alternatives and re.search(r"[a-z]/[a-z]", text) and "ratio" not in text:
        parts.append(raw + " ratio")  # "BUN : Creatinine", "Chol/HDL"
    found = []
    if _alternatives and parts:
        for part in parts:
            sub = normalise_name(part, None, lexicon, vocabulary, _alternatives=False)
            if sub.is_test:
                found += [sub.text, sub.expanded]
    words = expanded.replace("/", " ").split()  # "ABO/Rh": two known words
    unknown = [w for w in words if not _known(w, lexicon, vocabulary)] if vocabulary else []
    if unknown and len(unknown) < len(words):  # "Hemoglobin xyz": the name without the unknown word
        found.append(" ".join(w for w in expanded.split() if w not in unknown))
    alternatives = tuple(a for a in dict.fromkeys(found) if a and a not in (text, expanded))
    loinc_style = bool(hint) or any(w in LOINC_SYSTEM_WORDS for w in basic_clean(raw).split())
    return NormalisedName(raw, cleaned, text, expanded, found_specimen, timed, absolute, True, alternatives, hint,
                          len(unknown) + codes, methods, loinc_style)


# LOINC's short-name system abbreviations: a name that uses them is in LOINC's own style
LOINC_SYSTEM_WORDS = frozenset({"serpl", "ser", "plas", "bld", "bldv", "blda", "bldc", "ur", "urns", "stl", "fld",
                                "ppp", "serplbld", "sal", "prt", "plr", "snv"})


def _phrases_in(text: str, mapping: dict[str, str]) -> list[str]:
    """The keys of ``mapping`` found in ``text`` as whole-word phrases, longest first (as phrase_sub replaces)."""
    if not text or not mapping:
        return []
    return _compiled(tuple(sorted(mapping, key=len, reverse=True))).findall(text)


_CODE = re.compile(r"^(?=[a-z0-9]*\d)[a-z0-9]+$")


def _drop_bracketed_codes(raw: str, lexicon: Lexicon, vocabulary: SpellingCorrector) -> tuple[str, int]:
    """The name without bracketed parts that hold only codes and numbers ('[A0417-03]', '(12345)'), not '(T3)'."""
    dropped = 0

    def drop(match: re.Match) -> str:
        nonlocal dropped
        words = basic_clean(match.group(1)).split()
        codes = [w for w in words if _CODE.match(w) and not w.isdigit() and not _known(w, lexicon, vocabulary)]
        if words and codes and all(w in codes or w.isdigit() for w in words):
            dropped += 1
            return " "
        return match.group(0)

    return PARENTHESES.sub(drop, raw or ""), dropped


def _known(word: str, lexicon: Lexicon, vocabulary: SpellingCorrector) -> bool:
    """Whether a word means something to the engine; a number does (CA 19-9), a code does not (A0417)."""
    return word.isdigit() or word in STOPWORDS or word in lexicon.words or vocabulary.knows(word) or \
        word in SPECIMEN_WORDS


_SPACED_LETTERS = re.compile(r"(?<![a-z0-9])[a-z](?: [a-z]){2,}(?![a-z0-9])")


def join_spaced_letters(cleaned: str, raw: str) -> str:
    """'H D L Cholesterol' -> 'hdl cholesterol', 'S G O T' -> 'sgot': three or more single letters that the
    report separated by spaces only (not 'Hb A, A2, F')."""
    def join(match: re.Match) -> str:
        letters = match.group(0).split()
        spaced = r"(?<![A-Za-z0-9])" + r"\s+".join(letters) + r"(?![A-Za-z0-9])"
        return "".join(letters) if re.search(spaced, raw, re.IGNORECASE) else match.group(0)

    return _SPACED_LETTERS.sub(join, cleaned)


class SpellingCorrector:
    """Fix misspelt words against the reference vocabulary with rapidfuzz (OSA edit distance), and rejoin
    words a report split in two ('Triglycer ides', 'HORM ONE')."""

    def __init__(self, vocabulary: Iterable[str]):
        words = {w for text in vocabulary for w in text.split()}
        self.words = frozenset(words)  # every word of the vocabulary, short ones too
        self.vocabulary = sorted({w for w in words if len(w) >= 4 and w.isalpha()})
        self._known = set(self.vocabulary)
        self._cache: dict[str, str] = {}

    def knows(self, word: str) -> bool:
        return word in self.words

    def correct_word(self, word: str) -> str:
        if len(word) < 5 or not word.isalpha() or word in self._known:
            return word
        if word not in self._cache:
            from rapidfuzz import process
            from rapidfuzz.distance import OSA

            limit = 1 if len(word) < 8 else 2
            best = process.extractOne(word, self.vocabulary, scorer=OSA.distance, score_cutoff=limit)
            self._cache[word] = best[0] if best else word
        return self._cache[word]

    def correct(self, text: str) -> str:
        words = text.split(" ")
        out: list[str] = []
        i = 0
        while i < len(words):
            if i + 1 < len(words) and self._split_word(words[i], words[i + 1]):
                out.append(self.correct_word(words[i] + words[i + 1]))
                i += 2
            else:
                out.append(self.correct_word(words[i]))
                i += 1
        return " ".join(out)

    def _split_word(self, first: str, second: str) -> bool:
        """Two pieces of one word: one of them is not a word we know, and together they are one."""
        if not (first.isalpha() and second.isalpha()) or (first in self.words and second in self.words):
            return False
        joined = first + second
        return len(joined) >= 6 and (joined in self._known or self.correct_word(joined) in self._known)


# ---- units -------------------------------------------------------------------------------------

@lru_cache(maxsize=4096)  # reports print a few dozen distinct units; every test asks again
def normalise_unit(unit: str | None) -> str:
    """A canonical spelling for comparing units: 'gm/dl' -> 'g/dl', 'x10^3/uL' -> '10*3/ul', '/[HPF]' -> '/hpf'."""
    if not unit:
        return ""
    u = unicodedata.normalize("NFKC", unit).strip().lower()
    u = u.replace("µ", "u").replace("μ", "u").replace("mcg", "ug").replace("³", "3").replace("⁹", "9")
    u = re.sub(r"\(calc\.?\)|\(calculated\)|calc\.?$|\bfeu\b|\bddu\b", " ", u)
    u = re.sub(r"\s+", "", u)
    u = re.sub(r"[\[\]{}]", "", u).replace("beth'u", "bu")
    u = re.sub(r"x?10\((\d+)\)", r"10*\1", u)  # "x10(3)/mcL": the exponent in brackets
    u = u.replace("gms", "g").replace("gm", "g").replace("cumm", "ul").replace("cu.mm", "ul").replace("mm3", "ul")
    u = u.replace("cmm", "ul").replace("microl", "ul").replace("mcl", "ul").replace("^", "*").replace("x10", "10")
    u = re.sub(r"^(?:thou|k|thousand|th|thousands)/", "10*3/", u)
    u = re.sub(r"^(?:mill|million|millions|mil|m)/", "10*6/", u)
    u = re.sub(r"^lakhs?/", "10*5/", u)
    u = re.sub(r"^10e(\d+)", r"10*\1", u)
    u = re.sub(r"^10(\d)/", r"10*\1/", u)
    u = u.replace("/hr", "/h").replace("/1sthr", "/h").replace("/1sth", "/h").replace("hrs", "h")
    u = u.replace("(24.h)", "24h").replace("/24hours", "/24h").replace("/24hr", "/24h").replace("/day", "/24h")
    u = u.replace("1.73_m2", "1.73m2").replace("1.73sq.m", "1.73m2").replace("1.73sqm", "1.73m2")
    return u.strip("() ")


_UNIT_RULES: tuple[tuple[str, str], ...] = (
    (r"^%$|^percent", "percent"),
    (r"ml/min", "rate"),
    (r"/24h$|24h$", "excretion"),
    (r"/(hpf|lpf)$|^(hpf|lpf)$", "field"),
    (r"^mm/h", "velocity"),
    (r"^(sec|s|secs|seconds|second|min|mins|minutes)$", "time"),
    (r"^fl$|^(um)\*?3$", "entvol"),
    (r"^pg$|^pg/cell$", "entmass"),
    (r"^ph$", "ph"),
    (r"^ratio$|^index$|^inr$|^mg/g$|^mg/mmol$|^mg/gcreat|^ug/mg|^g/g$|^mg/mg$|^sg$|^s/co$|^coi$", "ratio"),
    (r"titer|titre|^1:", "titer"),
    (r"mosm", "osmol"),
    (r"mmhg", "pressure"),
    (r"^/100", "per100"),  # "/100 WBC": nucleated red cells per hundred leukocytes, a ratio, not a count
    (r"copies|^10\*\d+/|^/ul$|^/l$|^cells/|^/nl$|^/mm|^#/|^count", "count"),
    (r"mol/|eq/", "molar"),
    (r"^(n|u|p)g/(ml|l|dl)/(h|hr)$", "activity"),  # renin activity: angiotensin I made per hour
    (r"^(n|u|m|k)?(iu|u|au|eu|bu|gpl|mpl)/|^(iu|u|au)$|^gpl|^mpl", "activity"),  # bu: Bethesda units
    (r"^(k|m|u|n|p|f)?g/|^g%|^mg%|^gm%", "mass"),
    (r"^ml$|^l$", "volume"),
)

# Which LOINC properties a unit class is compatible with.
UNIT_CLASS_PROPERTIES: dict[str, frozenset[str]] = {
    "percent": frozenset({"NFr", "MFr", "VFr", "SFr", "CFr", "Fr", "RelRto", "DistWidth", "Ratio", "NFR",
                          "EntMCnc",  # MCHC is printed as g/dL or as %
                          "RelACnc", "RelCCnc", "RelMCnc"}),  # factor activities and antigens: % of normal
    "mass": frozenset({"MCnc", "MSCnc", "EntMCnc", "MCncDiff", "MRto", "MCnt"}),  # MCnt: ug/g, mg/kg
    "molar": frozenset({"SCnc", "MSCnc", "Osmol", "SRto"}),
    "count": frozenset({"NCnc", "Num"}),
    "per100": frozenset({"Ratio", "NRto", "NFr"}),
    "activity": frozenset({"CCnc", "ACnc", "CAct", "EntCat", "Titr", "ACncDiff", "CCnt", "ACnt",
                           "RelACnc", "RelCCnc"}),  # a factor's activity in IU/dL, 1 IU/dL being 1% of normal
    "ratio": frozenset({"Ratio", "MRto", "SRto", "RelRto", "MFr", "NRto", "Rden", "RelTime", "VRto", "INR"}),
    "time": frozenset({"Time", "RelTime"}),
    "entvol": frozenset({"EntVol", "EntMeanVol", "DistWidth"}),
    "entmass": frozenset({"EntMass"}),
    "velocity": frozenset({"Vel"}),
    "rate": frozenset({"VRat", "ArVRat"}),
    "excretion": frozenset({"MRat", "SRat", "CRat", "NRat", "VRat", "Vol"}),
    "field": frozenset({"Naric", "NFld", "Num", "PrThr", "Prid"}),
    "titer": frozenset({"Titr", "ACnc", "PrThr"}),
    "osmol": frozenset({"Osmol", "SCnc"}),
    "pressure": frozenset({"PPres"}),
    "volume": frozenset({"Vol"}),
    "ph": frozenset({"LsCnc", "pH"}),
}


def property_class(prop: str | None) -> str | None:
    """The unit class a LOINC property is printed in ('SCnc' -> 'molar'), for a name that names its property."""
    return next((name for name, props in UNIT_CLASS_PROPERTIES.items() if prop in props), None)


_TRAILING_UNIT = re.compile(r"^(.*[A-Za-z].*?)[\s,]+\(?([^\s()]*[/%][^\s()]*)\)?\s*$")


@lru_cache(maxsize=16384)
def split_trailing_unit(name: str) -> tuple[str, str | None]:
    """'Sodium mmol/L' -> ('Sodium', 'mmol/L'), 'Pus cells /hpf' -> ('Pus cells', '/hpf'); a name with no unit
    at its end ('SGPT/ALT', 'Albumin/Globulin') is returned whole, with None."""
    match = _TRAILING_UNIT.match(name or "")
    if match and unit_class(match.group(2)) is not None:
        return match.group(1).strip(" ,-"), match.group(2)
    return name, None


_UNIT_NOTE = re.compile(r"^(.*?\S)\s*\(([A-Za-z][A-Za-z .]*)\)\s*$")


@lru_cache(maxsize=16384)
def split_unit_note(unit: str | None) -> tuple[str | None, str | None]:
    """'mg/dL (calc)' -> ('mg/dL', 'calc'): a word some labs print beside the unit, which belongs to the
    name (here: the method); a unit without one, or whose bracket is part of it, is returned whole."""
    match = _UNIT_NOTE.match(unit or "")
    if match and unit_class(match.group(1)) is not None and unit_class(match.group(2)) is None:
        return match.group(1), match.group(2).strip()
    return unit, None


@lru_cache(maxsize=4096)
def unit_class(unit: str | None) -> str | None:
    u = normalise_unit(unit)
    if not u:
        return None
    for pattern, name in _UNIT_RULES:
        if re.search(pattern, u):
            return name
    return None


def is_qualitative_value(value: str | None) -> bool | None:
    """True for 'Positive'/'Nil'/'+', False for numbers, None when silent."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip().lower()
    if QUALITATIVE_VALUES.match(text):
        return True
    if re.match(r"^[<>]?=?\s*-?\d+(\.\d+)?\s*$", text):
        return False
    return None
