"""Jobs keep their result: the schedule a schedule job stored, or the problem it answered.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 23:30:00.000000

A nullable column added in place (no table rebuild on SQLite). Jobs before this revision (run
plans) keep NULL: a run plan's result is the run's schedule.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.add_column("ordo_jobs", sa.Column("result", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    op.drop_column("ordo_jobs", "result")
