"""Schedule request and response models: solve over the current estimates, read the history.

Constraints name tasks by key and positions by 1-based stage; the service converts them to the
solver's 0-based index types.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, JsonValue, Tag

from ordo_server.app.errors import ErrorCode, FieldError
from ordo_server.app.schemas.common import MAX_BATCH, InputModel, OutputModel
from ordo_server.app.schemas.task import TaskKey, TaskKind

MAX_CONSTRAINTS = 1000
# A schema-level ceiling; the server's own cap (settings.solver_time_limit_s) is usually lower.
MAX_TIME_LIMIT_S = 3600.0
MAX_SEED = 2**31 - 1
MAX_KAPPA = 1e6
STAGE_DESCRIPTION = "1-based stage: 1 is the first stage trained."

Stage = Annotated[int, Field(ge=1, le=MAX_BATCH, description=STAGE_DESCRIPTION)]


class ScheduleObjective(StrEnum):
    """What a schedule maximizes (docs/design.md §4).

    ``thompson`` solves ``expected`` on one posterior sample drawn with the request's seed.
    """

    EXPECTED = "expected"
    MAXIMIN = "maximin"
    MEAN_VARIANCE = "mean_variance"
    THOMPSON = "thompson"


# --- constraints -------------------------------------------------------------------------------


class PrecedenceSpec(InputModel):
    """Task ``before`` is trained at some stage before task ``after``."""

    type: Literal["precedence"]
    before: TaskKey
    after: TaskKey


def _position_tag(value: Any) -> str:
    return "<name>" if isinstance(value, str) else "<stage>"


# Tagged so that a bad position is one error at ``position``, not one per union member.
Position = Annotated[
    Annotated[Literal["first", "last"], Tag("<name>")] | Annotated[Stage, Tag("<stage>")],
    Discriminator(_position_tag),
]


class PinnedSpec(InputModel):
    """Task ``task`` is trained at ``position``: ``first``, ``last`` or a 1-based stage."""

    type: Literal["pinned"]
    task: TaskKey
    position: Position


class WindowSpec(InputModel):
    """Task ``task`` is trained at a stage in ``[earliest, latest]`` (1-based, inclusive)."""

    type: Literal["window"]
    task: TaskKey
    earliest: Stage
    latest: Stage


class ForbiddenAdjacencySpec(InputModel):
    """Task ``second`` is never trained right after task ``first``."""

    type: Literal["forbidden_adjacency"]
    first: TaskKey
    second: TaskKey


class RequiredAdjacencySpec(InputModel):
    """Task ``second`` is trained right after task ``first``."""

    type: Literal["required_adjacency"]
    first: TaskKey
    second: TaskKey


class KindOrderSpec(InputModel):
    """Every scheduled task declared ``earlier`` is trained before every one declared ``later``."""

    type: Literal["kind_order"]
    earlier: TaskKind
    later: TaskKind


class ContiguousSpec(InputModel):
    """The tasks are trained in consecutive stages, in any order among themselves."""

    type: Literal["contiguous"]
    tasks: list[TaskKey] = Field(min_length=2, max_length=MAX_BATCH)


def _constraint_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"<{kind}>"


# Tagged as ``<type>`` so that an error's path reads ``constraints[2].before`` (the tag, which
# the client did not write, is dropped from error locations).
ConstraintSpec = Annotated[
    Annotated[PrecedenceSpec, Tag("<precedence>")]
    | Annotated[PinnedSpec, Tag("<pinned>")]
    | Annotated[WindowSpec, Tag("<window>")]
    | Annotated[ForbiddenAdjacencySpec, Tag("<forbidden_adjacency>")]
    | Annotated[RequiredAdjacencySpec, Tag("<required_adjacency>")]
    | Annotated[KindOrderSpec, Tag("<kind_order>")]
    | Annotated[ContiguousSpec, Tag("<contiguous>")],
    Discriminator(
        _constraint_tag,
        custom_error_type="constraint_type",
        custom_error_message="`type` should be one of precedence, pinned, window, "
        "forbidden_adjacency, required_adjacency, kind_order, contiguous",
    ),
]


# --- solve request -----------------------------------------------------------------------------

_SCHEDULE_EXAMPLE: dict[str, JsonValue] = {
    "objective": "expected",
    "rho": 0.0,
    "constraints": [
        {"type": "precedence", "before": "math", "after": "poetry"},
        {"type": "pinned", "task": "code", "position": 2},
        {"type": "kind_order", "earlier": "structured", "later": "open_ended"},
    ],
    "time_limit_s": 5.0,
    "seed": 7,
    "label": "nightly plan",
}


class ScheduleModel(StrEnum):
    """The outcome model a schedule is planned on."""

    ENSEMBLE = "ensemble"
    PAIRWISE = "pairwise"


class ScheduleCreate(InputModel):
    """What to solve: objective, retention, constraints by task key, limits and seed."""

    model_config = ConfigDict(json_schema_extra={"examples": [_SCHEDULE_EXAMPLE]})

    objective: ScheduleObjective = ScheduleObjective.EXPECTED
    model: ScheduleModel = Field(
        default=ScheduleModel.ENSEMBLE,
        description="`ensemble` (default): the posterior over orders' outcomes fitted to every "
        "run of the project, several outcome models weighted by how well they predict held-out "
        "runs, anchored on the orders already observed (objectives `expected`, the "
        "recommendation, and `thompson`, one posterior draw; every task of the project, at most "
        "40). `pairwise`: the stored pairwise estimates (docs/design.md §2), which "
        "`mean_variance`, `rho`, task subsets and larger projects always use.",
    )
    rho: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Forward-transfer retention; defaults to the project's setting.",
    )
    kappa: float = Field(
        default=0.0,
        ge=0,
        le=MAX_KAPPA,
        description="Risk aversion of `mean_variance`, per unit of variance (utility^2).",
    )
    constraints: list[ConstraintSpec] = Field(default_factory=list, max_length=MAX_CONSTRAINTS)
    tasks: list[TaskKey] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_BATCH,
        description="Keys of the tasks to schedule; default every task of the project.",
    )
    time_limit_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TIME_LIMIT_S,
        description="Solver time limit (seconds); default and cap: the lower of the server's "
        "setting and the project's `settings.max_time_limit_s`.",
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Solver and sampling seed.")
    label: str = Field(default="", max_length=200, description="Free text shown in the history.")


# --- responses ---------------------------------------------------------------------------------


class TaskPrediction(OutputModel):
    """Predicted final utility of one task: posterior mean, std and a 95 % interval."""

    task: str
    mean: float
    std: float
    lower: float = Field(description="Mean minus 1.96 std.")
    upper: float = Field(description="Mean plus 1.96 std.")


class ObjectivePrediction(OutputModel):
    """Predicted objective (weighted sum of final utilities): mean and std."""

    mean: float
    std: float


class SchedulePrediction(OutputModel):
    """Predicted final utilities of the schedule's order, under the posterior mean model."""

    tasks: list[TaskPrediction] = Field(description="In the schedule's order.")
    objective: ObjectivePrediction


