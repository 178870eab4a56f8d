"""Plans off the request path: one home for asking, computing, storing and awaiting plans.

A report or a run creation only *asks* for a plan (:func:`request_plan`: one row in
``ordo_jobs``, in the request's own transaction, so a stored report always has its re-plan).
A worker runs the job (:func:`run_next_job`) in three steps, none of which holds a lock while
solving:

1. **read** one snapshot (REPEATABLE READ on PostgreSQL): the run, its plan, the project's
   history and estimates; decide which plan the run needs now (:func:`wanted_stage`);
2. **solve** with the run's strategy and level model (``runs.solve_plan``), nothing written;
3. **write** in a short transaction: lock the run row, check that the run is still where the
   snapshot saw it and that this worker's claim still holds, store the schedule (unique per
   ``(run, stage)``) and point the run at it.

Batches: a worker that claims a plan job also claims the other claimable plan jobs of its
project (one per run, at most ``job_batch_size``, :func:`_claim`). They share step 1's snapshot
and the model fit (``recommendations.ProjectFits``: the history is read and the ensemble fitted
once, each run's plan conditioned on its own trained prefix); steps 2 and 3 stay per run, and
each plan is stored as soon as it is solved. Seeds come from the project and the run, never
from the batch, so a plan made in a batch is the plan made alone on the same snapshot. Each
job ends on its own: one run's solver error or unexpected error does not touch the others.
A request that runs its own run's job (embedded runner) runs that job alone.

Coalescing: a run has at most one waiting job, and a job plans for the state it reads, so a
burst of reports makes one re-plan. Idempotence: a job whose plan exists already, or whose run
moved on, stores nothing. Crash safety: a claim is a lease (``job_lease_s``); a job whose
worker died is claimed again, and the unique ``(run_id, run_stage)`` index keeps one plan.

Schedule jobs (``POST .../schedules``) take the same three steps: read the project's history
and estimates on one snapshot, solve, store the schedule as the project's next version with the
job's result (:func:`run_next_job` runs both kinds; :func:`await_job_async` waits for one).

Lock order: the run row, then the job row, then the project row (schedule versions); a group
store (:func:`_store_together`) locks its runs' rows, then its jobs' rows, each in id order. A
claim takes only job rows (a batch's: SKIP LOCKED, never waiting), in a transaction of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from anyio import to_thread
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from ordo_server.app.commit_hooks import after_commit
from ordo_server.app.db import Database, unit_of_work
from ordo_server.app.errors import (
    NotFoundError,
    ServiceError,
    problem_body,
    service_error_from_solver,
)
from ordo_server.app.logging_config import REQUEST_ID
from ordo_server.app.metrics import REPLANS
from ordo_server.app.repositories import jobs as job_repo
from ordo_server.app.repositories import projects as project_repo
from ordo_server.app.repositories import runs as run_repo
from ordo_server.app.repositories import schedules as schedule_repo
from ordo_server.app.repositories import tasks as task_repo
from ordo_server.app.repositories.bulk import write_together
from ordo_server.app.schemas.project import ProjectSettings
from ordo_server.app.schemas.run import RunStatus
from ordo_server.app.schemas.schedule import ScheduleCreate
from ordo_server.app.security import Role
from ordo_server.app.services import recommendations as recommendation_service
from ordo_server.app.services import runs as run_service
from ordo_server.app.services import statistics as stat_service
from ordo_server.app.services.auth import Principal, ProjectContext
from ordo_server.app.services.job_events import async_plan_waiter, plan_done, relay_live
from ordo_server.app.services.recommendations import ProjectFits
from ordo_server.app.services.schedules import (
    NewPlans,
    SolvedSchedule,
    new_plans,
    store_schedule,
)
from ordo_server.app.settings import Settings
from ordo_server.models import Job, Run, Schedule
from ordo_server.solver.errors import SolverError

logger = logging.getLogger(__name__)

WORKER_KEY_ID = "ordo-worker"
# A waiting request looks at the database at least this often (seconds) while no listener
# relays job ends to it (SQLite; PostgreSQL while the listener reconnects). While one does, it
# looks only when it starts: each look is a transaction, and a fleet of 100 waiters looking
# four times a second (then once a second) took the CPU the job worker needed.
RECHECK_S = 0.25
# A batch's solved plans are stored together once the oldest unstored one is this old (s) ...
GROUP_WINDOW_S = 0.1
# ... or once this many wait, and only while the worker is behind (group_max). A group's
# trainers are woken at once and report at once: groups of 10 cut the re-plan lag of a fleet of
# 100 (bench/load.py) but tripled its report latency.
GROUP_MAX = 2


# --- which plan a run needs ----------------------------------------------------------------------


def plan_stage(schedule: Schedule) -> int:
    """The stage after which ``schedule`` was planned (0: a first plan; older rows: the prefix)."""
    if schedule.run_stage is not None:
        return schedule.run_stage
    return len(schedule.request.get("prefix") or [])


def wanted_stage(run: Run, schedule: Schedule | None) -> int | None:
    """The stage whose plan the run needs now, or ``None`` when its plan is current.

    A run with no plan needs its first (stage 0). An adaptive run that has reported training
    stage ``k >= 1`` with at least two stages left needs a plan made after ``k``.
    """
    if run.status in run_service.FINISHED:
        return None
    if schedule is None:
        return 0 if run.schedule_id is None else None
    reported = run.next_stage - 1
    if run_service.replans_after(run, reported, len(schedule.order)):
        return reported if plan_stage(schedule) < reported else None
    return None


# --- running a job -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Claim:
    """A job as claimed: its id, the attempt that fences it, what it carries."""

    id: int
    kind: str
    attempts: int
    project_id: str
    run_id: str | None
    payload: dict[str, Any]
    request_id: str | None
    waited_s: float = 0.0  # from the job's creation to its claim (database clock)

    @classmethod
    def of(cls, job: Job, claimed_at: datetime | None = None) -> _Claim:
        """The claim of ``job``, a row just claimed (its ``attempts`` already counted) at
        ``claimed_at``."""
        waited = claimed_at - job.created_at if claimed_at is not None else timedelta()
        return cls(
            id=job.id,
            kind=job.kind,
            attempts=job.attempts,
            project_id=job.project_id,
            run_id=job.run_id,
            payload=dict(job.payload or {}),
            request_id=job.request_id,
            waited_s=max(0.0, waited.total_seconds()),
        )


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the read step decided and the solve produced."""

    stage: int
    seen: tuple[int, str | None]
    solved: SolvedSchedule | None
    error: str | None = None


