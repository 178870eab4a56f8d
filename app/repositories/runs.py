"""SQL for runs, their lease clock and the schedules they followed."""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ordo_server.app.repositories.bulk import Change
from ordo_server.app.repositories.jobs import DOING, TODO
from ordo_server.app.repositories.statistics import estimates_version_column
from ordo_server.models import Job, Project, Run, Schedule

_SQLITE_NOW = text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
# clock_timestamp(), not now(): now() is frozen at the start of the transaction.
_POSTGRES_NOW = text("SELECT clock_timestamp()")


def db_now(session: Session) -> datetime:
    """The database's clock, timezone-aware UTC: every lease uses it, never the app's."""
    sqlite_clock = session.get_bind().dialect.name == "sqlite"
    return _utc(session.scalar(_SQLITE_NOW if sqlite_clock else _POSTGRES_NOW))


# The database's clock as a column (what :func:`db_now` reads), for statements that read it.
_SQLITE_CLOCK = func.strftime("%Y-%m-%d %H:%M:%f", "now")
_POSTGRES_CLOCK = func.clock_timestamp()


def _utc(value: object) -> datetime:
    """A clock reading (SQLite: text; PostgreSQL: a timestamp) as timezone-aware UTC."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


def insert_run(session: Session, run: Run) -> bool:
    """Insert ``run`` unless its ``client_id`` exists; whether it was inserted.

    ``INSERT ... ON CONFLICT DO NOTHING``: two requests with one client_id never make two runs
    and never fail; the second waits on the unique index until the first commits.
    """
    table = Run.metadata.tables[Run.__tablename__]
    values = {column.key: getattr(run, column.key) for column in table.columns}
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    statement = insert.values(values).on_conflict_do_nothing().returning(table.c.id)
    return session.execute(statement).first() is not None


def get_run(
    session: Session, project_id: str, run_id: str, *, for_update: bool = False
) -> Run | None:
    """The project's run with this id, or ``None``; ``for_update`` locks its row until commit.

    The lock serializes everything that changes one run (reports, heartbeats, completion), so a
    stage is never stored twice and a resent report waits for the first and replays it.
    """
    query = select(Run).where(Run.project_id == project_id, Run.id == run_id)
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


_RUN_ROWS = Run.metadata.tables[Run.__tablename__]


def run_changes(rows: Sequence[dict[str, Any]]) -> Change:
    """New values of run rows (each: ``id`` and the columns to set, the same in every row) for
    :func:`bulk.write_together`."""
    return Change(_RUN_ROWS, "id", rows)


# Built once (bound: project_id, run_ids): a plan batch reads its runs, a group store locks them.
_RUNS = select(Run).where(
    Run.project_id == bindparam("project_id"), Run.id.in_(bindparam("run_ids", expanding=True))
)
_SCHEDULES = select(Schedule).where(
    Schedule.project_id == bindparam("project_id"),
    Schedule.id.in_(bindparam("schedule_ids", expanding=True)),
)


def get_runs(session: Session, project_id: str, run_ids: Collection[str]) -> dict[str, Run]:
    """The project's runs with these ids, by id (one statement; no lock)."""
    rows = session.scalars(_RUNS, {"project_id": project_id, "run_ids": sorted(run_ids)})
    return {run.id: run for run in rows}


def get_schedules(
    session: Session, project_id: str, schedule_ids: Collection[str]
) -> dict[str, Schedule]:
    """The project's schedules with these ids, by id (one statement)."""
    bound = {"project_id": project_id, "schedule_ids": sorted(schedule_ids)}
    return {schedule.id: schedule for schedule in session.scalars(_SCHEDULES, bound)}


class LockedRuns(NamedTuple):
    """What :func:`lock_runs` read: the runs by id and the database clock."""

    runs: dict[str, Run]
    now: datetime  # read by the statement that locked them (or by its own when none was found)


@functools.cache
def _lock_runs_query(dialect: str) -> Select[Any]:
    """:func:`lock_runs`'s statement (bound: project_id, run_ids), built once per dialect."""
    clock = _SQLITE_CLOCK if dialect == "sqlite" else _POSTGRES_CLOCK
    return _RUNS.add_columns(clock).order_by(Run.id).with_for_update(of=Run)


