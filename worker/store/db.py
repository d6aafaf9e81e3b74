"""The database engine, built from settings, and the migrations run under an advisory lock."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

log = logging.getLogger(__name__)

STORE_DIR = Path(__file__).resolve().parent
ALEMBIC_INI = STORE_DIR / "alembic.ini"
MIGRATIONS_DIR = STORE_DIR / "migrations"
# One fixed key for every worker of every version: pg_advisory_xact_lock(bigint).
MIGRATION_LOCK_KEY = zlib.crc32(b"ml-worker:alembic-upgrade")


def database_url(raw: str) -> URL:
    """A database URL as the worker and opsctl use it: ``postgres://`` and ``postgresql://`` mean
    psycopg2 (the driver installed; SQLAlchemy's default for plain postgresql may be another).

    Raises ValueError with a message that never repeats the URL (it holds the password).
    """
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw[len("postgres://"):]
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise ValueError("not a valid database URL (expected postgresql://user:password@host:port/database)") \
            from None
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")
    if url.get_backend_name() not in ("postgresql", "sqlite"):
        raise ValueError("not a PostgreSQL URL (postgresql://...; sqlite:/// for local runs)")
    return url


def postgres_url(host: str, port: int, database: str | None, user: str | None, password: str | None) -> URL:
    """The URL of the POSTGRES_HOST/PORT/DB/USER/PASSWORD variables (what the task definition injects)."""
    return URL.create("postgresql+psycopg2", username=user, password=password, host=host, port=port,
                      database=database)


def make_engine(url: str | URL, **kwargs) -> Engine:
    """An engine that survives a database restart: connections are pinged before use.

    PostgreSQL connections time out after 5 s instead of hanging; SQLite connections may be
    used from the consumer's worker thread.
    """
    url = make_url(url)
    options: dict = {"pool_pre_ping": True, "future": True}
    if url.get_backend_name() == "postgresql":
        options["connect_args"] = {"connect_timeout": 5, "application_name": "ml-worker"}
        options["pool_size"] = 2
        options["max_overflow"] = 2
    elif url.get_backend_name() == "sqlite":
        options["connect_args"] = {"check_same_thread": False, "timeout": 30}
    options.update(kwargs)
    engine = create_engine(url, **options)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        event.listen(engine, "connect", _sqlite_wal)
    return engine


def _sqlite_wal(dbapi_connection, _record) -> None:
    # Local runs only: WAL with synchronous=NORMAL survives a crash of the process (not of the OS)
    # without an fsync on every job's commit, which dominated the warm path.
    cursor = dbapi_connection.cursor()
    cursor.execute("pragma journal_mode=wal")
    cursor.execute("pragma synchronous=normal")
    cursor.close()


def alembic_config(connection=None):
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Bring the schema to ``revision`` and return the revision now current.

    Several tasks may start at once, and each runs this before consuming (the worker's start,
    and ``python -m worker db upgrade``). We chose an advisory lock over a separate one-off
    migration task: the service needs no extra deploy step, and on PostgreSQL
    ``pg_advisory_xact_lock`` makes every other starter wait inside the same transaction that
    Alembic runs the migrations in; the lock goes with the commit, and the waiters then find the
    schema already at head and do nothing. SQLite (local runs, one process) takes no lock.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("select pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        command.upgrade(alembic_config(connection), revision)
        current = MigrationContext.configure(connection).get_current_revision()
    log.info("database schema at revision %s", current)
    return current


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
