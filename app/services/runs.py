"""Use cases of runs: start, follow, keep the lease, re-plan, end.

Lease model (DB clock throughout): a run holds a lease that every heartbeat and every report
renews until ``now + heartbeat_grace_s``; a run silent past it is ``stale``. Staleness is
evaluated lazily: reads show it, writes store it. A stale run that reports or heartbeats again is
active again (its reports meanwhile are flagged ``late``). ``lease_token`` is a fencing token: it
grows when a new holder re-claims a stale run with its ``client_id``. Every write on a run (report,
heartbeat, complete, fail) carries the holder's token in the ``Ordo-Lease-Token`` header
(:func:`check_lease`): another token is refused with 409 ``lease_lost``, none with 428
``lease_token_required`` (an admin key may end a run without one). A ``client_id`` sent again
with a different request is refused with 409 ``client_id_conflict``.

Lock order, the same in every write path so PostgreSQL never deadlocks: the API key row (auth;
at most once a minute), the run row, the project's statistics lock (shared by reports), the
statistics cells in key order, the project row (last, so reports serialize only briefly), then
the run's waiting job (insert, coalesced). A plan job takes the run row, its own job row, then the
project row (schedule version) in a short transaction after solving with no lock held
(``app.services.planning``). Creating a run locks no existing run and solves nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from ordo_server.app.commit_hooks import after_commit
from ordo_server.app.errors import (
    ConflictError,
    ErrorCode,
    FieldIssue,
    InvalidInputError,
    NotFoundError,
    ServiceError,
)
from ordo_server.app.logging_config import REQUEST_ID
from ordo_server.app.metrics import STALE_RUNS
from ordo_server.app.repositories import jobs as job_repo
from ordo_server.app.repositories import reports as report_repo
from ordo_server.app.repositories import runs as run_repo
from ordo_server.app.repositories import tasks as task_repo
from ordo_server.app.schemas.common import is_storable_text
from ordo_server.app.schemas.report import EvaluationRead, ReportRead, StageAssignment
from ordo_server.app.schemas.run import (
    HeartbeatCreate,
    Lease,
    LevelModel,
    NextStage,
    RunCreate,
    RunFail,
    RunList,
    RunRead,
    RunStatus,
    RunStrategy,
    RunSummary,
    ScheduleVersion,
    StageRead,
)
from ordo_server.app.schemas.schedule import ScheduleCreate, ScheduleObjective
from ordo_server.app.security import Role
from ordo_server.app.services.auth import (
    Principal,
    ProjectContext,
    authorize_loaded,
    check_project_scope,
)
from ordo_server.app.services.job_events import wake_workers
from ordo_server.app.services.recommendations import (
    RUN_MODEL_MAX_TASKS,
    PlanMode,
    ProjectFits,
    every_task,
    run_seed,
    solve_ensemble,
    uses_ensemble,
)
from ordo_server.app.services.schedules import (
    OrderRefiner,
    RefinedOrder,
    SolvedSchedule,
    check_policy,
    solve_schedule,
    validate_request,
)
from ordo_server.app.settings import Settings
from ordo_server.models import Run, Schedule, StageReport
from ordo_server.models.base import new_id
from ordo_server.solver.constraints import check_order
from ordo_server.solver.learning import (
    RunModel,
    predicted_objective,
    refine_order,
    restrict_run_model,
    run_model_effects,
)
from ordo_server.solver.planning import LevelModelName, effect_model, sample_estimates
from ordo_server.solver.types import EffectModel, FloatMatrix, OrderingProblem, OrderingResult

logger = logging.getLogger(__name__)

FINISHED = frozenset({RunStatus.COMPLETED.value, RunStatus.FAILED.value})
MAX_SEED = 2**31 - 1
# The key, on a first plan's job, of the run's creation request (the job solves it later).
PLAN_PAYLOAD_SCHEDULE = "schedule"


class RunFinishedError(ConflictError):
    """The run is completed or failed: it takes no more stages or heartbeats."""

    code = ErrorCode.RUN_FINISHED


class PlanPendingError(ConflictError):
    """The run has no plan yet: only its baseline can be reported."""

    code = ErrorCode.PLAN_PENDING


class LeaseLostError(ConflictError):
    """The caller's lease token is not the run's: another holder took the run over."""

    code = ErrorCode.LEASE_LOST


class LeaseTokenRequiredError(ServiceError):
    """A write on a run came without the holder's lease token (``Ordo-Lease-Token``)."""

    status = 428
    code = ErrorCode.LEASE_TOKEN_REQUIRED