def lock_runs(session: Session, project_id: str, run_ids: Collection[str]) -> LockedRuns:
    """The project's runs with these ids, by id, their rows locked until commit in id order,
    and the database clock, in one round trip (a plan group's store reads both).

    Locking in one order (ids ascending) keeps two writers that lock several runs from waiting
    on each other in a cycle; every other writer locks one run.
    """
    query = _lock_runs_query(session.get_bind().dialect.name)
    rows = session.execute(query, {"project_id": project_id, "run_ids": sorted(run_ids)}).all()
    now = _utc(rows[0][1]) if rows else db_now(session)
    return LockedRuns({run.id: run for run, _ in rows}, now)


class RunView(NamedTuple):
    """A run as a trainer's request reads it, in one round trip (:func:`run_with_plan`)."""

    run: Run
    plan: list[str] | None  # the task keys of the plan it follows; None without one
    now: datetime  # the database clock
    plan_pending: bool | None  # a plan job of the run waits or runs (None: not asked)
    estimates_version: int | None  # the project's estimates version (None: not asked)


def _plan_of_run() -> ColumnElement[bool]:
    """The join condition of a run's current plan (its schedule, in the same project)."""
    return and_(Schedule.id == Run.schedule_id, Schedule.project_id == Run.project_id)


def _plan_pending() -> ColumnElement[bool]:
    """Whether a plan job of the run waits or runs (the open jobs' index serves it)."""
    return exists().where(Job.run_id == Run.id, Job.status.in_((TODO, DOING)))


@functools.cache
def _run_with_plan_query(
    dialect: str, for_update: bool, plan_pending: bool, estimates_version: bool, many: bool = False
) -> Select[Any]:
    """:func:`run_with_plan`'s statement, built once per variant (bound: project_id, run_id;
    ``many``: run_ids, the rows in id order, as :func:`runs_with_plans` locks them).

    Built per call, a statement costs its construction and cache key each time: about 0.4 ms
    of this one, more than the database takes to answer it.
    """
    pending: ColumnElement[Any] = literal(None)
    if plan_pending:
        pending = _plan_pending()
    version: ColumnElement[Any] = literal(None)
    if estimates_version:
        version = estimates_version_column(bindparam("project_id"))
    clock = _SQLITE_CLOCK if dialect == "sqlite" else _POSTGRES_CLOCK
    query = (
        select(Run, Schedule.order, clock, pending, version)
        .outerjoin(Schedule, _plan_of_run())
        .where(Run.project_id == bindparam("project_id"))
    )
    if many:
        query = query.where(Run.id.in_(bindparam("run_ids", expanding=True))).order_by(Run.id)
    else:
        query = query.where(Run.id == bindparam("run_id"))
    return query.with_for_update(of=Run) if for_update else query


def run_with_plan(
    session: Session,
    project_id: str,
    run_id: str,
    *,
    for_update: bool = False,
    plan_pending: bool = False,
    estimates_version: bool = False,
) -> RunView | None:
    """The run (``for_update``: its row locked, as :func:`get_run`), its plan and the database
    clock, and on request whether a plan job of it is pending and the project's estimates
    version, in one round trip; ``None`` when the project has no such run. For what a trainer
    sends at every stage.
    """
    dialect = session.get_bind().dialect.name
    query = _run_with_plan_query(dialect, for_update, plan_pending, estimates_version)
    row = session.execute(query, {"project_id": project_id, "run_id": run_id}).first()
    return None if row is None else _run_view(row)


@functools.cache
def _project_run_query(dialect: str) -> Select[Any]:
    """:func:`project_and_run`'s statement (bound: project_id, run_id), built once per dialect:
    the project, outer-joined to its run with that id, the run's plan, the database clock and
    whether a plan job of the run is pending."""
    on_run = and_(Run.project_id == Project.id, Run.id == bindparam("run_id"))
    clock = _SQLITE_CLOCK if dialect == "sqlite" else _POSTGRES_CLOCK
    return (
        select(Project, Run, Schedule.order, clock, _plan_pending())
        .select_from(Project)
        .outerjoin(Run, on_run)
        .outerjoin(Schedule, _plan_of_run())
        .where(Project.id == bindparam("project_id"))
    )


def project_and_run(
    session: Session, project_id: str, run_id: str
) -> tuple[Project | None, RunView | None]:
    """The project, and its run with that id as :func:`run_with_plan` reads it with
    ``plan_pending``, in one statement (what ``GET .../next`` needs: a single-statement read
    runs outside any transaction on PostgreSQL). ``(None, None)``: no such project;
    ``(project, None)``: the project has no such run."""
    query = _project_run_query(session.get_bind().dialect.name)
    row = session.execute(query, {"project_id": project_id, "run_id": run_id}).first()
    if row is None:
        return None, None
    project, run, order, clock, is_pending = row
    if run is None:
        return project, None
    plan = None if order is None else list(order)
    return project, RunView(run, plan, _utc(clock), bool(is_pending), None)


