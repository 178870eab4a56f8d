"""SQL for tasks."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from ordo_server.models import Task

# Built once (bound: project_id): read by every report and plan.
_LIST_TASKS = select(Task).where(Task.project_id == bindparam("project_id")).order_by(Task.index)


def list_tasks(session: Session, project_id: str) -> Sequence[Task]:
    """The project's tasks in index order."""
    return session.scalars(_LIST_TASKS, {"project_id": project_id}).all()


def count_tasks(session: Session, project_id: str) -> int:
    """How many tasks the project has."""
    query = select(func.count()).select_from(Task).where(Task.project_id == project_id)
    return int(session.scalar(query) or 0)


def get_task_by_key(session: Session, project_id: str, key: str) -> Task | None:
    """The project's task with this key, or ``None``."""
    return session.scalar(select(Task).where(Task.project_id == project_id, Task.key == key))


def existing_keys(session: Session, project_id: str, keys: Collection[str]) -> set[str]:
    """Which of ``keys`` the project already has."""
    query = select(Task.key).where(Task.project_id == project_id, Task.key.in_(keys))
    return set(session.scalars(query).all())


def next_index(session: Session, project_id: str) -> int:
    """The first free task index of the project."""
    query = select(func.coalesce(func.max(Task.index) + 1, 0)).where(Task.project_id == project_id)
    return int(session.scalar(query) or 0)


def add_tasks(session: Session, project_id: str, rows: Sequence[dict[str, Any]]) -> list[Task]:
    """Insert tasks (each dict holds the column values) and flush them."""
    tasks = [Task(project_id=project_id, **row) for row in rows]
    session.add_all(tasks)
    session.flush()
    return tasks