# The outcome of one job: what it stored (``planned``, ``kept``, ...), or the unexpected error
# that makes it retry.
_Outcome = str | Exception
# What the solve step gives a plan job: the plan, ``None`` when none is needed, or the error.
_Solved = _Plan | None | Exception


# Jobs one process runs on behalf of requests at once (a report's early start, a wait for a
# plan or a schedule that no worker has claimed). A plan job holds its snapshot's connection
# while it stores on another, so with as many runners as the pool has connections every one of
# them held a snapshot and waited for a second connection until the pool timed out (a fleet of
# 40 trainers on SQLite, once a batch of reports started 20 of them at once).
REQUEST_RUNNERS = 2
_request_runners = threading.BoundedSemaphore(REQUEST_RUNNERS)


def run_job_for_request(
    database: Database,
    settings: Settings,
    *,
    run_id: str | None = None,
    job_id: int | None = None,
) -> bool:
    """:func:`run_next_job` in a request's stead, unless ``REQUEST_RUNNERS`` are running in this
    process already: then ``False``, as when no job is free (the job stays queued for a worker,
    a runner that frees up, or the request's next look)."""
    if not _request_runners.acquire(blocking=False):
        return False
    try:
        return run_next_job(database, settings, run_id=run_id, job_id=job_id)
    finally:
        _request_runners.release()


