"""Project request and response models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field, JsonValue, StringConstraints

from ordo_server.app.schemas.common import MAX_BATCH, InputModel, OutputModel
from ordo_server.app.schemas.estimate import MAX_ABS_EFFECT, MIN_STD
from ordo_server.app.schemas.schedule import MAX_CONSTRAINTS, MAX_TIME_LIMIT_S

ProjectName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][\w.\- ]*$")
]


DEFAULT_MAX_TIME_LIMIT_S = 60.0
DEFAULT_MAX_CONSTRAINTS = 100
DEFAULT_MAX_TASKS = 100


class ProjectSettings(InputModel):
    """Defaults of a project's estimation and planning, and what one solve may ask (policy).

    The policy bounds every schedule request, `POST .../schedules` and the `schedule` of
    `POST .../runs` alike (also a run's re-plans); a request past a bound is a 422 naming the
    field and the bound. Only a project admin changes it (`PATCH /v1/projects/{project_id}`).
    """

    default_prior_std: float = Field(
        default=0.1,
        ge=MIN_STD,
        le=MAX_ABS_EFFECT,
        description="Prior std of an effect nobody imported (utility).",
    )
    default_noise_std: float = Field(
        default=0.05,
        ge=MIN_STD,
        le=MAX_ABS_EFFECT,
        description="Observation noise std per evaluation (utility).",
    )
    rho: float = Field(default=0.0, ge=0, le=1, description="Forward-transfer retention.")
    max_time_limit_s: float = Field(
        default=DEFAULT_MAX_TIME_LIMIT_S,
        gt=0,
        le=MAX_TIME_LIMIT_S,
        description="Policy: the longest solver time limit a schedule request may ask "
        "(seconds); also the default time limit. The server's own cap "
        "(`ORDO_SOLVER_TIME_LIMIT_S`) applies as well, the lower one wins.",
    )
    max_constraints: int = Field(
        default=DEFAULT_MAX_CONSTRAINTS,
        ge=0,
        le=MAX_CONSTRAINTS,
        description="Policy: the most constraints one schedule request may carry.",
    )
    max_tasks: int = Field(
        default=DEFAULT_MAX_TASKS,
        ge=1,
        le=MAX_BATCH,
        description="Policy: the most tasks one schedule may order (its `tasks`, or every task "
        "of the project when it names none).",
    )


class ProjectCreate(InputModel):
    """A new project."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "omni-thinker",
                    "description": "RL post-training curriculum over math, code and writing",
                    "settings": {"default_prior_std": 0.1, "default_noise_std": 0.05, "rho": 0.0},
                }
            ]
        }
    )

    name: ProjectName
    description: str = Field(default="", max_length=2000)
    settings: ProjectSettings = Field(default_factory=ProjectSettings)


class ProjectUpdate(InputModel):
    """Changes to a project: fields left out keep their values, settings field by field."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"settings": {"max_time_limit_s": 10.0, "max_tasks": 40}}]}
    )

    description: str | None = Field(default=None, max_length=2000)
    settings: ProjectSettings | None = Field(
        default=None,
        description="The settings to change; the ones not named keep their current values.",
    )


_PROJECT_READ_EXAMPLE: dict[str, JsonValue] = {
    "id": "a3006654-d0ce-4350-813d-fb6f1df6f66d",
    "name": "llm-posttrain",
    "description": "RL post-training curriculum: math, code, poetry",
    "created_at": "2026-11-27T09:00:00Z",
    "estimates_version": 4,
    "settings": {
        "default_prior_std": 0.1,
        "default_noise_std": 0.05,
        "rho": 0.0,
        "max_time_limit_s": 60.0,
        "max_constraints": 100,
        "max_tasks": 100,
    },
}


class ProjectRead(OutputModel):
    """A project as the API shows it."""

    model_config = ConfigDict(json_schema_extra={"examples": [_PROJECT_READ_EXAMPLE]})

    id: str
    name: str
    description: str
    created_at: datetime
    estimates_version: int
    settings: ProjectSettings
