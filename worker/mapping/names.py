"""How the engine reads a reference row's names: its analyte (the long common name without
[property], 'in <system>' and 'by <method>'), the aliases a report may use for it, the concept it
shares with its variants, its specimen group, its method and its timing. Pure text, no model."""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker.mapping.normalize import BLOOD_SPECIMENS, STOPWORDS, Lexicon, basic_clean, normalise_unit, phrase_sub
from worker.mapping.reference import Reference, ReferenceEntry

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
    # LOINC names an acid by its anion, reports by the acid: Methylmalonate ~ methylmalonic acid, Urate ~ uric acid
    aliases += [_ANION.sub("ic acid", text) for text in aliases if _ANION.search(text)]
    return aliases


_ANION = re.compile(r"(?<=[a-z]{2})ate\b(?=\s*(?:/|$))", re.IGNORECASE)


def token_key(text: str) -> str:
    """Word order and plural '-s' ignored: 'Protein, Total' ~ 'total proteins', 'Blood, Occult' ~ 'occult blood'."""
    words = [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")) else w
             for w in text.split() if w not in STOPWORDS]
    return " ".join(sorted(words))


def concept_key(component_alias: str) -> str:
    """Entries that measure the same thing share a concept: 'lymphocytes/leukocytes' ~ 'lymphocytes', and
    D-dimer in fibrinogen-equivalent or D-dimer units ('fibrin d dimer feu' ~ 'fibrin d dimer ddu')."""
    key = re.sub(r"/(?:100 )?(?:leukocytes|erythrocytes)\b", "", component_alias)
    return re.sub(r"\s(?:feu|ddu)\b", "", key).strip()


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
    if s.startswith("saliva"):
        return "saliva"
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


def stems(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _METHOD_NOISE and len(w) > 1}


_FILLER_WORDS = frozenset({"method", "by", "of", "the", "with", "and", "in", "or", "for", "on", "count", "assay"})


def method_stems(text: str) -> frozenset[str]:
    """Six-letter stems of a method's words ('Manual count' -> {'manual'}, 'Glucometer' -> {'glucom'}): what a
    method a name names is compared with (six letters keep 'glucometer' apart from 'glucose')."""
    return frozenset(w[:6] for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _FILLER_WORDS and len(w) > 1)


def alias_text(text: str, lexicon: Lexicon) -> str:
    """A reference name written the way normalised queries are: spellings fixed, abbreviations expanded."""
    cleaned = phrase_sub(basic_clean(text), lexicon.spellings)
    expanded = phrase_sub(cleaned, lexicon.abbreviations)
    return " ".join(dict.fromkeys(expanded.split()))


@dataclass(frozen=True)
class ReferenceViews:
    """What retrieval, re-ranking and the decision read about each reference row, by row index."""

    units: list[set[str]]
    groups: list[str]  # specimen group: blood, arterial, urine, stool, csf, pleural, peritoneal, synovial, fluid, other
    systems: list[str]  # the LOINC system, lower-case, no spaces
    method_text: list[str]  # the 'by <method>' of the long name
    methods: list[set[str]]  # its word stems that are not also analyte words, common methods left out
    method_named: list[frozenset[str]]  # all its words' stems, for a method the name names
    timings: list[set[str]]  # the stems of the '--<timing>' suffix
    concept: list[str]  # rows that measure the same thing share a concept
    concept_members: list[list[int]]
    in_blood: list[bool]  # whether the row's concept has a blood (or serum, plasma, arterial) variant

    @classmethod
    def build(cls, reference: Reference, lexicon: Lexicon) -> ReferenceViews:
        entries = reference.entries
        method_text = [entry_method(e) for e in entries]
        concept = [concept_key(alias_text(e.component.replace("^", " ").replace(".", " "), lexicon)) for e in entries]
        members: dict[str, list[int]] = {}
        for i, key in enumerate(concept):
            members.setdefault(key, []).append(i)
        groups = [system_group(e.system) for e in entries]
        return cls(
            units=[{normalise_unit(u) for u in e.units} for e in entries],
            groups=groups,
            systems=[e.system.lower().replace(" ", "") for e in entries],
            method_text=method_text,
            # method words that are not also analyte words ("by Glucometer" must not match "glucose")
            methods=[stems(t) - stems(e.component) for t, e in zip(method_text, entries, strict=True)],
            method_named=[method_stems(t) - method_stems(e.component)
                          for t, e in zip(method_text, entries, strict=True)],
            timings=[stems(entry_timing(e)) for e in entries],
            concept=concept,
            concept_members=[members[key] for key in concept],
            in_blood=[any(groups[j] in ("blood", "arterial", "other") for j in members[key]) for key in concept],
        )

    def specimen_fits(self, i: int, specimen: str | None) -> bool:
        """Whether row i can be the test for a query with this specimen (serum/blood when none is named)."""
        group = self.groups[i]
        if specimen is None or specimen in BLOOD_SPECIMENS:
            return group in ("blood", "arterial", "other")
        if specimen == "fluid":
            return group in ("fluid", "pleural", "peritoneal", "synovial")
        return group == specimen
