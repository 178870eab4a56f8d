"""Stage report request and response models (``PUT .../runs/{run}/reports/{stage}``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field, JsonValue

from ordo_server.app.schemas.common import MAX_BATCH, InputModel, OutputModel
from ordo_server.app.schemas.task import TaskKey

# Reported values are scores; anything beyond this is a unit mistake, and it keeps sums of
# squares far from overflow.
MAX_ABS_VALUE = 1e12
MAX_COUNTER = 2**62

Value = Annotated[float, Field(ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]


class EvaluationCreate(InputModel):
    """One task's evaluation after the stage: the raw value in the task's own units."""

    task: TaskKey
    value: Value
    stderr: float | None = Field(default=None, ge=0, le=MAX_ABS_VALUE)
    entropy: float | None = Field(
        default=None, ge=0, le=MAX_ABS_VALUE, description="Mean policy entropy on this task."
    )


class ReportCreate(InputModel):
    """Evaluations after stage ``k`` (``k = 0``: the baseline, before any training)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "evaluations": [
                        {"task": "math", "value": 0.61, "stderr": 0.01, "entropy": 0.42},
                        {"task": "code", "value": 0.38, "entropy": 0.40},
                        {"task": "poetry", "value": 0.52, "entropy": 0.95},
                    ],
                    "steps": 2000,
                    "tokens": 120000000,
                    "wall_time_s": 5400.0,
                }
            ]
        }
    )

    evaluations: list[EvaluationCreate] = Field(min_length=1, max_length=MAX_BATCH)
    steps: int | None = Field(default=None, ge=0, le=MAX_COUNTER)
    tokens: int | None = Field(default=None, ge=0, le=MAX_COUNTER)
    wall_time_s: float | None = Field(default=None, ge=0, le=MAX_ABS_VALUE)


class EvaluationRead(OutputModel):
    """A stored evaluation; ``utility`` = sign * value / scale (higher is better)."""

    task: str
    value: float
    utility: float
    stderr: float | None
    entropy: float | None


class ReportRead(OutputModel):
    """A stored stage report."""

    stage: int
    task: str | None = Field(description="The task trained in this stage (null for stage 0).")
    late: bool = Field(description="Arrived after the run had turned stale.")
    steps: int | None
    tokens: int | None
    wall_time_s: float | None
    evaluations: list[EvaluationRead]
    created_at: datetime


class StageAssignment(OutputModel):
    """The stage to report next and the task to train in it (``done``: none left)."""

    done: bool
    stage: int | None
    task: str | None


REPORT_READ_EXAMPLE: dict[str, JsonValue] = {
    "stage": 1,
    "task": "poetry",
    "late": False,
    "steps": 2000,
    "tokens": 120000000,
    "wall_time_s": 5400.0,
    "evaluations": [
        {"task": "math", "value": 0.4, "utility": 0.4, "stderr": 0.01, "entropy": 0.66},
        {"task": "code", "value": 0.33, "utility": 0.33, "stderr": 0.01, "entropy": 0.61},
        {"task": "poetry", "value": 0.61, "utility": 0.61, "stderr": 0.01, "entropy": 1.02},
    ],
    "created_at": "2026-11-27T11:07:00Z",
}

_REPORT_ACCEPTED_EXAMPLE: dict[str, JsonValue] = {
    "run_id": "82862022-93c8-4f8e-b395-a8af086e791b",
    "report": REPORT_READ_EXAMPLE,
    "observations": 4,
    "estimates_version": 5,
    "schedule_id": "dd6dbc9e-6d8b-4e3a-9284-2117b140c1c8",
    "replanned": False,
    "plan_pending": True,
    "next": {"done": False, "stage": 2, "task": "code"},
}


class ReportAccepted(OutputModel):
    """The answer to a report; sending the same body again returns it unchanged."""

    model_config = ConfigDict(json_schema_extra={"examples": [_REPORT_ACCEPTED_EXAMPLE]})

    run_id: str
    report: ReportRead
    observations: int = Field(description="Raw effect observations this report added.")
    estimates_version: int = Field(description="The project's estimates version after it.")
    schedule_id: str | None = Field(
        description="The run's current plan when the report was stored."
    )
    replanned: bool = Field(
        description=(
            "Deprecated, always false: re-plans are jobs now. `plan_pending` says whether one "
            "is on its way; `GET .../next` waits for it."
        ),
        json_schema_extra={"deprecated": True},
    )
    plan_pending: bool = Field(
        default=False,
        description=(
            "A re-plan of the run was queued (or is running): `next` is the current plan's "
            "stage and may change; ask `GET .../next`, which waits for the new plan."
        ),
    )
    next: StageAssignment
