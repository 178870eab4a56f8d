"""Use cases of projects."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ordo_server.app.errors import ConflictError
from ordo_server.app.repositories import projects as project_repo
from ordo_server.app.repositories import statistics as stat_repo
from ordo_server.app.schemas.project import (
    ProjectCreate,
    ProjectRead,
    ProjectSettings,
    ProjectUpdate,
)
from ordo_server.app.services.auth import Principal, ProjectContext, require_global_admin
from ordo_server.models import Project


def _read(session: Session, project: Project) -> ProjectRead:
    """The project as answered; its estimates version counts unfolded statistics deltas."""
    read = ProjectRead.model_validate(project)
    version = stat_repo.estimates_version(session, project.id)
    return read.model_copy(update={"estimates_version": version})


def create_project(session: Session, principal: Principal, body: ProjectCreate) -> ProjectRead:
    """Create a project (global admin only); names are unique."""
    require_global_admin(principal)
    if project_repo.project_name_taken(session, body.name):
        raise ConflictError(f"A project named {body.name!r} already exists.")
    project = project_repo.add_project(
        session,
        name=body.name,
        description=body.description,
        settings=body.settings.model_dump(mode="json"),
    )
    return _read(session, project)


def list_projects(
    session: Session, principal: Principal, *, limit: int, offset: int
) -> list[ProjectRead]:
    """Projects the caller can see: all for a global admin, else the key's own project."""
    only_id = None if principal.project_id is None else principal.project_id
    rows = project_repo.list_projects(session, only_id=only_id, limit=limit, offset=offset)
    return [_read(session, row) for row in rows]


def get_project(session: Session, context: ProjectContext) -> ProjectRead:
    """The authorized project."""
    project = project_repo.get_project(session, context.id)
    assert project is not None  # authorize_project found it in this transaction
    return _read(session, project)


def update_project(session: Session, context: ProjectContext, body: ProjectUpdate) -> ProjectRead:
    """Change the project's description and settings (its solve policy among them); the
    settings the body does not name keep their values."""
    project = project_repo.get_project(session, context.id)
    assert project is not None  # authorize_project found it in this transaction
    settings = None
    if body.settings is not None:
        changes = body.settings.model_dump(exclude_unset=True)
        merged = ProjectSettings.model_validate({**context.settings.model_dump(), **changes})
        settings = merged.model_dump(mode="json")
    updated = project_repo.update_project(
        session, project, description=body.description, settings=settings
    )
    return _read(session, updated)
