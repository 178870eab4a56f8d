"""Routes of /v1/projects/{project_id}/schedules."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ordo_server.app.db import unit_of_work
from ordo_server.app.deps import (
    PROJECT_ROUTE_ERRORS,
    DatabaseDep,
    ProjectAdmin,
    ProjectReader,
    SessionDep,
    SettingsDep,
    release_write_gate,
)
from ordo_server.app.errors import (
    FieldIssue,
    error_responses,
    problem_content,
    problem_response,
)
from ordo_server.app.retry import RetryingRoute
from ordo_server.app.schemas.common import MAX_LIST_LIMIT, StorableText
from ordo_server.app.schemas.schedule import (
    ScheduleCreate,
    ScheduleJobRead,
    ScheduleJobStatus,
    ScheduleList,
    ScheduleRead,
)
from ordo_server.app.services import planning, schedule_jobs
from ordo_server.app.services import schedules as schedule_service

router = APIRouter(
    route_class=RetryingRoute, prefix="/v1/projects/{project_id}/schedules", tags=["schedules"]
)
SOLVE_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "No order was found within the time limit, or the database is "
        "unavailable; retry after `Retry-After` seconds.",
        "content": problem_content(503, ["solver_unavailable", "database_unavailable"]),
    }
}
ScheduleIdPath = Annotated[str, Path(max_length=64, description="The schedule's id."), StorableText]
JobIdPath = Annotated[str, Path(max_length=32, description="The job's id."), StorableText]


PREFER_ASYNC = "respond-async"
PreferHeader = Annotated[
    str | None,
    Header(
        max_length=200,
        description="`respond-async` (RFC 7240): answer 202 with the job at once, never wait.",
    ),
    StorableText,
]
ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "model": ScheduleJobRead,
        "description": "The solve outlasted the server's wait (`schedule_wait_s`), or "
        "`Prefer: respond-async` was sent: poll the job at `Location` "
        "(`GET .../schedules/jobs/{job_id}`) until it has `succeeded` or `failed`.",
        "headers": {
            "Location": {"description": "The job's URL.", "schema": {"type": "string"}},
            "Retry-After": {
                "description": "Seconds to wait before polling.",
                "schema": {"type": "integer"},
            },
        },
    }
}


@router.post(
    "",
    operation_id="create_schedule",
    summary="Solve and store a schedule (the recommendation by default)",
    status_code=status.HTTP_201_CREATED,
    response_model=ScheduleRead,
    responses={
        **ACCEPTED,
        **error_responses(
            *PROJECT_ROUTE_ERRORS,
            403,
            413,
            422,
            examples={422: ["validation_failed", "infeasible"]},
        ),
        **SOLVE_UNAVAILABLE,
    },
)
async def create_schedule(
    body: ScheduleCreate,
    project: ProjectAdmin,
    session: SessionDep,
    database: DatabaseDep,
    settings: SettingsDep,
    request: Request,
    response: Response,
    prefer: PreferHeader = None,
) -> ScheduleRead | JSONResponse:
    """Plan the best order and store it as a new schedule.

    With the defaults this is the project's **recommendation**, chosen on the ensemble
    posterior fitted to every run of the project (see `model`): the order of the best run so
    far (highest reported final objective) unless another order beats it with posterior
    probability 0.9; `objective: thompson` draws once from the same posterior.

    The solve is a job, run off the request: the answer waits up to the server's
    `schedule_wait_s` for it (201 with the schedule, or the solver's problem); a longer solve
    answers 202 with the job to poll. The request is checked (policy, task keys, constraints)
    before it is queued."""

    def submit() -> int:
        job_id = schedule_jobs.submit(session, project, body, settings=settings)
        session.commit()
        session.close()  # no connection is held while the job solves
        return job_id

    def answer() -> ScheduleRead | JSONResponse:
        with unit_of_work(database.read_sessions) as reader:
            job = schedule_jobs.get_job(reader, project, str(job_id))
            if job.status is ScheduleJobStatus.SUCCEEDED and job.schedule_id is not None:
                response.headers["Location"] = schedule_url(project.id, job.schedule_id)
                return schedule_service.get_schedule(reader, project, job.schedule_id)
        return job_answer(project.id, job, retry_after_s=settings.retry_after_s)

    # Database work runs on worker threads; the wait for the job runs in the event loop, so a
    # waiting request holds no thread and no connection (planning.await_job_async).
    job_id = await run_in_threadpool(submit)
    release_write_gate(request)
    if PREFER_ASYNC not in (prefer or "").lower():
        await planning.await_job_async(
            database,
            settings,
            job_id,
            wait_s=settings.schedule_wait_s,
            run_here=schedule_jobs.runs_here(settings),
        )
    return await run_in_threadpool(answer)


def schedule_url(project_id: str, schedule_id: str) -> str:
    """The path of a schedule."""
    return f"/v1/projects/{quote(project_id, safe='')}/schedules/{quote(schedule_id, safe='')}"


def job_answer(project_id: str, job: ScheduleJobRead, *, retry_after_s: int) -> JSONResponse:
    """A failed job's problem, or 202 with a job still queued or running."""
    if job.problem is not None:
        problem = job.problem
        issues = [FieldIssue(e.field, e.reason) for e in problem.errors or ()]
        headers = {"Retry-After": str(retry_after_s)} if problem.status == 503 else None
        return problem_response(
            problem.status, problem.detail, code=problem.code, errors=issues, headers=headers
        )
    location = f"/v1/projects/{quote(project_id, safe='')}/schedules/jobs/{job.id}"
    return JSONResponse(
        job.model_dump(mode="json"),
        status_code=status.HTTP_202_ACCEPTED,
        headers={"Location": location, "Retry-After": "1"},
    )


@router.get(
    "/jobs/{job_id}",
    operation_id="get_schedule_job",
    summary="Poll a schedule solve that answered 202",
    responses=error_responses(*PROJECT_ROUTE_ERRORS),
)
def get_schedule_job(
    project: ProjectReader,
    session: SessionDep,
    database: DatabaseDep,
    settings: SettingsDep,
    job_id: JobIdPath,
) -> ScheduleJobRead:
    """Get a schedule job: `queued`, `running`, `succeeded` (with `schedule_id`) or `failed`
    (with the `problem` the solve answered)."""
    job = schedule_jobs.get_job(session, project, job_id)
    if job.status is ScheduleJobStatus.QUEUED and schedule_jobs.runs_here(settings):
        session.close()
        planning.run_job_for_request(database, settings, job_id=int(job.id))
        with unit_of_work(database.read_sessions) as reader:
            job = schedule_jobs.get_job(reader, project, job_id)
    return job


@router.get(
    "",
    operation_id="list_schedules",
    summary="List a project's schedules, newest first",
    responses=error_responses(*PROJECT_ROUTE_ERRORS, 422),
)
def list_schedules(
    project: ProjectReader,
    session: SessionDep,
    page_size: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 50,
    page_token: Annotated[
        str | None,
        Query(max_length=100, description="`next_page_token` of the previous page."),
        StorableText,
    ] = None,
    run_id: Annotated[
        str | None,
        Query(max_length=64, description="Only the schedules of this run."),
        StorableText,
    ] = None,
) -> ScheduleList:
    """List the schedule history, newest first, one page at a time."""
    return schedule_service.list_schedules(
        session, project, page_size=page_size, page_token=page_token, run_id=run_id
    )


@router.get(
    "/{schedule_id}",
    operation_id="get_schedule",
    summary="Get a schedule",
    responses=error_responses(*PROJECT_ROUTE_ERRORS),
)
def get_schedule(
    project: ProjectReader, session: SessionDep, schedule_id: ScheduleIdPath
) -> ScheduleRead:
    """Get one schedule with its request, figures, predictions and estimates version."""
    return schedule_service.get_schedule(session, project, schedule_id)
