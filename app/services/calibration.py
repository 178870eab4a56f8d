"""Use case of calibration: how well did the plans predict the final utilities runs reached?"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from ordo_server.app.repositories import reports as report_repo
from ordo_server.app.repositories import runs as run_repo
from ordo_server.app.repositories import tasks as task_repo
from ordo_server.app.schemas.calibration import CalibrationRead, RunCalibration, TaskCalibration
from ordo_server.app.services.auth import ProjectContext
from ordo_server.models import Run, Schedule


def predicted_means(schedule: Schedule | None) -> dict[str, float]:
    """Predicted final utility per task key from a stored schedule (empty if it has none)."""
    if schedule is None:
        return {}
    tasks: Any = (schedule.predicted or {}).get("tasks", [])
    means: dict[str, float] = {}
    for entry in tasks if isinstance(tasks, list) else []:
        if isinstance(entry, Mapping) and isinstance(entry.get("mean"), int | float):
            means[str(entry["task"])] = float(entry["mean"])
    return means


def predicted_intervals(schedule: Schedule | None) -> dict[str, tuple[float, float]]:
    """Predicted 95 % interval ``(lower, upper)`` per task key (empty if the schedule has none)."""
    if schedule is None:
        return {}
    tasks: Any = (schedule.predicted or {}).get("tasks", [])
    intervals: dict[str, tuple[float, float]] = {}
    for entry in tasks if isinstance(tasks, list) else []:
        if not isinstance(entry, Mapping):
            continue
        lower, upper = entry.get("lower"), entry.get("upper")
        if isinstance(lower, int | float) and isinstance(upper, int | float):
            intervals[str(entry["task"])] = (float(lower), float(upper))
    return intervals


def _inside(interval: tuple[float, float] | None, value: float) -> bool | None:
    return None if interval is None else interval[0] <= value <= interval[1]


def _coverage(flags: Sequence[bool | None]) -> float | None:
    known = [flag for flag in flags if flag is not None]
    return sum(known) / len(known) if known else None


def _mae(errors: Sequence[float]) -> float | None:
    return sum(errors) / len(errors) if errors else None


def _run_calibration(
    run: Run,
    chain: Sequence[Schedule],
    last_report: Sequence[report_repo.StoredEvaluation],
    keys: Mapping[str, str],
) -> RunCalibration:
    """One run's figures: ``chain``, the schedules it followed (oldest first); ``last_report``,
    the evaluations of its last report; ``keys``, task keys by task id."""
    first = chain[0] if chain else None
    last = chain[-1] if chain else None
    observed = {keys[row.task_id]: row.utility for row in last_report if row.task_id in keys}
    initial, final = predicted_means(first), predicted_means(last)
    initial_box, final_box = predicted_intervals(first), predicted_intervals(last)
    tasks = [
        TaskCalibration(
            task=key,
            observed=value,
            predicted_initial=initial.get(key),
            predicted_final=final.get(key),
            inside_initial=_inside(initial_box.get(key), value),
            inside_final=_inside(final_box.get(key), value),
        )
        for key, value in observed.items()
    ]
    return RunCalibration(
        run_id=run.id,
        initial_schedule_id=first.id if first else None,
        final_schedule_id=last.id if last else None,
        stages_reported=max(run.next_stage - 1, 0),
        tasks=tasks,
        mae_initial=_mae(_errors(tasks, initial=True)),
        mae_final=_mae(_errors(tasks, initial=False)),
        coverage_initial=_coverage([task.inside_initial for task in tasks]),
        coverage_final=_coverage([task.inside_final for task in tasks]),
    )


def _errors(tasks: Sequence[TaskCalibration], *, initial: bool) -> list[float]:
    errors = []
    for task in tasks:
        predicted = task.predicted_initial if initial else task.predicted_final
        if predicted is not None:
            errors.append(abs(predicted - task.observed))
    return errors


def calibration(session: Session, context: ProjectContext, *, limit: int) -> CalibrationRead:
    """Predicted (first and last plan) against observed final utilities of completed runs.

    Observed: the utilities of each run's last report. The mean absolute errors and the
    coverage of the predicted 95 % intervals are over every task with both figures, per run and
    over the ``limit`` most recently completed runs. An interval is of the task's true final
    utility; the observed value also carries the evaluation's noise, so coverage a little
    under 95 % is what a calibrated model shows with noisy evaluations.
    """
    finished = run_repo.finished_runs(session, context.id, limit=limit)
    # The same statements for one run or a hundred (four a run before).
    keys = {task.id: task.key for task in task_repo.list_tasks(session, context.id)}
    chains = run_repo.schedule_chains(
        session, context.id, {run.id: run.schedule_id for run in finished if run.schedule_id}
    )
    finals = report_repo.final_evaluations(session, [run.id for run in finished])
    runs = [
        _run_calibration(run, chains.get(run.id, []), finals.get(run.id, []), keys)
        for run in finished
    ]
    tasks = [task for run in runs for task in run.tasks]
    initial = _errors(tasks, initial=True)
    return CalibrationRead(
        runs=runs,
        count=len(initial),
        mae_initial=_mae(initial),
        mae_final=_mae(_errors(tasks, initial=False)),
        coverage_initial=_coverage([task.inside_initial for task in tasks]),
        coverage_final=_coverage([task.inside_final for task in tasks]),
    )
