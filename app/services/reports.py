"""Use case of stage reports: store, observe, append the statistics, ask for a re-plan; once.

One report is one short transaction (Brandur's "claim the key and do the work in the same
transaction"): the run row is locked first, so a resent report waits for the first and replays
its stored response; then the report, its evaluations, the raw observations and one delta of
the statistics (``app.services.statistics``) are inserted together, and an adaptive run's
re-plan is queued as a job in the same transaction (``app.services.planning`` solves it off the
request path). Nothing is half-applied, and a stored report always has its re-plan. A report
updates no row that another run's report writes (no project row, no statistics row), so the
reports of one project never wait for each other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from ordo_server.app.commit_hooks import after_commit
from ordo_server.app.errors import (
    ConflictError,
    ErrorCode,
    FieldIssue,
    InvalidInputError,
    ServiceError,
)
from ordo_server.app.logging_config import REQUEST_ID
from ordo_server.app.metrics import REPORTS_STORED, STALE_RUNS
from ordo_server.app.repositories import estimates as estimate_repo
from ordo_server.app.repositories import jobs as job_repo
from ordo_server.app.repositories import observations as observation_repo
from ordo_server.app.repositories import projects as project_repo
from ordo_server.app.repositories import reports as report_repo
from ordo_server.app.repositories import runs as run_repo
from ordo_server.app.repositories import statistics as stat_repo
from ordo_server.app.repositories import tasks as task_repo
from ordo_server.app.repositories.bulk import write_together
from ordo_server.app.repositories.estimates import StatIncrement
from ordo_server.app.repositories.observations import LEVEL_SUMS, LevelSums, ObservationRow
from ordo_server.app.schemas.calibration import RecomputeRead
from ordo_server.app.schemas.report import EvaluationRead, ReportAccepted, ReportCreate, ReportRead
from ordo_server.app.schemas.run import RunStatus
from ordo_server.app.services import runs as run_service
from ordo_server.app.services import statistics as stat_service
from ordo_server.app.services.auth import (
    Principal,
    ProjectContext,
    authorize_project,
    record_key_use,
)
from ordo_server.app.services.job_events import wake_workers
from ordo_server.app.settings import Settings
from ordo_server.models import Project, Run, Task
from ordo_server.models.base import new_id
from ordo_server.solver.estimation import (
    EffectKind,
    LevelRegressionStats,
    Observation,
    StatsTable,
    increments,
    recompute,
    stage_observations,
)

logger = logging.getLogger(__name__)


class ReportMismatchError(ConflictError):
    """This stage was already reported with a different body."""

    code = ErrorCode.REPORT_MISMATCH


class StageOutOfTurnError(ConflictError):
    """The stage is not the one the run expects next."""

    code = ErrorCode.STAGE_OUT_OF_TURN


# --- conversions between stored rows (task ids) and the estimation core (task indexes) -----------


def body_digest(body: ReportCreate) -> str:
    """SHA-256 of the canonical JSON of the validated body: equal bodies, equal digests."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def utility(task: Task, value: float) -> float:
    """``u = sign * v / scale``: higher is better whatever the task's goal."""
    sign = -1.0 if task.goal == "minimize" else 1.0
    return sign * value / task.scale


def observation_rows(
    observations: Sequence[Observation], task_ids: Sequence[str]
) -> list[ObservationRow]:
    """Solver observations (task indexes) as rows to store (task ids)."""
    return [
        ObservationRow(
            effect=obs.kind.value,
            src_task_id=task_ids[obs.source],
            dst_task_id=task_ids[obs.target],
            value=obs.value,
            uplift=obs.uplift,
            entropy_shift=obs.entropy_shift,
        )
        for obs in observations
    ]


