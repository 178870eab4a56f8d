"""Routes of /v1/projects/{project_id}/runs: runs, their lease and their stage reports."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Header, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from ordo_server.app.db import unit_of_work
from ordo_server.app.deps import (
    PROJECT_ROUTE_ERRORS,
    AuthenticatedDep,
    DatabaseDep,
    ProjectClaimDep,
    ProjectIdPath,
    ProjectReader,
    SessionDep,
    SettingsDep,
    release_write_gate,
)
from ordo_server.app.errors import error_responses, problem_content
from ordo_server.app.logging_config import REQUEST_ID
from ordo_server.app.report_batches import report_batches
from ordo_server.app.retry import RetryingRoute
from ordo_server.app.schemas.common import MAX_BATCH, MAX_LIST_LIMIT, StorableText
from ordo_server.app.schemas.report import ReportAccepted, ReportCreate
from ordo_server.app.schemas.run import (
    HeartbeatCreate,
    Lease,
    NextStage,
    RunCreate,
    RunFail,
    RunList,
    RunRead,
    RunStatus,
)
from ordo_server.app.services import planning
from ordo_server.app.services import reports as report_service
from ordo_server.app.services import runs as run_service
from ordo_server.app.services.job_events import async_plan_waiter

router = APIRouter(
    route_class=RetryingRoute, prefix="/v1/projects/{project_id}/runs", tags=["runs"]
)
RunIdPath = Annotated[str, Path(max_length=64, description="The run's id."), StorableText]
StagePath = Annotated[
    int, Path(ge=0, le=MAX_BATCH, description="0: the baseline; k: after training stage k.")
]
LeaseTokenHeader = Annotated[
    int | None,
    Header(
        alias=run_service.LEASE_TOKEN_HEADER,
        ge=0,
        le=2**63 - 1,
        description="The holder's lease token (`lease.token` of the run as created or claimed): "
        "required on every write on a run; another holder's answers 409 `lease_lost`, none "
        "428 `lease_token_required`.",
    ),
]
# Fencing answers of every write on a run (app.services.runs.check_lease).
LEASE_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "Conflicts with the run's state; `lease_lost`: the `Ordo-Lease-Token` is "
        "not the holder's (the run was re-claimed; `detail` names the token that holds it).",
        "content": problem_content(409, ["lease_lost", "run_finished"]),
    },
    428: {
        "description": "No `Ordo-Lease-Token` header (`lease_token_required`).",
        "content": problem_content(428),
    },
}
# What a report can meet besides a lost lease.
REPORT_CONFLICTS = ["lease_lost", "report_mismatch", "stage_out_of_turn", "plan_pending"]


@router.post(
    "",
    operation_id="create_run",
    summary="Start a run (or get the one its client_id started)",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"description": "The run this `client_id` created before.", "model": RunRead},
        **error_responses(*PROJECT_ROUTE_ERRORS, 413, 422),
        409: {
            "description": "`client_id_conflict`: the `client_id` names a run created with a "
            "different request; `errors` names the fields that differ.",
            "content": problem_content(409, ["client_id_conflict"]),
        },
    },
)
async def create_run(
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

    def create() -> run_service.CreatedRun:
        made = run_service.create_run(session, project, body, settings=settings)
        if made.view is None or made.view.plan_pending:
            session.commit()
            session.close()  # no connection is held while waiting
        return made

    # Database work runs on worker threads; the wait for the plan runs in the event loop, so a
    # waiting request holds no thread and no connection (planning.await_plan_async).
    made = await run_in_threadpool(create)
    if not made.created:
        response.status_code = status.HTTP_200_OK
    if made.view is not None and not made.view.plan_pending:
        return made.view
    release_write_gate(request)
    await planning.await_plan_async(database, settings, made.run_id)

    def read() -> RunRead:
        with unit_of_work(database.read_sessions) as reader:
            return run_service.get_run(reader, project, made.run_id, settings=settings)

    return await run_in_threadpool(read)


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
async def get_next_stage(
    run_id: RunIdPath,
    project_id: ProjectIdPath,
    principal: AuthenticatedDep,
    database: DatabaseDep,
    settings: SettingsDep,
) -> NextStage:
    """Get the stage to train and report now (0: the baseline), with the lease; or `done`.

    While a plan of the run is being made, waits up to the server's `plan_wait_s` for it, then
    answers with the current plan and `plan_pending: true`.
    """

    # Each read is one statement on one worker thread (the key's project check with it; on
    # PostgreSQL outside any transaction), and the wait runs in the event loop: a waiting
    # request holds no connection and no thread, so waiting trainers never starve the requests
    # that hold a pooled connection.
    def read() -> NextStage:
        with unit_of_work(database.statement_reads) as session:
            return run_service.next_stage(session, principal, project_id, run_id, settings=settings)

    with async_plan_waiter(run_id) as planned:  # before the first read: no end goes unseen
        answer = await run_in_threadpool(read)
        if not answer.plan_pending or answer.stage == 0:
            return answer
        if settings.job_runner == "external":
            return await planning.reread_until_planned(read, planned, wait_s=settings.plan_wait_s)
    # The embedded runner's request may make the plan itself (a job no thread has claimed).
    await planning.await_plan_async(database, settings, run_id)
    return await run_in_threadpool(read)


@router.post(
    "/{run_id}/heartbeat",
    operation_id="heartbeat_run",
    summary="Keep a run's lease",
    responses={
        **error_responses(*PROJECT_ROUTE_ERRORS, 413, 422),
        **LEASE_ERRORS,
    },
)
def heartbeat_run(
    claim: ProjectClaimDep,
    session: SessionDep,
    settings: SettingsDep,
    run_id: RunIdPath,
    lease_token: LeaseTokenHeader = None,
    body: HeartbeatCreate | None = None,
) -> Lease:
    """Renew the holder's lease (a stale run becomes active again)."""
    project = claim.check(session)
    return run_service.heartbeat(
        session,
        project,
        run_id,
        body or HeartbeatCreate(),
        lease_token=lease_token,
        settings=settings,
    )