_SCHEDULE_READ_EXAMPLE: dict[str, JsonValue] = {
    "id": "c95483f8-110b-4e88-879c-381c6aa88782",
    "version": 1,
    "parent_id": None,
    "run_id": None,
    "estimates_version": 4,
    "label": "",
    "request": {
        "objective": "expected",
        "model": "ensemble",
        "rho": 0.0,
        "kappa": 0.0,
        "constraints": [],
        "tasks": None,
        "time_limit_s": 5.0,
        "seed": 0,
        "label": "",
        "prefix": [],
    },
    "order": ["math", "code", "poetry"],
    "objective": 1.51,
    "bound": 1.51,
    "gap": 0.0,
    "status": "optimal",
    "method": "exact",
    "wall_time_s": 0.0067,
    "predicted": {
        "tasks": [
            {"task": "math", "mean": 0.61, "std": 0.05, "lower": 0.512, "upper": 0.708},
            {"task": "code", "mean": 0.4, "std": 0.06, "lower": 0.2824, "upper": 0.5176},
            {"task": "poetry", "mean": 0.5, "std": 0.04, "lower": 0.4216, "upper": 0.5784},
        ],
        "objective": {"mean": 1.51, "std": 0.09},
    },
    "created_at": "2026-11-27T09:20:00Z",
}


class ScheduleRead(OutputModel):
    """One immutable schedule: the order, the solver's figures and the predictions."""

    model_config = ConfigDict(json_schema_extra={"examples": [_SCHEDULE_READ_EXAMPLE]})

    id: str
    version: int = Field(description="Per-project sequence: 1, 2, 3... in creation order.")
    parent_id: str | None = Field(description="The schedule this one re-plans, if any.")
    run_id: str | None = Field(description="The run that asked for it, if any.")
    estimates_version: int = Field(description="Version of the estimates the solve used.")
    label: str
    request: dict[str, Any] = Field(
        description="The request as solved, defaults filled in (`prefix`: the fixed trained "
        "prefix of a re-plan)."
    )
    order: list[str] = Field(description="Task keys; stage k (1-based) trains `order[k-1]`.")
    objective: float = Field(
        description="Objective value of `order` (for `thompson`: on the sampled model)."
    )
    bound: float | None = Field(description="Proven upper bound on the optimum.")
    gap: float | None = Field(description="`(bound - objective) / max(1, |bound|)`.")
    status: Literal["optimal", "feasible"]
    method: str = Field(description="Which solver path produced the order.")
    wall_time_s: float
    predicted: SchedulePrediction
    created_at: datetime


_SCHEDULE_LIST_EXAMPLE: dict[str, JsonValue] = {
    "items": [_SCHEDULE_READ_EXAMPLE],
    "next_page_token": None,
}


class ScheduleList(OutputModel):
    """One page of the history, newest first."""

    model_config = ConfigDict(json_schema_extra={"examples": [_SCHEDULE_LIST_EXAMPLE]})

    items: list[ScheduleRead]
    next_page_token: str | None = Field(description="Pass as `page_token` for the next page.")


class ScheduleJobStatus(StrEnum):
    """Where a schedule job stands."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobProblem(OutputModel):
    """Why a schedule job failed: the problem `POST .../schedules` would have answered."""

    status: int = Field(description="The HTTP status the solve's error maps to (422, 503...).")
    code: ErrorCode
    detail: str
    errors: list[FieldError] | None = Field(
        default=None, description="Each offending field and why."
    )


_SCHEDULE_JOB_EXAMPLE: dict[str, JsonValue] = {
    "id": "42",
    "status": "succeeded",
    "attempts": 1,
    "created_at": "2026-11-27T09:20:00Z",
    "started_at": "2026-11-27T09:20:01Z",
    "finished_at": "2026-11-27T09:20:41Z",
    "schedule_id": "c95483f8-110b-4e88-879c-381c6aa88782",
    "problem": None,
}


class ScheduleJobRead(OutputModel):
    """A schedule solve running off the request path (`POST .../schedules` answered 202)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_SCHEDULE_JOB_EXAMPLE]})

    id: str
    status: ScheduleJobStatus
    attempts: int = Field(description="Workers that took the job (more than 1 after a crash).")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    schedule_id: str | None = Field(
        description="The schedule stored, once `succeeded` (`GET .../schedules/{schedule_id}`)."
    )
    problem: JobProblem | None = Field(description="Why it failed, once `failed`.")
