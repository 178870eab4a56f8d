"""SQL for projects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from ordo_server.models import Project, Task


def add_project(
    session: Session, *, name: str, description: str, settings: dict[str, Any]
) -> Project:
    """Insert a project and flush it (raises IntegrityError on a duplicate name)."""
    project = Project(name=name, description=description, settings=settings, estimates_version=0)
    session.add(project)
    session.flush()
    return project


def get_project(session: Session, project_id: str) -> Project | None:
    """The project with this id, or ``None``."""
    return session.get(Project, project_id)


# Built once (bound: project_id): read by every batch of reports.
_PROJECT_WITH_TASKS = (
    select(Project, Task)
    .outerjoin(Task, Task.project_id == Project.id)
    .where(Project.id == bindparam("project_id"))
    .order_by(Task.index)
)


def get_project_with_tasks(session: Session, project_id: str) -> tuple[Project | None, list[Task]]:
    """The project with this id and its tasks in index order, in one statement (``None`` and
    no tasks for a project that does not exist). The project stays in the session's identity
    map: a :func:`get_project` of it after this reads nothing."""
    rows = session.execute(_PROJECT_WITH_TASKS, {"project_id": project_id}).all()
    if not rows:
        return None, []
    return rows[0][0], [task for _, task in rows if task is not None]


def update_project(
    session: Session,
    project: Project,
    *,
    description: str | None = None,
    settings: dict[str, Any] | None = None,
) -> Project:
    """Set the given columns (``None``: unchanged) and flush; ``settings`` replaces the JSON."""
    if description is not None:
        project.description = description
    if settings is not None:
        project.settings = settings  # a new dict: the JSON column sees the change
    session.flush()
    return project


def project_name_taken(session: Session, name: str) -> bool:
    """Whether a project already has this name."""
    return session.scalar(select(func.count()).where(Project.name == name)) != 0


def list_projects(
    session: Session, *, only_id: str | None, limit: int, offset: int
) -> Sequence[Project]:
    """Projects by creation time; ``only_id`` restricts to one project (a project-scoped key)."""
    query = select(Project).order_by(Project.created_at, Project.id).limit(limit).offset(offset)
    if only_id is not None:
        query = query.where(Project.id == only_id)
    return session.scalars(query).all()


def bump_estimates_version(session: Session, project_id: str, *, by: int = 1) -> int:
    """Atomically add ``by`` to the project's folded estimates version; the new column value.

    The version readers see also counts unfolded deltas (``repositories.statistics``).
    """
    result = session.execute(
        update(Project)
        .where(Project.id == project_id)
        .values(estimates_version=Project.estimates_version + by)
        .returning(Project.estimates_version)
    )
    return int(result.scalar_one())


# Built once (bound: project_id): every store of a schedule or plan group takes it. FOR NO KEY
# UPDATE, not FOR UPDATE: it serializes the project's schedule versions and task changes, but
# leaves alone the KEY SHARE lock each insert referencing the project takes (a report's rows):
# with FOR UPDATE a plan store holding its runs waited for a batch of reports whose rows
# referenced the project while that batch waited for one of those runs (a deadlock).
_LOCK_PROJECT = (
    select(Project.id).where(Project.id == bindparam("project_id")).with_for_update(key_share=True)
)


def lock_project(session: Session, project_id: str) -> None:
    """Lock the project row until commit (PostgreSQL; SQLite's BEGIN IMMEDIATE already did).

    ``FOR NO KEY UPDATE``: lockers wait for each other, inserts referencing the project do not.
    """
    session.execute(_LOCK_PROJECT, {"project_id": project_id})