def run_next_job(
    database: Database,
    settings: Settings,
    *,
    run_id: str | None = None,
    job_id: int | None = None,
) -> bool:
    """Claim the oldest claimable job (of ``run_id``, or ``job_id``) and run it; ``False`` when
    none was free.

    A worker's plan job (neither given) brings along the other claimable plan jobs of its
    project, up to ``job_batch_size`` in all: one snapshot, one model fit, each run's plan
    solved and stored on its own (:func:`_run_plan_jobs`). A request that runs its own run's job
    runs that one alone.

    While a job runs, log lines carry the id of the request that queued it (or none), also
    when the job runs inside another request that waits for it.
    """
    claims = _claim(database, settings, run_id=run_id, job_id=job_id)
    if not claims:
        return False
    first = claims[0]
    try:
        with _on_behalf_of(first):
            # Reports append statistics deltas; a job folds them before it reads (short, never
            # waiting for reports in flight), so readers add up few.
            stat_service.fold_if_due(database, first.project_id)
    except Exception as error:
        outcomes: dict[int, _Outcome] = {claim.id: error for claim in claims}
    else:
        if first.kind == job_repo.SCHEDULE:
            with _on_behalf_of(first):
                outcome = _outcome(lambda: _run_schedule_job(database, first, settings))
            outcomes = {first.id: outcome}
        else:
            outcomes = _run_plan_jobs(database, claims, settings)
    for claim in claims:
        _end(database, settings, claim, outcomes[claim.id])
    return True


