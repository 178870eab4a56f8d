"""Runs keep their creation request: the same ``client_id`` must come with the same request.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 23:00:00.000000

A nullable column added in place (no table rebuild on SQLite). Runs made before this revision
keep NULL and are not compared.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.add_column("ordo_runs", sa.Column("request", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    op.drop_column("ordo_runs", "request")
