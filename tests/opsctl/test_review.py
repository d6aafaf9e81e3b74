"""`opsctl review` against the real PostgreSQL, on results written by the worker's own statements; how opsctl
finds the database; and the doctor's backlog line."""

from __future__ import annotations

import csv
import json
import uuid

import pytest
import sqlalchemy
from sqlalchemy import text

from worker.mapping.loinc import check_digit
from worker.store import repository as repo
from worker.store.db import make_engine, upgrade

CBC = "Complete Blood Count (CBC)"
NEUTROPHILS = [{"code": "770-8", "name": "Neutrophils/Leukocytes in Blood by Automated count", "score": 1.37},
               {"code": "751-8", "name": "Neutrophils [#/volume] in Blood by Automated count", "score": 1.35}]
ABSENT_CODE = f"99999-{check_digit('99999')}"  # a well-formed code that no reference holds


@pytest.fixture(scope="module")
def review_url(pg_url):
    """A database of this module's own, migrated by the worker."""
    admin = sqlalchemy.create_engine(pg_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    name = f"mlw_review_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'create database "{name}"'))
    url = pg_url.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'drop database "{name}" with (force)'))
    admin.dispose()


@pytest.fixture
def store(review_url):
    engine = make_engine(review_url)
    with engine.begin() as connection:
        connection.execute(text("truncate lab_test_results, lab_jobs, lab_test_mappings, lab_review_changes, "
                                "lab_review_decisions"))
    yield engine
    engine.dispose()


@pytest.fixture
def review(opsctl, review_url, monkeypatch):
    """opsctl review VERB ... on the module's database, as reviewer 'asha' ($USER)."""
    monkeypatch.setenv("USER", "asha")
    monkeypatch.delenv("DATABASE_URL", raising=False)

    def run(verb: str, *args: str):
        return opsctl("review", verb, "--database-url", review_url, *args)

    return run


def write_job(engine, job_id: str, document_id: int, rows: list[tuple]) -> None:
    """A job's results as the worker writes them.

    Each row: (test_name, unit, key name, unit key, code, needs_review, candidates).
    """
    job = repo.JobRow(job_id=job_id, message_id=None, user_id=7, document_id=document_id, priority="normal",
                      test_count=len(rows))
    repo.claim_jobs(engine, [job])
    repo.complete_job(engine, job, [
        repo.ResultRow(test_index=i, test_name=name, test_value="1", test_unit=unit, category=CBC if code or
                       candidates else "Others", loinc_code=code, loinc_name=code and "a name", confidence=0.4,
                       match_method="synonym" if code else "none", needs_review=needs_review, model_version="v1",
                       normalized_name=key, unit_key=unit_key, candidates=candidates)
        for i, (name, unit, key, unit_key, code, needs_review, candidates) in enumerate(rows)])


def seed(engine) -> None:
    write_job(engine, "j1", 1, [
        ("Neutrophils", None, "neutrophils", "", "770-8", True, NEUTROPHILS),
        ("Hb%", "g/dL", "hemoglobin", "g/dl", None, True, [{"code": "718-7", "name": "Hemoglobin", "score": 0.6}]),
        ("Remarks", None, "remarks", "", None, False, None),
        ("***", None, "", "", None, False, None),
        ("WBC Count", "K/uL", "leukocytes count", "10*3/ul", "6690-2", False, None),
    ])
    write_job(engine, "j2", 2, [("NEUTROPHILS", None, "neutrophils", "", "770-8", True, NEUTROPHILS)])


def snapshot(engine) -> dict:
    with engine.connect() as connection:
        return {table: sorted(tuple(map(str, row)) for row in connection.execute(text(f"select * from {table}")))
                for table in ("lab_test_results", "lab_test_mappings", "lab_review_decisions", "lab_review_changes")}


def test_list_groups_the_pending_results_biggest_first(store, review):
    seed(store)
    result = review("list", "--json")
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)["items"]
    assert [(i["name"], i["unit"], i["results"], i["documents"]) for i in items] == [
        ("neutrophils", None, 2, 2), ("hemoglobin", "g/dl", 1, 1), ("remarks", None, 1, 1)]
    first = items[0]
    assert set(first) == {"name", "unit", "results", "documents", "examples", "candidates", "first_seen", "last_seen"}
    assert sorted(first["examples"]) == ["NEUTROPHILS", "Neutrophils"]
    assert first["candidates"] == NEUTROPHILS
    assert items[2]["candidates"] == []  # "remarks": no code, nothing proposed
    assert len(json.loads(review("list", "--limit", "1", "--json").stdout)["items"]) == 1

    table = review("list")
    assert table.exit_code == 0
    assert "770-8 Neutrophils/Leukocytes in Blood by Automated count (1.37)" in table.stdout
    assert "3 of 3 group(s), 4 result(s) waiting" in table.stdout


