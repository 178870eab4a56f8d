"""SQL for raw observations and the per-task level-regression statistics.

Observations are append-only; the level statistics derived from them are written by a fold of
the reports' deltas (``app.services.statistics``) or overwritten wholesale by a recomputation,
both holding the project's statistics lock exclusive.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ordo_server.app.repositories.bulk import Insertion
from ordo_server.models import Observation
from ordo_server.models.estimate import LevelStats

LEVEL_SUMS = (
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
_READ_BATCH = 5000
# Core tables: executemany without the ORM's bulk-insert bookkeeping (the hot path of reports).
_OBSERVATIONS = Observation.metadata.tables["ordo_observations"]
_LEVEL_STATS = LevelStats.metadata.tables["ordo_level_stats"]


@dataclass(frozen=True, slots=True)
class ObservationRow:
    """One raw observation by task id (covariates only on ``L``)."""

    effect: str
    src_task_id: str
    dst_task_id: str
    value: float
    uplift: float | None = None
    entropy_shift: float | None = None


@dataclass(frozen=True, slots=True)
class LevelSums:
    """Level-regression statistics of one task: ``count`` and the sums named in LEVEL_SUMS."""

    task_id: str
    count: int
    sums: tuple[float, ...]


def observation_values(
    project_id: str,
    rows: Sequence[ObservationRow],
    *,
    run_id: str,
    report_id: str,
    at: datetime,
) -> list[dict[str, Any]]:
    """One report's raw observations as rows of ``ordo_observations``
    (:func:`observation_insertion`)."""
    return [
        {
            "project_id": project_id,
            "run_id": run_id,
            "report_id": report_id,
            "effect": row.effect,
            "src_task_id": row.src_task_id,
            "dst_task_id": row.dst_task_id,
            "value": row.value,
            "uplift": row.uplift,
            "entropy_shift": row.entropy_shift,
            "created_at": at,
        }
        for row in rows
    ]


def observation_insertion(values: Sequence[dict[str, Any]]) -> Insertion:
    """Raw observations to append (rows of :func:`observation_values`, of any number of
    reports), for :func:`bulk.write_together`: the hot path of every report."""
    return Insertion(_OBSERVATIONS, values)


def iter_observations(session: Session, project_id: str) -> Iterator[ObservationRow]:
    """Every observation of the project in insertion order, read in batches."""
    last_id = 0
    while True:
        query = (
            select(Observation)
            .where(Observation.project_id == project_id, Observation.id > last_id)
            .order_by(Observation.id)
            .limit(_READ_BATCH)
        )
        batch = session.scalars(query).all()
        if not batch:
            return
        for row in batch:
            yield ObservationRow(
                effect=row.effect,
                src_task_id=row.src_task_id,
                dst_task_id=row.dst_task_id,
                value=row.value,
                uplift=row.uplift,
                entropy_shift=row.entropy_shift,
            )
        last_id = batch[-1].id


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_LEVEL_STATS)


def _values(project_id: str, cell: LevelSums, at: datetime) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "task_id": cell.task_id,
        "count": cell.count,
        **dict(zip(LEVEL_SUMS, cell.sums, strict=True)),
        "updated_at": at,
    }


def set_level_stats(
    session: Session, project_id: str, cells: Sequence[LevelSums], *, at: datetime
) -> None:
    """Overwrite tasks' level statistics with ``cells`` (a fold's sums), creating missing rows.

    Rows are written in task-id order, so concurrent writers lock them in the same order.
    """
    if not cells:
        return
    insert = _insert(session)
    statement: Insert = insert.on_conflict_do_update(
        index_elements=["project_id", "task_id"],
        set_={
            "count": insert.excluded.count,
            **{name: insert.excluded[name] for name in LEVEL_SUMS},
            "updated_at": insert.excluded.updated_at,
        },
    )
    ordered = sorted(cells, key=lambda cell: cell.task_id)
    session.execute(statement, [_values(project_id, cell, at) for cell in ordered])


def list_level_stats(session: Session, project_id: str) -> list[LevelSums]:
    """Every stored level-statistics row of the project."""
    rows = session.scalars(select(LevelStats).where(LevelStats.project_id == project_id)).all()
    return [
        LevelSums(
            task_id=row.task_id,
            count=row.count,
            sums=tuple(float(getattr(row, name)) for name in LEVEL_SUMS),
        )
        for row in rows
    ]


def replace_level_stats(
    session: Session, project_id: str, cells: Sequence[LevelSums], *, at: datetime
) -> None:
    """Overwrite the project's level statistics with ``cells`` (a recomputation)."""
    session.execute(delete(LevelStats).where(LevelStats.project_id == project_id))
    if cells:
        session.execute(insert(LevelStats), [_values(project_id, cell, at) for cell in cells])
