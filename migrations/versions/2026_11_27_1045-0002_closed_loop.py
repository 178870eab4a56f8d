"""Closed loop: level-regression statistics, observation covariates, run failure reasons.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:45:00.000000

Only nullable columns are added, so SQLite takes a plain ``ALTER TABLE ... ADD COLUMN`` and
never rebuilds ``ordo_runs`` (a rebuild would fire the cascades of the tables that reference it).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LEVEL_SUMS = (
    "sum_u",
    "sum_h",
    "sum_uu",
    "sum_uh",
    "sum_hh",
    "sum_y",
    "sum_uy",
    "sum_hy",
    "sum_y2",
)


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "ordo_level_stats",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        *(sa.Column(name, sa.Double(), nullable=False) for name in _LEVEL_SUMS),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["ordo_projects.id"],
            name=op.f("fk_ordo_level_stats_project_id_ordo_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["ordo_tasks.id"],
            name=op.f("fk_ordo_level_stats_task_id_ordo_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "task_id", name=op.f("pk_ordo_level_stats")),
    )
    op.add_column("ordo_observations", sa.Column("uplift", sa.Double(), nullable=True))
    op.add_column("ordo_observations", sa.Column("entropy_shift", sa.Double(), nullable=True))
    op.add_column("ordo_runs", sa.Column("fail_reason", sa.String(length=2000), nullable=True))


def downgrade() -> None:
    """Revert this revision (SQLite >= 3.35 drops columns in place)."""
    op.drop_column("ordo_runs", "fail_reason")
    op.drop_column("ordo_observations", "entropy_shift")
    op.drop_column("ordo_observations", "uplift")
    op.drop_table("ordo_level_stats")
