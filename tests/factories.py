"""Plain typed factories for test data, written through the ORM on a given session."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from ordo_server.app.repositories import keys as key_repo
from ordo_server.app.repositories import schedules as schedule_repo
from ordo_server.app.repositories.bulk import write_together
from ordo_server.app.schemas.project import ProjectSettings
from ordo_server.app.security import Role, generate_key
from ordo_server.app.services.schedules import SolvedSchedule, new_plans
from ordo_server.models import Project, Task
from ordo_server.models.base import utcnow

_names = itertools.count()


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


def create_project(
    session: Session, *, name: str | None = None, settings: ProjectSettings | None = None
) -> Project:
    """A project with a unique name."""
    project = Project(
        name=name or f"project-{next(_names)}-{secrets.token_hex(3)}",
        description="",
        settings=(settings or ProjectSettings()).model_dump(mode="json"),
        estimates_version=0,
    )
    session.add(project)
    session.flush()
    return project


def create_key(
    session: Session, project_id: str | None, *, role: Role = Role.ADMIN, revoked: bool = False
) -> str:
    """A key of the project (``None``: a global admin key); returns the full token."""
    issued = generate_key()
    key_repo.add_key(
        session,
        project_id=project_id,
        key_id=issued.key_id,
        secret_hash=issued.secret_hash,
        prefix=issued.prefix,
        role=role.value,
        name=f"{role.value} key",
        expires_at=None,
    )
    if revoked:
        key_repo.revoke_key(session, project_id or "", issued.key_id, utcnow())
    return issued.token


def create_tasks(
    session: Session, project_id: str, keys: Sequence[str], **columns: Any
) -> list[Task]:
    """Tasks with the given keys at indexes 0..n-1 (the project must have none yet)."""
    tasks = [
        Task(project_id=project_id, key=key, index=i, name=key, meta={}, **columns)
        for i, key in enumerate(keys)
    ]
    session.add_all(tasks)
    session.flush()
    return tasks


@dataclass(frozen=True, slots=True)
class ProjectKeys:
    """A project with an admin, a trainer and a revoked admin key (full tokens)."""

    id: str
    name: str
    admin_token: str
    trainer_token: str
    revoked_token: str
    task_keys: tuple[str, ...] = field(default=())

    @property
    def admin(self) -> dict[str, str]:
        """Headers authenticating as the project's admin."""
        return bearer(self.admin_token)

    @property
    def trainer(self) -> dict[str, str]:
        """Headers authenticating as the project's trainer."""
        return bearer(self.trainer_token)


def create_project_with_keys(
    session: Session, *, task_keys: Sequence[str] = (), name: str | None = None
) -> ProjectKeys:
    """A project, its three keys and optionally tasks; flushed on ``session``."""
    project = create_project(session, name=name)
    admin = create_key(session, project.id, role=Role.ADMIN)
    trainer = create_key(session, project.id, role=Role.TRAINER)
    revoked = create_key(session, project.id, role=Role.ADMIN, revoked=True)
    if task_keys:
        create_tasks(session, project.id, task_keys)
    return ProjectKeys(
        id=project.id,
        name=project.name,
        admin_token=admin,
        trainer_token=trainer,
        revoked_token=revoked,
        task_keys=tuple(task_keys),
    )


# A small additive world of four tasks (math, code, poetry, chat): what training the row task
# does to the column task's utility, and what it does to its own.
FOUR_TASK_EFFECT = np.array(
    [
        [0.00, 0.03, -0.04, -0.02],
        [0.02, 0.00, -0.05, -0.01],
        [-0.01, 0.00, 0.00, 0.03],
        [0.00, -0.02, 0.02, 0.00],
    ]
)
FOUR_TASK_GAIN = np.array([0.30, 0.25, 0.20, 0.15])


def four_task_utilities(trained: Sequence[int]) -> np.ndarray:
    """Every task's utility after training the tasks at ``trained`` (indices), in that order."""
    index = list(trained)
    utility: np.ndarray = 0.2 + FOUR_TASK_EFFECT[index].sum(axis=0)
    utility[index] += FOUR_TASK_GAIN[index]
    return utility


def store_plans(
    session: Session, project_id: str, plans: Sequence[tuple[SolvedSchedule, int]]
) -> list[str | None]:
    """Runs' plans stored now as a worker's plan store stores them (``schedules.new_plans``,
    then the rows' insert): each new schedule's id, ``None`` where its (run, stage) has one."""
    made = new_plans(session, project_id, plans, at=utcnow())
    write_together(session, [schedule_repo.schedule_insertion(made.rows)])
    return made.ids