@contextlib.contextmanager
def _on_behalf_of(claim: _Claim) -> Iterator[None]:
    """Log lines within carry the id of the request that queued ``claim``'s job."""
    token = REQUEST_ID.set(claim.request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


def _outcome(step: Callable[[], str]) -> _Outcome:
    """``step()``'s outcome, or the unexpected error it raised (its job retries)."""
    try:
        return step()
    except Exception as error:
        return error


def _end(database: Database, settings: Settings, claim: _Claim, outcome: _Outcome) -> None:
    """Log a job's outcome; after an unexpected error, retry it later or fail it."""
    with _on_behalf_of(claim):
        if isinstance(outcome, Exception):
            logger.error("job %d (attempt %d) failed", claim.id, claim.attempts, exc_info=outcome)
            _retry_or_fail(database, claim, settings, outcome)
        else:
            logger.info("job %d: %s", claim.id, outcome)


def _claim(
    database: Database, settings: Settings, *, run_id: str | None, job_id: int | None
) -> list[_Claim]:
    """The claimed jobs, in one short transaction that holds only their rows (none: empty).

    The oldest claimable job (of ``run_id``, or ``job_id``); for a worker's plan job, the
    other claimable plan jobs of its project too (one per run, ``job_batch_size`` in all).
    """
    with unit_of_work(database.sessions) as session:
        now = run_repo.db_now(session)
        lease_s = settings.job_lease_s
        job = job_repo.claim(session, now=now, lease_s=lease_s, run_id=run_id, job_id=job_id)
        if job is None:
            return []
        jobs = [job]
        worker = run_id is None and job_id is None
        if worker and job.kind == job_repo.RUN_PLAN and job.run_id is not None:
            jobs += job_repo.claim_plans(
                session,
                now=now,
                lease_s=lease_s,
                project_id=job.project_id,
                limit=settings.job_batch_size - 1,
                besides=frozenset({job.run_id}),
            )
        return [_Claim.of(claimed, now) for claimed in jobs]


def _context(session: Session, project_id: str) -> ProjectContext | None:
    project = project_repo.get_project(session, project_id)
    if project is None:
        return None
    principal = Principal(key_id=WORKER_KEY_ID, role=Role.ADMIN, project_id=project_id)
    settings = ProjectSettings.model_validate(project.settings)
    return ProjectContext(id=project_id, settings=settings, principal=principal, name=project.name)


def _run_plan_jobs(
    database: Database, claims: Sequence[_Claim], settings: Settings
) -> dict[int, _Outcome]:
    """Steps 1 to 3 for plan jobs of one project: each run's plan is stored as soon as it is
    solved (or in a small group: :class:`_PlanStore`), while the snapshot stays open for the
    next run.

    Each job ends on its own: one run's solver error or unexpected error fails or retries that
    job only. An error of the shared read retries every job that had not ended yet.
    """
    if len(claims) > 1:
        logger.info(
            "plan jobs %s of project %s: one snapshot, one fit",
            [claim.id for claim in claims],
            claims[0].project_id,
        )
    plan_store = _PlanStore(database, claims[0].project_id, group_max=group_max(claims, settings))
    try:
        _read_and_solve(database, claims, settings, then=plan_store.put)
    except Exception as error:
        read_error: Exception | None = error
    else:
        read_error = None
    plan_store.flush()
    outcomes = plan_store.outcomes
    if read_error is not None:
        for claim in claims:
            outcomes.setdefault(claim.id, read_error)
    return outcomes


def group_max(claims: Sequence[_Claim], settings: Settings) -> int:
    """How many of a batch's plans may be stored together: ``GROUP_MAX`` once its oldest job
    waited longer than a trainer's wait for a plan (``plan_wait_s``: the worker is behind, and
    its throughput counts most), else one (each plan stored alone, its trainer woken at once)."""
    behind = max((claim.waited_s for claim in claims), default=0.0) > settings.plan_wait_s
    return GROUP_MAX if behind else 1


class _PlanStore:
    """Step 3 of a batch: plans stored in groups as they are solved.

    The first plan is stored at once; later ones wait until ``group_max`` wait (one: none
    waits; :func:`group_max`), the oldest is ``GROUP_WINDOW_S`` old or the batch ends, and each
    group is stored in one transaction (:func:`_store_together`): a batch of many runs is
    stored in fewer transactions, and no plan waits long for its store. A group whose
    transaction fails is stored again one run at a time (:func:`_store`), so one run's error
    stays its own.
    """

    def __init__(self, database: Database, project_id: str, *, group_max: int) -> None:
        self.outcomes: dict[int, _Outcome] = {}
        self._group_max = group_max
        self._database = database
        self._project_id = project_id
        self._group: list[tuple[_Claim, _Plan | None]] = []
        self._since = 0.0
        self._stored_any = False

    def put(self, claim: _Claim, solved: _Solved) -> None:
        """Take one job's solve (its plan, ``None``, or the error it raised)."""
        if isinstance(solved, Exception):
            self.outcomes[claim.id] = solved
            return
        if not self._group:
            self._since = time.monotonic()
        self._group.append((claim, solved))
        waited = time.monotonic() - self._since
        full = len(self._group) >= self._group_max
        if not self._stored_any or waited >= GROUP_WINDOW_S or full:
            self.flush()

    def flush(self) -> None:
        """Store every plan taken and not stored yet."""
        group, self._group = self._group, []
        self._stored_any = self._stored_any or bool(group)
        if len(group) > 1:
            try:
                self.outcomes.update(_store_together(self._database, self._project_id, group))
                return
            except Exception:
                logger.warning("storing %d plans together failed; one at a time", len(group))
        for claim, plan in group:
            with _on_behalf_of(claim):
                self.outcomes[claim.id] = _outcome(
                    functools.partial(_store, self._database, claim, plan)
                )


class _Snapshot:
    """One read of a project for plan jobs: the batch's runs and the plans they follow, its task
    keys, and its history, estimates and model fits (``ProjectFits``), each read or fitted on
    first use and shared by every plan made on the read (one fit per batch)."""

    def __init__(self, session: Session, context: ProjectContext, run_ids: Sequence[str]) -> None:
        self.session = session
        self.context = context
        self.fits = ProjectFits(session, context)
        self._keys: list[str] | None = None
        # The batch's runs and the plans they follow, read together (two statements, not two
        # per run) and held here: the session's identity map keeps no object nobody holds.
        self.runs = run_repo.get_runs(session, context.id, run_ids) if run_ids else {}
        schedule_ids = {run.schedule_id for run in self.runs.values() if run.schedule_id}
        self.schedules = (
            run_repo.get_schedules(session, context.id, schedule_ids) if schedule_ids else {}
        )

    def keys(self) -> list[str]:
        """The project's task keys in index order."""
        if self._keys is None:
            tasks = task_repo.list_tasks(self.session, self.context.id)
            self._keys = [task.key for task in tasks]
        return self._keys


def _read_and_solve(
    database: Database,
    claims: Sequence[_Claim],
    settings: Settings,
    *,
    then: Callable[[_Claim, _Solved], None],
) -> None:
    """Steps 1 and 2 for plan jobs of one project, on one snapshot: for each claim, decide and
    solve (:func:`_solve_run`), then hand the result to ``then`` (with the error instead when
    solving raised one the solver does not mean: that job retries, the others go on)."""
    with unit_of_work(database.read_sessions) as session:
        context = _context(session, claims[0].project_id)
        run_ids = [claim.run_id for claim in claims if claim.run_id is not None]
        snapshot = None if context is None else _Snapshot(session, context, run_ids)
        for claim in claims:
            with _on_behalf_of(claim):
                solved: _Solved = None
                if snapshot is not None:
                    try:
                        solved = _solve_run(snapshot, claim, settings)
                    except Exception as error:
                        solved = error
                then(claim, solved)


def _solve_run(snapshot: _Snapshot, claim: _Claim, settings: Settings) -> _Plan | None:
    """Decide which plan the claim's run needs on the snapshot and solve it; ``None`` when none
    is needed. A solver's refusal is the plan's ``error``."""
    assert claim.run_id is not None
    session = snapshot.session
    run = snapshot.runs.get(claim.run_id)
    if run is None:
        return None
    schedule = snapshot.schedules.get(run.schedule_id) if run.schedule_id else None
    stage = wanted_stage(run, schedule)
    if stage is None:
        return None
    seen = (run.next_stage, run.schedule_id)
    if schedule is None:
        base = ScheduleCreate.model_validate(
            claim.payload.get(run_service.PLAN_PAYLOAD_SCHEDULE) or {}
        )
        prefix: list[str] = []
        parent_id = None
    else:
        label = f"run {run.id} after stage {stage}"
        base = run_service.base_request(schedule, snapshot.keys()).model_copy(
            update={"label": label}
        )
        prefix = list(schedule.order[:stage])
        parent_id = schedule.id
    try:
        solved = run_service.solve_plan(
            session,
            snapshot.context,
            run,
            base,
            stage=stage,
            settings=settings,
            parent_id=parent_id,
            prefix=prefix,
            fits=snapshot.fits,
        )
    except (ServiceError, SolverError) as error:
        return _Plan(stage=stage, seen=seen, solved=None, error=str(error) or type(error).__name__)
    return _Plan(stage=stage, seen=seen, solved=solved)


def _store(database: Database, claim: _Claim, plan: _Plan | None) -> str:
    """Step 3: store the plan if the run is still where the snapshot saw it; the outcome."""
    return _store_together(database, claim.project_id, [(claim, plan)])[claim.id]


def _count_replan(session: Session, plan: _Plan | None, outcome: str) -> None:
    if plan is not None and plan.stage >= 1 and outcome in ("planned", "kept"):
        after_commit(session, REPLANS.labels(outcome=_replan_label(outcome)).inc)


def _store_together(
    database: Database, project_id: str, plans: Sequence[tuple[_Claim, _Plan | None]]
) -> dict[int, str]:
    """Step 3 for one or several runs of one project in one short transaction, each statement
    made once for all of them: the runs' rows, then the jobs' rows locked in id order; a job
    whose claim another worker took is ``lost``; a run that moved on or needs no plan ends its
    job without one; the (run, stage) pairs that have a plan already (looked up under the run
    locks) are ``duplicate``; the other schedules are inserted together and the runs pointed at
    them; the jobs are ended and their ends announced together. The outcome of each job."""
    with unit_of_work(database.sessions) as session:
        # The clock comes with the run locks (one round trip fewer for every group).
        runs, now = run_repo.lock_runs(
            session, project_id, [claim.run_id or "" for claim, _ in plans]
        )
        held = job_repo.lock_held(session, {claim.id: claim.attempts for claim, _ in plans})
        outcomes: dict[int, str] = {}
        storing: list[tuple[_Claim, Run, _Plan, SolvedSchedule]] = []
        for claim, plan in plans:
            if claim.id not in held:
                outcomes[claim.id] = "lost"  # another worker claimed it again; its answer counts
                continue
            run = runs.get(claim.run_id or "")
            verdict = _verdict(session, run, plan)
            if verdict is not None:
                outcomes[claim.id] = verdict
            else:
                assert run is not None
                assert plan is not None
                assert plan.solved is not None
                storing.append((claim, run, plan, plan.solved))
        wanted = [(solved, plan.stage) for _, _, plan, solved in storing]
        made = new_plans(session, project_id, wanted, at=now) if wanted else NewPlans([], [])
        pointed: list[dict[str, Any]] = []
        for (claim, run, _, _), schedule_id in zip(storing, made.ids, strict=True):
            outcomes[claim.id] = "duplicate" if schedule_id is None else "planned"
            if schedule_id is not None:
                set_committed_value(run, "schedule_id", schedule_id)
                pointed.append({"id": run.id, "schedule_id": schedule_id})
        ended = [(claim, plan) for claim, plan in plans if outcomes[claim.id] != "lost"]
        # The schedules, the runs pointed at them, the jobs' ends and their announcement: one
        # statement on PostgreSQL (the jobs are locked and their claims checked above).
        write_together(
            session,
            [schedule_repo.schedule_insertion(made.rows)],
            [
                run_repo.run_changes(pointed),
                job_repo.job_ends([(claim.id, outcomes[claim.id]) for claim, _ in ended], at=now),
            ],
            announcement=job_repo.plans_announcement([claim.run_id or "" for claim, _ in ended]),
        )
        for claim, plan in ended:
            after_commit(session, functools.partial(plan_done, claim.run_id or ""))
            _count_replan(session, plan, outcomes[claim.id])
        return outcomes


def _moved_on(run: Run, plan: _Plan) -> bool:
    """Whether the run is no longer where the job's snapshot saw it.

    A first plan (stage 0) is superseded only by another plan: the baseline report, which a
    run may send before it has a plan, queues none (``replans_after``), so a first plan it
    superseded would leave the run without any plan, answering ``done`` after its baseline.
    """
    if plan.stage == 0:
        return run.schedule_id != plan.seen[1]
    return (run.next_stage, run.schedule_id) != plan.seen


def _replan_label(outcome: str) -> str:
    return "replanned" if outcome == "planned" else "kept"


def _verdict(session: Session, run: Run | None, plan: _Plan | None) -> str | None:
    """The outcome of a plan that is not to be stored (failing a run that cannot start), or
    ``None`` for a plan to store."""
    if run is None or plan is None:
        return "noop"
    if _moved_on(run, plan) or run.status in run_service.FINISHED:
        return "superseded"  # the run moved on; the job its report queued plans for it
    if plan.solved is None:
        if plan.stage == 0:
            # No first plan can be made (constraints that admit no order, a policy changed
            # since): the run cannot start; say why on the run.
            _fail_unplanned(session, run, str(plan.error))
            return "failed_run"
        logger.warning("run %s keeps its plan after stage %d: %s", run.id, plan.stage, plan.error)
        return "kept"
    return None


# --- schedule jobs --------------------------------------------------------------------------------

SCHEDULE_PAYLOAD_REQUEST = "request"


def _run_schedule_job(database: Database, claim: _Claim, settings: Settings) -> str:
    """Solve a ``POST .../schedules`` request on one snapshot, then store it with the result.

    A request the solver refuses (constraints that admit no order, no order within the time
    limit, a project deleted since) fails the job with the problem the route would have
    answered: running it again would give the same answer.
    """
    request = ScheduleCreate.model_validate(claim.payload[SCHEDULE_PAYLOAD_REQUEST])
    solved: SolvedSchedule | None = None
    problem: ServiceError | None = None
    with unit_of_work(database.read_sessions) as session:
        context = _context(session, claim.project_id)
        try:
            if context is None:
                raise NotFoundError("The project was deleted.")
            solved = recommendation_service.solve_requested(
                session, context, request, settings=settings
            )
        except ServiceError as error:
            problem = error
        except SolverError as error:
            problem = service_error_from_solver(error)
    with unit_of_work(database.sessions) as session:
        now = run_repo.db_now(session)
        if not job_repo.still_held(session, claim.id, claim.attempts):
            return "lost"
        if solved is not None:
            stored = store_schedule(session, solved)
            outcome, result, failed = "stored", {"schedule_id": stored.id}, False
        else:
            assert problem is not None
            outcome, failed = "refused", True
            result = problem_body(
                problem.status, problem.detail, code=problem.code, errors=problem.errors
            )
        job_repo.finish(
            session,
            claim.id,
            claim.attempts,
            outcome=outcome,
            at=now,
            failed=failed,
            error=None if problem is None else problem.detail[:2000],
            result=result,
        )
        key = job_repo.waiter_key(claim.id)
        job_repo.announce_done(session, key)
        after_commit(session, lambda: plan_done(key))
        return outcome


def _retry_or_fail(database: Database, claim: _Claim, settings: Settings, error: Exception) -> None:
    """After an unexpected error: retry after a jittered backoff, or fail after the last attempt.

    A run whose first plan fails for good is failed too, with the reason: it could never start.
    """
    message = f"{type(error).__name__}: {error}"[:2000]
    with unit_of_work(database.sessions) as session:
        now = run_repo.db_now(session)
        if claim.attempts < settings.job_max_attempts:
            backoff = settings.job_retry_backoff_s * 2 ** (claim.attempts - 1)
            retry_at = now + timedelta(seconds=backoff * random.uniform(0.5, 1.5))
            job_repo.retry_later(
                session, claim.id, claim.attempts, error=message, retry_at=retry_at
            )
            return
        run = None
        if claim.run_id is not None:
            run = run_repo.get_run(session, claim.project_id, claim.run_id, for_update=True)
        if run is not None and run.schedule_id is None and run.status not in run_service.FINISHED:
            _fail_unplanned(session, run, message)
        job_repo.finish(
            session, claim.id, claim.attempts, outcome="error", at=now, failed=True, error=message
        )


def _fail_unplanned(session: Session, run: Run, reason: str) -> None:
    """Fail a run that can never start because no first plan can be made; say why on it."""
    run.status = RunStatus.FAILED.value
    run.finished_at = run_repo.db_now(session)
    run.fail_reason = f"No plan could be made: {reason}"[:2000]


# --- waiting for a job ---------------------------------------------------------------------------


def _plan_job_status(database: Database, run_id: str) -> str | None:
    """The status of the run's pending plan job (``None``: none pending): one short read."""
    with unit_of_work(database.read_sessions) as session:
        job = job_repo.pending_for_run(session, run_id)
        return job.status if job is not None else None


def _job_status(database: Database, job_id: int) -> str | None:
    """The status of job ``job_id`` while it has not ended (``None``: ended): one short read."""
    with unit_of_work(database.read_sessions) as session:
        job = session.get(Job, job_id)
        if job is None or job.status not in (job_repo.TODO, job_repo.DOING):
            return None
        return job.status


async def await_plan_async(database: Database, settings: Settings, run_id: str) -> bool:
    """Wait until no plan job of the run is pending; ``False`` after ``plan_wait_s``.

    With the embedded runner, the run's job no worker has claimed yet runs in this request.
    """
    return await _wait_async(
        database,
        settings,
        key=run_id,
        wait_s=settings.plan_wait_s,
        status=lambda: _plan_job_status(database, run_id),
        run_here=lambda: run_job_for_request(database, settings, run_id=run_id),
    )


async def _wake_or_recheck(ended: asyncio.Event, remaining_s: float) -> None:
    """Wait for the job's end (``ended``, then cleared), at most ``remaining_s`` seconds, and
    at most ``RECHECK_S`` while no listener relays job ends to this process."""
    recheck_s = remaining_s if relay_live() else RECHECK_S
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ended.wait(), min(remaining_s, recheck_s))
    ended.clear()


