"""The review loop on the worker's side: each result keeps its memory key and (when uncertain) the engine's
candidates; older results get their key at start; and a reviewer's decision, taken with opsctl against
the real PostgreSQL, fixes past results and the next job's, and its undo restores both."""

from __future__ import annotations

import json

from sqlalchemy import text
from typer.testing import CliRunner

from worker.contract import new_job
from worker.handler import LabCategorizationHandler
from worker.mapping.types import LabTestQuery
from worker.store import repository as repo


def _head_revision() -> str:
    from alembic.script import ScriptDirectory

    from worker.store.db import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


HEAD_REVISION = _head_revision()
UNCERTAIN_REPORT = [
    {"test_name": "Hb", "test_value": "14.5", "test_unit": "g/dL"},       # confident
    {"test_name": "Neutrophils", "test_value": "62"},                      # % or absolute? no unit: a guess
    {"test_name": "Sample type", "test_value": "EDTA blood"},              # not a test: no code
    {"test_name": "NEUTROPHILS", "test_value": "58"},                      # the same key, printed otherwise
]
NEUTROPHILS_PERCENT = "770-8"


def send_job(sqs, url: str, document_id: int, tests: list[dict]) -> str:
    job = new_job(123, document_id, tests)
    sqs.send_message(QueueUrl=url, MessageBody=job.to_body(), MessageAttributes=job.message_attributes())
    return job.job_id


def is_done(db, *job_ids: str) -> bool:
    with db.connect() as connection:
        return connection.execute(text("select count(*) from lab_jobs where status = 'done' and job_id = any(:ids)"),
                                  {"ids": list(job_ids)}).scalar() == len(job_ids)


def results(db, job_id: str):
    with db.connect() as connection:
        return connection.execute(text("select * from lab_test_results where job_id = :id order by test_index"),
                                  {"id": job_id}).all()


def opsctl(pg_url: str, *args: str):
    from opsctl.cli import app

    result = CliRunner().invoke(app, [*args[:2], "--database-url", pg_url, *args[2:]])
    assert "Traceback" not in result.output, result.output
    return result


def test_each_result_keeps_its_memory_key_and_an_uncertain_one_its_candidates(sqs, queues, db, run_worker, waiter,
                                                                                mapping_engine):
    job_id = send_job(sqs, queues.url, 1, UNCERTAIN_REPORT)
    with run_worker():
        waiter(lambda: is_done(db, job_id), what="the job")
    hb, neutrophils, sample, neutrophils_again = results(db, job_id)

    for row, test in zip((hb, neutrophils, sample, neutrophils_again), UNCERTAIN_REPORT, strict=True):
        assert (row.normalized_name, row.unit_key) == mapping_engine.key(
            LabTestQuery(test["test_name"], test.get("test_unit")))
    assert (hb.normalized_name, hb.unit_key, hb.candidates) == ("hemoglobin", "g/dl", None)  # confident: none kept
    assert (neutrophils.normalized_name, neutrophils.unit_key) == ("neutrophils", "")
    assert (neutrophils_again.normalized_name, neutrophils_again.unit_key) == ("neutrophils", "")
    assert neutrophils.needs_review and neutrophils.candidates[0]["code"] == neutrophils.loinc_code
    assert len(neutrophils.candidates) >= 2
    for candidate in neutrophils.candidates:
        name, _ = mapping_engine.describe(candidate["code"])
        assert candidate["name"] == name and isinstance(candidate["score"], float)
    scores = [c["score"] for c in neutrophils.candidates]
    assert scores == sorted(scores, reverse=True)
    assert sample.loinc_code is None and sample.candidates is None  # no candidate at all for a non-test line


def _at_revision_0001_with_results(pg_url: str):
    """A database of its own at revision 0001 holding two results, as a worker before 0002 wrote them."""
    import uuid

    import sqlalchemy

    from worker.store.db import make_engine, upgrade

    admin = sqlalchemy.create_engine(pg_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    name = f"mlw_0001_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'create database "{name}"'))
    engine = make_engine(pg_url.rsplit("/", 1)[0] + f"/{name}")
    assert upgrade(engine, "0001") == "0001"
    with engine.begin() as connection:
        connection.execute(text("insert into lab_jobs (job_id, user_id, document_id, status) "
                                "values ('old', 1, 2, 'done')"))
        for index, (test_name, unit) in enumerate([("S. Creatinine", "mg/dL"), ("Neutrophils", None),
                                                   ("Haemoglobin", "g/dl"), ("Urine pus cells", "/hpf")]):
            connection.execute(text(
                "insert into lab_test_results (job_id, test_index, user_id, document_id, test_name, test_unit, "
                "category, confidence, match_method, needs_review) values ('old', :i, 1, 2, :n, :u, 'Others', 0.5, "
                "'none', true)"), {"i": index, "n": test_name, "u": unit})
    return engine, admin, name


def test_results_written_before_migration_0002_get_the_key_the_worker_writes(pg_url, mapping_engine):
    engine, admin, name = _at_revision_0001_with_results(pg_url)
    try:
        from worker.store.db import upgrade

        assert upgrade(engine) == HEAD_REVISION
        with engine.connect() as connection:
            assert connection.execute(text("select count(*) from lab_test_results where normalized_name is null"
                                           )).scalar() == 4
        handler = LabCategorizationHandler(engine, mapping_engine)
        # In chunks of 3, as several chunks would go on a big table.
        filled = repo.backfill_keys(engine, lambda n, u: handler._key(LabTestQuery(n, u)), chunk=3)
        assert filled == 4
        assert handler.backfill_keys() == 0  # nothing left: the next start costs one indexed lookup
        with engine.connect() as connection:
            rows = connection.execute(text("select test_name, test_unit, normalized_name, unit_key "
                                           "from lab_test_results order by test_index")).all()
        for row in rows:
            assert (row.normalized_name, row.unit_key) == handler._key(LabTestQuery(row.test_name, row.test_unit))
        assert rows[2].normalized_name == "hemoglobin"
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'drop database "{name}" with (force)'))
        admin.dispose()


