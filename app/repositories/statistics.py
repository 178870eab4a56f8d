"""SQL for statistics deltas: the append-only log that reports write instead of shared rows.

A report appends one ``ordo_stat_deltas`` row (``models.StatDelta``) and updates nothing that
another report of the project writes. A fold deletes deltas (``DELETE ... RETURNING``: a delta
of a report that has not committed yet is not seen, and is folded next time) and writes the
sums into ``ordo_estimates`` and ``ordo_level_stats``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, delete, func, select, text
from sqlalchemy.orm import Session

from ordo_server.app.db import READ_ONLY_OPTION
from ordo_server.app.repositories.bulk import Insertion
from ordo_server.models import Project, StatDelta

_DELTAS = StatDelta.metadata.tables["ordo_stat_deltas"]
# Advisory-lock namespace of "the statistics of one project" (any constant of our own).
_STATISTICS_LOCK_SPACE = 0x0D0


@dataclass(frozen=True, slots=True)
class Delta:
    """One stored delta: cells ``[effect, src, dst, count, sum_x, sum_x2]`` and level rows
    ``[task_id, count, *LEVEL_SUMS]``."""

    id: int
    cells: list[list[Any]]
    levels: list[list[Any]]


def delta_values(
    project_id: str,
    cells: Sequence[Sequence[Any]],
    levels: Sequence[Sequence[Any]],
    *,
    at: datetime,
) -> dict[str, Any]:
    """One report's statistics as a row of ``ordo_stat_deltas`` (:func:`delta_insertion`)."""
    return {
        "project_id": project_id,
        "cells": [list(cell) for cell in cells],
        "levels": [list(level) for level in levels],
        "created_at": at,
    }


def delta_insertion(rows: Sequence[dict[str, Any]]) -> Insertion:
    """Reports' statistics to append (rows of :func:`delta_values`), for
    :func:`bulk.write_together`: no row of anyone else touched; the deltas are read in id
    order, the order of ``rows``."""
    return Insertion(_DELTAS, rows)


def list_deltas(session: Session, project_id: str) -> list[Delta]:
    """The project's unfolded deltas in id order."""
    rows = session.execute(
        select(_DELTAS.c.id, _DELTAS.c.cells, _DELTAS.c.levels)
        .where(_DELTAS.c.project_id == project_id)
        .order_by(_DELTAS.c.id)
    ).all()
    return [Delta(id=row.id, cells=row.cells, levels=row.levels) for row in rows]


def take_deltas(session: Session, project_id: str) -> list[Delta]:
    """Delete the project's committed deltas and return them in id order (for a fold)."""
    rows = session.execute(
        delete(_DELTAS)
        .where(_DELTAS.c.project_id == project_id)
        .returning(_DELTAS.c.id, _DELTAS.c.cells, _DELTAS.c.levels)
    ).all()
    deltas = [Delta(id=row.id, cells=row.cells, levels=row.levels) for row in rows]
    deltas.sort(key=lambda delta: delta.id)
    return deltas


def count_deltas(session: Session, project_id: str) -> int:
    """How many deltas of the project wait to be folded."""
    query = select(func.count()).select_from(_DELTAS).where(_DELTAS.c.project_id == project_id)
    return int(session.scalar(query) or 0)


def projects_with_deltas(session: Session, *, at_least: int) -> list[str]:
    """The projects with at least ``at_least`` deltas waiting to be folded, in id order."""
    query = (
        select(_DELTAS.c.project_id)
        .group_by(_DELTAS.c.project_id)
        .having(func.count() >= at_least)
        .order_by(_DELTAS.c.project_id)
    )
    return list(session.scalars(query))


def estimates_version(session: Session, project_id: str) -> int:
    """The folded version plus the unfolded deltas, in one statement (one snapshot)."""
    return int(session.scalar(select(estimates_version_column(project_id))) or 0)


def estimates_version_column(project_id: ColumnElement[str] | str) -> ScalarSelect[Any]:
    """What :func:`estimates_version` reads, as a column for another query to carry."""
    pending = (
        select(func.count())
        .select_from(_DELTAS)
        .where(_DELTAS.c.project_id == Project.id)
        .scalar_subquery()
    )
    folded = select(Project.estimates_version + pending).where(Project.id == project_id)
    return folded.scalar_subquery()


def lock_statistics(session: Session, project_id: str, *, exclusive: bool) -> None:
    """Hold the project's statistics lock until commit (PostgreSQL; SQLite has one writer).

    Reports and readers in a READ COMMITTED transaction take it shared, so they never wait for
    each other; a fold or a recomputation takes it exclusive, so a reader never sees the folded
    rows from before a fold and the deltas from after it.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    session.execute(
        text(f"SELECT {function}(:space, hashtext(:project_id))"),
        {"space": _STATISTICS_LOCK_SPACE, "project_id": project_id},
    )


def try_lock_statistics(session: Session, project_id: str) -> bool:
    """Take the statistics lock exclusive if nobody holds it; never waits (SQLite: ``True``)."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    got = session.scalar(
        text("SELECT pg_try_advisory_xact_lock(:space, hashtext(:project_id))"),
        {"space": _STATISTICS_LOCK_SPACE, "project_id": project_id},
    )
    return bool(got)


def in_snapshot(session: Session) -> bool:
    """Whether the session reads one snapshot (a read-only session: REPEATABLE READ on
    PostgreSQL, a deferred BEGIN on SQLite), so that several queries see one state."""
    return bool(session.get_bind().get_execution_options().get(READ_ONLY_OPTION, False))
