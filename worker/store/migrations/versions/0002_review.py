"""the review loop: each result's memory key and candidates; the audit of reviewed decisions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Existing results get their key from the worker, not from here: the key is the engine's normalised
name, and normalising needs the engine's lexicon and spelling corrector (built from the reference),
which a migration should not build. The worker fills the rows whose ``normalized_name`` is null at
start, with the same ``engine.key`` it writes new rows with (``LabCategorizationHandler.backfill_keys``);
the partial index ``ix_lab_test_results_without_key`` keeps finding them cheap, and empty afterwards.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSONB = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("lab_test_results") as batch:
        batch.add_column(sa.Column("normalized_name", sa.Text(), nullable=True))
        batch.add_column(sa.Column("unit_key", sa.Text(), nullable=True))
        batch.add_column(sa.Column("candidates", JSONB, nullable=True))
    op.create_index("ix_lab_test_results_normalized_name_unit_key", "lab_test_results",
                    ["normalized_name", "unit_key"])
    pending = sa.text("needs_review or loinc_code is null")
    op.create_index("ix_lab_test_results_pending_review", "lab_test_results", ["normalized_name", "unit_key"],
                    postgresql_where=pending, sqlite_where=pending)
    without_key = sa.text("normalized_name is null")
    op.create_index("ix_lab_test_results_without_key", "lab_test_results", ["job_id", "test_index"],
                    postgresql_where=without_key, sqlite_where=without_key)

    op.create_table(
        "lab_review_decisions",
        sa.Column("id", ID, nullable=False, autoincrement=True),
        sa.Column("normalized_name", sa.Text(), nullable=False),
        sa.Column("unit_key", sa.Text(), nullable=False),
        sa.Column("reviewer", sa.Text(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("before", JSONB, nullable=True),
        sa.Column("after", JSONB, nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("results_changed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("undone_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_lab_review_decisions"),
    )
    op.create_table(
        "lab_review_changes",
        sa.Column("decision_id", ID, nullable=False),
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("test_index", sa.Integer(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("loinc_code", sa.Text(), nullable=True),
        sa.Column("loinc_name", sa.Text(), nullable=True),
        sa.Column("match_method", sa.Text(), nullable=False),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("decision_id", "job_id", "test_index", name="pk_lab_review_changes"),
        sa.ForeignKeyConstraint(["decision_id"], ["lab_review_decisions.id"], ondelete="CASCADE",
                                name="fk_lab_review_changes_decision_id_lab_review_decisions"),
    )


def downgrade() -> None:
    op.drop_table("lab_review_changes")
    op.drop_table("lab_review_decisions")
    op.drop_index("ix_lab_test_results_without_key", table_name="lab_test_results")
    op.drop_index("ix_lab_test_results_pending_review", table_name="lab_test_results")
    op.drop_index("ix_lab_test_results_normalized_name_unit_key", table_name="lab_test_results")
    with op.batch_alter_table("lab_test_results") as batch:
        batch.drop_column("candidates")
        batch.drop_column("unit_key")
        batch.drop_column("normalized_name")
