"""SQL for estimates (additive sufficient statistics) and raw observations.

Both writes are single upserts, ``INSERT ... ON CONFLICT DO UPDATE``, the same statement on
PostgreSQL and SQLite (>= 3.24): concurrent writers never lose an increment (reliability.md §1.6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ordo_server.models import Estimate, Observation
from ordo_server.models.base import utcnow

_ESTIMATE_KEY = ["project_id", "effect", "src_task_id", "dst_task_id"]


@dataclass(frozen=True, slots=True)
class EstimateStats:
    """One effect cell as stored: statistics and prior (``None`` = project default)."""

    effect: str
    src_task_id: str
    dst_task_id: str
    count: int
    sum_x: float
    sum_x2: float
    prior_mean: float | None
    prior_var: float | None
    prior_source: str
    noise_var: float | None


@dataclass(frozen=True, slots=True)
class PriorCell:
    """An imported prior for one effect cell."""

    effect: str
    src_task_id: str
    dst_task_id: str
    mean: float
    var: float


@dataclass(frozen=True, slots=True)
class StatIncrement:
    """Statistics to add to one effect cell: ``count``, ``sum x`` and ``sum x^2`` deltas."""

    effect: str
    src_task_id: str
    dst_task_id: str
    count: int
    sum_x: float
    sum_x2: float


def _insert(session: Session) -> Any:
    # The Core table, not the entity: a plain executemany, no ORM bulk-insert bookkeeping.
    table = Estimate.metadata.tables[Estimate.__tablename__]
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def list_estimates(session: Session, project_id: str) -> list[EstimateStats]:
    """Every stored effect cell of the project."""
    rows = session.scalars(select(Estimate).where(Estimate.project_id == project_id)).all()
    return [
        EstimateStats(
            effect=row.effect,
            src_task_id=row.src_task_id,
            dst_task_id=row.dst_task_id,
            count=row.count,
            sum_x=row.sum_x,
            sum_x2=row.sum_x2,
            prior_mean=row.prior_mean,
            prior_var=row.prior_var,
            prior_source=row.prior_source,
            noise_var=row.noise_var,
        )
        for row in rows
    ]


def set_priors(session: Session, project_id: str, priors: Sequence[PriorCell]) -> None:
    """Write imported priors, creating cells that do not exist yet; statistics are kept."""
    if not priors:
        return
    now = utcnow()
    values = [
        {
            "project_id": project_id,
            "effect": p.effect,
            "src_task_id": p.src_task_id,
            "dst_task_id": p.dst_task_id,
            "count": 0,
            "sum_x": 0.0,
            "sum_x2": 0.0,
            "prior_mean": p.mean,
            "prior_var": p.var,
            "prior_source": "imported",
            "updated_at": now,
        }
        for p in priors
    ]
    insert = _insert(session)
    statement: Insert = insert.on_conflict_do_update(
        index_elements=_ESTIMATE_KEY,
        set_={
            "prior_mean": insert.excluded.prior_mean,
            "prior_var": insert.excluded.prior_var,
            "prior_source": insert.excluded.prior_source,
            "updated_at": insert.excluded.updated_at,
        },
    )
    session.execute(statement, values)


def add_statistics(
    session: Session, project_id: str, increments: Sequence[StatIncrement], *, at: datetime
) -> None:
    """Add to the statistics of effect cells with ``x = x + delta`` (creating missing cells)."""
    _upsert_statistics(session, project_id, increments, at=at, accumulate=True)


def add_observations(
    session: Session,
    project_id: str,
    observations: Sequence[tuple[str, str, str, float]],
    *,
    run_id: str | None = None,
    report_id: str | None = None,
    at: datetime,
) -> None:
    """Append raw observations ``(effect, src_task_id, dst_task_id, value)``."""
    session.add_all(
        Observation(
            project_id=project_id,
            run_id=run_id,
            report_id=report_id,
            effect=effect,
            src_task_id=src,
            dst_task_id=dst,
            value=value,
            created_at=at,
        )
        for effect, src, dst, value in observations
    )
    session.flush()


def replace_statistics(
    session: Session, project_id: str, cells: Sequence[StatIncrement], *, at: datetime
) -> None:
    """Overwrite the project's statistics with ``cells`` (a recomputation); priors are kept.

    Every cell is first reset to zero, so a cell absent from ``cells`` ends with no data.
    """
    session.execute(
        update(Estimate)
        .where(Estimate.project_id == project_id)
        .values(count=0, sum_x=0.0, sum_x2=0.0, updated_at=at)
    )
    _upsert_statistics(session, project_id, cells, at=at, accumulate=False)


def set_statistics(
    session: Session, project_id: str, cells: Sequence[StatIncrement], *, at: datetime
) -> None:
    """Overwrite the statistics of ``cells`` (a fold's sums), creating missing cells."""
    _upsert_statistics(session, project_id, cells, at=at, accumulate=False)


def _upsert_statistics(
    session: Session,
    project_id: str,
    cells: Sequence[StatIncrement],
    *,
    at: datetime,
    accumulate: bool,
) -> None:
    """Write ``cells``' statistics, added to (``accumulate``) or over the stored ones.

    A missing cell is created with the default prior; the priors of existing cells are kept.
    """
    if not cells:
        return
    values = [
        {
            "project_id": project_id,
            "effect": c.effect,
            "src_task_id": c.src_task_id,
            "dst_task_id": c.dst_task_id,
            "count": c.count,
            "sum_x": c.sum_x,
            "sum_x2": c.sum_x2,
            "prior_source": "default",
            "updated_at": at,
        }
        for c in cells
    ]
    insert = _insert(session)
    stored = {"count": Estimate.count, "sum_x": Estimate.sum_x, "sum_x2": Estimate.sum_x2}
    set_: dict[str, Any] = {
        name: column + insert.excluded[name] if accumulate else insert.excluded[name]
        for name, column in stored.items()
    }
    set_["updated_at"] = insert.excluded.updated_at
    statement: Insert = insert.on_conflict_do_update(index_elements=_ESTIMATE_KEY, set_=set_)
    session.execute(statement, values)
