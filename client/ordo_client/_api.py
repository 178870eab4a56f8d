"""Builders of the ``Call`` of each endpoint (paths as in the server's ``openapi.json``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ordo_client._calls import (
    Call,
    dump,
    dump_all,
    list_parser,
    model_parser,
    no_content,
    params,
    segment,
    text_parser,
)
from ordo_client.models import (
    ApiKey,
    ApiKeyCreated,
    EffectName,
    Estimates,
    Health,
    PriorEntry,
    PriorMatrix,
    PriorsImported,
    Project,
    ProjectSettings,
    Readiness,
    Task,
    TaskSpec,
)

TaskInput = TaskSpec | Mapping[str, Any]
PriorInput = PriorEntry | Mapping[str, Any]


def project_path(project: str, *rest: str) -> str:
    """``/v1/projects/{project}/...`` with every segment encoded."""
    return "/".join(["/v1/projects", segment(project), *(segment(part) for part in rest)])


# --- health ---


def health() -> Call[Health]:
    return Call("GET", "/healthz", model_parser(Health), retry_safe=True)


def ready() -> Call[Readiness]:
    return Call("GET", "/readyz", model_parser(Readiness), retry_safe=True)


# --- projects and keys ---


def create_project(
    name: str, *, description: str, settings: ProjectSettings | Mapping[str, Any] | None
) -> Call[Project]:
    body: dict[str, Any] = {"name": name, "description": description}
    if settings is not None:
        body["settings"] = dump(settings)
    return Call("POST", "/v1/projects", model_parser(Project), json=body)


def list_projects(*, limit: int, offset: int) -> Call[list[Project]]:
    return Call(
        "GET",
        "/v1/projects",
        list_parser(Project),
        params=params(limit=limit, offset=offset),
        retry_safe=True,
    )


def get_project(project: str) -> Call[Project]:
    return Call("GET", project_path(project), model_parser(Project), retry_safe=True)


def create_api_key(
    project: str, *, name: str, role: str, expires_at: datetime | None
) -> Call[ApiKeyCreated]:
    body: dict[str, Any] = {"name": name, "role": role}
    if expires_at is not None:
        body["expires_at"] = expires_at.isoformat()
    return Call("POST", project_path(project, "keys"), model_parser(ApiKeyCreated), json=body)


def list_api_keys(project: str) -> Call[list[ApiKey]]:
    return Call("GET", project_path(project, "keys"), list_parser(ApiKey), retry_safe=True)


def revoke_api_key(project: str, key_id: str) -> Call[None]:
    # Revoking twice leaves the same state, but the second answer differs: not retried.
    return Call("DELETE", project_path(project, "keys", key_id), no_content)


# --- tasks ---


def create_tasks(project: str, tasks: Sequence[TaskInput]) -> Call[list[Task]]:
    body = {"tasks": dump_all(tasks)}
    return Call("POST", project_path(project, "tasks"), list_parser(Task), json=body)


def list_tasks(project: str) -> Call[list[Task]]:
    return Call("GET", project_path(project, "tasks"), list_parser(Task), retry_safe=True)


def get_task(project: str, key: str) -> Call[Task]:
    return Call("GET", project_path(project, "tasks", key), model_parser(Task), retry_safe=True)


def update_task(project: str, key: str, changes: Mapping[str, Any]) -> Call[Task]:
    # Not retried: a repeat of a PATCH that renamed the task would look for the old key.
    return Call(
        "PATCH", project_path(project, "tasks", key), model_parser(Task), json=dict(changes)
    )


# --- priors and estimates ---


def import_priors(project: str, priors: Sequence[PriorInput]) -> Call[PriorsImported]:
    return Call(
        "POST", project_path(project, "priors"), model_parser(PriorsImported), json=dump_all(priors)
    )


def import_prior_matrix(
    project: str,
    *,
    effect: EffectName,
    tasks: Sequence[str],
    mean: Sequence[Sequence[float | None]] | Sequence[float | None],
    std: float | Sequence[Sequence[float | None]] | Sequence[float | None],
) -> Call[PriorsImported]:
    matrix = PriorMatrix(effect=effect, tasks=list(tasks), mean=list(mean), std=std)
    return Call(
        "POST",
        project_path(project, "priors"),
        model_parser(PriorsImported),
        json=matrix.model_dump(mode="json"),
    )


def get_estimates(project: str) -> Call[Estimates]:
    return Call("GET", project_path(project, "estimates"), model_parser(Estimates), retry_safe=True)


def get_estimates_csv(project: str) -> Call[str]:
    return Call(
        "GET",
        project_path(project, "estimates"),
        text_parser,
        params={"format": "csv"},
        retry_safe=True,
    )
