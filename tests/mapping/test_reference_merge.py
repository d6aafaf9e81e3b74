"""A code both packaged and imported from the official table: LOINC's fields from the release, ours kept."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from worker.mapping.importer import import_loinc_table
from worker.mapping.reference import Reference, read_reference_csv

CBC = Path(__file__).resolve().parents[2] / "worker" / "mapping" / "data" / "loinc" / "a_cbc.csv"


def test_an_import_refreshes_a_packaged_code_s_name_and_keeps_its_category(tmp_path, loinc_table):
    table = loinc_table(tmp_path / "Loinc.csv", rows=[
        ("718-7", "Hemoglobin", "MCnc", "Pt", "Bld", "Qn", "", "HEM/BC", "ACTIVE", "1",
         "Hemoglobin [Mass/volume] in Blood (reworded)", "g/dL"),
    ])
    imported = read_reference_csv(import_loinc_table(table, tmp_path / "ext.csv").path, "imported")
    packaged = read_reference_csv(CBC)
    before = Reference(packaged)
    merged = Reference(packaged + imported)
    entry, original = merged.by_code["718-7"], before.by_code["718-7"]
    assert entry.long_common_name == "Hemoglobin [Mass/volume] in Blood (reworded)"
    assert (entry.category, entry.units) == (original.category, original.units)
    assert len(merged) == len(before) and merged.version != before.version  # the index is rebuilt for it


def test_a_second_packaged_row_for_a_code_changes_nothing():
    packaged = read_reference_csv(CBC)
    again = dataclasses.replace(packaged[0], long_common_name="something else")
    assert Reference(packaged + [again]).by_code[packaged[0].code] == packaged[0]
