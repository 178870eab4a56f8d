"""SQL for stage reports and their per-task evaluations."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from ordo_server.models import Run, StageEvaluation, StageReport


@dataclass(frozen=True, slots=True)
class StoredEvaluation:
    """One stored evaluation of one stage."""

    stage: int
    task_id: str
    value: float
    utility: float
    stderr: float | None
    entropy: float | None


def get_report(session: Session, run_id: str, stage: int) -> StageReport | None:
    """The run's report of ``stage``, or ``None``."""
    query = select(StageReport).where(StageReport.run_id == run_id, StageReport.stage == stage)
    return session.scalar(query)


def add_report(session: Session, report: StageReport) -> StageReport:
    """Insert a report and flush it (its id is then known)."""
    session.add(report)
    session.flush()
    return report


def add_evaluations(session: Session, report_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """Insert the evaluations of a report (each dict: task_id, value, utility, stderr, entropy).

    One executemany, not the ORM unit of work: this is the hot path of every report.
    """
    table = StageEvaluation.metadata.tables["ordo_stage_evaluations"]
    session.execute(insert(table), [{"report_id": report_id, **row} for row in rows])


def list_reports(session: Session, run_id: str) -> Sequence[StageReport]:
    """The run's reports in stage order."""
    query = select(StageReport).where(StageReport.run_id == run_id).order_by(StageReport.stage)
    return session.scalars(query).all()


def evaluations(
    session: Session, run_id: str, stages: Collection[int] | None = None
) -> list[StoredEvaluation]:
    """The run's evaluations (of the given stages, default all), by stage then row order."""
    query = (
        select(StageReport.stage, StageEvaluation)
        .join(StageEvaluation, StageEvaluation.report_id == StageReport.id)
        .where(StageReport.run_id == run_id)
        .order_by(StageReport.stage, StageEvaluation.id)
    )
    if stages is not None:
        query = query.where(StageReport.stage.in_(list(stages)))
    return [
        StoredEvaluation(
            stage=stage,
            task_id=row.task_id,
            value=row.value,
            utility=row.utility,
            stderr=row.stderr,
            entropy=row.entropy,
        )
        for stage, row in session.execute(query).all()
    ]


def trained_task_ids(session: Session, run_id: str) -> list[str]:
    """The task trained at each reported stage 1, 2, ... (the baseline trains none)."""
    query = (
        select(StageReport.task_id)
        .where(StageReport.run_id == run_id, StageReport.stage >= 1)
        .order_by(StageReport.stage)
    )
    return [task_id for task_id in session.scalars(query).all() if task_id is not None]


@dataclass(frozen=True, slots=True)
class ProjectStage:
    """One reported stage of one of the project's runs."""

    run_id: str
    run_status: str
    stage: int
    trained_task_id: str | None


@dataclass(frozen=True, slots=True)
class ProjectEvaluation:
    """One evaluation of one stage of one of the project's runs (the run model's data)."""

    run_id: str
    stage: int
    task_id: str
    utility: float
    entropy: float | None


def project_stages(session: Session, project_id: str) -> list[ProjectStage]:
    """Every reported stage of the project's runs, by run (oldest first) then stage."""
    query = (
        select(Run.id, Run.status, StageReport.stage, StageReport.task_id)
        .join(StageReport, StageReport.run_id == Run.id)
        .where(Run.project_id == project_id)
        .order_by(Run.created_at, Run.id, StageReport.stage)
    )
    return [ProjectStage(*row) for row in session.execute(query).all()]


def project_evaluations(session: Session, project_id: str) -> list[ProjectEvaluation]:
    """Every evaluation of every report of the project's runs (utility and entropy only)."""
    query = (
        select(
            StageReport.run_id,
            StageReport.stage,
            StageEvaluation.task_id,
            StageEvaluation.utility,
            StageEvaluation.entropy,
        )
        .join(StageEvaluation, StageEvaluation.report_id == StageReport.id)
        # The report's own indexed project_id: a join through the runs read every report of
        # every project (a sequential scan of the reports table on each plan job).
        .where(StageReport.project_id == project_id)
        .order_by(StageReport.run_id, StageReport.stage, StageEvaluation.id)
    )
    return [ProjectEvaluation(*row) for row in session.execute(query).all()]
