"""Routes of /v1/projects/{project_id}/schedules."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from app.deps import PROJECT_ROUTE_ERRORS, ProjectAdmin, ProjectReader, SessionDep, SettingsDep
from app.errors import error_responses, problem_content
from app.retry import RetryingRoute
from app.schemas.common import MAX_LIST_LIMIT, StorableText
from app.schemas.schedule import ScheduleCreate, ScheduleList, ScheduleRead
from app.services import recommendations as recommendation_service
from app.services import schedules as schedule_service

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


@router.post(
    "",
    operation_id="create_schedule",
    summary="Solve and store a schedule (the recommendation by default)",
    status_code=status.HTTP_201_CREATED,
    responses={
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
def create_schedule(
    body: ScheduleCreate, project: ProjectAdmin, session: SessionDep, settings: SettingsDep
) -> ScheduleRead:
    """Plan the best order and store it as a new schedule.

    With the defaults this is the project's **recommendation**: the order with the highest
    posterior mean objective under the ensemble fitted to every run of the project (see
    `model`); `objective: thompson` draws once from the same posterior."""
    return recommendation_service.create_schedule(session, project, body, settings=settings)


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
