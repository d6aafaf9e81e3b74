"""lab_jobs, lab_test_results and the mapping memory lab_test_mappings

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    if nullable:
        return sa.Column(name, sa.DateTime(timezone=True), nullable=True)
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "lab_jobs",
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("document_id", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.Text(), nullable=False, server_default="normal"),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("test_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text(), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        _timestamp("completed_at", nullable=True),
        sa.PrimaryKeyConstraint("job_id", name="pk_lab_jobs"),
        sa.CheckConstraint("status in ('processing', 'done', 'failed')", name="ck_lab_jobs_status"),
    )
    op.create_index("ix_lab_jobs_status_updated_at", "lab_jobs", ["status", "updated_at"])
    op.create_index("ix_lab_jobs_user_id_document_id", "lab_jobs", ["user_id", "document_id"])

    op.create_table(
        "lab_test_results",
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("test_index", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("document_id", sa.BigInteger(), nullable=False),
        sa.Column("test_name", sa.Text(), nullable=False),
        sa.Column("test_value", sa.Text(), nullable=True),
        sa.Column("test_unit", sa.Text(), nullable=True),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("loinc_code", sa.Text(), nullable=True),
        sa.Column("loinc_name", sa.Text(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("match_method", sa.Text(), nullable=False),
        sa.Column("needs_review", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("model_version", sa.Text(), nullable=True),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("job_id", "test_index", name="pk_lab_test_results"),
        sa.ForeignKeyConstraint(["job_id"], ["lab_jobs.job_id"], ondelete="CASCADE",
                                name="fk_lab_test_results_job_id_lab_jobs"),
    )
    op.create_index("ix_lab_test_results_user_id_document_id", "lab_test_results", ["user_id", "document_id"])
    op.create_index("ix_lab_test_results_loinc_code", "lab_test_results", ["loinc_code"])

    op.create_table(
        "lab_test_mappings",
        sa.Column("normalized_name", sa.Text(), nullable=False),
        sa.Column("unit_key", sa.Text(), nullable=False, server_default=""),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("loinc_code", sa.Text(), nullable=True),
        sa.Column("loinc_name", sa.Text(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("match_method", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("normalized_name", "unit_key", name="pk_lab_test_mappings"),
        sa.CheckConstraint("source in ('manual', 'model')", name="ck_lab_test_mappings_source"),
    )


def downgrade() -> None:
    op.drop_table("lab_test_mappings")
    op.drop_index("ix_lab_test_results_loinc_code", table_name="lab_test_results")
    op.drop_index("ix_lab_test_results_user_id_document_id", table_name="lab_test_results")
    op.drop_table("lab_test_results")
    op.drop_index("ix_lab_jobs_user_id_document_id", table_name="lab_jobs")
    op.drop_index("ix_lab_jobs_status_updated_at", table_name="lab_jobs")
    op.drop_table("lab_jobs")