class ClientIdConflictError(ConflictError):
    """The ``client_id`` names a run that was created with a different request."""

    code = ErrorCode.CLIENT_ID_CONFLICT


# --- small rules ---------------------------------------------------------------------------------

LEASE_TOKEN_HEADER = "Ordo-Lease-Token"
# How a problem names the header (as the validation errors do: ``header.<name>``).
LEASE_TOKEN_FIELD = f"header.{LEASE_TOKEN_HEADER}"


def check_lease(
    run: Run,
    token: int | None,
    context: ProjectContext,
    *,
    admin_may_omit: bool = False,
    field: str = LEASE_TOKEN_FIELD,
) -> None:
    """Fencing: a write on ``run`` goes through only with the current holder's token.

    Raises 428 ``lease_token_required`` without a token and 409 ``lease_lost`` (naming the token
    that holds the run now) for any other token. ``admin_may_omit``: an admin key may send no
    token (an operator ending a run it does not hold); a token it does send is checked.
    """
    if token is None:
        if admin_may_omit and context.principal.role is Role.ADMIN:
            return
        raise LeaseTokenRequiredError(
            f"A write on a run needs the holder's lease token in the `{LEASE_TOKEN_HEADER}` "
            "header (`lease.token` of the run as created or claimed).",
            errors=[FieldIssue(LEASE_TOKEN_FIELD, "Field required")],
        )
    if token != run.lease_token:
        raise LeaseLostError(
            f"Lease token {token} does not hold the run: token {run.lease_token} holds it now "
            "(the run was re-claimed by its `client_id`); stop working on it.",
            errors=[FieldIssue(field, f"Current token is {run.lease_token}")],
        )


def creation_request(body: RunCreate) -> dict[str, Any]:
    """What ``body`` asks for, as stored on the run: equal requests, equal dicts.

    Defaults are resolved, then left out: ``strategy`` and ``level_model`` take the defaults of
    the kind of run, a run that solves (no ``schedule_id``) has its ``schedule`` options (``{}``
    and none ask the same), and a field sent with its default value is the same as one left out
    (so a field added later with a default does not change what older runs asked for).
    """
    schedule = body.schedule
    if body.schedule_id is None and schedule is None:
        schedule = ScheduleCreate()
    resolved = body.model_copy(
        update={
            "strategy": body.resolved_strategy(),
            "level_model": body.resolved_level_model(),
            "schedule": schedule,
        }
    )
    return resolved.model_dump(mode="json", exclude_defaults=True)


def differing_fields(
    stored: Mapping[str, Any], asked: Mapping[str, Any], *, prefix: str = ""
) -> list[str]:
    """Paths of the fields whose values differ between two requests (``schedule.rho``)."""
    fields: list[str] = []
    for key in sorted(set(stored) | set(asked)):
        old, new = stored.get(key), asked.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            fields += differing_fields(old, new, prefix=f"{prefix}{key}.")
        else:
            fields.append(f"{prefix}{key}")
    return fields


def check_same_request(run: Run, asked: Mapping[str, Any]) -> None:
    """409 ``client_id_conflict`` when ``run`` was created with another request than ``asked``.

    Runs stored before requests were kept (``request`` NULL) cannot be compared: they match.
    """
    if run.request is None or run.request == asked:
        return
    issues = [FieldIssue("client_id", f"Names run {run.id}, created with a different request")]
    issues += [
        FieldIssue(field, "Differs from the request that created the run")
        for field in differing_fields(run.request, asked)
    ]
    raise ClientIdConflictError(
        f"client_id {run.client_id!r} names run {run.id}, created with a different request; "
        "send the same request to get that run back, or use a new client_id for a new run.",
        errors=issues,
    )


