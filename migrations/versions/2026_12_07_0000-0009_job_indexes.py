"""Indexes that keep a trainer's requests and a worker's claims off the jobs that have ended.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 00:00:00.000000

Jobs stay in ``ordo_jobs`` when they end (about seven an adaptive run), and two questions read
the whole table under the generic plans of psycopg's prepared statements:

- ``ix_ordo_jobs_run_id``: whether a run has a plan job pending (every stage report and every
  ``GET .../next``), and the cascade when a run is deleted. The only index led by the run was
  the partial unique one of ``todo`` jobs, which that question cannot use: 2-3 ms of a report
  with 3,400 jobs in the table, and growing with it. SQLite scanned the table to insert a run.
- ``ix_ordo_jobs_open``: the open jobs (``todo`` or ``doing``) in id order, the order a worker
  claims them in; the claim walked the primary key through every job that had ended (8 ms a
  claim at 7,000 jobs, on every turn of every worker's loop). It replaces
  ``ix_ordo_jobs_claimable`` (status, lease end), which no plan used any more (no scan of it in
  a fleet of 40 trainers) and which every change of a job's status or lease had to update.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As models.job.OPEN states it (a migration keeps its own copy).
OPEN = "status IN ('todo', 'doing')"


def upgrade() -> None:
    """Apply this revision."""
    op.create_index("ix_ordo_jobs_run_id", "ordo_jobs", ["run_id"])
    op.create_index(
        "ix_ordo_jobs_open",
        "ordo_jobs",
        ["id"],
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )
    op.drop_index("ix_ordo_jobs_claimable", table_name="ordo_jobs")


def downgrade() -> None:
    """Revert this revision."""
    op.create_index("ix_ordo_jobs_claimable", "ordo_jobs", ["status", "locked_until"])
    op.drop_index("ix_ordo_jobs_open", table_name="ordo_jobs")
    op.drop_index("ix_ordo_jobs_run_id", table_name="ordo_jobs")