def solver_observations(
    rows: Sequence[ObservationRow], index: Mapping[str, int]
) -> list[Observation]:
    """Stored rows as solver observations (the stage is not stored and not needed)."""
    return [
        Observation(
            EffectKind(row.effect),
            index[row.src_task_id],
            index[row.dst_task_id],
            row.value,
            0,
            row.entropy_shift,
            row.uplift,
        )
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class StoredStats:
    """A statistics table as rows to store: effect cells and level sums, in key order."""

    cells: list[StatIncrement]
    levels: list[LevelSums]


def _level_sums(task_id: str, reg: LevelRegressionStats) -> LevelSums:
    sums = (*reg.sum_x, *reg.sum_xx, reg.sum_y, *reg.sum_xy, reg.sum_y2)
    assert len(sums) == len(LEVEL_SUMS)
    return LevelSums(task_id=task_id, count=reg.count, sums=tuple(float(x) for x in sums))


def stored_stats(table: StatsTable, task_ids: Sequence[str]) -> StoredStats:
    """Rows of ``table``, sorted by key so that concurrent writers lock cells in one order."""
    cells = [
        StatIncrement(
            effect=kind.value,
            src_task_id=task_ids[i],
            dst_task_id=task_ids[j],
            count=stats.count,
            sum_x=stats.sum_x,
            sum_x2=stats.sum_x2,
        )
        for (kind, i, j), stats in table.cells.items()
    ]
    cells.sort(key=lambda c: (c.effect, c.src_task_id, c.dst_task_id))
    levels = [_level_sums(task_ids[j], reg) for j, reg in table.levels.items()]
    levels.sort(key=lambda level: level.task_id)
    return StoredStats(cells=cells, levels=levels)


# --- the report ----------------------------------------------------------------------------------


def _check_turn(run: Run, stage: int, order: Sequence[str]) -> None:
    if run.status in run_service.FINISHED:
        raise run_service.RunFinishedError(f"The run is {run.status}; it takes no more reports.")
    expected = run.next_stage
    if stage == expected and stage <= len(order):
        return
    if not order and run.schedule_id is None and stage >= 1:
        raise run_service.PlanPendingError(
            "The run's first plan is still being made: ask `GET .../next` for the stage to train.",
            errors=[FieldIssue("stage", "No plan yet")],
        )
    if expected > len(order):
        detail = f"All {len(order)} stages were reported; complete the run."
        issue = FieldIssue("stage", "No stage left")
    else:
        detail = f"Stage {stage} is out of turn: the run expects stage {expected}."
        issue = FieldIssue("stage", f"Expected stage {expected}")
    raise StageOutOfTurnError(detail, errors=[issue])


def _tasks_of(body: ReportCreate, tasks: Mapping[str, Task]) -> list[Task]:
    """The task of each evaluation; 422 naming unknown and repeated keys."""
    issues: list[FieldIssue] = []
    unknown: list[str] = []
    seen: set[str] = set()
    for i, evaluation in enumerate(body.evaluations):
        key = evaluation.task
        if key not in tasks:
            unknown.append(key)
            issues.append(FieldIssue(f"evaluations[{i}].task", f"Unknown task key {key!r}"))
        elif key in seen:
            issues.append(FieldIssue(f"evaluations[{i}].task", f"Duplicate key {key!r}"))
        seen.add(key)
    if unknown:
        names = ", ".join(sorted(set(unknown)))
        raise InvalidInputError(f"Unknown task keys: {names}.", errors=issues)
    if issues:
        raise InvalidInputError("Each task may be evaluated once per report.", errors=issues)
    return [tasks[evaluation.task] for evaluation in body.evaluations]


def _observe(
    inputs: report_repo.StageInputs,
    stage: int,
    current: Mapping[int, tuple[float, float | None]],
    trained_now: int,
    index: Mapping[str, int],
) -> list[Observation]:
    """The observations of stage ``stage`` >= 1 (solver.estimation.stage_observations), from
    the run's baseline and previous-stage evaluations (``inputs``)."""
    stored: dict[int, dict[int, tuple[float, float | None]]] = {0: {}, stage - 1: {}}
    for row in inputs.evaluations:
        stored[row.stage][index[row.task_id]] = (row.utility, row.entropy)

    def utilities(evals: Mapping[int, tuple[float, float | None]]) -> dict[int, float]:
        return {t: u for t, (u, _) in evals.items()}

    def entropies(evals: Mapping[int, tuple[float, float | None]]) -> dict[int, float]:
        return {t: h for t, (_, h) in evals.items() if h is not None}

    trained = [index[t] for t in inputs.trained_task_ids] + [trained_now]
    return stage_observations(
        stage=stage,
        trained=trained,
        before=utilities(stored[stage - 1]),
        after=utilities(current),
        baseline=utilities(stored[0]),
        entropy_before=entropies(stored[stage - 1]),
        entropy_after=entropies(current),
        entropy_baseline=entropies(stored[0]),
    )


@dataclass(slots=True)
class BatchState:
    """What the reports of one transaction share (:func:`put_reports`; one report alone too).

    Reads made once for all of them: each project's tasks, the run rows (locked, in id order,
    with their plans) and the stage reports' earlier evaluations, read ahead by
    :meth:`read_ahead`; the statistics locks taken. Writes made once for all of them: the
    reports, evaluations, observations and statistics deltas are held until :meth:`flush`
    (one INSERT statement for every table on PostgreSQL), which the transaction calls before
    it commits.
    """

    views: dict[str, run_repo.RunView] = field(default_factory=dict)
    inputs: dict[str, report_repo.StageInputs] = field(default_factory=dict)
    reports: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    deltas: list[dict[str, Any]] = field(default_factory=list)
    run_changes: list[dict[str, Any]] = field(default_factory=list)
    plan_requests: list[dict[str, Any]] = field(default_factory=list)
    _tasks: dict[str, Sequence[Task]] = field(default_factory=dict)
    _projects: dict[str, Project | None] = field(default_factory=dict)
    _statistics_locked: set[str] = field(default_factory=set)

    def tasks(self, session: Session, project_id: str) -> Sequence[Task]:
        """The project's tasks in index order."""
        if project_id not in self._tasks:
            self._tasks[project_id] = task_repo.list_tasks(session, project_id)
        return self._tasks[project_id]

    def read_project(self, session: Session, project_id: str) -> None:
        """Read the project with its tasks in one statement: its authorization then finds it
        in the session, and :meth:`tasks` has them."""
        if project_id not in self._tasks:
            # Held here: the session's identity map keeps no object nobody holds.
            self._projects[project_id], self._tasks[project_id] = (
                project_repo.get_project_with_tasks(session, project_id)
            )

    def lock_statistics(self, session: Session, project_id: str) -> None:
        """The project's statistics lock, shared, until the transaction ends."""
        if project_id not in self._statistics_locked:
            stat_repo.lock_statistics(session, project_id, exclusive=False)
            self._statistics_locked.add(project_id)

    def read_ahead(self, session: Session, project_id: str, stages: Mapping[str, int]) -> None:
        """Lock and read the runs of ``stages`` (run id -> reported stage) in one statement, and
        the earlier evaluations of those whose stage is the one they expect, in another."""
        views = run_repo.runs_with_plans(
            session,
            project_id,
            stages,
            for_update=True,
            plan_pending=True,
            estimates_version=True,
        )
        self.views.update(views)
        fresh = {
            run_id: {0, stage - 1}
            for run_id, stage in stages.items()
            if run_id in views and stage >= 1 and stage == views[run_id].run.next_stage
        }
        self.inputs.update(report_repo.stage_inputs_of_runs(session, fresh))

    def view(self, session: Session, context: ProjectContext, run_id: str) -> run_repo.RunView:
        """The run as read ahead, or read (and locked) now; 404 for a run the project lacks."""
        view = self.views.get(run_id)
        if view is None or view.run.project_id != context.id:
            return run_service.run_with_plan(
                session,
                context,
                run_id,
                for_update=True,
                plan_pending=True,
                estimates_version=True,
            )
        return view

    def stage_inputs(self, session: Session, run_id: str, stage: int) -> report_repo.StageInputs:
        """The run's baseline and stage - 1 evaluations and the tasks it trained so far."""
        inputs = self.inputs.get(run_id)
        if inputs is None:
            inputs = report_repo.stage_inputs(session, run_id, stages={0, stage - 1})
        return inputs

    def request_plan(
        self, session: Session, run: Run, *, at: datetime, request_id: str | None
    ) -> None:
        """Queue a re-plan of ``run`` with the batch's rows (``run_service.request_plan``)."""
        self.plan_requests.append(
            job_repo.run_plan_values(run.project_id, run.id, at=at, request_id=request_id)
        )
        if len(self.plan_requests) == 1:
            after_commit(session, wake_workers)

    def change_run(self, run: Run, values: Mapping[str, Any]) -> None:
        """Give ``run`` ``values`` (column names), written with the batch's rows: the unit of
        work does not see them (its flush of a run row cost as much as the batch's INSERT)."""
        for name, value in values.items():
            set_committed_value(run, name, value)
        self.run_changes.append({"id": run.id, **values})

    def forget(self, run_id: str) -> None:
        """Read the run again next time (after this transaction wrote to it)."""
        self.views.pop(run_id, None)
        self.inputs.pop(run_id, None)

    def flush(self, session: Session) -> None:
        """Write what the reports held back, in the reports' order, and the runs' new values:
        one statement for every table on PostgreSQL."""
        write_together(
            session,
            [
                *report_repo.report_insertions(self.reports, self.evaluations),
                observation_repo.observation_insertion(self.observations),
                stat_repo.delta_insertion(self.deltas),
            ],
            [run_repo.run_changes(self.run_changes)],
            job_repo.run_plans_queueing(self.plan_requests),
        )
        self.reports, self.evaluations, self.observations, self.deltas = [], [], [], []
        self.run_changes, self.plan_requests = [], []


def put_report(
    session: Session,
    context: ProjectContext,
    run_id: str,
    stage: int,
    body: ReportCreate,
    *,
    lease_token: int | None,
    settings: Settings,
    batch: BatchState | None = None,
) -> ReportAccepted:
    """Store stage ``stage``'s evaluations once; the same body again replays the answer.

    Fenced first (``lease_token``: 428 without one, 409 ``lease_lost`` for another holder's, a
    replay included). Raises 409 for a different body of a stored stage, a stage out of turn
    (naming the expected one) or a finished run; 422 for unknown or repeated task keys.
    ``batch``: the state shared with the transaction's other reports (:func:`put_reports`),
    which then writes this report's rows with theirs; alone, it writes them before returning.
    """
    if batch is None:
        alone = BatchState()
        answer = put_report(
            session,
            context,
            run_id,
            stage,
            body,
            lease_token=lease_token,
            settings=settings,
            batch=alone,
        )
        alone.flush(session)
        return answer
    run, plan, now, was_pending, folded = batch.view(session, context, run_id)
    run_service.check_lease(run, lease_token, context)
    digest = body_digest(body)
    # Reports are stored in turn (``next_stage`` only moves to stage + 1 when one is stored), so
    # only a stage before ``next_stage`` can have one: a fresh report skips the look-up.
    existing = report_repo.get_report(session, run.id, stage) if stage < run.next_stage else None
    if existing is not None:
        if existing.body_hash != digest:
            raise ReportMismatchError(
                f"Stage {stage} was already reported with a different body.",
                errors=[FieldIssue("body", "Differs from the stored report of this stage")],
            )
        return ReportAccepted.model_validate(existing.response)
    order = plan or []
    _check_turn(run, stage, order)
    all_tasks = batch.tasks(session, context.id)
    by_key = {task.key: task for task in all_tasks}
    evaluated = _tasks_of(body, by_key)
    late = run_service.effective_status(run, now) is RunStatus.STALE
    if late:
        after_commit(session, STALE_RUNS.labels(event="report").inc)
    trained = by_key[order[stage - 1]] if stage >= 1 else None
    observations: list[Observation] = []
    if trained is not None:
        index = {task.id: position for position, task in enumerate(all_tasks)}
        current = {
            index[task.id]: (utility(task, evaluation.value), evaluation.entropy)
            for task, evaluation in zip(evaluated, body.evaluations, strict=True)
        }
        inputs = batch.stage_inputs(session, run.id, stage)
        observations = _observe(inputs, stage, current, index[trained.id], index)
        # Shared: reports never wait for each other here, only for a fold or a recomputation.
        batch.lock_statistics(session, context.id)
    batch.change_run(run, {"next_stage": stage + 1, **run_service.lease_renewal(now, settings)})
    pending = False
    if plan is not None and run_service.replans_after(run, stage, len(order)):
        # The re-plan is a job (app.services.planning): this transaction solves nothing.
        batch.request_plan(session, run, at=now, request_id=REQUEST_ID.get())
        pending = True
    elif run.adaptive or plan is None:
        pending = bool(was_pending)  # e.g. the first plan of the run
    # The folded version plus the deltas committed when the run was read, and this report's own
    # delta (a baseline appends none, so it leaves the version alone).
    version = (folded or 0) + (1 if observations else 0)
    response = ReportAccepted(
        run_id=run.id,
        report=_report_read(body, evaluated, stage=stage, trained=trained, late=late, at=now),
        observations=len(observations),
        estimates_version=version,
        schedule_id=run.schedule_id,
        replanned=False,
        plan_pending=pending,
        next=run_service.stage_assignment(order, run.next_stage, finished=False),
    )
    # The answer is stored with the report in one INSERT (a replay answers it again).
    report_id = new_id()
    report = {
        "id": report_id,
        "project_id": context.id,
        "run_id": run.id,
        "stage": stage,
        "task_id": trained.id if trained else None,
        "body_hash": digest,
        "body": body.model_dump(mode="json"),
        "response": response.model_dump(mode="json"),
        "late": late,
        "steps": body.steps,
        "tokens": body.tokens,
        "wall_time_s": body.wall_time_s,
        "created_at": now,
    }
    rows = [
        {
            "task_id": task.id,
            "value": evaluation.value,
            "utility": utility(task, evaluation.value),
            "stderr": evaluation.stderr,
            "entropy": evaluation.entropy,
        }
        for task, evaluation in zip(evaluated, body.evaluations, strict=True)
    ]
    batch.reports.append(report)
    batch.evaluations.extend(
        {"report_id": report_id, "project_id": context.id, **row} for row in rows
    )
    if observations:
        _hold_observations(batch, context.id, run, report_id, observations, all_tasks, now=now)
    after_commit(session, REPORTS_STORED.inc)
    return response


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """One trainer's ``PUT .../reports/{stage}``, signed in, its project not yet checked."""

    principal: Principal
    project_id: str
    run_id: str
    stage: int
    body: ReportCreate
    lease_token: int | None
    request_id: str | None = None


# What a report of a batch comes to: its answer, or the error its request answers.
ReportOutcome = ReportAccepted | ServiceError


@dataclass(frozen=True, slots=True)
class KeyUse:
    """A key use recorded by a batch (``at``), for the process's key cache to learn."""

    key_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ReportBatch:
    """What :func:`put_reports` did: an outcome per request (in their order), the key uses."""

    outcomes: list[ReportOutcome]
    key_uses: list[KeyUse]


def put_reports(
    session: Session, requests: Sequence[ReportRequest], *, settings: Settings
) -> ReportBatch:
    """Store several reports in the session's one transaction (group commit; one is a batch too).

    Each report is :func:`put_report`, with the reads and writes of all of them made together
    (:class:`BatchState`): their runs are read and locked in one statement per project, their
    rows written in one INSERT statement. Lock order: the statistics locks of the stage
    reports' projects (shared, project id order), the run rows (project then run id order, the
    order of a plan store's too), then the signing keys' rows (key id order, one use each). A
    request that answers an error (404, 409, 422, 428) raises it before it holds back any row
    (put_report checks first, then writes), so it is returned as its outcome and the others
    commit; any other exception is the whole batch's (the caller rolls it back). A second
    report of one run in a batch (a resend) sees the first's rows, as if sent after it.
    """
    outcomes: list[ReportOutcome | None] = [None] * len(requests)
    contexts: dict[tuple[Principal, str], ProjectContext] = {}
    batch = BatchState()
    signed_in: dict[str, Principal] = {}
    # The statistics locks first (shared; for stage reports): a fold waiting for its exclusive
    # lock queues every later shared request behind it, so a batch holding runs must not ask.
    for project_id in sorted({r.project_id for r in requests if r.stage >= 1}):
        batch.lock_statistics(session, project_id)
    order = sorted(range(len(requests)), key=lambda i: (requests[i].project_id, requests[i].run_id))
    first_stages: dict[str, dict[str, int]] = {}
    context_of: dict[int, ProjectContext] = {}
    for i in order:
        request = requests[i]
        try:
            context_of[i] = _context(session, request, contexts, batch)
        except ServiceError as error:
            outcomes[i] = error
            continue
        signed_in.setdefault(request.principal.key_id, request.principal)
        first_stages.setdefault(request.project_id, {}).setdefault(request.run_id, request.stage)
    for project_id in sorted(first_stages):
        batch.read_ahead(session, project_id, first_stages[project_id])
    written: set[str] = set()
    # The runs' own updates are flushed with the batch's rows, before the commit.
    with session.no_autoflush:
        for i in order:
            request = requests[i]
            if outcomes[i] is not None:
                continue
            if request.run_id in written:  # a second report of a run sees the first one's rows
                batch.flush(session)
                session.flush()
                batch.forget(request.run_id)
            outcomes[i] = _put_one(session, request, context_of[i], settings, batch)
            written.add(request.run_id)
        batch.flush(session)
    key_uses = []
    for key_id in sorted(signed_in):
        at = record_key_use(session, signed_in[key_id])
        if at is not None:
            key_uses.append(KeyUse(key_id, at))
    done = [outcome for outcome in outcomes if outcome is not None]
    assert len(done) == len(requests), "every request has its outcome"
    return ReportBatch(outcomes=done, key_uses=key_uses)


def _context(
    session: Session,
    request: ReportRequest,
    contexts: dict[tuple[Principal, str], ProjectContext],
    batch: BatchState,
) -> ProjectContext:
    """The request's project, checked once per key and project in a batch (404 otherwise)."""
    scope = (request.principal, request.project_id)
    if scope not in contexts:
        if request.principal.project_id in (None, request.project_id):
            batch.read_project(session, request.project_id)
        contexts[scope] = authorize_project(
            session, request.principal, request.project_id, admin=False
        )
    return contexts[scope]


def _put_one(
    session: Session,
    request: ReportRequest,
    context: ProjectContext,
    settings: Settings,
    batch: BatchState,
) -> ReportOutcome:
    """One report of a batch: its answer, or the error it answers (raised before any write)."""
    request_id = REQUEST_ID.set(request.request_id)
    try:
        return put_report(
            session,
            context,
            request.run_id,
            request.stage,
            request.body,
            lease_token=request.lease_token,
            settings=settings,
            batch=batch,
        )
    except ServiceError as error:
        return error
    finally:
        REQUEST_ID.reset(request_id)


def _report_read(
    body: ReportCreate,
    evaluated: Sequence[Task],
    *,
    stage: int,
    trained: Task | None,
    late: bool,
    at: datetime,
) -> ReportRead:
    """The stored report as answered."""
    return ReportRead(
        stage=stage,
        task=trained.key if trained else None,
        late=late,
        steps=body.steps,
        tokens=body.tokens,
        wall_time_s=body.wall_time_s,
        evaluations=[
            EvaluationRead(
                task=evaluation.task,
                value=evaluation.value,
                utility=utility(task, evaluation.value),
                stderr=evaluation.stderr,
                entropy=evaluation.entropy,
            )
            for task, evaluation in zip(evaluated, body.evaluations, strict=True)
        ],
        created_at=at,
    )


def _hold_observations(
    batch: BatchState,
    project_id: str,
    run: Run,
    report_id: str,
    observations: Sequence[Observation],
    tasks: Sequence[Task],
    *,
    now: datetime,
) -> None:
    """The raw observations and one delta of their statistics, for the batch to write (no
    shared row)."""
    task_ids = [task.id for task in tasks]
    batch.observations.extend(
        observation_repo.observation_values(
            project_id,
            observation_rows(observations, task_ids),
            run_id=run.id,
            report_id=report_id,
            at=now,
        )
    )
    delta = stored_stats(increments(observations), task_ids)
    cells, levels = stat_service.delta_rows(delta.cells, delta.levels)
    batch.deltas.append(stat_repo.delta_values(project_id, cells, levels, at=now))


# --- adaptive re-planning ------------------------------------------------------------------------


# --- recomputation -------------------------------------------------------------------------------


def recompute_statistics(session: Session, project_id: str) -> RecomputeRead:
    """Rebuild every statistic of the project from its raw observations.

    Takes the statistics lock exclusively (reports hold it shared while they append deltas),
    so no report is half-way while the statistics are rebuilt and none is lost afterwards. The
    unfolded deltas are dropped (the observations behind them are in the recomputation) and
    counted into the folded version. The result equals the incremental statistics (counts
    exactly, sums to rounding).
    """
    stat_repo.lock_statistics(session, project_id, exclusive=True)
    project_repo.lock_project(session, project_id)
    tasks = task_repo.list_tasks(session, project_id)
    task_ids = [task.id for task in tasks]
    index = {task_id: position for position, task_id in enumerate(task_ids)}
    rows = list(observation_repo.iter_observations(session, project_id))
    table = recompute(solver_observations(rows, index))
    fresh = stored_stats(table, task_ids)
    before_cells, _ = stat_service.current_statistics(session, project_id)
    before = {
        (c.effect, c.src_task_id, c.dst_task_id): (c.count, c.sum_x, c.sum_x2)
        for c in before_cells
        if c.count
    }
    after = {
        (c.effect, c.src_task_id, c.dst_task_id): (c.count, c.sum_x, c.sum_x2) for c in fresh.cells
    }
    changed = sum(
        1 for key in before.keys() | after.keys() if not _same(before.get(key), after.get(key))
    )
    now = run_repo.db_now(session)
    estimate_repo.replace_statistics(session, project_id, fresh.cells, at=now)
    observation_repo.replace_level_stats(session, project_id, fresh.levels, at=now)
    dropped = stat_repo.take_deltas(session, project_id)
    project_repo.bump_estimates_version(session, project_id, by=len(dropped) + 1)
    version = stat_repo.estimates_version(session, project_id)
    return RecomputeRead(
        observations=len(rows),
        cells=len(fresh.cells),
        changed_cells=changed,
        estimates_version=version,
    )


def _same(a: tuple[int, float, float] | None, b: tuple[int, float, float] | None) -> bool:
    """Equal counts and sums equal to rounding (relative 1e-9)."""
    if a is None or b is None:
        return a is b
    return a[0] == b[0] and all(
        math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12) for x, y in zip(a[1:], b[1:], strict=True)
    )