class PendingAnswer(Protocol):
    """An answer that says whether a plan of its run is still being made."""

    @property
    def plan_pending(self) -> bool: ...


PendingT = TypeVar("PendingT", bound=PendingAnswer)


async def reread_until_planned(
    read: Callable[[], PendingT], planned: asyncio.Event, *, wait_s: float
) -> PendingT:
    """``read()`` again once the run's plan job ends, until its answer has no pending plan or
    ``wait_s`` seconds pass (then one last read); external runners (``ordo worker``).

    ``planned`` is the run's waiter (``job_events.async_plan_waiter``), registered before the
    first read that found the plan pending, so a job that ended after that read has set it.
    Each wake-up costs one read and nothing else: a waiting ``GET .../next`` is two trips to a
    worker thread (its read and the read after the plan), not four (a job-status look before
    and after the wait). While no listener relays, it reads every ``RECHECK_S``.
    """
    deadline = time.monotonic() + wait_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining > 0:
            await _wake_or_recheck(planned, remaining)
        answer = await to_thread.run_sync(read)
        if not answer.plan_pending or time.monotonic() >= deadline:
            return answer


async def await_job_async(
    database: Database, settings: Settings, job_id: int, *, wait_s: float, run_here: bool
) -> bool:
    """Wait until job ``job_id`` has ended; ``False`` after ``wait_s`` seconds.

    ``run_here``: run the job in this request if no worker has claimed it (embedded runner).
    """
    return await _wait_async(
        database,
        settings,
        key=job_repo.waiter_key(job_id),
        wait_s=wait_s,
        status=lambda: _job_status(database, job_id),
        run_here=(
            (lambda: run_job_for_request(database, settings, job_id=job_id)) if run_here else None
        ),
    )


