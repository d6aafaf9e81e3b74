"""The tables the worker owns. opsctl and the app read them with plain SQL: names are a contract."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
    func,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import JSON

JOB_STATUSES = ("processing", "done", "failed")
MAPPING_SOURCES = ("manual", "model")
# JSON on SQLite, jsonb on PostgreSQL (the app can query a candidate's code in place); Python None is
# SQL NULL, not the JSON value null, so "is null" means "absent".
JSONB = JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now():
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class LabJob(Base):
    """One row per job: its status, attempts and last error."""

    __tablename__ = "lab_jobs"
    __table_args__ = (
        CheckConstraint("status in ('processing', 'done', 'failed')", name="status"),
        Index("ix_lab_jobs_status_updated_at", "status", "updated_at"),
        Index("ix_lab_jobs_user_id_document_id", "user_id", "document_id"),
    )

    job_id: Mapped[str] = mapped_column(Text, primary_key=True)
    message_id: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    document_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    priority: Mapped[str] = mapped_column(Text, nullable=False, server_default="normal")
    status: Mapped[str] = mapped_column(Text, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    test_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the job asks for (the contract's fingerprint): a job id reused for other content is refused.
    content_hash: Mapped[str | None] = mapped_column(Text)
    # An operator's test job (opsctl send-test), not a user's.
    is_test: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")


class LabTestResult(Base):
    """One row per test of a job; (job_id, test_index) is unique, so a redelivered job adds nothing.

    ``normalized_name``/``unit_key`` are the mapping-memory key the worker used, so a review can group
    and fix results without the normaliser; ``candidates`` (uncertain results only) are the engine's
    proposals, best first: ``[{"code", "name", "score"}]``.
    """

    __tablename__ = "lab_test_results"
    __table_args__ = (
        Index("ix_lab_test_results_user_id_document_id", "user_id", "document_id"),
        Index("ix_lab_test_results_loinc_code", "loinc_code"),
        Index("ix_lab_test_results_normalized_name_unit_key", "normalized_name", "unit_key"),
        # Small partial indexes: the review backlog, and the rows still waiting for their key.
        Index("ix_lab_test_results_pending_review", "normalized_name", "unit_key",
              postgresql_where=text("needs_review or loinc_code is null"),
              sqlite_where=text("needs_review or loinc_code is null")),
        Index("ix_lab_test_results_without_key", "job_id", "test_index",
              postgresql_where=text("normalized_name is null"), sqlite_where=text("normalized_name is null")),
    )

    job_id: Mapped[str] = mapped_column(Text, ForeignKey("lab_jobs.job_id", ondelete="CASCADE"), primary_key=True)
    test_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    document_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    test_name: Mapped[str] = mapped_column(Text, nullable=False)
    test_value: Mapped[str | None] = mapped_column(Text)
    test_unit: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str] = mapped_column(Text, nullable=False)
    loinc_code: Mapped[str | None] = mapped_column(Text)
    loinc_name: Mapped[str | None] = mapped_column(Text)
    confidence: Mapped[float] = mapped_column(Float, nullable=False)
    match_method: Mapped[str] = mapped_column(Text, nullable=False)
    needs_review: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    model_version: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    normalized_name: Mapped[str | None] = mapped_column(Text)
    unit_key: Mapped[str | None] = mapped_column(Text)
    candidates: Mapped[list | None] = mapped_column(JSONB)


class LabTestMapping(Base):
    """The mapping memory, keyed by the engine's normalised (name, unit).

    A 'manual' (reviewed) row overrides the model and is never overwritten by a 'model' row.
    """

    __tablename__ = "lab_test_mappings"
    __table_args__ = (CheckConstraint("source in ('manual', 'model')", name="source"),)

    normalized_name: Mapped[str] = mapped_column(Text, primary_key=True)
    unit_key: Mapped[str] = mapped_column(Text, primary_key=True, server_default="")
    category: Mapped[str] = mapped_column(Text, nullable=False)
    loinc_code: Mapped[str | None] = mapped_column(Text)
    loinc_name: Mapped[str | None] = mapped_column(Text)
    confidence: Mapped[float] = mapped_column(Float, nullable=False)
    match_method: Mapped[str] = mapped_column(Text, nullable=False)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    model_version: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class LabReviewDecision(Base):
    """The audit of ``opsctl review``: who mapped which key to what, when, from what; undone or not.

    ``before`` is the memory row the decision replaced (null when there was none), ``after`` the
    reviewed mapping; each is ``{"category", "loinc_code", "loinc_name", ...}``.
    """

    __tablename__ = "lab_review_decisions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
                                    autoincrement=True)
    normalized_name: Mapped[str] = mapped_column(Text, nullable=False)
    unit_key: Mapped[str] = mapped_column(Text, nullable=False)
    reviewer: Mapped[str] = mapped_column(Text, nullable=False)
    decided_at: Mapped[datetime] = _now()
    before: Mapped[dict | None] = mapped_column(JSONB)
    after: Mapped[dict] = mapped_column(JSONB, nullable=False)
    note: Mapped[str | None] = mapped_column(Text)
    results_changed: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    undone_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    undone_by: Mapped[str | None] = mapped_column(Text)


class LabReviewChange(Base):
    """A result a decision changed, with its values before, so that ``undo`` can put them back.

    No foreign key to the result: the app may delete results; a change row for a gone result is inert.
    """

    __tablename__ = "lab_review_changes"

    decision_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("lab_review_decisions.id", ondelete="CASCADE"), primary_key=True)
    job_id: Mapped[str] = mapped_column(Text, primary_key=True)
    test_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    category: Mapped[str] = mapped_column(Text, nullable=False)
    loinc_code: Mapped[str | None] = mapped_column(Text)
    loinc_name: Mapped[str | None] = mapped_column(Text)
    match_method: Mapped[str] = mapped_column(Text, nullable=False)
    needs_review: Mapped[bool] = mapped_column(Boolean, nullable=False)