def runs_with_plans(
    session: Session,
    project_id: str,
    run_ids: Collection[str],
    *,
    for_update: bool = False,
    plan_pending: bool = False,
    estimates_version: bool = False,
) -> dict[str, RunView]:
    """:func:`run_with_plan` of several runs in one statement, by run id; ``for_update`` locks
    their rows in id order (as :func:`lock_runs`). Runs the project does not have are absent."""
    dialect = session.get_bind().dialect.name
    query = _run_with_plan_query(dialect, for_update, plan_pending, estimates_version, True)
    rows = session.execute(query, {"project_id": project_id, "run_ids": sorted(run_ids)})
    views = [_run_view(row) for row in rows]
    return {view.run.id: view for view in views}


def _run_view(row: Any) -> RunView:
    run, order, clock, is_pending, version_value = row
    return RunView(
        run=run,
        plan=None if order is None else list(order),
        now=_utc(clock),
        plan_pending=None if is_pending is None else bool(is_pending),
        estimates_version=None if version_value is None else int(version_value),
    )


def find_run_by_client(
    session: Session, project_id: str, client_id: str, *, for_update: bool = False
) -> Run | None:
    """The project's run created with ``client_id``, or ``None``."""
    query = select(Run).where(Run.project_id == project_id, Run.client_id == client_id)
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


def list_runs(
    session: Session,
    project_id: str,
    *,
    limit: int,
    after: tuple[datetime, str] | None = None,
    status: str | None = None,
) -> Sequence[Run]:
    """Up to ``limit`` runs, newest first, strictly after the cursor ``(created_at, id)``."""
    query = select(Run).where(Run.project_id == project_id)
    if after is not None:
        created_at, run_id = after
        query = query.where(
            or_(Run.created_at < created_at, and_(Run.created_at == created_at, Run.id < run_id))
        )
    if status is not None:
        query = query.where(Run.status == status)
    return session.scalars(query.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit)).all()


def finished_runs(session: Session, project_id: str, *, limit: int) -> Sequence[Run]:
    """The most recently finished completed runs."""
    query = (
        select(Run)
        .where(Run.project_id == project_id, Run.status == "completed")
        .order_by(Run.finished_at.desc(), Run.id.desc())
        .limit(limit)
    )
    return session.scalars(query).all()


def get_schedule(session: Session, project_id: str, schedule_id: str) -> Schedule | None:
    """The project's schedule with this id, or ``None``; one the session already holds is not
    read again."""
    schedule = session.get(Schedule, schedule_id)
    return schedule if schedule is not None and schedule.project_id == project_id else None


def schedule_chain(
    session: Session, project_id: str, run_id: str, current_id: str
) -> list[Schedule]:
    """The schedules a run followed, oldest first: its first plan, then every re-plan
    (:func:`schedule_chains` of one run)."""
    return schedule_chains(session, project_id, {run_id: current_id})[run_id]


def schedule_chains(
    session: Session, project_id: str, currents: Mapping[str, str]
) -> dict[str, list[Schedule]]:
    """The schedules each run followed, oldest first, by run id (``currents``: each run's
    current schedule id): one statement, two where a run started from a stored schedule.

    Walks ``parent_id`` back from the current plan while the schedule was made for the run;
    the first plan is the one reached last (a stored schedule the run started from, or the
    run's own first solve, which has no parent).
    """
    if not currents:
        return {}
    made = session.scalars(
        select(Schedule).where(
            Schedule.project_id == project_id, Schedule.run_id.in_(sorted(currents))
        )
    ).all()
    by_id = {schedule.id: schedule for schedule in made}
    # What a walk reaches that no run of these made: a stored schedule a run started from.
    wanted = {*currents.values(), *(s.parent_id for s in made if s.parent_id is not None)}
    missing = wanted - by_id.keys()
    if missing:
        by_id.update(get_schedules(session, project_id, missing))
    return {run_id: _chain(by_id, run_id, current) for run_id, current in currents.items()}


def _chain(by_id: Mapping[str, Schedule], run_id: str, current_id: str) -> list[Schedule]:
    """One run's walk of :func:`schedule_chains` over the schedules read."""
    chain: list[Schedule] = []
    schedule = by_id.get(current_id)
    while schedule is not None:
        chain.append(schedule)
        if schedule.run_id != run_id or schedule.parent_id is None:
            break
        schedule = by_id.get(schedule.parent_id)
    chain.reverse()
    return chain
