"""Routes of /v1/projects/{project_id}/runs: runs, their lease and their stage reports."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from app.deps import PROJECT_ROUTE_ERRORS, ProjectReader, SessionDep, SettingsDep
from app.errors import error_responses
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
from app.services import reports as report_service
from app.services import runs as run_service

router = APIRouter(prefix="/v1/projects/{project_id}/runs", tags=["runs"])
RunIdPath = Annotated[str, Path(max_length=64, description="The run's id."), StorableText]
StagePath = Annotated[
    int, Path(ge=0, le=MAX_BATCH, description="0: the baseline; k: after training stage k.")
]


@router.post(
    "",
    operation_id="create_run",
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
    settings: SettingsDep,
    response: Response,
) -> RunRead:
    """Start a run from a schedule or a fresh solve; the same `client_id` returns its run."""
    run, created = run_service.create_run(session, project, body, settings=settings)
    if not created:
        response.status_code = status.HTTP_200_OK
    return run


@router.get("", operation_id="list_runs", responses=error_responses(*PROJECT_ROUTE_ERRORS, 422))
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


@router.get("/{run_id}", operation_id="get_run", responses=error_responses(*PROJECT_ROUTE_ERRORS))
def get_run(
    project: ProjectReader, session: SessionDep, settings: SettingsDep, run_id: RunIdPath
) -> RunRead:
    """Get a run: its stages, status, the schedule versions it followed and its reports."""
    return run_service.get_run(session, project, run_id, settings=settings)


@router.get(
    "/{run_id}/next",
    operation_id="get_next_stage",
    responses=error_responses(*PROJECT_ROUTE_ERRORS),
)
def get_next_stage(
    project: ProjectReader, session: SessionDep, settings: SettingsDep, run_id: RunIdPath
) -> NextStage:
    """Get the stage to train and report now (0: the baseline), with the lease; or `done`."""
    return run_service.next_stage(session, project, run_id, settings=settings)


@router.post(
    "/{run_id}/heartbeat",
    operation_id="heartbeat_run",
    responses=error_responses(*PROJECT_ROUTE_ERRORS, 409, 413, 422),
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
    responses=error_responses(*PROJECT_ROUTE_ERRORS, 409),
)
def complete_run(
    project: ProjectReader, session: SessionDep, settings: SettingsDep, run_id: RunIdPath
) -> RunRead:
    """End the run as completed (idempotent)."""
    return run_service.complete_run(session, project, run_id, settings=settings)


@router.post(
    "/{run_id}/fail",
    operation_id="fail_run",
    responses=error_responses(*PROJECT_ROUTE_ERRORS, 409, 413, 422),
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
    responses=error_responses(*PROJECT_ROUTE_ERRORS, 409, 413, 422),
)
def put_report(
    body: ReportCreate,
    project: ProjectReader,
    session: SessionDep,
    settings: SettingsDep,
    run_id: RunIdPath,
    stage: StagePath,
) -> ReportAccepted:
    """Report stage k's evaluations; the same body again returns the stored answer."""
    return report_service.put_report(session, project, run_id, stage, body, settings=settings)
