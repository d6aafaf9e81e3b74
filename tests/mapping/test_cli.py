"""The engine's commands through Typer's CliRunner: map (one name, CSV), eval, loinc import, index build."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from worker.cli import app


@pytest.fixture(scope="module")
def index_env(tmp_path_factory, packaged_model_dir, loinc_table, fixture_reference_only):
    """An index dir whose reference/ holds the sample Loinc.csv import, and the model pinned to the package."""
    root = tmp_path_factory.mktemp("cli-index")
    table = loinc_table(root / "Loinc.csv")
    env = {"ML_WORKER_INDEX_DIR": str(root / "index"), "ML_WORKER_MODEL": packaged_model_dir,
           "HF_HUB_OFFLINE": "1"}
    result = CliRunner().invoke(app, ["loinc", "import", str(table), "--json"], env=env)
    assert result.exit_code == 0, result.output
    return root, env


def run(args, env):
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_loinc_import_keeps_active_lab_codes_only(tmp_path, loinc_table):
    from worker.mapping.reference import read_reference_csv

    table = loinc_table(tmp_path / "Loinc.csv")
    out = tmp_path / "ext.csv"
    summary = json.loads(run(["loinc", "import", str(table), "--into", str(out), "--json"], {}))
    assert summary["read"] == 11
    assert summary["skipped_inactive"] == 1  # 1000-9 DEPRECATED
    assert summary["skipped_not_lab"] == 1  # 8302-2 body height, CLASSTYPE 2
    assert summary["skipped_panels"] == 1  # 24323-8
    assert summary["written"] == 8
    rows = {e.code: e for e in read_reference_csv(out)}
    assert set(rows) == {"2160-0", "14682-9", "718-7", "2345-7", "5811-5", "5902-2", "2161-8", "1742-6"}
    assert rows["2160-0"].category == "Kidney Function Tests (KFT)"
    assert rows["2161-8"].category == "Urine & Stool Tests"
    assert rows["718-7"].category == "Complete Blood Count (CBC)"
    assert rows["2345-7"].category == "Diabetes Panel"
    assert rows["5902-2"].category == "Others"
    assert rows["14682-9"].units == ("umol/L",)


def test_map_one_name_json(index_env):
    _, env = index_env
    data = json.loads(run(["map", "S. Creatinine", "--unit", "mg/dL", "--json"], env))
    assert data["loinc_code"] == "2160-0"
    assert data["category"] == "Kidney Function Tests (KFT)"
    assert data["model_version"].startswith("all-MiniLM-L6-v2-onnx-int8+ref-")  # the default encoder
    text = run(["map", "creatinine", "--unit", "umol/L"], env)
    assert "14682-9" in text


def test_map_csv_keeps_rows_and_order(index_env, tmp_path):
    _, env = index_env
    source = tmp_path / "in.csv"
    source.write_text("test_name,test_unit,note\nHemoglobin,g/dL,a\nPage 2 of 3,,b\nSGPT,U/L,c\nLymphocytes,,d\n")
    target = tmp_path / "out.csv"
    run(["map", "--input", str(source), "--output", str(target)], env)
    with open(target, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["test_name"] for r in rows] == ["Hemoglobin", "Page 2 of 3", "SGPT", "Lymphocytes"]
    assert [r["note"] for r in rows] == ["a", "b", "c", "d"]
    assert [r["loinc_code"] for r in rows][:3] == ["718-7", "", "1742-6"]
    assert set(rows[0]) >= {"category", "loinc_code", "loinc_name", "confidence", "match_method", "needs_review",
                            "candidates"}
    # percent or absolute count, nothing says which: the review flag reaches the output
    assert [r["needs_review"] for r in rows] == ["False", "False", "False", "True"]
    assert rows[0]["candidates"].split("|")[0] == "718-7"


def test_eval_reads_both_formats(index_env, tmp_path):
    _, env = index_env
    mine = tmp_path / "mine.csv"
    mine.write_text("test_name,test_unit,specimen,expected_loinc,expected_category\n"
                    "S. Creatinine,mg/dL,,2160-0,Kidney Function Tests (KFT)\n"
                    "Hb,g/dL,,718-7,Complete Blood Count (CBC)\n"
                    "Doctor's remarks,,,,Others\n"
                    "Troponin I,ng/L,,10839-9,Cardiac Markers\n")
    report = json.loads(run(["eval", str(mine), "--json"], env))
    assert report["format"] == "reports"
    assert report["labelled"] == 3 and report["covered"] == 2
    assert report["coverage"] == pytest.approx(2 / 3, abs=1e-3)
    assert report["top1"] == 1.0 and report["top3"] == 1.0
    assert report["no_code_rows"] == 1 and report["no_code_accuracy"] == 1.0
    mimic = tmp_path / "mimic.csv"
    mimic.write_text('ROW_ID,ITEMID,LABEL,FLUID,CATEGORY,LOINC_CODE\n1,50800,SPECIMEN TYPE,BLOOD,BLOOD GAS,\n'
                     '2,50912,Creatinine,Blood,Chemistry,2160-0\n3,51222,Hemoglobin,Blood,Hematology,718-7\n')
    report = json.loads(run(["eval", str(mimic), "--json"], env))
    assert report["format"] == "mimic"
    assert report["labelled"] == 2 and report["top1"] == 1.0
    assert report["category_accuracy"] == 1.0
    assert "top-1" in run(["eval", str(mimic)], env)


def test_index_build_writes_the_index_once(index_env):
    root, env = index_env
    first = json.loads(run(["index", "build", "--json"], env))
    path = root / "index" / first["path"].rsplit("/", 1)[-1]
    assert path.is_file() and path.suffix == ".npy"
    mtime = path.stat().st_mtime_ns
    second = json.loads(run(["index", "build", "--json"], env))
    assert second["path"] == first["path"]
    assert path.stat().st_mtime_ns == mtime  # loaded, not recomputed
