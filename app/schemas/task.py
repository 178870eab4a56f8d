"""Task request and response models."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, JsonValue, StringConstraints

from ordo_server.app.schemas.common import MAX_BATCH, InputModel, OutputModel

TaskKey = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][\w.\-]*$")
]


class TaskKind(StrEnum):
    """Domain of the task; drives the entropy dynamics (docs/design.md §1)."""

    STRUCTURED = "structured"
    OPEN_ENDED = "open_ended"
    OTHER = "other"


class RewardKind(StrEnum):
    """How the task is rewarded."""

    VERIFIABLE = "verifiable"
    PREFERENCE = "preference"
    OTHER = "other"


class Goal(StrEnum):
    """Whether higher or lower reported values are better."""

    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


Metadata = Annotated[dict[str, Any], Field(max_length=100)]
# A weight or a scale past these is a unit mistake; the bounds keep weighted utilities (reported
# values are at most 1e12) and their squares finite, so every prediction has a finite std.
MAX_WEIGHT = 1e6
MIN_SCALE = 1e-6
MAX_SCALE = 1e12
Scale = Annotated[float, Field(ge=MIN_SCALE, le=MAX_SCALE)]
Weight = Annotated[float, Field(ge=0, le=MAX_WEIGHT)]

_TASK_EXAMPLE: dict[str, JsonValue] = {
    "key": "math",
    "name": "Competition math",
    "kind": "structured",
    "reward": "verifiable",
    "goal": "maximize",
    "scale": 1.0,
    "weight": 1.0,
    "metadata": {"benchmark": "MATH-500"},
}


class TaskCreate(InputModel):
    """A task to add; its index is the next free one."""

    model_config = ConfigDict(json_schema_extra={"examples": [_TASK_EXAMPLE]})

    key: TaskKey
    name: str = Field(default="", max_length=200)
    kind: TaskKind = TaskKind.OTHER
    reward: RewardKind = RewardKind.OTHER
    goal: Goal = Goal.MAXIMIZE
    scale: Scale = Field(default=1.0, description="Reported values are divided by this.")
    weight: Weight = Field(default=1.0, description="Weight in the objective.")
    metadata: Metadata = Field(default_factory=dict)


class TaskBatchCreate(InputModel):
    """Tasks to add in one request (all or none)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"tasks": [_TASK_EXAMPLE]}]})

    tasks: list[TaskCreate] = Field(min_length=1, max_length=MAX_BATCH)


class TaskUpdate(InputModel):
    """Fields to change; omitted fields keep their value."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"weight": 2.0, "scale": 100.0}]})

    key: TaskKey | None = None
    name: str | None = Field(default=None, max_length=200)
    kind: TaskKind | None = None
    reward: RewardKind | None = None
    goal: Goal | None = None
    scale: Scale | None = None
    weight: Weight | None = None
    metadata: Metadata | None = None


_TASK_READ_EXAMPLE: dict[str, JsonValue] = {
    "key": "math",
    "index": 0,
    "name": "Competition math",
    "kind": "structured",
    "reward": "verifiable",
    "goal": "maximize",
    "scale": 1.0,
    "weight": 1.0,
    "metadata": {"benchmark": "MATH-500"},
    "created_at": "2026-11-27T09:10:00Z",
    "updated_at": "2026-11-27T09:10:00Z",
}


class TaskRead(OutputModel):
    """A task as the API shows it; ``index`` is its row/column in every matrix."""

    model_config = ConfigDict(json_schema_extra={"examples": [_TASK_READ_EXAMPLE]})

    key: str
    index: int
    name: str
    kind: TaskKind
    reward: RewardKind
    goal: Goal
    scale: float
    weight: float
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