def effective_status(run: Run, now: datetime) -> RunStatus:
    """The run's status at ``now``: an active run past its lease is stale."""
    status = RunStatus(run.status)
    expired = run.lease_expires_at is not None and now > run.lease_expires_at
    if status is RunStatus.ACTIVE and expired:
        return RunStatus.STALE
    return status


def renew_lease(run: Run, now: datetime, settings: Settings) -> None:
    """Proof of life: the run is active until ``now + heartbeat_grace_s``."""
    for name, value in lease_renewal(now, settings).items():
        setattr(run, name, value)


def lease_renewal(now: datetime, settings: Settings) -> dict[str, Any]:
    """The run columns a proof of life at ``now`` sets (:func:`renew_lease`)."""
    return {
        "status": RunStatus.ACTIVE.value,
        "last_heartbeat_at": now,
        "lease_expires_at": now + timedelta(seconds=settings.heartbeat_grace_s),
    }


def lease_of(run: Run, settings: Settings) -> Lease:
    """The run's lease as the API shows it."""
    return Lease(
        token=run.lease_token,
        expires_at=run.lease_expires_at,
        heartbeat_interval_s=settings.lease_seconds,
    )


def plan_seed(run_id: str, stage: int) -> int:
    """The sampling seed of the plan a run makes after ``stage``: a function of both alone."""
    digest = hashlib.sha256(f"{run_id}:{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % MAX_SEED


def plan_request(
    base: ScheduleCreate, strategy: RunStrategy, *, run_id: str, stage: int
) -> ScheduleCreate:
    """The solve request of a run's plan: the run's options with its strategy applied."""
    if strategy is RunStrategy.THOMPSON:
        return base.model_copy(
            update={"objective": ScheduleObjective.THOMPSON, "seed": plan_seed(run_id, stage)}
        )
    if strategy is RunStrategy.MEAN_VARIANCE:
        return base.model_copy(update={"objective": ScheduleObjective.MEAN_VARIANCE})
    return base


def solve_plan(
    session: Session,
    context: ProjectContext,
    run: Run,
    base: ScheduleCreate,
    *,
    stage: int,
    settings: Settings,
    parent_id: str | None = None,
    prefix: Sequence[str] = (),
    fits: ProjectFits | None = None,
) -> SolvedSchedule:
    """Solve the run's plan after ``stage`` with its strategy and level model (unstored).

    ``fits``: the project's history, model fits and estimates on this session's snapshot,
    shared by the plans made on it (a worker's batch); default: read here. Nothing in it
    depends on the run, so a shared one gives the plan a fresh one gives.

    ``constant`` goes straight to the schedules service. ``entropy`` and ``state`` fold their
    level terms into the forward matrix (``solver.planning.effect_model``), solved as a model
    override with ``rho = 1``; the Thompson sample is then drawn here, from every posterior.
    ``run_model``: the ensemble of ``solver.recommend`` (``app.services.recommendations``):
    ``exploit`` follows the recommendation, ``thompson`` explores by expected improvement
    (``solver.recommend.explore_order``; seeded by the project's name and the run's
    ``client_id``); before ``RECOMMEND_MIN_RUNS`` (``exploit``) or ``ENSEMBLE_MIN_RUNS``
    (``thompson``; ``IMPORTED_PRIORS_MIN_RUNS`` with imported priors) completed runs or over
    ``ENSEMBLE_MAX_TASKS`` tasks, both use the pairwise estimates, as ``POST .../schedules``
    does; for a subset of the tasks ``exploit`` solves
    the run model (:func:`solve_run_model_plan`) up to ``RUN_MODEL_MAX_TASKS`` project tasks
    (its dense fit grows as ``n^6``), the pairwise estimates above.
    """
    strategy = RunStrategy(run.strategy)
    ensemble_strategy = strategy in (RunStrategy.EXPLOIT, RunStrategy.THOMPSON)
    fits = fits or ProjectFits(session, context)
    history = fits.history
    run_model = run.level_model == LevelModel.RUN_MODEL.value
    mode = PlanMode.EXPLORE if strategy is RunStrategy.THOMPSON else PlanMode.EXPLOIT
    if run_model and ensemble_strategy and uses_ensemble(base, fits, mode):
        return solve_ensemble(
            session,
            context,
            base,
            fits,
            mode=mode,
            seed=run_seed(session, context, run),
            settings=settings,
            run_id=run.id,
            parent_id=parent_id,
            prefix=prefix,
        )
    small = len(history.tasks) <= RUN_MODEL_MAX_TASKS
    if run_model and strategy is RunStrategy.EXPLOIT and small and not every_task(base, history):
        return solve_run_model_plan(
            session,
            context,
            run,
            base,
            fits,
            settings=settings,
            parent_id=parent_id,
            prefix=prefix,
        )
    request = plan_request(base, strategy, run_id=run.id, stage=stage)
    if strategy is RunStrategy.THOMPSON:
        request = request.model_copy(update={"seed": run_seed(session, context, run)})
    model: EffectModel | None = None
    if run.level_model not in (LevelModel.CONSTANT.value, LevelModel.RUN_MODEL.value):
        current = fits.estimates()
        estimates = current.estimates
        if strategy is RunStrategy.THOMPSON:
            estimates = sample_estimates(estimates, seed=request.seed)
        level_model: LevelModelName = "entropy" if run.level_model == "entropy" else "state"
        model = effect_model(
            estimates, current.weights, rho=context.settings.rho, level_model=level_model
        )
        objective = (
            ScheduleObjective.EXPECTED
            if request.objective is ScheduleObjective.THOMPSON
            else request.objective
        )
        request = request.model_copy(update={"objective": objective, "rho": 1.0})
    return solve_schedule(
        session,
        context,
        request,
        run_id=run.id,
        parent_id=parent_id,
        prefix=prefix,
        model_override=model,
        settings=settings,
        estimates=fits.estimates(),
    )


def base_request(schedule: Schedule, project_keys: Sequence[str]) -> ScheduleCreate:
    """The solve options a schedule was made with, over exactly its tasks.

    The tasks are listed in the project's index order (``project_keys``), not in the plan's:
    the solver breaks ties by task index, so listing them in plan order would flip every tie
    at each re-plan (a run planned 5, 4, 3, ... on equal estimates re-planned to 5, 0, 1, ...).
    """
    fields = {k: v for k, v in schedule.request.items() if k in ScheduleCreate.model_fields}
    scheduled = set(schedule.order)
    fields["tasks"] = [key for key in project_keys if key in scheduled]
    return ScheduleCreate.model_validate(fields)


# --- the run model (solver.learning) --------------------------------------------------------------


def _run_model_refiner(
    model: RunModel, weights: FloatMatrix, *, entropy_now: float | None
) -> OrderRefiner:
    """``solver.learning.refine_order`` as the schedules service's refine hook."""

    def refine(
        problem: OrderingProblem, solved: Callable[[], OrderingResult], indexes: tuple[int, ...]
    ) -> RefinedOrder:
        result = solved()
        sub = restrict_run_model(model, indexes)
        w = weights[list(indexes)]
        trained = len(problem.prefix)
        order = refine_order(
            sub,
            w,
            result.order,
            prefix_length=trained,
            entropy_now=entropy_now,
            is_feasible=lambda candidate: not check_order(problem, candidate),
        )
        objective = predicted_objective(sub, w, order, entropy_now=entropy_now, trained=trained)
        return RefinedOrder(
            order=order,
            objective=float(objective[0]),
            # "run_model:cpsat+refine": the solver's path, then the refinement (<= 32 chars).
            method=f"run_model:{result.method}+refine",
        )

    return refine


def solve_run_model_plan(
    session: Session,
    context: ProjectContext,
    run: Run,
    base: ScheduleCreate,
    fits: ProjectFits,
    *,
    settings: Settings,
    parent_id: str | None = None,
    prefix: Sequence[str] = (),
) -> SolvedSchedule:
    """A plan of the whole-run model fitted to every evaluation of every run of the project.

    The model's pairwise part (``solver.learning.run_model_effects``: ``R`` in the forward
    matrix) is solved with ``rho = 1`` under the request's constraints and prefix; for the
    ``expected`` objective, ``refine_order`` then adds the entropy state (from the entropy of
    the run's last report when re-planning). Cost: one fit, ~10-40 ms at n = 6-8.
    """
    history = fits.history
    model = fits.run_model()
    weights = history.weights
    request = base.model_copy(update={"rho": 1.0})
    refine = None
    if request.objective is ScheduleObjective.EXPECTED:
        entropy_now = history.last_entropy(run.id) if prefix else None
        refine = _run_model_refiner(model, weights, entropy_now=entropy_now)
    return solve_schedule(
        session,
        context,
        request,
        run_id=run.id,
        parent_id=parent_id,
        prefix=prefix,
        model_override=run_model_effects(model, weights),
        refine=refine,
        settings=settings,
        estimates=fits.estimates(),
    )


def stage_assignment(order: Sequence[str], next_stage: int, *, finished: bool) -> StageAssignment:
    """What to report next: stage 0 is the baseline, stage k trains ``order[k - 1]``."""
    if finished or next_stage > len(order):
        return StageAssignment(done=True, stage=None, task=None)
    task = order[next_stage - 1] if next_stage >= 1 else None
    return StageAssignment(done=False, stage=next_stage, task=task)


# --- loading -------------------------------------------------------------------------------------


def run_with_plan(
    session: Session,
    context: ProjectContext,
    run_id: str,
    *,
    for_update: bool = False,
    plan_pending: bool = False,
    estimates_version: bool = False,
) -> run_repo.RunView:
    """The project's run (``for_update``: locked until commit), its plan's task keys (``None``
    without a plan), the database clock and, when asked, whether a plan job of it is pending
    and the project's estimates version, in one round trip; 404 for a run the project does not
    have."""
    found = run_repo.run_with_plan(
        session,
        context.id,
        run_id,
        for_update=for_update,
        plan_pending=plan_pending,
        estimates_version=estimates_version,
    )
    if found is None:
        raise NotFoundError("Run not found.")
    return found


def _order_in(schedules: Mapping[str, Schedule], run: Run) -> list[str]:
    """Task keys of the run's current plan, found among ``schedules`` (by id); empty if its
    schedule is gone."""
    schedule = schedules.get(run.schedule_id) if run.schedule_id else None
    return list(schedule.order) if schedule is not None else []


# --- creation ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreatedRun:
    """What :func:`create_run` did: the run's id, whether it made it, and its view, or ``None``
    for a new run whose first plan is a job queued in this transaction (read the run once the
    plan is made: a view now would only say ``plan_pending``)."""

    run_id: str
    created: bool
    view: RunRead | None


def create_run(
    session: Session, context: ProjectContext, body: RunCreate, *, settings: Settings
) -> CreatedRun:
    """Start a run, or return the one ``client_id`` already made.

    The same ``client_id`` with a different request is a 409 (:func:`check_same_request`).
    """
    asked = creation_request(body)
    if body.client_id is not None:
        existing = _claim_existing(session, context, body.client_id, asked, settings=settings)
        if existing is not None:
            return CreatedRun(existing.id, False, existing)
    if body.schedule_id is None:
        check_policy(session, context, body.schedule or ScheduleCreate(), field_prefix="schedule.")
    schedule_id = None
    if body.schedule_id is not None:
        schedule = run_repo.get_schedule(session, context.id, body.schedule_id)
        if schedule is None:
            raise NotFoundError("Schedule not found.")
        schedule_id = schedule.id
    now = run_repo.db_now(session)
    run = Run(
        id=new_id(),
        project_id=context.id,
        client_id=body.client_id,
        schedule_id=schedule_id,
        adaptive=body.adaptive,
        strategy=body.resolved_strategy().value,
        level_model=body.resolved_level_model().value,
        status=RunStatus.ACTIVE.value,
        next_stage=0,
        lease_token=1,
        request=asked,
        created_at=now,
    )
    renew_lease(run, now, settings)
    if not run_repo.insert_run(session, run):
        # A concurrent request with the same client_id created it first (not stale: no lock
        # needed, and none is taken while the unique index made us wait).
        created = run_repo.find_run_by_client(session, context.id, body.client_id or "")
        assert created is not None
        check_same_request(created, asked)
        view = get_run(session, context, created.id, settings=settings)
        return CreatedRun(created.id, False, view)
    if schedule_id is None:
        # The plan is a job (app.services.planning): this transaction solves nothing.
        base = body.schedule or ScheduleCreate()
        validate_request(session, context, base, settings=settings, field_prefix="schedule.")
        request_plan(session, run, base, at=now, request_id=REQUEST_ID.get())
        return CreatedRun(run.id, True, None)
    # The row as stored (inserted by a statement, not by the session): its view reads it.
    return CreatedRun(run.id, True, get_run(session, context, run.id, settings=settings))


def _claim_existing(
    session: Session,
    context: ProjectContext,
    client_id: str,
    asked: Mapping[str, Any],
    *,
    settings: Settings,
) -> RunRead | None:
    """The run of ``client_id``; a stale one is re-claimed: new holder, new fencing token.

    Only by the same request (``asked``, as :func:`creation_request` makes it); another is 409.
    """
    run = run_repo.find_run_by_client(session, context.id, client_id, for_update=True)
    if run is None:
        return None
    check_same_request(run, asked)
    now = run_repo.db_now(session)
    if effective_status(run, now) is RunStatus.STALE:
        after_commit(session, STALE_RUNS.labels(event="reclaim").inc)
        run.lease_token += 1
        renew_lease(run, now, settings)
        session.flush()
    return get_run(session, context, run.id, settings=settings, now=now)


# --- reading -------------------------------------------------------------------------------------


def _summary_fields(run: Run, order: Sequence[str], now: datetime) -> dict[str, object]:
    return {
        "id": run.id,
        "client_id": run.client_id,
        "status": effective_status(run, now),
        "adaptive": run.adaptive,
        "strategy": RunStrategy(run.strategy),
        "level_model": LevelModel(run.level_model),
        "schedule_id": run.schedule_id,
        "next_stage": run.next_stage,
        "stage_count": len(order),
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "fail_reason": run.fail_reason,
    }


def request_plan(
    session: Session,
    run: Run,
    schedule: ScheduleCreate | None = None,
    *,
    at: datetime,
    request_id: str | None,
) -> bool:
    """Queue a plan job for ``run`` in this transaction (coalesced per run; ``True``: queued).

    ``schedule``: the creation request of the run's first plan, kept on the job. Workers see the
    job when the transaction commits; this process's embedded worker is woken then.
    """
    payload = None
    if schedule is not None:
        payload = {PLAN_PAYLOAD_SCHEDULE: schedule.model_dump(mode="json", exclude_unset=True)}
    queued = job_repo.enqueue_run_plan(
        session, run.project_id, run.id, at=at, request_id=request_id, payload=payload
    )
    after_commit(session, wake_workers)
    return queued


def replans_after(run: Run, reported: int, stage_count: int) -> bool:
    """Whether training stage ``reported`` of ``run`` calls for a new plan.

    Adaptive runs re-plan after every training stage (>= 1) that leaves a choice (>= 2 stages).
    """
    return run.adaptive and reported >= 1 and stage_count - reported >= 2


def report_reads(
    session: Session, run: Run, reports: Sequence[StageReport], keys: dict[str, str]
) -> list[ReportRead]:
    """The run's reports with their evaluations (task ids shown as keys)."""
    if not reports:
        return []
    by_stage: dict[int, list[EvaluationRead]] = {}
    stages = {report.stage for report in reports}
    for row in report_repo.evaluations(session, run.id, stages):
        by_stage.setdefault(row.stage, []).append(
            EvaluationRead(
                task=keys.get(row.task_id, row.task_id),
                value=row.value,
                utility=row.utility,
                stderr=row.stderr,
                entropy=row.entropy,
            )
        )
    return [
        ReportRead(
            stage=report.stage,
            task=keys.get(report.task_id) if report.task_id else None,
            late=report.late,
            steps=report.steps,
            tokens=report.tokens,
            wall_time_s=report.wall_time_s,
            evaluations=by_stage.get(report.stage, []),
            created_at=report.created_at,
        )
        for report in reports
    ]


def _stages(order: Sequence[str], next_stage: int) -> list[StageRead]:
    stages = []
    for index, task in enumerate(order, start=1):
        status = "reported" if index < next_stage else "next" if index == next_stage else "planned"
        stages.append(StageRead(index=index, task=task, status=status))
    return stages


def get_run(
    session: Session,
    context: ProjectContext,
    run_id: str,
    *,
    settings: Settings,
    now: datetime | None = None,
) -> RunRead:
    """One run with its stages, schedule versions, reports and lease (404 if the project has
    no such run); a run this session changed is shown as the session has it. ``now``: the
    clock the caller read, default the one read with the run."""
    view = run_with_plan(session, context, run_id, plan_pending=True)
    return _run_read(session, context, view, settings=settings, now=now)


def _run_read(
    session: Session,
    context: ProjectContext,
    view: run_repo.RunView,
    *,
    settings: Settings,
    now: datetime | None = None,
) -> RunRead:
    """A run's view from its row, plan, clock and pending job (one statement:
    :func:`run_with_plan`), with the project's task keys, the schedules it followed and its
    reports read here."""
    run, order = view.run, view.plan or []
    keys = {task.id: task.key for task in task_repo.list_tasks(session, context.id)}
    chain = (
        run_repo.schedule_chain(session, context.id, run.id, run.schedule_id)
        if run.schedule_id
        else []
    )
    # Reports are stored in turn: a run that expects its baseline has none.
    reports = report_repo.list_reports(session, run.id) if run.next_stage > 0 else []
    return RunRead.model_validate(
        {
            **_summary_fields(run, order, now or view.now),
            "stages": _stages(order, run.next_stage),
            "schedules": [
                ScheduleVersion(
                    id=s.id, version=s.version, parent_id=s.parent_id, created_at=s.created_at
                )
                for s in chain
            ],
            "reports": report_reads(session, run, reports, keys),
            "lease": lease_of(run, settings),
            "plan_pending": bool(view.plan_pending),
        }
    )


def encode_page_token(run: Run) -> str:
    """An opaque cursor after ``run`` (newest-first order)."""
    raw = json.dumps([run.created_at.isoformat(), run.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, str]:
    """The cursor in ``token``; 422 when it was not made by :func:`encode_page_token`."""
    issue = FieldIssue("page_token", "Not a page token from this endpoint")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created_at, run_id = json.loads(raw)
        after = datetime.fromisoformat(created_at), str(run_id)
    except (binascii.Error, ValueError, TypeError) as error:
        raise InvalidInputError("Invalid page token.", errors=[issue]) from error
    # A forged token may carry text the database cannot take (NUL on PostgreSQL).
    if not is_storable_text(after[1]):
        raise InvalidInputError("Invalid page token.", errors=[issue])
    return after


def list_runs(
    session: Session,
    context: ProjectContext,
    *,
    page_size: int,
    page_token: str | None,
    status: RunStatus | None,
) -> RunList:
    """One page of the project's runs, newest first (``status`` filters the stored status)."""
    after = decode_page_token(page_token) if page_token else None
    rows = run_repo.list_runs(
        session,
        context.id,
        limit=page_size + 1,
        after=after,
        status=status.value if status else None,
    )
    now = run_repo.db_now(session)
    page = rows[:page_size]
    # The page's plans in one statement, not one per run.
    plans = run_repo.get_schedules(
        session, context.id, {run.schedule_id for run in page if run.schedule_id}
    )
    items = [
        RunSummary.model_validate(_summary_fields(run, _order_in(plans, run), now)) for run in page
    ]
    token = encode_page_token(page[-1]) if len(rows) > page_size else None
    return RunList(items=items, next_page_token=token)


def next_stage(
    session: Session, principal: Principal, project_id: str, run_id: str, *, settings: Settings
) -> NextStage:
    """The stage to report now (0: the baseline), the task to train and the lease; or done.

    The caller's authorization for the project, the run, its plan and the clock in one
    statement (``run_repo.project_and_run``), so that the read needs no transaction: 404
    "Project not found." (another project's key, before anything is read), 404 "Run not
    found.", as from :func:`authorize_project` and then :func:`run_with_plan`.
    """
    check_project_scope(principal, project_id)
    project, found = run_repo.project_and_run(session, project_id, run_id)
    authorize_loaded(principal, project, admin=False)
    if found is None:
        raise NotFoundError("Run not found.")
    run, plan, now, pending, _ = found
    assert pending is not None
    status = effective_status(run, now)
    order = plan or []
    assignment = stage_assignment(order, run.next_stage, finished=run.status in FINISHED)
    if pending and not order and run.status not in FINISHED:
        # No plan yet: the baseline needs none; a later stage waits for the first plan.
        stage = run.next_stage if run.next_stage == 0 else None
        assignment = StageAssignment(done=False, stage=stage, task=None)
    return NextStage(
        plan_pending=pending,
        done=assignment.done,
        stage=assignment.stage,
        task=assignment.task,
        status=status,
        lease=None if run.status in FINISHED else lease_of(run, settings),
    )


# --- lease and end -------------------------------------------------------------------------------


def heartbeat(
    session: Session,
    context: ProjectContext,
    run_id: str,
    body: HeartbeatCreate,
    *,
    lease_token: int | None,
    settings: Settings,
) -> Lease:
    """Renew the holder's lease (DB clock); a stale run becomes active again.

    The token comes from the ``Ordo-Lease-Token`` header (``lease_token``), else from the body
    (the older way); both given must agree (422).
    """
    token, field = lease_token, LEASE_TOKEN_FIELD
    if body.lease_token is not None:
        if lease_token is not None and body.lease_token != lease_token:
            raise InvalidInputError(
                f"The body's lease_token differs from the `{LEASE_TOKEN_HEADER}` header.",
                errors=[FieldIssue("lease_token", f"Differs from the header ({lease_token})")],
            )
        token, field = body.lease_token, "lease_token"
    run, _plan, now, _, _ = run_with_plan(session, context, run_id, for_update=True)
    check_lease(run, token, context, field=field)
    if run.status in FINISHED:
        raise RunFinishedError(f"The run is {run.status}; it keeps no lease.")
    if effective_status(run, now) is RunStatus.STALE:
        after_commit(session, STALE_RUNS.labels(event="heartbeat").inc)
    renew_lease(run, now, settings)
    session.flush()
    return lease_of(run, settings)


def _finish(
    session: Session,
    context: ProjectContext,
    run_id: str,
    status: RunStatus,
    *,
    lease_token: int | None,
    settings: Settings,
    reason: str | None = None,
) -> RunRead:
    # The run locked with its plan, the clock and its pending job: what its view shows.
    view = run_with_plan(session, context, run_id, for_update=True, plan_pending=True)
    run = view.run
    check_lease(run, lease_token, context, admin_may_omit=True)
    if run.status == status.value:
        # Idempotent: ending a run the same way again changes nothing.
        return _run_read(session, context, view, settings=settings)
    if run.status in FINISHED:
        raise RunFinishedError(f"The run already {run.status}.")
    run.status = status.value
    run.finished_at = view.now
    run.fail_reason = reason
    session.flush()
    return _run_read(session, context, view, settings=settings)


def complete_run(
    session: Session,
    context: ProjectContext,
    run_id: str,
    *,
    lease_token: int | None,
    settings: Settings,
) -> RunRead:
    """End the run as completed (again: no change; after ``fail``: 409); fenced."""
    return _finish(
        session, context, run_id, RunStatus.COMPLETED, lease_token=lease_token, settings=settings
    )


def fail_run(
    session: Session,
    context: ProjectContext,
    run_id: str,
    body: RunFail,
    *,
    lease_token: int | None,
    settings: Settings,
) -> RunRead:
    """End the run as failed with a reason (again: no change; after ``complete``: 409); fenced."""
    return _finish(
        session,
        context,
        run_id,
        RunStatus.FAILED,
        lease_token=lease_token,
        settings=settings,
        reason=body.reason,
    )
