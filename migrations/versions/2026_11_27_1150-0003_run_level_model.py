"""Runs remember the outcome model of their plans (constant, entropy or state levels).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 11:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision (existing runs planned with constant levels)."""
    op.add_column(
        "ordo_runs",
        sa.Column("level_model", sa.String(length=16), server_default="constant", nullable=False),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_column("ordo_runs", "level_model")