async def _wait_async(
    database: Database,
    settings: Settings,
    *,
    key: str,
    wait_s: float,
    status: Callable[[], str | None],
    run_here: Callable[[], bool] | None,
) -> bool:
    """Wait until ``status()`` (the job's status, ``None`` once ended) is ``None``; ``False``
    after ``wait_s`` seconds. The one wait loop of the routes.

    Waits in the event loop, holding no worker thread and no database connection: each look
    at the database is one short unit of work on a worker thread, and so is a job this request
    runs itself (``run_here``, embedded runner, job not claimed yet). A thread that waited here
    instead would be kept from the requests that hold a pooled connection and need a thread to
    finish: with enough waiting requests they time out on the pool (503).

    Woken by the job's end (``job_events``: this process, or NOTIFY from another, relayed by
    the listener); it looks at the database again every ``RECHECK_S`` while no listener relays
    (a listener that listens again wakes every waiter to look once).
    """
    deadline = time.monotonic() + wait_s
    with async_plan_waiter(key) as finished:
        while True:
            current = await to_thread.run_sync(status)
            if current is None:
                return True
            helps = settings.job_runner == "embedded" and current == job_repo.TODO
            if helps and run_here is not None and await to_thread.run_sync(run_here):
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await _wake_or_recheck(finished, remaining)
