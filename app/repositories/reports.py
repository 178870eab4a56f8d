"""SQL for stage reports and their per-task evaluations."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from models import StageEvaluation, StageReport


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
