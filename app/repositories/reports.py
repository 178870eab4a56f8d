"""SQL for stage reports and their per-task evaluations."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.orm import Session

from ordo_server.app.repositories.bulk import Insertion
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


_REPORTS = StageReport.metadata.tables[StageReport.__tablename__]
_EVALUATIONS = StageEvaluation.metadata.tables[StageEvaluation.__tablename__]


def report_insertions(
    reports: Sequence[dict[str, Any]], evaluations: Sequence[dict[str, Any]]
) -> list[Insertion]:
    """Reports (each: its column values, ``id`` included) and their evaluations (each:
    report_id, task_id, value, utility, stderr, entropy) for :func:`bulk.write_together`
    (not the ORM unit of work: this is every report's path)."""
    return [Insertion(_REPORTS, reports), Insertion(_EVALUATIONS, evaluations)]


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
    return [_stored(stage, row) for stage, row in session.execute(query).all()]


def _stored(stage: int, row: StageEvaluation) -> StoredEvaluation:
    """A stored evaluation row of ``stage`` as :class:`StoredEvaluation`."""
    return StoredEvaluation(
        stage=stage,
        task_id=row.task_id,
        value=row.value,
        utility=row.utility,
        stderr=row.stderr,
        entropy=row.entropy,
    )


def final_evaluations(
    session: Session, run_ids: Collection[str]
) -> dict[str, list[StoredEvaluation]]:
    """The evaluations of each run's last report, by run id (row order; a run without reports
    is absent), in one statement."""
    if not run_ids:
        return {}
    ids = sorted(run_ids)
    last = (
        select(StageReport.run_id, func.max(StageReport.stage).label("stage"))
        .where(StageReport.run_id.in_(ids))
        .group_by(StageReport.run_id)
        .subquery()
    )
    query = (
        select(StageReport.run_id, StageReport.stage, StageEvaluation)
        .join(last, and_(last.c.run_id == StageReport.run_id, last.c.stage == StageReport.stage))
        .join(StageEvaluation, StageEvaluation.report_id == StageReport.id)
        .order_by(StageReport.run_id, StageEvaluation.id)
    )
    found: dict[str, list[StoredEvaluation]] = {}
    for run_id, stage, row in session.execute(query):
        found.setdefault(run_id, []).append(_stored(stage, row))
    return found


@dataclass(frozen=True, slots=True)
class StageInputs:
    """What a stage report needs of its run's earlier reports (:func:`stage_inputs`)."""

    evaluations: list[StoredEvaluation]  # of the stages asked for, by stage then row order
    trained_task_ids: list[str]  # the task trained at each reported stage 1, 2, ...


# Built once (bound: run_ids, stages): every stage report reads it.
_STAGE_INPUTS_OF_RUNS = (
    select(
        StageReport.run_id,
        StageReport.stage,
        StageReport.task_id,
        StageEvaluation.task_id,
        StageEvaluation.value,
        StageEvaluation.utility,
        StageEvaluation.stderr,
        StageEvaluation.entropy,
    )
    .outerjoin(
        StageEvaluation,
        and_(
            StageEvaluation.report_id == StageReport.id,
            StageReport.stage.in_(bindparam("stages", expanding=True)),
        ),
    )
    .where(StageReport.run_id.in_(bindparam("run_ids", expanding=True)))
    .order_by(StageReport.run_id, StageReport.stage, StageEvaluation.id)
)


def stage_inputs(session: Session, run_id: str, stages: Collection[int]) -> StageInputs:
    """The evaluations of ``stages`` and the tasks trained so far, in one statement: every
    report of the run, joined with its evaluations where its stage is one of ``stages``."""
    return stage_inputs_of_runs(session, {run_id: stages})[run_id]


def stage_inputs_of_runs(
    session: Session, wanted: Mapping[str, Collection[int]]
) -> dict[str, StageInputs]:
    """:func:`stage_inputs` of several runs (run id -> its stages) in one statement."""
    if not wanted:
        return {}
    stages = sorted({stage for run_stages in wanted.values() for stage in run_stages})
    bound = {"run_ids": sorted(wanted), "stages": stages}
    found: dict[str, list[StoredEvaluation]] = {run_id: [] for run_id in wanted}
    trained: dict[str, dict[int, str]] = {run_id: {} for run_id in wanted}
    for run_id, stage, trained_id, task_id, value, utility, stderr, entropy in session.execute(
        _STAGE_INPUTS_OF_RUNS, bound
    ):
        if stage >= 1 and trained_id is not None:
            trained[run_id][stage] = trained_id
        if task_id is not None and stage in wanted[run_id]:
            found[run_id].append(StoredEvaluation(stage, task_id, value, utility, stderr, entropy))
    return {
        run_id: StageInputs(
            evaluations=found[run_id],
            trained_task_ids=[trained[run_id][k] for k in sorted(trained[run_id])],
        )
        for run_id in wanted
    }


@dataclass(frozen=True, slots=True)
class ProjectStage:
    """One reported stage of one of the project's runs."""

    run_id: str
    run_status: str
    stage: int
    trained_task_id: str | None
    report_id: str


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
        select(Run.id, Run.status, StageReport.stage, StageReport.task_id, StageReport.id)
        .join(StageReport, StageReport.run_id == Run.id)
        .where(Run.project_id == project_id)
        .order_by(Run.created_at, Run.id, StageReport.stage)
    )
    return [ProjectStage(*row) for row in session.execute(query).all()]


def project_evaluations(
    session: Session, project_id: str, stages: Iterable[ProjectStage]
) -> list[ProjectEvaluation]:
    """Every evaluation of the reported ``stages`` (the project's, :func:`project_stages`),
    utility and entropy only, in row order; evaluations of a report not among ``stages``
    (stored after they were read) are left out.

    The evaluations are read by their own indexed ``project_id`` alone and matched to their
    stages here, not joined to the reports in SQL: PostgreSQL planned that join, on statistics
    older than the project's rows (a new project, a table grown since the last ANALYZE), as a
    nested loop that compared every evaluation of the project with every report of it: 458 ms
    for 4,368 evaluations of 728 reports, against 1.4 ms for this read (``EXPLAIN ANALYZE``
    after the load benchmark's fleet of 100). A join by report through the unique
    ``(report_id, task_id)`` index alone would instead read every evaluation of every project
    once the planner chose a hash join (53-80 ms at 184,000 rows).
    """
    by_report = {stage.report_id: stage for stage in stages}
    query = (
        select(
            StageEvaluation.report_id,
            StageEvaluation.task_id,
            StageEvaluation.utility,
            StageEvaluation.entropy,
        )
        .where(StageEvaluation.project_id == project_id)
        .order_by(StageEvaluation.id)
    )
    out = []
    for report_id, task_id, utility, entropy in session.execute(query):
        stage = by_report.get(report_id)
        if stage is not None:
            out.append(ProjectEvaluation(stage.run_id, stage.stage, task_id, utility, entropy))
    return out
