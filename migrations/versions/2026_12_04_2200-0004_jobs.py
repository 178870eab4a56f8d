"""Jobs: plans of runs solved off the request path; one plan per (run, stage).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 22:00:00.000000

``ordo_schedules`` gains a nullable column and a unique index, so SQLite never rebuilds the
table (a rebuild would fire ``ON DELETE SET NULL`` on the runs that point at it). Plans made
before this revision keep ``run_stage`` NULL; the planner reads their stage from the prefix
stored in their request.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TODO = sa.text("status = 'todo'")


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "ordo_jobs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("error", sa.String(length=2000), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('todo', 'doing', 'done', 'failed')", name=op.f("ck_ordo_jobs_status")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["ordo_projects.id"],
            name=op.f("fk_ordo_jobs_project_id_ordo_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["ordo_runs.id"],
            name=op.f("fk_ordo_jobs_run_id_ordo_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ordo_jobs")),
    )
    op.create_index(op.f("ix_ordo_jobs_project_id"), "ordo_jobs", ["project_id"])
    op.create_index("ix_ordo_jobs_claimable", "ordo_jobs", ["status", "locked_until"])
    op.create_index(
        "ux_ordo_jobs_run_todo",
        "ordo_jobs",
        ["run_id"],
        unique=True,
        sqlite_where=_TODO,
        postgresql_where=_TODO,
    )
    op.add_column("ordo_schedules", sa.Column("run_stage", sa.Integer(), nullable=True))
    op.create_index(
        "ux_ordo_schedules_run_stage", "ordo_schedules", ["run_id", "run_stage"], unique=True
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ux_ordo_schedules_run_stage", table_name="ordo_schedules")
    op.drop_column("ordo_schedules", "run_stage")
    op.drop_index("ux_ordo_jobs_run_todo", table_name="ordo_jobs")
    op.drop_index("ix_ordo_jobs_claimable", table_name="ordo_jobs")
    op.drop_index(op.f("ix_ordo_jobs_project_id"), table_name="ordo_jobs")
    op.drop_table("ordo_jobs")