def test_a_decision_fixes_past_and_next_results_and_its_undo_restores_both(sqs, queues, db, run_worker, waiter,
                                                                           pg_url, mapping_engine):
    first = send_job(sqs, queues.url, document_id=1, tests=UNCERTAIN_REPORT)
    second = send_job(sqs, queues.url, document_id=2, tests=UNCERTAIN_REPORT[1:2])
    with run_worker():
        waiter(lambda: is_done(db, first, second), what="the first jobs")
    before = {(r.job_id, r.test_index): r for job in (first, second) for r in results(db, job)}

    # The work list: the neutrophils group holds 3 results from 2 documents, printed two ways.
    listed = opsctl(pg_url, "review", "list", "--json")
    assert listed.exit_code == 0, listed.output
    items = {item["name"]: item for item in json.loads(listed.stdout)["items"]}
    group = items["neutrophils"]
    assert list(items)[0] == "neutrophils"  # the biggest group first
    assert (group["unit"], group["results"], group["documents"]) == (None, 3, 2)
    assert sorted(group["examples"]) == ["NEUTROPHILS", "Neutrophils"]
    assert NEUTROPHILS_PERCENT in [c["code"] for c in group["candidates"]]
    assert set(group["candidates"][0]) == {"code", "name", "score"}
    assert group["first_seen"] <= group["last_seen"]
    assert items["sample type"]["results"] == 1 and items["sample type"]["candidates"] == []
    assert "hemoglobin" not in items  # confident results are not pending

    decided = opsctl(pg_url, "review", "resolve", "neutrophils", "--code", NEUTROPHILS_PERCENT, "--reviewer", "asha",
                     "--note", "the lab prints percentages", "--json")
    assert decided.exit_code == 0, decided.output
    decision = json.loads(decided.stdout)
    assert (decision["results_changed"], decision["code"], decision["category"]) == (
        3, NEUTROPHILS_PERCENT, "Complete Blood Count (CBC)")
    with db.connect() as connection:
        fixed = connection.execute(text("select loinc_code, loinc_name, match_method, needs_review from "
                                        "lab_test_results where normalized_name = 'neutrophils'")).all()
        memory = connection.execute(text("select source, loinc_code from lab_test_mappings "
                                         "where normalized_name = 'neutrophils' and unit_key = ''")).one()
    name, _ = mapping_engine.describe(NEUTROPHILS_PERCENT)
    assert {tuple(row) for row in fixed} == {(NEUTROPHILS_PERCENT, name, "reviewed", False)}
    assert tuple(memory) == ("manual", NEUTROPHILS_PERCENT)
    after_list = json.loads(opsctl(pg_url, "review", "list", "--json").stdout)["items"]
    assert "neutrophils" not in [item["name"] for item in after_list]

    # The next job's neutrophils take the decision without a model call.
    third = send_job(sqs, queues.url, document_id=3, tests=UNCERTAIN_REPORT[1:2])
    with run_worker():
        waiter(lambda: is_done(db, third), what="the job after the decision")
    (next_result,) = results(db, third)
    assert (next_result.loinc_code, next_result.match_method, next_result.needs_review) == (
        NEUTROPHILS_PERCENT, "override", False)

    history = json.loads(opsctl(pg_url, "review", "history", "--json").stdout)["items"]
    assert [(h["id"], h["reviewer"], h["name"], h["after"]["loinc_code"], h["before"], h["note"], h["undone_at"])
            for h in history] == [(decision["decision"], "asha", "neutrophils", NEUTROPHILS_PERCENT, None,
                                   "the lab prints percentages", None)]

    undone = opsctl(pg_url, "review", "undo", str(decision["decision"]), "--reviewer", "asha")
    assert undone.exit_code == 0, undone.output
    assert "3 result(s) restored, 1 later result(s) flagged" in undone.stdout
    for job in (first, second):
        for row in results(db, job):
            old = before[(row.job_id, row.test_index)]
            assert (row.category, row.loinc_code, row.loinc_name, row.match_method, row.needs_review) == (
                old.category, old.loinc_code, old.loinc_name, old.match_method, old.needs_review)
    (next_result,) = results(db, third)
    assert next_result.needs_review  # written from the undone decision: back on the work list
    with db.connect() as connection:
        assert connection.execute(text("select count(*) from lab_test_mappings where normalized_name = "
                                       "'neutrophils'")).scalar() == 0  # there was no memory row before
    regrouped = {i["name"]: i for i in json.loads(opsctl(pg_url, "review", "list", "--json").stdout)["items"]}
    assert regrouped["neutrophils"]["results"] == 4
    again = opsctl(pg_url, "review", "undo", str(decision["decision"]), "--reviewer", "asha")
    assert again.exit_code == 1 and "was undone already" in again.stderr
    assert json.loads(opsctl(pg_url, "review", "history", "--json").stdout)["items"][0]["undone_by"] == "asha"

    # And a job after the undo goes to the model again.
    fourth = send_job(sqs, queues.url, document_id=4, tests=UNCERTAIN_REPORT[1:2])
    with run_worker():
        waiter(lambda: is_done(db, fourth), what="the job after the undo")
    (model_result,) = results(db, fourth)
    assert model_result.match_method != "override" and model_result.needs_review
