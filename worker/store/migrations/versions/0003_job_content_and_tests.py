"""lab_jobs.content_hash (a reused job id is told from a redelivery) and lab_jobs.is_test (operators' test jobs)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written before this revision have no hash: their job ids are trusted as before.
    op.add_column("lab_jobs", sa.Column("content_hash", sa.Text(), nullable=True))
    op.add_column("lab_jobs", sa.Column("is_test", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("lab_jobs", "is_test")
    op.drop_column("lab_jobs", "content_hash")
