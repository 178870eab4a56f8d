"""SQL for background jobs: enqueue (coalesced per run), claim (SKIP LOCKED; a worker's batch
of a project's plan jobs), finish (fenced).

Lock order (every writer takes locks in this order, so no two wait on each other in a cycle):
the run row (``runs.get_run(for_update=True)``; several: ``runs.lock_runs``, ids ascending), then
the job row (several: :func:`lock_held`, ids ascending), then the project row (schedule
versions). A worker claims a job in a transaction of its own that holds no other lock.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, String, bindparam, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ordo_server.app.repositories.bulk import Announcement, Change, Queueing
from ordo_server.models import Job
from ordo_server.models.job import OPEN

RUN_PLAN = "run_plan"
SCHEDULE = "schedule"
TODO = "todo"
DOING = "doing"
DONE = "done"
FAILED = "failed"
_TODO_WHERE = text("status = 'todo'")
# PostgreSQL channel idle workers LISTEN on; each enqueue NOTIFYs it (delivered at commit).
NOTIFY_CHANNEL = "ordo_jobs"
# PostgreSQL channel of finished plan jobs (payload: the run id); API processes LISTEN on it.
PLANS_CHANNEL = "ordo_plans"


def run_plan_values(
    project_id: str,
    run_id: str,
    *,
    at: datetime,
    request_id: str | None,
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The row of a run's plan request (:func:`enqueue_run_plans`)."""
    return {
        "project_id": project_id,
        "run_id": run_id,
        "kind": RUN_PLAN,
        "status": TODO,
        "attempts": 0,
        "payload": payload or {},
        "request_id": request_id,
        "created_at": at,
    }


def enqueue_run_plan(
    session: Session,
    project_id: str,
    run_id: str,
    *,
    at: datetime,
    request_id: str | None,
    payload: dict[str, Any] | None = None,
) -> bool:
    """Ask for the run's plan to be brought up to date; ``False`` when one is already pending.

    The partial unique index on ``run_id`` where ``status = 'todo'`` coalesces: a run has at
    most one waiting job, which plans for the run's state when it runs. A job being worked on
    (``doing``) does not count: the state it read may already be old.
    """
    values = run_plan_values(project_id, run_id, at=at, request_id=request_id, payload=payload)
    return bool(enqueue_run_plans(session, [values]))