def test_an_empty_key_is_refused(store, review):
    seed(store)
    before = snapshot(store)
    blank = review("resolve", "  ", "--code", "718-7")
    assert blank.exit_code == 2 and "the name is empty" in blank.stderr
    printed = review("resolve", "***", "--no-code")  # a printed name the worker normalised to nothing
    assert printed.exit_code == 2 and "normalises to an empty key" in printed.stderr
    assert snapshot(store) == before


@pytest.mark.parametrize(("args", "message"), [
    (("--code", "718-8"), "718-8 has a wrong check digit (the digits 718 need 7)"),
    (("--code", ABSENT_CODE), f"{ABSENT_CODE} is not in the reference"),
    (("--code", "Hb"), "'Hb' is not a LOINC code"),
    (("--code", "718-7", "--no-code"), "give either --code CODE or --no-code"),
    ((), "give either --code CODE or --no-code"),
])
def test_resolve_accepts_only_a_checked_code_from_the_reference(store, review, args, message):
    seed(store)
    before = snapshot(store)
    result = review("resolve", "hemoglobin", "--unit", "g/dl", *args)
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(store) == before


def test_a_code_of_an_imported_table_is_accepted(store, review, tmp_path, monkeypatch):
    from opsctl import review as review_module

    seed(store)
    (tmp_path / "reference").mkdir()
    with open(tmp_path / "reference" / "loinc_import.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["code", "long_common_name", "component", "property", "system", "scale", "class", "units",
                         "category"])
        writer.writerow([ABSENT_CODE, "Imported thing [Mass/volume] in Serum", "Imported thing", "MCnc", "Ser",
                         "Qn", "CHEM", "mg/dL", "Others"])
    monkeypatch.setenv("ML_WORKER_INDEX_DIR", str(tmp_path))
    review_module.reference.cache_clear()
    review_module.reference_dir.cache_clear()
    try:
        result = review("resolve", "remarks", "--code", ABSENT_CODE, "--json")
    finally:
        review_module.reference.cache_clear()
        review_module.reference_dir.cache_clear()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["loinc_name"] == "Imported thing [Mass/volume] in Serum"


def test_resolve_finds_a_group_by_its_printed_name_and_says_which_unit_it_needs(store, review):
    seed(store)
    by_print = review("resolve", "Hb%", "--code", "718-7", "--note", "Hb% is g/dL here")
    assert by_print.exit_code == 0, by_print.output
    assert "'hemoglobin' [g/dl] -> 718-7 Hemoglobin [Mass/volume] in Blood" in by_print.stdout
    assert "1 result(s) changed" in by_print.stdout
    wrong_unit = review("resolve", "neutrophils", "--unit", "%", "--code", "770-8")
    assert wrong_unit.exit_code == 2 and "it was seen with unit(s) (none)" in wrong_unit.stderr
    unknown = review("resolve", "vitamin q", "--code", "770-8")
    assert unknown.exit_code == 2 and "no results under the key 'vitamin q'" in unknown.stderr


def test_no_code_keeps_the_groups_category_and_undo_takes_turns(store, review):
    seed(store)
    first = json.loads(review("resolve", "neutrophils", "--no-code", "--json").stdout)
    assert (first["code"], first["category"], first["results_changed"]) == (None, CBC, 2)
    second = json.loads(review("resolve", "neutrophils", "--code", "770-8", "--json").stdout)
    assert second["results_changed"] == 2

    refused = review("undo", str(first["decision"]))
    assert refused.exit_code == 1
    assert f"was followed by #{second['decision']}" in refused.stderr and \
        f"undo #{second['decision']} first" in refused.stderr
    assert review("undo", str(second["decision"])).exit_code == 0
    with store.connect() as connection:
        memory = connection.execute(text("select source, loinc_code, category from lab_test_mappings")).all()
        codes = connection.execute(text("select loinc_code, match_method from lab_test_results "
                                        "where normalized_name = 'neutrophils'")).all()
    assert [tuple(m) for m in memory] == [("manual", None, CBC)]  # the first decision's mapping is back
    assert {tuple(c) for c in codes} == {(None, "reviewed")}
    assert review("undo", str(first["decision"])).exit_code == 0
    with store.connect() as connection:
        assert connection.execute(text("select count(*) from lab_test_mappings")).scalar() == 0
        codes = connection.execute(text("select loinc_code, match_method, needs_review from lab_test_results "
                                        "where normalized_name = 'neutrophils'")).all()
    assert {tuple(c) for c in codes} == {("770-8", "synonym", True)}
    missing = review("undo", "999")
    assert missing.exit_code == 2 and "no decision #999" in missing.stderr

    history = review("history")
    assert history.exit_code == 0 and "asha" in history.stdout and "undone" in history.stdout


