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
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from ordo_server.app.commit_hooks import after_commit
from ordo_server.app.errors import ConflictError, ErrorCode, FieldIssue, InvalidInputError
from ordo_server.app.logging_config import REQUEST_ID
from ordo_server.app.metrics import REPORTS_STORED, STALE_RUNS
from ordo_server.app.repositories import estimates as estimate_repo
from ordo_server.app.repositories import observations as observation_repo
from ordo_server.app.repositories import projects as project_repo
from ordo_server.app.repositories import reports as report_repo
from ordo_server.app.repositories import runs as run_repo
from ordo_server.app.repositories import statistics as stat_repo
from ordo_server.app.repositories import tasks as task_repo
from ordo_server.app.repositories.estimates import StatIncrement
from ordo_server.app.repositories.observations import LEVEL_SUMS, LevelSums, ObservationRow
from ordo_server.app.schemas.calibration import RecomputeRead
from ordo_server.app.schemas.report import EvaluationRead, ReportAccepted, ReportCreate, ReportRead
from ordo_server.app.schemas.run import RunStatus
from ordo_server.app.services import runs as run_service
from ordo_server.app.services import statistics as stat_service
from ordo_server.app.services.auth import ProjectContext
from ordo_server.app.settings import Settings
from ordo_server.models import Run, Task
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
    session: Session,
    run: Run,
    stage: int,
    current: Mapping[int, tuple[float, float | None]],
    trained_now: int,
    index: Mapping[str, int],
) -> list[Observation]:
    """The observations of stage ``stage`` >= 1 (solver.estimation.stage_observations)."""
    stored: dict[int, dict[int, tuple[float, float | None]]] = {0: {}, stage - 1: {}}
    inputs = report_repo.stage_inputs(session, run.id, stages={0, stage - 1})
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


def put_report(
    session: Session,
    context: ProjectContext,
    run_id: str,
    stage: int,
    body: ReportCreate,
    *,
    lease_token: int | None,
    settings: Settings,
) -> ReportAccepted:
    """Store stage ``stage``'s evaluations once; the same body again replays the answer.

    Fenced first (``lease_token``: 428 without one, 409 ``lease_lost`` for another holder's, a
    replay included). Raises 409 for a different body of a stored stage, a stage out of turn
    (naming the expected one) or a finished run; 422 for unknown or repeated task keys.
    """
    run, plan, now, was_pending, folded = run_service.run_with_plan(
        session, context, run_id, for_update=True, plan_pending=True, estimates_version=True
    )
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
    all_tasks = task_repo.list_tasks(session, context.id)
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
        observations = _observe(session, run, stage, current, index[trained.id], index)
        # Shared: reports never wait for each other here, only for a fold or a recomputation.
        stat_repo.lock_statistics(session, context.id, exclusive=False)
    run.next_stage = stage + 1
    run_service.renew_lease(run, now, settings)
    pending = False
    if plan is not None and run_service.replans_after(run, stage, len(order)):
        # The re-plan is a job (app.services.planning): this transaction solves nothing.
        run_service.request_plan(session, run, at=now, request_id=REQUEST_ID.get())
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
    report_repo.add_report(session, report, rows)
    if observations:
        _apply(session, context.id, run, report_id, observations, all_tasks, now=now)
    after_commit(session, REPORTS_STORED.inc)
    return response


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


def _apply(
    session: Session,
    project_id: str,
    run: Run,
    report_id: str,
    observations: Sequence[Observation],
    tasks: Sequence[Task],
    *,
    now: datetime,
) -> None:
    """Append the raw observations and one delta of their statistics (no shared row)."""
    task_ids = [task.id for task in tasks]
    observation_repo.add_observations(
        session,
        project_id,
        observation_rows(observations, task_ids),
        run_id=run.id,
        report_id=report_id,
        at=now,
    )
    delta = stored_stats(increments(observations), task_ids)
    cells, levels = stat_service.delta_rows(delta.cells, delta.levels)
    stat_repo.add_delta(session, project_id, cells, levels, at=now)


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