def enqueue_run_plans(session: Session, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Several runs' plan requests (rows of :func:`run_plan_values`, one per run) in one
    coalescing INSERT, as :func:`enqueue_run_plan`; the ids of the runs newly queued, whose
    idle workers are woken (one NOTIFY statement for all of them, delivered at commit)."""
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    if len(rows) == 1:
        inserted = session.execute(_enqueue_statement(dialect), rows[0]).first() is not None
        queued = [rows[0]["run_id"]] if inserted else []
    else:
        table = Job.metadata.tables[Job.__tablename__]
        insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
        statement = (
            insert(table)
            .values(list(rows))
            .on_conflict_do_nothing(index_elements=["run_id"], index_where=_TODO_WHERE)
            .returning(table.c.run_id)
        )
        queued = list(session.scalars(statement))
    if queued and dialect == "postgresql":
        if len(queued) == 1:
            session.execute(_NOTIFY_JOBS, {"run_id": queued[0]})
        else:
            session.execute(_NOTIFY_EACH_JOB, {"run_ids": queued})
    return queued


def run_plans_queueing(rows: Sequence[dict[str, Any]]) -> Queueing:
    """Several runs' plan requests (rows of :func:`run_plan_values`, one per run) for
    :func:`bulk.write_together`: coalesced and announced as :func:`enqueue_run_plans` does,
    in the statement of the rows that asked for them."""
    table = Job.metadata.tables[Job.__tablename__]
    return Queueing(table, rows, ("run_id",), str(_TODO_WHERE), NOTIFY_CHANNEL, "run_id")


@functools.cache
def _enqueue_statement(dialect: str) -> Any:
    """The coalescing INSERT of :func:`enqueue_run_plan`, built once per dialect."""
    insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
    table = Job.metadata.tables[Job.__tablename__]
    return (
        insert(table)
        .on_conflict_do_nothing(index_elements=["run_id"], index_where=_TODO_WHERE)
        .returning(table.c.id)
    )


_NOTIFY_JOBS = select(func.pg_notify(NOTIFY_CHANNEL, bindparam("run_id", type_=String)))
_NOTIFY_EACH_JOB = text(
    f"SELECT pg_notify('{NOTIFY_CHANNEL}', run_id) "
    "FROM unnest(CAST(:run_ids AS VARCHAR[])) AS run_id"
)


def enqueue_schedule(
    session: Session,
    project_id: str,
    *,
    at: datetime,
    request_id: str | None,
    payload: dict[str, Any],
) -> int:
    """Queue a schedule solve (``POST .../schedules``); its id. Never coalesced."""
    job = Job(
        project_id=project_id,
        run_id=None,
        kind=SCHEDULE,
        status=TODO,
        attempts=0,
        payload=payload,
        request_id=request_id,
        created_at=at,
    )
    session.add(job)
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(NOTIFY_CHANNEL, str(job.id))))
    return job.id


def get_job(session: Session, project_id: str, job_id: int) -> Job | None:
    """The project's job with this id, or ``None``."""
    return session.scalar(select(Job).where(Job.project_id == project_id, Job.id == job_id))


def announce_done(session: Session, key: str) -> None:
    """NOTIFY the API processes (PostgreSQL; delivered at commit) that a job ended.

    ``key``: the run's id for a run plan, :func:`waiter_key` for any other job.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(PLANS_CHANNEL, key)))


def waiter_key(job_id: int) -> str:
    """What requests waiting for job ``job_id`` wait on (run plans: the run's id)."""
    return f"job:{job_id}"


def claim(
    session: Session,
    *,
    now: datetime,
    lease_s: float,
    run_id: str | None = None,
    job_id: int | None = None,
) -> Job | None:
    """Take the oldest claimable job (of ``run_id``, or ``job_id``, if given) for ``lease_s`` s.

    Claimable: ``todo``, or ``doing`` past its lease (its worker died mid-job, or it failed and
    its retry backoff is over). PostgreSQL skips rows other workers hold (``SKIP LOCKED``);
    SQLite's writers are serial anyway. The claim counts an attempt: finishing is fenced on it.
    """
    query = _claimable(now).limit(1)
    if run_id is not None:
        query = query.where(Job.run_id == run_id)
    if job_id is not None:
        query = query.where(Job.id == job_id)
    job = session.scalar(query)
    if job is None:
        return None
    _take(job, now, lease_s)
    session.flush()
    return job


def claim_plans(
    session: Session,
    *,
    now: datetime,
    lease_s: float,
    project_id: str,
    limit: int,
    besides: frozenset[str],
) -> list[Job]:
    """Take up to ``limit`` more claimable plan jobs of ``project_id``, oldest first, at most one
    per run and none of the runs in ``besides`` (runs already claimed), each for ``lease_s`` s.

    The rest of a worker's batch (:func:`claim` took its first job): the plans of one project
    are made on one snapshot with one model fit. Rows other workers hold are skipped, as in
    :func:`claim`; each claim counts an attempt of its own job.
    """
    if limit <= 0:
        return []
    query = (
        _claimable(now)
        .where(Job.project_id == project_id, Job.kind == RUN_PLAN, Job.run_id.not_in(besides))
        .limit(limit)
    )
    taken: list[Job] = []
    runs = set(besides)
    for job in session.scalars(query):
        # A run may have a waiting job and a stale claimed one: one plan per run is enough.
        if job.run_id is None or job.run_id in runs:
            continue
        runs.add(job.run_id)
        _take(job, now, lease_s)
        taken.append(job)
    session.flush()
    return taken


def _claimable(now: datetime) -> Select[Job]:
    """Claimable jobs, oldest first, locked (rows other transactions hold are skipped).

    Claimable: ``todo``, or ``doing`` past its lease (its worker died mid-job, or it failed and
    its retry backoff is over).
    """
    return (
        select(Job)
        # Literal, as the open jobs' partial index states it: the claim walks that index in id
        # order, also in a prepared statement's generic plan (with bound statuses, that plan
        # walked the primary key through every job that ever ended: 8 ms at 7,000 jobs).
        .where(text(OPEN))
        .where(or_(Job.status == TODO, (Job.status == DOING) & (Job.locked_until < now)))
        .order_by(Job.id)
        .with_for_update(skip_locked=True)
    )


def _take(job: Job, now: datetime, lease_s: float) -> None:
    """Claim ``job`` (locked) for ``lease_s`` seconds; the claim counts an attempt."""
    job.status = DOING
    job.attempts += 1
    job.started_at = now
    job.locked_until = now + timedelta(seconds=lease_s)


def still_held(session: Session, job_id: int, attempts: int) -> bool:
    """Lock the job row; whether the claim numbered ``attempts`` still holds it."""
    query = (
        select(Job.id)
        .where(Job.id == job_id, Job.status == DOING, Job.attempts == attempts)
        .with_for_update()
    )
    return session.scalar(query) is not None


# Built once (bound: job_ids): every store of a plan group locks its jobs.
_LOCK_HELD = (
    select(Job.id, Job.attempts)
    .where(Job.id.in_(bindparam("job_ids", expanding=True)), Job.status == DOING)
    .order_by(Job.id)
    .with_for_update()
)


def lock_held(session: Session, claims: Mapping[int, int]) -> set[int]:
    """Lock the jobs' rows (ids ascending); the ids whose claim (``claims``: job id -> the
    attempt that fences it) still holds."""
    rows = session.execute(_LOCK_HELD, {"job_ids": sorted(claims)})
    return {job_id for job_id, attempts in rows if claims[job_id] == attempts}


_JOBS_TABLE = Job.metadata.tables[Job.__tablename__]


def job_ends(ends: Sequence[tuple[int, str]], *, at: datetime) -> Change:
    """Jobs ended as done (``ends``: job id, outcome) for :func:`bulk.write_together`; lock
    them with :func:`lock_held` first (the lock, not the statement, fences them)."""
    rows = [
        {
            "id": job_id,
            "status": DONE,
            "outcome": outcome,
            "error": None,
            "result": None,
            "finished_at": at,
            "locked_until": None,
        }
        for job_id, outcome in ends
    ]
    return Change(_JOBS_TABLE, "id", rows)


def plans_announcement(run_ids: Sequence[str]) -> Announcement:
    """Announce that these runs' plan jobs ended (channel ``PLANS_CHANNEL``, payload: the run
    id; :func:`announce_done` for one), for :func:`bulk.write_together`."""
    return Announcement(PLANS_CHANNEL, run_ids)


def finish(
    session: Session,
    job_id: int,
    attempts: int,
    *,
    outcome: str,
    at: datetime,
    failed: bool = False,
    error: str | None = None,
    result: dict[str, Any] | None = None,
) -> bool:
    """End the job if claim ``attempts`` still holds it (``False``: another worker took it)."""
    updated = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == DOING, Job.attempts == attempts)
        .values(
            status=FAILED if failed else DONE,
            outcome=outcome,
            error=error,
            result=result,
            finished_at=at,
            locked_until=None,
        )
    )
    return bool(getattr(updated, "rowcount", 0))


def retry_later(
    session: Session, job_id: int, attempts: int, *, error: str, retry_at: datetime
) -> bool:
    """Keep the job claimed until ``retry_at``; any worker may claim it again after that."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == DOING, Job.attempts == attempts)
        .values(locked_until=retry_at, error=error[:2000])
    )
    return bool(getattr(result, "rowcount", 0))


def pending_for_run(session: Session, run_id: str) -> Job | None:
    """The run's oldest unfinished job, if any."""
    query = (
        select(Job)
        .where(Job.run_id == run_id, Job.status.in_((TODO, DOING)))
        .order_by(Job.id)
        .limit(1)
    )
    return session.scalar(query)


def queue_depth(session: Session) -> dict[str, int]:
    """Unfinished jobs by status (``todo``, ``doing``), every project."""
    query = (
        select(Job.status, func.count()).where(Job.status.in_((TODO, DOING))).group_by(Job.status)
    )
    counts = {TODO: 0, DOING: 0}
    counts.update({status: int(count) for status, count in session.execute(query).all()})
    return counts