def test_an_import_with_one_bad_row_applies_nothing(store, review, tmp_path):
    seed(store)
    exported = tmp_path / "backlog.csv"
    result = review("export", str(exported))
    assert result.exit_code == 0 and "wrote 3 group(s)" in result.stdout
    with open(exported, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == ["neutrophils", "hemoglobin", "remarks"]
    assert rows[0]["candidates"].startswith("770-8 Neutrophils/Leukocytes in Blood by Automated count (1.37) | 751-8")
    assert {r["decision"] for r in rows} == {""}

    def write(decisions: dict[str, str], extra: list[dict] | None = None):
        with open(exported, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "decision": decisions.get(row["name"], "")})
            writer.writerows(extra or [])

    before = snapshot(store)
    write({"neutrophils": "770-8", "hemoglobin": "718-8", "remarks": "none"},
          extra=[{**rows[0], "name": "vitamin q", "decision": "770-8"}, {**rows[0], "decision": "751-8"},
                 {**rows[0], "name": " ", "decision": "770-8"}])
    bad = review("import", str(exported))
    assert bad.exit_code == 1
    assert "line 3: 718-8 has a wrong check digit" in bad.stderr
    assert "line 5: no results under the key 'vitamin q'" in bad.stderr
    assert "line 6: the same group as line 2" in bad.stderr
    assert "line 7: the name is empty" in bad.stderr
    assert "4 invalid row(s)" in bad.stderr and "nothing applied" in bad.stderr
    assert snapshot(store) == before

    write({"neutrophils": "770-8", "hemoglobin": "718-7", "remarks": "none"})
    dry = review("import", str(exported), "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    planned = json.loads(dry.stdout)
    assert (planned["dry_run"], planned["applied"], planned["errors"]) == (True, 0, [])
    assert [(r["line"], r["name"], r["code"], r["results_changed"]) for r in planned["rows"]] == [
        (2, "neutrophils", "770-8", 2), (3, "hemoglobin", "718-7", 1), (4, "remarks", None, 1)]
    assert snapshot(store) == before

    applied = review("import", str(exported), "--reviewer", "ravi")
    assert applied.exit_code == 0, applied.output
    assert "applied 3 decision(s), 4 result(s) changed" in applied.stdout
    assert json.loads(review("list", "--json").stdout)["items"] == []
    history = json.loads(review("history", "--json").stdout)["items"]
    assert [(h["name"], h["reviewer"]) for h in history] == [("remarks", "ravi"), ("hemoglobin", "ravi"),
                                                             ("neutrophils", "ravi")]


def test_an_import_needs_the_decision_columns(store, review, tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text("name,comment\nhb,fine\n")
    result = review("import", str(path))
    assert result.exit_code == 2 and "has no unit, decision column(s)" in result.stderr


def test_a_database_before_0002_gets_a_hint_not_a_traceback(opsctl, pg_url):
    admin = sqlalchemy.create_engine(pg_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    name = f"mlw_old_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'create database "{name}"'))
    try:
        engine = make_engine(pg_url.rsplit("/", 1)[0] + f"/{name}")
        upgrade(engine, "0001")
        engine.dispose()
        result = opsctl("review", "list", "--database-url", pg_url.rsplit("/", 1)[0] + f"/{name}")
        assert result.exit_code == 1
        assert "schema before revision 0002" in result.stderr and "python -m worker db upgrade" in result.stderr
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'drop database "{name}" with (force)'))
        admin.dispose()


def test_an_unreachable_database_is_one_line(opsctl):
    result = opsctl("review", "list", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert result.exit_code == 1
    assert result.stderr.startswith("opsctl: error: database postgresql+psycopg2://nobody@127.0.0.1:1/none not "
                                    "reachable (flag --database-url)")


def test_review_help_has_examples(opsctl):
    result = opsctl("review", "--help")
    assert result.exit_code == 0
    assert "opsctl review resolve haemoglobin --unit g/dl --code 718-7" in result.stdout
    assert "opsctl review import backlog.csv --dry-run" in result.stdout


# -- finding the database ------------------------------------------------------------------------
def test_the_flag_wins_then_database_url_and_urls_are_normalised_as_the_worker_does(monkeypatch):
    from opsctl.database import find
    from opsctl.state import State
    from worker.settings import WorkerSettings

    monkeypatch.setenv("DATABASE_URL", "postgres://app:pw@db.internal:6432/zivo")
    from_env = find(State(env="test"), None)
    assert from_env.source == "env DATABASE_URL"
    assert from_env.url == WorkerSettings().database_url()
    assert from_env.url.render_as_string(hide_password=False) == "postgresql+psycopg2://app:pw@db.internal:6432/zivo"
    flagged = find(State(env="test"), "postgresql://ops@127.0.0.1/zivo")
    assert (flagged.source, flagged.url.drivername) == ("flag --database-url", "postgresql+psycopg2")


def test_ssm_gives_the_database_with_the_task_definitions_host(stack, opsctl, monkeypatch, store, review_url):
    """SSM has the credentials (as the platform's stack); host, port and name come from the task definition."""
    from sqlalchemy.engine import make_url

    monkeypatch.delenv("DATABASE_URL", raising=False)
    missing = opsctl("review", "list")
    assert missing.exit_code == 1
    assert "no database found for env 'test'" in missing.stderr and "host, name" in missing.stderr

    target = make_url(review_url)
    ecs = stack.client("ecs")
    definition = ecs.describe_task_definition(taskDefinition="test-ml-worker")["taskDefinition"]
    container = {**definition["containerDefinitions"][0], "environment": [
        {"name": "POSTGRES_HOST", "value": target.host}, {"name": "POSTGRES_PORT", "value": str(target.port)},
        {"name": "POSTGRES_DB", "value": target.database}]}
    revision = ecs.register_task_definition(
        family="test-ml-worker", taskRoleArn=definition["taskRoleArn"], executionRoleArn=definition["executionRoleArn"],
        networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="1024", memory="4096",
        containerDefinitions=[container])["taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(cluster=stack.cluster, service=stack.service, taskDefinition=revision)
    stack.client("ssm").put_parameter(Name="/zivohealth/test/database/user", Value="postgres", Type="String",
                                      Overwrite=True)
    seed(store)
    found = opsctl("review", "list", "--json")
    assert found.exit_code == 0, found.output
    assert [i["name"] for i in json.loads(found.stdout)["items"]] == ["neutrophils", "hemoglobin", "remarks"]

    from opsctl.database import find
    from opsctl.state import State

    database = find(State(env="test"), None)
    assert database.url.render_as_string(hide_password=False) == \
        f"postgresql+psycopg2://postgres:s3cret@{target.host}:{target.port}/{target.database}"
    assert database.source == ("SSM /zivohealth/test/database/user, SSM /zivohealth/test/database/password, "
                               "task definition POSTGRES_HOST, task definition POSTGRES_PORT, "
                               "task definition POSTGRES_DB")


# -- doctor --------------------------------------------------------------------------------------
def test_doctor_shows_the_backlog_and_warns_above_the_threshold(stack, opsctl, store, review_url):
    seed(store)
    calm = opsctl("doctor", "--only", "review backlog", "--database-url", review_url)
    assert calm.exit_code == 0, calm.output
    assert calm.stdout.splitlines()[0].startswith("PASS  review backlog")
    assert "4 uncertain result(s) in 3 group(s) wait for review" in calm.stdout

    busy = opsctl("doctor", "--only", "review backlog", "--database-url", review_url, "--backlog-warn", "2", "--json")
    assert busy.exit_code == 0  # a warning, not a failure
    (check,) = json.loads(busy.stdout)["checks"]
    assert (check["ok"], check["warning"]) == (True, True)
    assert "(more than 2 groups)" in check["detail"] and "opsctl review list" in check["hint"]
    table = opsctl("doctor", "--only", "review backlog", "--database-url", review_url, "--backlog-warn", "2")
    assert table.stdout.splitlines()[0].startswith("WARN  review backlog")
    assert table.stdout.splitlines()[-1] == "0 passed, 0 failed, 1 warning(s)"


def test_doctor_warns_when_it_cannot_see_the_database(stack, opsctl, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    result = opsctl("doctor", "--only", "review backlog", "--json")
    assert result.exit_code == 0
    (check,) = json.loads(result.stdout)["checks"]
    assert check["warning"] and check["detail"].startswith("unknown: no database found for env 'test'")
    assert "--database-url" in check["hint"]


def test_review_loads_no_ml_library_and_not_the_engine(store, review_url):
    """Resolving (reference, check digit, database) stays on the operator's side of the layers."""
    import subprocess
    import sys

    seed(store)
    code = ("import sys\nfrom opsctl.cli import app\n"
            f"try:\n    app(['review', 'resolve', 'hemoglobin', '--unit', 'g/dl', '--code', '718-7', '--reviewer', 'x',"
            f" '--database-url', {review_url!r}])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "heavy = ('torch', 'transformers', 'sentence_transformers', 'numpy', 'rapidfuzz', 'worker.mapping.engine',"
            " 'worker.mapping.normalize')\nprint([m for m in heavy if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 result(s) changed" in done.stdout and done.stdout.strip().splitlines()[-1] == "[]"
