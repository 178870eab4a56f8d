"""An index on the jobs' run, so that asking whether a run has a pending plan reads its jobs only.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 00:00:00.000000

Every stage report and every ``GET .../next`` asks whether a plan job of its run is pending
(``status IN ('todo', 'doing')``), and deleting a run deletes its jobs. The only index with the
run first was the partial unique one of ``todo`` jobs, which that question cannot use: each ask
read every row of ``ordo_jobs`` (every job of every project, about seven an adaptive run),
2-3 ms of a report's 17 ms with 3,400 jobs in the table, and growing with it.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_index("ix_ordo_jobs_run_id", "ordo_jobs", ["run_id"])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_ordo_jobs_run_id", table_name="ordo_jobs")