@router.post(
    "/{run_id}/complete",
    operation_id="complete_run",
    summary="Mark a run completed",
    responses={
        **error_responses(*PROJECT_ROUTE_ERRORS, 422),
        **LEASE_ERRORS,
    },
)
def complete_run(
    claim: ProjectClaimDep,
    session: SessionDep,
    settings: SettingsDep,
    run_id: RunIdPath,
    lease_token: LeaseTokenHeader = None,
) -> RunRead:
    """End the run as completed (idempotent); an admin key may omit the lease token."""
    project = claim.check(session)
    return run_service.complete_run(
        session, project, run_id, lease_token=lease_token, settings=settings
    )


@router.post(
    "/{run_id}/fail",
    operation_id="fail_run",
    summary="Mark a run failed",
    responses={
        **error_responses(*PROJECT_ROUTE_ERRORS, 413, 422),
        **LEASE_ERRORS,
    },
)
def fail_run(
    body: RunFail,
    claim: ProjectClaimDep,
    session: SessionDep,
    settings: SettingsDep,
    run_id: RunIdPath,
    lease_token: LeaseTokenHeader = None,
) -> RunRead:
    """End the run as failed, with a reason (idempotent); an admin key may omit the token."""
    project = claim.check(session)
    return run_service.fail_run(
        session, project, run_id, body, lease_token=lease_token, settings=settings
    )


@router.put(
    "/{run_id}/reports/{stage}",
    operation_id="put_report",
    summary="Report a stage's evaluations",
    responses={
        **error_responses(
            *PROJECT_ROUTE_ERRORS, 413, 422, examples={422: ["validation_failed", "unknown_task"]}
        ),
        **LEASE_ERRORS,
        409: {**LEASE_ERRORS[409], "content": problem_content(409, REPORT_CONFLICTS)},
    },
)
async def put_report(
    request: Request,
    body: ReportCreate,
    claim: ProjectClaimDep,
    database: DatabaseDep,
    settings: SettingsDep,
    run_id: RunIdPath,
    stage: StagePath,
    background: BackgroundTasks,
    lease_token: LeaseTokenHeader = None,
) -> ReportAccepted:
    """Report stage k's evaluations; the same body again returns the stored answer.

    An adaptive run's re-plan is queued with the report (`plan_pending: true`); `GET .../next`
    waits for it.
    """
    # Stored with the other reports this process is receiving, in one transaction
    # (app.report_batches); the answer and the errors are this request's own.
    report = report_service.ReportRequest(
        principal=claim.principal,
        project_id=claim.project_id,
        run_id=run_id,
        stage=stage,
        body=body,
        lease_token=lease_token,
        request_id=REQUEST_ID.get(),
    )
    answer = await report_batches(request).submit(report)
    if answer.plan_pending and settings.job_runner == "embedded":
        # Start on the re-plan as soon as the answer is sent (the worker thread may be first).
        background.add_task(planning.run_job_for_request, database, settings, run_id=answer.run_id)
    return answer
