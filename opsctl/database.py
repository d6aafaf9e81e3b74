"""The worker's database, found the way opsctl finds queues: ``--database-url``, then ``DATABASE_URL``,
then the environment's SSM parameters.

The SSM step reads ``/zivohealth/{env}/database/{host,port,name,user,password}`` (the user and the
password are what the platform injects into the task; host, port and name, when SSM lacks them, come
from the worker service's task definition, where the platform puts them as POSTGRES_HOST/PORT/DB).
Every URL goes through the worker's own settings, so ``postgres://`` and a bare ``postgresql://``
mean what they mean to the worker. Imports sqlalchemy, never the mapping engine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from opsctl.errors import OpsError, describe
from opsctl.state import State

DB_PREFIX = "/zivohealth/{env}/database/"
DB_KEYS = ("host", "port", "name", "user", "password")
TASK_ENV = {"host": "POSTGRES_HOST", "port": "POSTGRES_PORT", "name": "POSTGRES_DB"}
NO_DATABASE_HINT = "pass --database-url or set DATABASE_URL (a private database needs a tunnel or a bastion)"
SCHEMA_HINT = "run 'python -m worker db upgrade' (or start a worker: it migrates on start)"


@dataclass(frozen=True)
class Database:
    url: object  # sqlalchemy URL
    source: str


def normalised(raw: str | None = None, **parts) -> object:
    """The URL the worker would build from DATABASE_URL=raw, or from the POSTGRES_* parts."""
    from pydantic import ValidationError
    from sqlalchemy.exc import ArgumentError

    from worker.settings import WorkerSettings

    try:
        settings = WorkerSettings(database_url_env=raw, **{f"postgres_{k}": v for k, v in parts.items()})
        return settings.database_url()
    except (ArgumentError, ValidationError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise OpsError(f"unusable database URL: {reason}", hint=NO_DATABASE_HINT) from None


def _task_environment(state: State) -> dict[str, str]:
    """The worker container's environment in the service's current task definition ({} if unreadable)."""
    from opsctl.service import describe_service

    try:
        service = describe_service(state)
        definition = state.client("ecs").describe_task_definition(taskDefinition=service["taskDefinition"])
    except (OpsError, ClientError):
        return {}
    containers = definition["taskDefinition"].get("containerDefinitions", [])
    return {e["name"]: e["value"] for c in containers for e in c.get("environment", [])}


def from_ssm(state: State) -> Database:
    prefix = DB_PREFIX.format(env=state.env)
    unreadable = ""
    try:
        response = state.client("ssm").get_parameters(Names=[prefix + key for key in DB_KEYS], WithDecryption=True)
        found = {p["Name"][len(prefix):]: p["Value"] for p in response.get("Parameters", [])}
    except (ClientError, BotoCoreError) as error:  # no credentials, no access: say so, then fall through
        found, unreadable = {}, f" (SSM unreadable: {describe(error)[0]})"
    sources = {key: f"SSM {prefix}{key}" for key in DB_KEYS if key in found}
    if not found.keys() >= {"host", "name"} and "user" in found:
        environment = _task_environment(state)
        for key, variable in TASK_ENV.items():
            if key not in found and environment.get(variable):
                found[key], sources[key] = environment[variable], f"task definition {variable}"
    missing = [key for key in ("host", "name", "user") if not found.get(key)]
    if missing:
        raise OpsError(f"no database found for env {state.env!r}: no --database-url, no $DATABASE_URL, and no "
                       f"{', '.join(missing)} in SSM {prefix}* or the service's task definition{unreadable}",
                       hint=NO_DATABASE_HINT)
    try:
        port = int(found.get("port") or 5432)
    except ValueError:
        raise OpsError(f"{sources['port']} is not a port number: {found['port']!r}") from None
    url = normalised(None, host=found["host"], port=port, db=found["name"], user=found["user"],
                     password=found.get("password"))
    return Database(url, ", ".join(dict.fromkeys(sources.values())))


def find(state: State, explicit: str | None) -> Database:
    """The database to use: flag, then DATABASE_URL, then SSM (with the task definition)."""
    if explicit:
        return Database(normalised(explicit), "flag --database-url")
    if os.environ.get("DATABASE_URL"):
        return Database(normalised(os.environ["DATABASE_URL"]), "env DATABASE_URL")
    return from_ssm(state)


@contextmanager
def connect(state: State, explicit: str | None) -> Iterator:
    """An engine on the worker's database; database failures leave as one-line OpsErrors."""
    from sqlalchemy.exc import DBAPIError, NoSuchModuleError, SQLAlchemyError

    from worker.store.db import make_engine

    database = find(state, explicit)
    where = database.url.render_as_string(hide_password=True)
    try:
        options = {}
        if database.url.get_backend_name() == "postgresql":
            options["connect_args"] = {"connect_timeout": 5, "application_name": "opsctl"}
        engine = make_engine(database.url, **options)
    except (NoSuchModuleError, ImportError) as error:
        raise OpsError(f"unusable database URL {where}: {error}", hint=NO_DATABASE_HINT) from None
    try:
        yield engine
    except DBAPIError as error:
        first = (str(error.orig).strip().splitlines() or [type(error.orig).__name__])[0]
        if any(words in first for words in ("does not exist", "no such table", "no such column")):
            raise OpsError(f"the database {where} lacks the worker's review tables or columns (schema before "
                           f"revision 0002): {first}", hint=SCHEMA_HINT) from None
        if error.connection_invalidated or type(error).__name__ == "OperationalError":
            raise OpsError(f"database {where} not reachable ({database.source}): {first}",
                           hint=NO_DATABASE_HINT) from None
        raise OpsError(f"database error on {where}: {first}") from None
    except SQLAlchemyError as error:
        raise OpsError(f"database error on {where}: {str(error).splitlines()[0]}") from None
    finally:
        engine.dispose()
