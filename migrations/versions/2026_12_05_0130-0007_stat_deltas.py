"""Reports append their statistics as deltas instead of updating shared rows.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 01:30:00.000000

A new table, ``ordo_stat_deltas`` (one row per observing report); nothing existing changes. The
downgrade first folds the deltas that are left into ``ordo_estimates``, ``ordo_level_stats`` and
the projects' ``estimates_version`` (in id order, as the application folds them), then drops
the table: no statistic is lost either way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LEVEL_SUMS = ("sum_u", "sum_h", "sum_uu", "sum_uh", "sum_hh", "sum_y", "sum_uy", "sum_hy")
_LEVEL_COLUMNS = ("count", *_LEVEL_SUMS, "sum_y2")


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "ordo_stat_deltas",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("cells", sa.JSON(), nullable=False),
        sa.Column("levels", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["ordo_projects.id"],
            name=op.f("fk_ordo_stat_deltas_project_id_ordo_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ordo_stat_deltas")),
    )
    op.create_index("ix_ordo_stat_deltas_project_id_id", "ordo_stat_deltas", ["project_id", "id"])


def downgrade() -> None:
    """Revert this revision (after folding every delta that is left)."""
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("SELECT project_id, cells, levels FROM ordo_stat_deltas ORDER BY id")
    ).all()
    now = datetime.now(UTC)
    for project_id, cells, levels in rows:
        _fold_cells(connection, project_id, _json(cells), now)
        _fold_levels(connection, project_id, _json(levels), now)
        connection.execute(
            sa.text(
                "UPDATE ordo_projects SET estimates_version = estimates_version + 1 WHERE id = :p"
            ),
            {"p": project_id},
        )
    op.drop_index("ix_ordo_stat_deltas_project_id_id", table_name="ordo_stat_deltas")
    op.drop_table("ordo_stat_deltas")


def _json(value: Any) -> list[list[Any]]:
    """A JSON column's value, whether the driver parsed it or not."""
    return json.loads(value) if isinstance(value, str) else list(value)


def _fold_cells(connection: sa.Connection, project: str, cells: list[list[Any]], now: Any) -> None:
    """Add one delta's effect cells to ``ordo_estimates``, creating missing cells."""
    for effect, src, dst, count, sum_x, sum_x2 in cells:
        key = {"p": project, "e": effect, "s": src, "d": dst}
        found = connection.execute(
            sa.text(
                "SELECT count(*) FROM ordo_estimates WHERE project_id = :p AND effect = :e"
                " AND src_task_id = :s AND dst_task_id = :d"
            ),
            key,
        ).scalar_one()
        if not found:
            connection.execute(
                sa.text(
                    "INSERT INTO ordo_estimates (project_id, effect, src_task_id, dst_task_id,"
                    " count, sum_x, sum_x2, prior_source, updated_at)"
                    " VALUES (:p, :e, :s, :d, 0, 0.0, 0.0, 'default', :now)"
                ),
                {**key, "now": now},
            )
        connection.execute(
            sa.text(
                "UPDATE ordo_estimates SET count = count + :c, sum_x = sum_x + :x,"
                " sum_x2 = sum_x2 + :xx, updated_at = :now WHERE project_id = :p AND effect = :e"
                " AND src_task_id = :s AND dst_task_id = :d"
            ),
            {**key, "c": count, "x": sum_x, "xx": sum_x2, "now": now},
        )


def _fold_levels(
    connection: sa.Connection, project: str, levels: list[list[Any]], now: Any
) -> None:
    """Add one delta's level sums to ``ordo_level_stats``, creating missing rows."""
    for task_id, *values in levels:
        key = {"p": project, "t": task_id}
        found = connection.execute(
            sa.text("SELECT count(*) FROM ordo_level_stats WHERE project_id = :p AND task_id = :t"),
            key,
        ).scalar_one()
        if not found:
            names = ", ".join(_LEVEL_COLUMNS)
            zeros = ", ".join("0" for _ in _LEVEL_COLUMNS)
            connection.execute(
                sa.text(
                    f"INSERT INTO ordo_level_stats (project_id, task_id, {names}, updated_at)"
                    f" VALUES (:p, :t, {zeros}, :now)"
                ),
                {**key, "now": now},
            )
        sets = ", ".join(f"{name} = {name} + :{name}" for name in _LEVEL_COLUMNS)
        connection.execute(
            sa.text(
                f"UPDATE ordo_level_stats SET {sets}, updated_at = :now"
                " WHERE project_id = :p AND task_id = :t"
            ),
            {**key, **dict(zip(_LEVEL_COLUMNS, values, strict=True)), "now": now},
        )
