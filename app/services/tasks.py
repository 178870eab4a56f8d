"""Use cases of tasks."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ordo_server.app.errors import ConflictError, FieldIssue, InvalidInputError, NotFoundError
from ordo_server.app.repositories import projects as project_repo
from ordo_server.app.repositories import tasks as task_repo
from ordo_server.app.schemas.task import TaskBatchCreate, TaskRead, TaskUpdate
from ordo_server.app.services.auth import ProjectContext
from ordo_server.models import Task

MAX_TASKS_PER_PROJECT = 1000


def _read(task: Task) -> TaskRead:
    return TaskRead(
        key=task.key,
        index=task.index,
        name=task.name,
        kind=task.kind,
        reward=task.reward,
        goal=task.goal,
        scale=task.scale,
        weight=task.weight,
        metadata=task.meta,
        created_at=task.created_at,
        updated_at=task.updated_at,
    )


def _repeated(keys: list[str], *, field: str) -> list[FieldIssue]:
    seen: set[str] = set()
    issues = []
    for i, key in enumerate(keys):
        if key in seen:
            issues.append(FieldIssue(field.format(i=i), f"Duplicate key {key!r} in this request"))
        seen.add(key)
    return issues


def create_tasks(
    session: Session, context: ProjectContext, body: TaskBatchCreate
) -> list[TaskRead]:
    """Add tasks at the next free indexes, all or none; keys are unique per project."""
    keys = [task.key for task in body.tasks]
    duplicates = _repeated(keys, field="tasks[{i}].key")
    if duplicates:
        raise InvalidInputError("Task keys repeat within the request.", errors=duplicates)
    # Serialise index allocation per project (PostgreSQL; SQLite writers are serial anyway).
    project_repo.lock_project(session, context.id)
    taken = task_repo.existing_keys(session, context.id, keys)
    if taken:
        names = ", ".join(sorted(taken))
        raise ConflictError(f"Tasks already exist: {names}.")
    first = task_repo.next_index(session, context.id)
    if first + len(keys) > MAX_TASKS_PER_PROJECT:
        issue = FieldIssue("tasks", f"A project holds at most {MAX_TASKS_PER_PROJECT} tasks")
        raise InvalidInputError("Too many tasks.", errors=[issue])
    rows = []
    for offset, task in enumerate(body.tasks):
        values = task.model_dump(mode="json", exclude={"metadata"})
        rows.append({**values, "meta": task.metadata, "index": first + offset})
    return [_read(task) for task in task_repo.add_tasks(session, context.id, rows)]


def list_tasks(session: Session, context: ProjectContext) -> list[TaskRead]:
    """The project's tasks in index order."""
    return [_read(task) for task in task_repo.list_tasks(session, context.id)]


def _get(session: Session, context: ProjectContext, key: str) -> Task:
    task = task_repo.get_task_by_key(session, context.id, key)
    if task is None:
        raise NotFoundError("Task not found.")
    return task


def get_task(session: Session, context: ProjectContext, key: str) -> TaskRead:
    """One task by key."""
    return _read(_get(session, context, key))


def update_task(session: Session, context: ProjectContext, key: str, body: TaskUpdate) -> TaskRead:
    """Change the given fields of a task; a new key must be free. The index never changes."""
    task = _get(session, context, key)
    changes = body.model_dump(mode="json", exclude_unset=True)
    for field in [name for name, value in changes.items() if value is None]:
        issue = FieldIssue(field, "May not be null")
        raise InvalidInputError(f"{field} may not be null.", errors=[issue])
    new_key = changes.get("key")
    key_taken = new_key not in (None, task.key) and (
        task_repo.get_task_by_key(session, context.id, new_key) is not None
    )
    if key_taken:
        raise ConflictError(f"A task with key {new_key!r} already exists.")
    if "metadata" in changes:
        task.meta = changes.pop("metadata")
    for name, value in changes.items():
        setattr(task, name, value)
    session.flush()
    return _read(task)
