"""Fixtures for the worker's tests: a migrated PostgreSQL database, the mapping engine (once per session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def db_engine(pg_url):
    """The session's PostgreSQL database, migrated to head by the worker's own upgrade."""
    from worker.store.db import make_engine, upgrade

    engine = make_engine(pg_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def db(db_engine):
    """The migrated database, emptied for this test."""
    from sqlalchemy import text

    with db_engine.begin() as connection:
        connection.execute(text("truncate lab_test_results, lab_jobs, lab_test_mappings"))
    return db_engine
