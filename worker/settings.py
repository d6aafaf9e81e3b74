"""The worker's configuration, read from the environment once (pydantic-settings).

The names are the task definition's: ``ML_WORKER_*`` for the loop, ``DATABASE_URL`` or the
``POSTGRES_*`` variables injected from SSM for the database, ``LOG_LEVEL``, and ``ECS_AGENT_URI``
(set by ECS itself) for scale-in protection. Tests build ``WorkerSettings(queue_url=...)`` by
field name.

A configuration error names the variables at fault and never repeats their values: the
environment holds the database password (``POSTGRES_PASSWORD``, ``DATABASE_URL``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


class ConfigError(ValueError):
    """A configuration the worker cannot run with; the message names variables, never their values."""


def describe_validation_error(error: ValidationError) -> str:
    """pydantic's errors without their inputs (its own text quotes them, and so the password)."""
    parts = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def load_settings(**values) -> WorkerSettings:
    """The settings from the environment (``values`` override by field name); ConfigError if invalid."""
    try:
        return WorkerSettings(**values)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from None


def _env(*names: str):
    return AliasChoices(*names) if len(names) > 1 else names[0]


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", case_sensitive=False)

    # The queues.
    queue_url: str | None = Field(default=None, validation_alias=_env("ML_WORKER_SQS_QUEUE_URL"))
    priority_queue_url: str | None = Field(default=None, validation_alias=_env("ML_WORKER_PRIORITY_QUEUE_URL"))
    dlq_url: str | None = Field(default=None, validation_alias=_env("ML_WORKER_DLQ_URL"))

    # The loop.
    batch_size: int = Field(default=10, ge=1, le=10, validation_alias=_env("ML_WORKER_BATCH_SIZE"))
    wait_time: int = Field(default=20, ge=0, le=20, validation_alias=_env("ML_WORKER_WAIT_TIME"))
    visibility_timeout: int = Field(default=300, ge=1, le=43200,
                                    validation_alias=_env("ML_WORKER_VISIBILITY_TIMEOUT"))
    heartbeat: float | None = Field(default=None, gt=0, validation_alias=_env("ML_WORKER_HEARTBEAT"))
    retry_backoff: float = Field(default=10, ge=0, validation_alias=_env("ML_WORKER_RETRY_BACKOFF"))
    retry_backoff_max: float = Field(default=300, ge=0, le=43200,
                                     validation_alias=_env("ML_WORKER_RETRY_BACKOFF_MAX"))
    shutdown_deadline: float = Field(default=90, gt=0, validation_alias=_env("ML_WORKER_SHUTDOWN_DEADLINE"))
    stats_interval: float = Field(default=60, gt=0, validation_alias=_env("ML_WORKER_STATS_INTERVAL"))

    # The engine.
    model: str | None = Field(default=None, validation_alias=_env("ML_WORKER_MODEL"))
    encoder: str | None = Field(default=None, validation_alias=_env("ML_WORKER_ENCODER"))
    index_dir: str | None = Field(default=None, validation_alias=_env("ML_WORKER_INDEX_DIR"))

    # Health.
    health_file: str = Field(default="/tmp/ml-worker-health", validation_alias=_env("ML_WORKER_HEALTH_FILE"))
    health_max_age: float | None = Field(default=None, gt=0, validation_alias=_env("ML_WORKER_HEALTH_MAX_AGE"))

    # The database.
    database_url_env: SecretStr | None = Field(default=None, validation_alias=_env("DATABASE_URL"))
    postgres_host: str | None = Field(default=None, validation_alias=_env("POSTGRES_HOST"))
    postgres_port: int = Field(default=5432, validation_alias=_env("POSTGRES_PORT"))
    postgres_db: str | None = Field(default=None, validation_alias=_env("POSTGRES_DB"))
    postgres_user: str | None = Field(default=None, validation_alias=_env("POSTGRES_USER"))
    postgres_password: SecretStr | None = Field(default=None, validation_alias=_env("POSTGRES_PASSWORD"))
    migrate_on_start: bool = Field(default=True, validation_alias=_env("ML_WORKER_MIGRATE_ON_START"))

    # Process.
    log_level: str = Field(default="INFO", validation_alias=_env("LOG_LEVEL"))
    ecs_agent_uri: str | None = Field(default=None, validation_alias=_env("ECS_AGENT_URI"))

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, value: str | None) -> str | None:
        from worker.mapping.model import resolve_encoder

        return resolve_encoder(value) if value else None

    @model_validator(mode="after")
    def _defaults(self) -> WorkerSettings:
        if self.heartbeat is None:
            # Extend well before the visibility timeout runs out: a third of it, at most every minute.
            self.heartbeat = max(1.0, min(60.0, self.visibility_timeout / 3))
        elif self.heartbeat >= self.visibility_timeout:
            raise ValueError(f"ML_WORKER_HEARTBEAT ({self.heartbeat:g} s) must be shorter than "
                             f"ML_WORKER_VISIBILITY_TIMEOUT ({self.visibility_timeout} s), or a slow batch "
                             "becomes visible to another worker")
        if self.health_max_age is None:
            # One long poll plus one batch that may legitimately take a whole visibility timeout.
            self.health_max_age = float(self.wait_time + self.visibility_timeout + 60)
        return self

    @property
    def heartbeat_seconds(self) -> float:
        return float(self.heartbeat or 60)

    def database_url(self) -> URL:
        """DATABASE_URL if set, else the POSTGRES_* variables. Raises ConfigError when neither is usable."""
        from worker.store.db import database_url, postgres_url

        if self.database_url_env is not None and self.database_url_env.get_secret_value():
            try:
                return database_url(self.database_url_env.get_secret_value())
            except ValueError as error:
                raise ConfigError(f"DATABASE_URL is {error}") from None
        if self.postgres_host:
            return postgres_url(self.postgres_host, self.postgres_port, self.postgres_db, self.postgres_user,
                                self.postgres_password.get_secret_value() if self.postgres_password else None)
        raise ConfigError("no database configured: set DATABASE_URL or POSTGRES_HOST/PORT/DB/USER/PASSWORD")

    def queue_urls(self) -> list[str]:
        """The queues to poll, priority first."""
        if not self.queue_url:
            raise ConfigError("ML_WORKER_SQS_QUEUE_URL is not set: no queue to consume")
        return [url for url in (self.priority_queue_url, self.queue_url) if url]
