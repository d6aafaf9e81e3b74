"""The review loop's statements on the worker's tables (SQLAlchemy Core: PostgreSQL, and SQLite locally).

A *key* is the mapping memory's (normalized_name, unit_key), which the worker writes on every result.
A decision maps a key: it writes a manual memory row (future jobs), rewrites the results already under
the key (the past) and records who, when, what before and what after; ``lab_review_changes`` keeps each
changed result's previous values, so that an undo puts back exactly what the decision changed.
Every function runs inside the caller's transaction.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, or_, select, text, tuple_, update

from opsctl.errors import OpsError
from worker.store import repository as repo
from worker.store.models import LabReviewChange, LabReviewDecision, LabTestMapping, LabTestResult

RESULTS = LabTestResult.__table__
MEMORY = LabTestMapping.__table__
DECISIONS = LabReviewDecision.__table__
CHANGES = LabReviewChange.__table__
REVIEWED = "reviewed"
EXAMPLES = 3
CHUNK = 500
REVIEWED_FIELDS = ("category", "loinc_code", "loinc_name", "match_method", "needs_review")
LIST_HINT = "use the name and unit that 'opsctl review list' shows"

Key = tuple[str, str]


@dataclass(frozen=True)
class Mapping:
    """What a decision maps a key to (no code: ``loinc_code`` None)."""

    category: str
    loinc_code: str | None
    loinc_name: str | None


def pending():
    """Results waiting for a person: the engine was unsure, or gave no code and nobody has decided."""
    r = RESULTS.c
    return or_(r.needs_review, and_(r.loinc_code.is_(None), r.match_method.not_in((REVIEWED, "override"))))


def _keyed():
    return and_(RESULTS.c.normalized_name.is_not(None), RESULTS.c.normalized_name != "")


def _under(table, key: Key):
    return and_(table.c.normalized_name == key[0], table.c.unit_key == key[1])


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _lock(connection: Connection, key: Key) -> None:
    """Decisions on one key take turns (PostgreSQL; SQLite serialises writers anyway)."""
    if connection.dialect.name == "postgresql":
        lock = zlib.crc32(f"opsctl-review\x1f{key[0]}\x1f{key[1]}".encode())
        connection.execute(text("select pg_advisory_xact_lock(:key)"), {"key": lock})


# -- reading ---------------------------------------------------------------------------------------
def backlog(connection: Connection) -> dict:
    """How much waits: pending results and their groups; and pending results the worker has not keyed yet."""
    r = RESULTS.c
    groups = (select(r.normalized_name, r.unit_key, func.count().label("n")).where(pending(), _keyed())
              .group_by(r.normalized_name, r.unit_key).subquery())
    count, results = connection.execute(select(func.count(), func.coalesce(func.sum(groups.c.n), 0))).one()
    unkeyed = connection.execute(select(func.count()).select_from(RESULTS)
                                 .where(pending(), r.normalized_name.is_(None))).scalar_one()
    return {"groups": int(count), "results": int(results), "without_key": int(unkeyed)}


def pending_groups(connection: Connection, limit: int | None = None) -> list[dict]:
    """The work list: pending results grouped by key, the biggest group first."""
    r = RESULTS.c
    statement = (select(r.normalized_name, r.unit_key, func.count().label("results"),
                        func.count(func.distinct(r.document_id)).label("documents"),
                        func.min(r.created_at).label("first_seen"), func.max(r.created_at).label("last_seen"))
                 .where(pending(), _keyed()).group_by(r.normalized_name, r.unit_key)
                 .order_by(func.count().desc(), func.max(r.created_at).desc(), r.normalized_name, r.unit_key))
    groups = connection.execute(statement.limit(limit) if limit else statement).all()
    keys = [(g.normalized_name, g.unit_key) for g in groups]
    examples: dict[Key, list[str]] = {}
    candidates: dict[Key, list[dict]] = {}
    for start in range(0, len(keys), CHUNK):
        in_chunk = tuple_(r.normalized_name, r.unit_key).in_(keys[start:start + CHUNK])
        names = (select(r.normalized_name, r.unit_key, r.test_name).where(pending(), in_chunk)
                 .group_by(r.normalized_name, r.unit_key, r.test_name).order_by(func.count().desc(), r.test_name))
        for row in connection.execute(names):
            shown = examples.setdefault((row.normalized_name, row.unit_key), [])
            if len(shown) < EXAMPLES:
                shown.append(row.test_name)
        # The newest proposal of each group: what the engine of today would offer.
        ranked = (select(r.normalized_name, r.unit_key, r.candidates, func.row_number().over(
            partition_by=(r.normalized_name, r.unit_key), order_by=(r.created_at.desc(), r.job_id.desc())
        ).label("rank")).where(pending(), in_chunk, r.candidates.is_not(None)).subquery())
        for row in connection.execute(select(ranked.c.normalized_name, ranked.c.unit_key, ranked.c.candidates)
                                      .where(ranked.c.rank == 1)):
            candidates[(row.normalized_name, row.unit_key)] = row.candidates
    return [{"name": g.normalized_name, "unit": g.unit_key or None, "results": g.results, "documents": g.documents,
             "examples": examples.get(key, []),
             "candidates": [{"code": c.get("code"), "name": c.get("name"), "score": c.get("score")}
                            for c in candidates.get(key, [])],
             "first_seen": _iso(g.first_seen), "last_seen": _iso(g.last_seen)}
            for g, key in zip(groups, keys, strict=True)]


def find_key(connection: Connection, name: str, unit: str | None) -> Key:
    """The key a reviewer means: the key itself (as ``review list`` shows it), else a name as printed."""
    name, unit = (name or "").strip(), (unit or "").strip()
    if not name:
        raise OpsError("the name is empty: an empty key would match every name that normalises to nothing",
                       hint=LIST_HINT, code=2)
    r = RESULTS.c
    if connection.execute(select(r.job_id).where(_under(RESULTS, (name, unit))).limit(1)).first():
        return name, unit
    printed = (select(r.normalized_name, r.unit_key).distinct()
               .where(func.lower(r.test_name) == name.lower(), r.normalized_name.is_not(None)))
    if unit:
        printed = printed.where(or_(r.unit_key == unit, func.lower(r.test_unit) == unit.lower()))
    found = sorted({(row.normalized_name, row.unit_key) for row in connection.execute(printed)})
    if len(found) == 1:
        if not found[0][0]:
            raise OpsError(f"{name!r} normalises to an empty key: it cannot be resolved (it is not a test name)",
                           code=2)
        return found[0]
    if found:
        shown = ", ".join(f"{n!r} [{u or '-'}]" for n, u in found)
        raise OpsError(f"{name!r} was seen under {len(found)} keys: {shown}", hint=LIST_HINT, code=2)
    units = connection.execute(select(r.unit_key).distinct().where(r.normalized_name == name)).scalars().all()
    if units:
        raise OpsError(f"no results under {name!r} with unit {unit or '(none)'}; it was seen with unit(s) "
                       f"{', '.join(sorted(u or '(none)' for u in units))}", hint="pass --unit as listed", code=2)
    raise OpsError(f"no results under the key {name!r} [{unit or '-'}], nor named {name!r}", hint=LIST_HINT, code=2)


def current_category(connection: Connection, key: Key) -> str | None:
    """The category most results under the key carry now (the engine's, when it gave no code)."""
    r = RESULTS.c
    return connection.execute(select(r.category).where(_under(RESULTS, key)).group_by(r.category)
                              .order_by(func.count().desc(), r.category).limit(1)).scalar()


def history(connection: Connection, limit: int | None = None) -> list[dict]:
    d = DECISIONS.c
    statement = select(DECISIONS).order_by(d.id.desc())
    rows = connection.execute(statement.limit(limit) if limit else statement).mappings()
    return [{"id": row["id"], "name": row["normalized_name"], "unit": row["unit_key"] or None,
             "reviewer": row["reviewer"], "decided_at": _iso(row["decided_at"]), "before": row["before"],
             "after": row["after"], "note": row["note"], "results_changed": row["results_changed"],
             "undone_at": _iso(row["undone_at"]), "undone_by": row["undone_by"]} for row in rows]


# -- deciding ------------------------------------------------------------------------------------
def decide(connection: Connection, key: Key, mapping: Mapping, reviewer: str, note: str | None) -> tuple[int, int]:
    """Map ``key`` to ``mapping`` for the future (memory) and the past (results); returns (decision id, changed)."""
    _lock(connection, key)
    m, r = MEMORY.c, RESULTS.c
    before = connection.execute(select(m.category, m.loinc_code, m.loinc_name, m.confidence, m.match_method,
                                       m.source, m.model_version).where(_under(MEMORY, key))).mappings().first()
    repo.write_manual_mapping(connection, repo.MemoryRow(
        normalized_name=key[0], unit_key=key[1], category=mapping.category, loinc_code=mapping.loinc_code,
        loinc_name=mapping.loinc_name, confidence=1.0, match_method=REVIEWED, source="manual", model_version=None))
    after = {**asdict(mapping), "match_method": REVIEWED, "needs_review": False}
    rows = connection.execute(select(r.job_id, r.test_index, *(r[f] for f in REVIEWED_FIELDS))
                              .where(_under(RESULTS, key)).with_for_update()).mappings().all()
    changed = [row for row in rows if any(row[field] != after[field] for field in REVIEWED_FIELDS)]
    decision_id = connection.execute(insert(DECISIONS).values(
        normalized_name=key[0], unit_key=key[1], reviewer=reviewer, before=dict(before) if before else None,
        after=asdict(mapping), note=note, results_changed=len(changed)).returning(DECISIONS.c.id)).scalar_one()
    if changed:
        connection.execute(insert(CHANGES), [{"decision_id": decision_id, **row} for row in changed])
        connection.execute(_update_result(**{field: bindparam(f"b_{field}") for field in REVIEWED_FIELDS}),
                           [{"b_job_id": row["job_id"], "b_test_index": row["test_index"],
                             **{f"b_{field}": after[field] for field in REVIEWED_FIELDS}} for row in changed])
    return decision_id, len(changed)


def _update_result(**values):
    r = RESULTS.c
    return update(RESULTS).where(r.job_id == bindparam("b_job_id"), r.test_index == bindparam("b_test_index")) \
        .values(**values)


def undo(connection: Connection, decision_id: int, reviewer: str) -> dict:
    """Put back the memory row and the results a decision changed; the decision stays in the history."""
    d, r = DECISIONS.c, RESULTS.c
    decision = connection.execute(select(DECISIONS).where(d.id == decision_id).with_for_update()).mappings().first()
    if decision is None:
        raise OpsError(f"no decision #{decision_id}", hint="see 'opsctl review history'", code=2)
    if decision["undone_at"] is not None:
        raise OpsError(f"decision #{decision_id} was undone already ({_iso(decision['undone_at'])}, by "
                       f"{decision['undone_by']})")
    key: Key = (decision["normalized_name"], decision["unit_key"])
    _lock(connection, key)
    later = connection.execute(select(d.id).where(_under(DECISIONS, key), d.id > decision_id, d.undone_at.is_(None))
                               .order_by(d.id.desc())).scalars().all()
    if later:
        raise OpsError(f"decision #{decision_id} was followed by {', '.join(f'#{i}' for i in later)} on the same key",
                       hint=f"undo #{later[0]} first")
    before = decision["before"]
    connection.execute(delete(MEMORY).where(_under(MEMORY, key)))
    if before:
        connection.execute(insert(MEMORY).values(normalized_name=key[0], unit_key=key[1], **before))
    changes = connection.execute(select(CHANGES).where(CHANGES.c.decision_id == decision_id)).mappings().all()
    if changes:
        connection.execute(_update_result(**{field: bindparam(f"b_{field}") for field in REVIEWED_FIELDS}),
                           [{"b_job_id": c["job_id"], "b_test_index": c["test_index"],
                             **{f"b_{field}": c[field] for field in REVIEWED_FIELDS}} for c in changes])
    # Results jobs wrote from the decision's memory row since: what the worker would have written without it.
    since = and_(_under(RESULTS, key), r.match_method == "override", r.created_at >= decision["decided_at"])
    if before and before["source"] == "manual":
        redo = {"category": before["category"], "loinc_code": before["loinc_code"],
                "loinc_name": before["loinc_name"]}
    else:  # the model's answer was never computed for them: they go back to the work list
        redo = {"needs_review": True}
    reopened = connection.execute(update(RESULTS).where(since).values(**redo)).rowcount
    connection.execute(update(DECISIONS).where(d.id == decision_id).values(undone_at=func.now(), undone_by=reviewer))
    return {"decision": decision_id, "name": key[0], "unit": key[1] or None, "restored": len(changes),
            "later_results": reopened, "later_results_action": "remapped" if "category" in redo else "flagged",
            "memory": before}
