"""Project request and response models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

from app.schemas.common import InputModel, OutputModel

ProjectName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][\w.\- ]*$")
]


class ProjectSettings(InputModel):
    """Defaults of a project's estimation and planning."""

    default_prior_std: float = Field(
        default=0.1, gt=0, le=1e6, description="Prior std of an effect nobody imported (utility)."
    )
    default_noise_std: float = Field(
        default=0.05, gt=0, le=1e6, description="Observation noise std per evaluation (utility)."
    )
    rho: float = Field(default=0.0, ge=0, le=1, description="Forward-transfer retention.")


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


class ProjectRead(OutputModel):
    """A project as the API shows it."""

    id: str
    name: str
    description: str
    created_at: datetime
    estimates_version: int
    settings: ProjectSettings
