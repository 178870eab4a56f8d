"""Routes of /v1/projects and their API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from ordo_server.app.deps import PrincipalDep, ProjectAdmin, ProjectReader, SessionDep
from ordo_server.app.errors import error_responses
from ordo_server.app.retry import RetryingRoute
from ordo_server.app.schemas.common import MAX_LIST_LIMIT, MAX_OFFSET, StorableText
from ordo_server.app.schemas.key import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from ordo_server.app.schemas.project import ProjectCreate, ProjectRead, ProjectUpdate
from ordo_server.app.services import keys as key_service
from ordo_server.app.services import projects as project_service

router = APIRouter(route_class=RetryingRoute, prefix="/v1/projects")
AUTH_ERRORS = (401, 503)


@router.post(
    "",
    operation_id="create_project",
    summary="Create a project",
    tags=["projects"],
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(
        *AUTH_ERRORS,
        403,
        409,
        413,
        422,
        examples={403: ["not_global_admin"], 409: ["project_exists"]},
    ),
)
def create_project(
    body: ProjectCreate, principal: PrincipalDep, session: SessionDep
) -> ProjectRead:
    """Create a project (global admin token only)."""
    return project_service.create_project(session, principal, body)


@router.get(
    "",
    operation_id="list_projects",
    summary="List the projects your key can see",
    tags=["projects"],
    responses=error_responses(*AUTH_ERRORS, 422),
)
def list_projects(
    principal: PrincipalDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Projects to skip.")] = 0,
) -> list[ProjectRead]:
    """List the projects the key can see (all of them for the global admin)."""
    return project_service.list_projects(session, principal, limit=limit, offset=offset)


@router.get(
    "/{project_id}",
    operation_id="get_project",
    summary="Get a project",
    tags=["projects"],
    responses=error_responses(*AUTH_ERRORS, 404, 422),
)
def get_project(project: ProjectReader, session: SessionDep) -> ProjectRead:
    """Get one project."""
    return project_service.get_project(session, project)


@router.patch(
    "/{project_id}",
    operation_id="update_project",
    summary="Change a project's description or settings",
    tags=["projects"],
    responses=error_responses(*AUTH_ERRORS, 403, 404, 413, 422),
)
def update_project(body: ProjectUpdate, project: ProjectAdmin, session: SessionDep) -> ProjectRead:
    """Change a project's description or settings, its solve policy included (project admin)."""
    return project_service.update_project(session, project, body)


@router.post(
    "/{project_id}/keys",
    operation_id="create_api_key",
    summary="Create an API key (shown once)",
    tags=["keys"],
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(*AUTH_ERRORS, 403, 404, 413, 422),
)
def create_api_key(body: ApiKeyCreate, project: ProjectAdmin, session: SessionDep) -> ApiKeyCreated:
    """Create an API key; the full key is shown in this answer only."""
    return key_service.create_key(session, project, body)


@router.get(
    "/{project_id}/keys",
    operation_id="list_api_keys",
    summary="List a project's API keys",
    tags=["keys"],
    responses=error_responses(*AUTH_ERRORS, 403, 404, 422),
)
def list_api_keys(project: ProjectAdmin, session: SessionDep) -> list[ApiKeyRead]:
    """List the project's API keys (display prefixes only, never secrets)."""
    return key_service.list_keys(session, project)


@router.delete(
    "/{project_id}/keys/{key_id}",
    operation_id="revoke_api_key",
    summary="Revoke an API key",
    tags=["keys"],
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(*AUTH_ERRORS, 403, 404, 422),
)
def revoke_api_key(
    project: ProjectAdmin,
    session: SessionDep,
    key_id: Annotated[str, Path(max_length=64, description="The key's public id."), StorableText],
) -> Response:
    """Revoke an API key; it answers 401 from then on."""
    key_service.revoke_key(session, project, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
