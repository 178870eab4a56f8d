"""Routes of /v1/projects/{project_id}/runs: runs, their lease and their stage reports."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Path, Query, Request, Response, status

from app.db import unit_of_work
from app.deps import (
    PROJECT_ROUTE_ERRORS,
    DatabaseDep,
    ProjectReader,
    SessionDep,
    SettingsDep,
    release_write_gate,
)
from app.errors import error_responses
from app.retry import RetryingRoute
from app.schemas.common import MAX_BATCH, MAX_LIST_LIMIT, StorableText
from app.schemas.report import ReportAccepted, ReportCreate
from app.schemas.run import (
    HeartbeatCreate,
    Lease,
    NextStage,
    RunCreate,
    RunFail,
    RunList,
    RunRead,
    RunStatus,
)
from app.services import planning
from app.services import reports as report_service
from app.services import runs as run_service

router = APIRouter(
    route_class=RetryingRoute, prefix="/v1/projects/{project_id}/runs", tags=["runs"]
)
RunIdPath = Annotated[str, Path(max_length=64, description="The run's id."), StorableText]
StagePath = Annotated[
    int, Path(ge=0, le=MAX_BATCH, description="0: the baseline; k: after training stage k.")
]


@router.post(
    "",
    operation_id="create_run",
    summary="Start a run (or get the one its client_id started)",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"description": "The run this `client_id` created before.", "model": RunRead},
        **error_responses(*PROJECT_ROUTE_ERRORS, 413, 422),
    },
)
def create_run(
    body: RunCreate,
    project: ProjectReader,
    session: SessionDep,
    database: DatabaseDep,
    settings: SettingsDep,
    request: Request,
    response: Response,
) -> RunRead:
    """Start a run from a schedule or a fresh solve; the same `client_id` returns its run.

    A fresh solve is a job: the run is stored first, then the answer waits up to the server's
    `plan_wait_s` for its plan (`plan_pending: true` if it is not there yet; `GET .../next`
    waits for it again). Constraints that admit no order fail the run, with the reason.
    """
    run, created = run_service.create_run(session, project, body, settings=settings)
    if not created:
        response.status_code = status.HTTP_200_OK
    if not run.plan_pending:
        return run
    session.commit()
    release_write_gate(request)
    session.close()
    planning.await_plan(database, settings, run.id)
    with unit_of_work(database.read_sessions) as reader:
        return run_service.get_run(reader, project, run.id, settings=settings)


@router.get(
    "",
    operation_id="list_runs",
    summary="List a project's runs, newest first",
    responses=error_responses(*PROJECT_ROUTE_ERRORS, 422),
)
def list_runs(
    project: ProjectReader,
    session: SessionDep,
    page_size: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 50,
    page_token: Annotated[str | None, Query(max_length=500), StorableText] = None,
    run_status: Annotated[RunStatus | None, Query(alias="status")] = None,
) -> RunList:
    """List the project's runs, newest first."""
    return run_service.list_runs(
        session, project, page_size=page_size, page_token=page_token, status=run_status
    )


@router.get(
    "/{run_id}",
    operation_id="get_run",
    summary="Get a run with its stages, plans and reports",
    responses=error_responses(*PROJECT_ROUTE_ERRORS),
)
def get_run(
    project: ProjectReader, session: SessionDep, settings: SettingsDep, run_id: RunIdPath
) -> RunRead:
    """Get a run: its stages, status, the schedule versions it followed and its reports."""
    return run_service.get_run(session, project, run_id, settings=settings)


@router.get(
    "/{run_id}/next",
    operation_id="get_next_stage",
    summary="Ask what to train next",
    responses=error_responses(*PROJECT_ROUTE_ERRORS),
)
def get_next_stage(
    project: ProjectReader,
    session: SessionDep,
    database: DatabaseDep,
    settings: SettingsDep,
    run_id: RunIdPath,
) -> NextStage:
    """Get the stage to train and report now (0: the baseline), with the lease; or `done`.

    While a plan of the run is being made, waits up to the server's `plan_wait_s` for it, then
    answers with the current plan and `plan_pending: true`.
    """
    answer = run_service.next_stage(session, project, run_id, settings=settings)
    if not answer.plan_pending or answer.stage == 0:
        return answer
    session.close()  # no connection is held while waiting
    planning.await_plan(database, settings, run_id)
    return run_service.next_stage(session, project, run_id, settings=settings)


@router.post(
    "/{run_id}/heartbeat",
    operation_id="heartbeat_run",
    summary="Keep a run's lease",
    responses=error_responses(
        *PROJECT_ROUTE_ERRORS, 409, 413, 422, examples={409: ["run_finished"]}
    ),
)
def heartbeat_run(
    project: ProjectReader,
    session: SessionDep,
    settings: SettingsDep,
    run_id: RunIdPath,
    body: HeartbeatCreate | None = None,
) -> Lease:
    """Renew the run's lease (a stale run becomes active again)."""
    return run_service.heartbeat(
        session, project, run_id, body or HeartbeatCreate(), settings=settings
    )


@router.post(
    "/{run_id}/complete",
    operation_id="complete_run",
    summary="Mark a run completed",
    responses=error_responses(*PROJECT_ROUTE_ERRORS, 409, examples={409: ["run_already_finished"]}),
)
def complete_run(
    project: ProjectReader, session: SessionDep, settings: SettingsDep, run_id: RunIdPath
) -> RunRead:
    """End the run as completed (idempotent)."""
    return run_service.complete_run(session, project, run_id, settings=settings)


@router.post(
    "/{run_id}/fail",
    operation_id="fail_run",
    summary="Mark a run failed",
    responses=error_responses(
        *PROJECT_ROUTE_ERRORS, 409, 413, 422, examples={409: ["run_already_finished"]}
    ),
)
def fail_run(
    body: RunFail,
    project: ProjectReader,
    session: SessionDep,
    settings: SettingsDep,
    run_id: RunIdPath,
) -> RunRead:
    """End the run as failed, with a reason (idempotent)."""
    return run_service.fail_run(session, project, run_id, body, settings=settings)


@router.put(
    "/{run_id}/reports/{stage}",
    operation_id="put_report",
    summary="Report a stage's evaluations",
    responses=error_responses(
        *PROJECT_ROUTE_ERRORS,
        409,
        413,
        422,
        examples={
            409: ["report_mismatch", "stage_out_of_turn", "plan_pending", "run_finished"],
            422: ["validation_failed", "unknown_task"],
        },
    ),
)
def put_report(
    body: ReportCreate,
    project: ProjectReader,
    session: SessionDep,
    database: DatabaseDep,
    settings: SettingsDep,
    run_id: RunIdPath,
    stage: StagePath,
    background: BackgroundTasks,
) -> ReportAccepted:
    """Report stage k's evaluations; the same body again returns the stored answer.

    An adaptive run's re-plan is queued with the report (`plan_pending: true`); `GET .../next`
    waits for it.
    """
    answer = report_service.put_report(session, project, run_id, stage, body, settings=settings)
    if answer.plan_pending and settings.job_runner == "embedded":
        # Start on the re-plan as soon as the answer is sent (the worker thread may be first).
        background.add_task(planning.run_next_job, database, settings, run_id=answer.run_id)
    return answer
