"""Evaluations carry their report's project, indexed.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 01:00:00.000000

A plan job reads its project's history: every evaluation of every report of the project. The
evaluations knew their report only, and joining the project's reports to them by report read
every evaluation of every project once the table was large (PostgreSQL chose a hash join over a
sequential scan of the whole table in its generic and its custom plans: 53-80 ms a read at
184,000 evaluations, growing with every project's history). Existing rows take their report's
project; the column is then required. The downgrade drops it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "ordo_stage_evaluations"
INDEX = "ix_ordo_stage_evaluations_project_id"

_evaluations = sa.table(
    TABLE, sa.column("report_id", sa.String), sa.column("project_id", sa.String)
)
_reports = sa.table(
    "ordo_stage_reports", sa.column("id", sa.String), sa.column("project_id", sa.String)
)


def upgrade() -> None:
    """Apply this revision."""
    op.add_column(TABLE, sa.Column("project_id", sa.String(length=36), nullable=True))
    report_project = (
        sa.select(_reports.c.project_id)
        .where(_reports.c.id == _evaluations.c.report_id)
        .scalar_subquery()
    )
    op.execute(sa.update(_evaluations).values(project_id=report_project))
    with op.batch_alter_table(TABLE) as batch:
        batch.alter_column("project_id", existing_type=sa.String(length=36), nullable=False)
    op.create_index(INDEX, TABLE, ["project_id"])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(INDEX, table_name=TABLE)
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_column("project_id")
