"""The project's statistics: folded rows plus the deltas that reports append.

A report writes its increments as one ``StatDelta`` row, so reports of one project take no
shared row lock and never wait for each other. The statistics a reader sees are the folded
rows (``ordo_estimates``, ``ordo_level_stats``) plus the unfolded deltas added in id order; the
estimates version is the project's folded version plus the number of unfolded deltas. A fold
(:func:`fold`) moves deltas into the folded rows in the same order, so the sums are those that
adding each report's increments in turn gives, whoever folds and when.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session

from ordo_server.app.db import Database, unit_of_work
from ordo_server.app.repositories import estimates as estimate_repo
from ordo_server.app.repositories import observations as observation_repo
from ordo_server.app.repositories import projects as project_repo
from ordo_server.app.repositories import runs as run_repo
from ordo_server.app.repositories import statistics as stat_repo
from ordo_server.app.repositories.estimates import EstimateStats, StatIncrement
from ordo_server.app.repositories.observations import LevelSums
from ordo_server.app.repositories.statistics import Delta

logger = logging.getLogger(__name__)

# A job folds once this many deltas wait (if no report holds the lock at that moment) ...
FOLD_AFTER = 32
# ... and waits for the lock once this many do, so that readers never add up too many.
FOLD_FORCE = 1000

CellKey = tuple[str, str, str]


def delta_rows(
    cells: Sequence[StatIncrement], levels: Sequence[LevelSums]
) -> tuple[list[list[Any]], list[list[Any]]]:
    """One report's increments as the JSON rows of a delta."""
    cell_rows: list[list[Any]] = [
        [c.effect, c.src_task_id, c.dst_task_id, c.count, c.sum_x, c.sum_x2] for c in cells
    ]
    level_rows: list[list[Any]] = [[level.task_id, level.count, *level.sums] for level in levels]
    return cell_rows, level_rows


def _add_cells(cells: dict[CellKey, EstimateStats], deltas: Iterable[Delta]) -> set[CellKey]:
    """Add the deltas' cells to ``cells`` in order; the keys that changed."""
    touched: set[CellKey] = set()
    for delta in deltas:
        for effect, src, dst, count, sum_x, sum_x2 in delta.cells:
            key = (effect, src, dst)
            old = cells.get(key)
            if old is None:
                old = EstimateStats(effect, src, dst, 0, 0.0, 0.0, None, None, "default", None)
            cells[key] = replace(
                old,
                count=old.count + int(count),
                sum_x=old.sum_x + float(sum_x),
                sum_x2=old.sum_x2 + float(sum_x2),
            )
            touched.add(key)
    return touched


def _add_levels(levels: dict[str, LevelSums], deltas: Iterable[Delta]) -> set[str]:
    """Add the deltas' level sums to ``levels`` in order; the tasks that changed."""
    touched: set[str] = set()
    for delta in deltas:
        for task_id, count, *sums in delta.levels:
            old = levels.get(task_id)
            if old is None:
                old = LevelSums(task_id, 0, tuple(0.0 for _ in sums))
            added = tuple(a + float(b) for a, b in zip(old.sums, sums, strict=True))
            levels[task_id] = LevelSums(task_id, old.count + int(count), added)
            touched.add(task_id)
    return touched


def _stored(
    session: Session, project_id: str
) -> tuple[dict[CellKey, EstimateStats], dict[str, LevelSums]]:
    """The folded rows, by key."""
    cells = {
        (c.effect, c.src_task_id, c.dst_task_id): c
        for c in estimate_repo.list_estimates(session, project_id)
    }
    levels = {
        level.task_id: level for level in observation_repo.list_level_stats(session, project_id)
    }
    return cells, levels


def current_statistics(
    session: Session, project_id: str
) -> tuple[list[EstimateStats], list[LevelSums]]:
    """The statistics now: folded rows plus unfolded deltas (what a planner sees).

    A READ COMMITTED transaction first takes the statistics lock shared, so that no fold
    commits between its reads; a read-only session reads one snapshot anyway.
    """
    if not stat_repo.in_snapshot(session):
        stat_repo.lock_statistics(session, project_id, exclusive=False)
    cells, levels = _stored(session, project_id)
    deltas = stat_repo.list_deltas(session, project_id)
    _add_cells(cells, deltas)
    _add_levels(levels, deltas)
    return list(cells.values()), list(levels.values())


def fold(session: Session, project_id: str) -> int:
    """Move the committed deltas into the folded rows; how many. The caller holds the
    statistics lock exclusive (a delta committed meanwhile waits for the next fold)."""
    deltas = stat_repo.take_deltas(session, project_id)
    if not deltas:
        return 0
    cells, levels = _stored(session, project_id)
    changed_cells = _add_cells(cells, deltas)
    changed_levels = _add_levels(levels, deltas)
    now = run_repo.db_now(session)
    estimate_repo.set_statistics(
        session,
        project_id,
        [
            StatIncrement(c.effect, c.src_task_id, c.dst_task_id, c.count, c.sum_x, c.sum_x2)
            for key, c in sorted(cells.items())
            if key in changed_cells
        ],
        at=now,
    )
    observation_repo.set_level_stats(
        session, project_id, [levels[task] for task in sorted(changed_levels)], at=now
    )
    project_repo.bump_estimates_version(session, project_id, by=len(deltas))
    return len(deltas)


def fold_now(session: Session, project_id: str) -> int:
    """Take the statistics lock exclusive (waiting for reports in flight) and fold."""
    stat_repo.lock_statistics(session, project_id, exclusive=True)
    return fold(session, project_id)


def fold_if_due(database: Database, project_id: str) -> int:
    """Fold in a short transaction of its own when enough deltas wait; how many were folded.

    Below :data:`FOLD_FORCE` it folds only if no report holds the lock right now, so a fold
    never makes a report wait.
    """
    # Counted in a read-only session first: on SQLite a writing one takes the write lock.
    with unit_of_work(database.read_sessions) as session:
        waiting = stat_repo.count_deltas(session, project_id)
    if waiting < FOLD_AFTER:
        return 0
    with unit_of_work(database.sessions) as session:
        if waiting < FOLD_FORCE:
            if not stat_repo.try_lock_statistics(session, project_id):
                return 0
        else:
            stat_repo.lock_statistics(session, project_id, exclusive=True)
        folded = fold(session, project_id)
    logger.info("folded %d statistics deltas of project %s", folded, project_id)
    return folded


def fold_due(database: Database) -> int:
    """:func:`fold_if_due` for every project with :data:`FOLD_AFTER` deltas or more; how many
    deltas were folded in all.

    Jobs fold their own project before they read, but a project whose runs never ask for a
    plan (fixed runs only) has no job: without this sweep (every worker, at most once per
    ``job_poll_s``) its deltas would pile up, and every report, estimate and plan of it would
    add them all up.
    """
    with unit_of_work(database.read_sessions) as session:
        due = stat_repo.projects_with_deltas(session, at_least=FOLD_AFTER)
    return sum(fold_if_due(database, project_id) for project_id in due)
