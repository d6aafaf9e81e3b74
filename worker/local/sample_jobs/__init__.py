"""Realistic lab reports for the demo, the load test and the benchmark.

Each ``<name>.json`` is a list of tests in the job contract's test shape
(``{"test_name", "test_value", "test_unit"}``, optionally ``specimen``), written the way Indian
and US lab reports print them. They are sample data, not evaluation data: the held-out
evaluation list lives in ``tests/data/heldout_reports.csv`` and is never mirrored here.
"""

from __future__ import annotations

import json
from importlib import resources

_SUFFIX = ".json"


def sample_names() -> list[str]:
    """Names of the bundled samples (file names without ``.json``), sorted."""
    root = resources.files(__name__)
    return sorted(
        entry.name[: -len(_SUFFIX)] for entry in root.iterdir() if entry.is_file() and entry.name.endswith(_SUFFIX)
    )


def load_sample(name: str) -> list[dict]:
    """The tests of one sample, e.g. ``load_sample("guide_sample")``."""
    if name.endswith(_SUFFIX):
        name = name[: -len(_SUFFIX)]
    if name not in sample_names():
        raise KeyError(f"no sample job named {name!r}; known: {', '.join(sample_names())}")
    text = resources.files(__name__).joinpath(name + _SUFFIX).read_text(encoding="utf-8")
    return json.loads(text)
