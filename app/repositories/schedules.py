"""SQL for schedules: an append-only, per-project versioned history."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

from sqlalchemy import String, bindparam, func, literal, select, union_all
from sqlalchemy.orm import Session

from ordo_server.app.repositories.bulk import Insertion
from ordo_server.models import Schedule

# Built once (bound: project_id).
_LAST_VERSION = select(func.coalesce(func.max(Schedule.version), 0)).where(
    Schedule.project_id == bindparam("project_id")
)


def next_version(session: Session, project_id: str) -> int:
    """The next free schedule version of the project (lock the project row first)."""
    return int(session.scalar(_LAST_VERSION, {"project_id": project_id}) or 0) + 1


def add_schedule(session: Session, project_id: str, values: dict[str, Any]) -> Schedule:
    """Insert a schedule (``values`` holds the column values) and flush it."""
    schedule = Schedule(project_id=project_id, **values)
    session.add(schedule)
    session.flush()
    return schedule


_SCHEDULE_ROWS = Schedule.metadata.tables[Schedule.__tablename__]


def schedule_insertion(rows: Sequence[dict[str, Any]]) -> Insertion:
    """Schedules (each: every column's value, ``id`` and ``version`` included) for
    :func:`bulk.write_together`."""
    return Insertion(_SCHEDULE_ROWS, rows)


# Built once (bound: project_id, run_ids): the (run, plan stage) pairs that have a plan.
_PLANNED = select(Schedule.run_id, Schedule.run_stage).where(
    Schedule.project_id == bindparam("project_id"),
    Schedule.run_id.in_(bindparam("run_ids", expanding=True)),
    Schedule.run_stage.is_not(None),
)


# The same, and one more row: no run, the project's last version (bound: project_id, run_ids).
_PLANNED_AND_LAST = union_all(
    _PLANNED, select(literal(None, String), _LAST_VERSION.scalar_subquery())
)


class PlanSlots(NamedTuple):
    """What :func:`plan_slots` read: the (run, plan stage) pairs that have a plan, of the runs
    asked about, and the project's next free schedule version."""

    taken: set[tuple[str, int]]
    next_version: int


def plan_slots(session: Session, project_id: str, run_ids: Collection[str]) -> PlanSlots:
    """The (run, plan stage) pairs that have a plan, of these runs, and the project's next
    free version (:func:`next_version`), in one round trip. Lock the project row first: the
    statement then reads both after the lock, on one snapshot."""
    bound = {"project_id": project_id, "run_ids": sorted(run_ids)}
    taken: set[tuple[str, int]] = set()
    last = 0
    for run, value in session.execute(_PLANNED_AND_LAST, bound):
        if run is None:
            last = int(value or 0)
        elif value is not None:
            taken.add((run, value))
    return PlanSlots(taken, last + 1)


def get_schedule(session: Session, project_id: str, schedule_id: str) -> Schedule | None:
    """The project's schedule with this id, or ``None`` (also for another project's id)."""
    query = select(Schedule).where(Schedule.project_id == project_id, Schedule.id == schedule_id)
    return session.scalar(query)


def list_schedules(
    session: Session,
    project_id: str,
    *,
    limit: int,
    before_version: int | None = None,
    run_id: str | None = None,
) -> Sequence[Schedule]:
    """Up to ``limit`` schedules, newest (highest version) first, below ``before_version``."""
    query = select(Schedule).where(Schedule.project_id == project_id)
    if before_version is not None:
        query = query.where(Schedule.version < before_version)
    if run_id is not None:
        query = query.where(Schedule.run_id == run_id)
    return session.scalars(query.order_by(Schedule.version.desc()).limit(limit)).all()
