"""Routes of /v1/projects/{project_id}/tasks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from ordo_server.app.deps import PROJECT_ROUTE_ERRORS, ProjectAdmin, ProjectReader, SessionDep
from ordo_server.app.errors import error_responses
from ordo_server.app.retry import RetryingRoute
from ordo_server.app.schemas.common import StorableText
from ordo_server.app.schemas.task import TaskBatchCreate, TaskRead, TaskUpdate
from ordo_server.app.services import tasks as task_service

router = APIRouter(
    route_class=RetryingRoute, prefix="/v1/projects/{project_id}/tasks", tags=["tasks"]
)
TaskKeyPath = Annotated[str, Path(max_length=100, description="The task's key."), StorableText]


@router.post(
    "",
    operation_id="create_tasks",
    summary="Add tasks to a project",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(*PROJECT_ROUTE_ERRORS, 403, 409, 413, 422),
)
def create_tasks(
    body: TaskBatchCreate, project: ProjectAdmin, session: SessionDep
) -> list[TaskRead]:
    """Add tasks in one batch (all or none); each gets the next free index."""
    return task_service.create_tasks(session, project, body)


@router.get(
    "",
    operation_id="list_tasks",
    summary="List a project's tasks",
    responses=error_responses(*PROJECT_ROUTE_ERRORS),
)
def list_tasks(project: ProjectReader, session: SessionDep) -> list[TaskRead]:
    """List the project's tasks in index order."""
    return task_service.list_tasks(session, project)


@router.get(
    "/{task_key}",
    operation_id="get_task",
    summary="Get a task by its key",
    responses=error_responses(*PROJECT_ROUTE_ERRORS),
)
def get_task(project: ProjectReader, session: SessionDep, task_key: TaskKeyPath) -> TaskRead:
    """Get one task by key."""
    return task_service.get_task(session, project, task_key)


@router.patch(
    "/{task_key}",
    operation_id="update_task",
    summary="Change a task",
    responses=error_responses(*PROJECT_ROUTE_ERRORS, 403, 409, 413, 422),
)
def update_task(
    body: TaskUpdate, project: ProjectAdmin, session: SessionDep, task_key: TaskKeyPath
) -> TaskRead:
    """Change a task's fields (its index never changes)."""
    return task_service.update_task(session, project, task_key, body)
