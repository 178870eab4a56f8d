"""Run request and response models: start a run, follow its stages, keep its lease."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, JsonValue, StringConstraints, model_validator

from ordo_server.app.schemas.common import InputModel, OutputModel
from ordo_server.app.schemas.report import REPORT_READ_EXAMPLE, ReportRead
from ordo_server.app.schemas.schedule import ScheduleCreate

ClientId = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][\w.:\-]*$")
]


class RunStrategy(StrEnum):
    """How a run's plans are solved.

    ``exploit`` solves the request's objective on the posterior means; ``thompson`` solves on
    one posterior sample per plan, seeded by (run, stage); ``mean_variance`` penalizes the
    variance of the plan (risk-averse, ``kappa`` of the request).
    """

    EXPLOIT = "exploit"
    THOMPSON = "thompson"
    MEAN_VARIANCE = "mean_variance"


class LevelModel(StrEnum):
    """The outcome model a run's plans are solved on (``solver.planning``, ``solver.learning``)."""

    CONSTANT = "constant"
    ENTROPY = "entropy"
    STATE = "state"
    RUN_MODEL = "run_model"


class RunStatus(StrEnum):
    """``active`` while the lease is kept; ``stale`` once silent past the grace period."""

    ACTIVE = "active"
    STALE = "stale"
    COMPLETED = "completed"
    FAILED = "failed"


class RunCreate(InputModel):
    """Start a run from a stored schedule (``schedule_id``) or by solving now (``schedule``).

    With neither, the run solves with the default options. The same ``client_id`` again returns
    the run it created (200 instead of 201), so creation can be retried safely.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "schedule": {"objective": "expected", "time_limit_s": 5.0},
                    "adaptive": True,
                    "strategy": "thompson",
                    "client_id": "job-2026-11-27-a",
                }
            ]
        }
    )

    schedule_id: str | None = Field(default=None, max_length=64)
    schedule: ScheduleCreate | None = Field(
        default=None, description="Solve options, as for `POST .../schedules`."
    )
    adaptive: bool = Field(
        default=False, description="Re-plan the remaining stages after each report."
    )
    strategy: RunStrategy | None = Field(
        default=None,
        description="How the plans choose: `exploit` follows the recommendation (the best run "
        "so far unless another order beats it with posterior probability 0.9), `thompson` "
        "exploration by value (under `run_model`: the order of "
        "highest expected improvement over the best order observed, one posterior draw before "
        "any run has completed; under the other level models one posterior draw per run), "
        "`mean_variance` trades mean for variance (`kappa`). Default: `thompson` for adaptive "
        "runs, `exploit` otherwise.",
    )
    level_model: LevelModel | None = Field(
        default=None,
        description="Outcome model of the plans: `run_model` (default for `exploit` and "
        "`thompson`): the ensemble fitted to every evaluation of every run of the project "
        "(`POST .../schedules` with `model: ensemble`); `constant` (pairwise, docs/design.md §5), "
        "`entropy` (levels depend on the policy entropy the earlier stages leave; uses the "
        "project's `rho`) or `state` (also on the uplift earlier stages gave the task): the "
        "stored pairwise estimates (default for `mean_variance`).",
    )
    client_id: ClientId | None = Field(
        default=None, description="The caller's id for this run: makes creation idempotent."
    )

    @model_validator(mode="after")
    def _one_source(self) -> RunCreate:
        if self.schedule_id is not None and self.schedule is not None:
            raise ValueError("Give `schedule_id` or `schedule`, not both")
        return self

    @model_validator(mode="after")
    def _run_model_strategies(self) -> RunCreate:
        if self.level_model is LevelModel.RUN_MODEL and self.strategy is RunStrategy.MEAN_VARIANCE:
            raise ValueError("`run_model` plans with strategy `exploit` or `thompson`")
        return self

    def resolved_strategy(self) -> RunStrategy:
        """The strategy asked for, or the default of this kind of run."""
        if self.strategy is not None:
            return self.strategy
        return RunStrategy.THOMPSON if self.adaptive else RunStrategy.EXPLOIT

    def resolved_level_model(self) -> LevelModel:
        """The level model asked for, or the default of this kind of run."""
        if self.level_model is not None:
            return self.level_model
        if self.resolved_strategy() is RunStrategy.MEAN_VARIANCE:
            return LevelModel.CONSTANT
        return LevelModel.RUN_MODEL


_LEASE_EXAMPLE: dict[str, JsonValue] = {
    "token": 1,
    "expires_at": "2026-11-27T09:42:00Z",
    "heartbeat_interval_s": 60.0,
}


class Lease(OutputModel):
    """The run's lease: heartbeat before ``expires_at`` (DB clock) or the run turns stale.

    ``token`` is the fencing token: every write on the run (report, heartbeat, complete, fail)
    sends it in the ``Ordo-Lease-Token`` header. It grows whenever a new holder claims the run
    (``client_id`` again after it went stale); the old holder's writes are then refused with
    409 ``lease_lost``.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [_LEASE_EXAMPLE]})

    token: int
    expires_at: datetime | None
    heartbeat_interval_s: float = Field(description="Advised heartbeat period (seconds).")


class StageRead(OutputModel):
    """One training stage of the run's current plan (1-based)."""

    index: int
    task: str
    status: Literal["reported", "next", "planned"]


class ScheduleVersion(OutputModel):
    """A schedule the run followed: its first plan and every re-plan."""

    id: str
    version: int
    parent_id: str | None
    created_at: datetime


_NEXT_STAGE_EXAMPLE: dict[str, JsonValue] = {
    "done": False,
    "stage": 2,
    "task": "code",
    "status": "active",
    "lease": {"token": 1, "expires_at": "2026-11-27T09:42:00Z", "heartbeat_interval_s": 60.0},
    "plan_pending": False,
}


class NextStage(OutputModel):
    """What the trainer does now: evaluate (stage 0, the baseline), train a task, or stop."""

    model_config = ConfigDict(json_schema_extra={"examples": [_NEXT_STAGE_EXAMPLE]})

    done: bool = Field(description="No stage left: the run is finished or fully reported.")
    stage: int | None = Field(description="The stage to report next (0: baseline).")
    task: str | None = Field(description="The task to train in this stage (null for stage 0).")
    status: RunStatus
    lease: Lease | None = None
    plan_pending: bool = Field(
        default=False,
        description=(
            "A plan of the run is still being made (the server waited `plan_wait_s` for it): "
            "`stage`/`task` come from the current plan; with no plan yet past the baseline, "
            "`stage` is null: ask again."
        ),
    )


class RunSummary(OutputModel):
    """A run as listed."""

    id: str
    client_id: str | None
    status: RunStatus
    adaptive: bool
    strategy: RunStrategy
    level_model: LevelModel
    schedule_id: str | None = Field(description="The current plan.")
    next_stage: int = Field(description="The stage to report next (0: baseline).")
    stage_count: int
    created_at: datetime
    finished_at: datetime | None
    fail_reason: str | None


_RUN_READ_EXAMPLE: dict[str, JsonValue] = {
    "id": "82862022-93c8-4f8e-b395-a8af086e791b",
    "client_id": "job-2026-11-27-a",
    "status": "active",
    "adaptive": True,
    "strategy": "thompson",
    "level_model": "run_model",
    "schedule_id": "b5338263-fb8b-4f23-b95e-519c51717fe6",
    "next_stage": 2,
    "stage_count": 3,
    "created_at": "2026-11-27T09:30:00Z",
    "finished_at": None,
    "fail_reason": None,
    "stages": [
        {"index": 1, "task": "poetry", "status": "reported"},
        {"index": 2, "task": "code", "status": "next"},
        {"index": 3, "task": "math", "status": "planned"},
    ],
    "schedules": [
        {
            "id": "dd6dbc9e-6d8b-4e3a-9284-2117b140c1c8",
            "version": 2,
            "parent_id": None,
            "created_at": "2026-11-27T09:30:00Z",
        },
        {
            "id": "b5338263-fb8b-4f23-b95e-519c51717fe6",
            "version": 3,
            "parent_id": "dd6dbc9e-6d8b-4e3a-9284-2117b140c1c8",
            "created_at": "2026-11-27T11:07:01Z",
        },
    ],
    "reports": [
        {
            "stage": 0,
            "task": None,
            "late": False,
            "steps": 0,
            "tokens": 0,
            "wall_time_s": 310.0,
            "evaluations": [
                {"task": "math", "value": 0.41, "utility": 0.41, "stderr": 0.01, "entropy": 0.61},
                {"task": "code", "value": 0.33, "utility": 0.33, "stderr": 0.01, "entropy": 0.58},
                {"task": "poetry", "value": 0.52, "utility": 0.52, "stderr": 0.01, "entropy": 0.93},
            ],
            "created_at": "2026-11-27T09:35:00Z",
        },
        REPORT_READ_EXAMPLE,
    ],
    "lease": {"token": 1, "expires_at": "2026-11-27T09:42:00Z", "heartbeat_interval_s": 60.0},
    "plan_pending": False,
}


class RunRead(RunSummary):
    """One run: its stages, the schedule versions it followed, its reports and lease."""

    model_config = ConfigDict(json_schema_extra={"examples": [_RUN_READ_EXAMPLE]})

    stages: list[StageRead]
    schedules: list[ScheduleVersion] = Field(description="Oldest first; the last is current.")
    reports: list[ReportRead]
    lease: Lease
    plan_pending: bool = Field(
        default=False,
        description="A plan of the run is being made; `stages` show the current one (if any).",
    )


_RUN_LIST_EXAMPLE: dict[str, JsonValue] = {
    "items": [{field: _RUN_READ_EXAMPLE[field] for field in RunSummary.model_fields}],
    "next_page_token": None,
}


class RunList(OutputModel):
    """One page of runs, newest first."""

    model_config = ConfigDict(json_schema_extra={"examples": [_RUN_LIST_EXAMPLE]})

    items: list[RunSummary]
    next_page_token: str | None = Field(description="Pass as `page_token` for the next page.")


class HeartbeatCreate(InputModel):
    """A heartbeat's optional body: the lease token, read when no ``Ordo-Lease-Token`` is sent.

    The header is the contract; a body token that differs from the header is a 422.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{"lease_token": 1}]})

    lease_token: int | None = Field(
        default=None,
        ge=0,
        le=2**63 - 1,
        description="The holder's lease token (the older way; send the header instead).",
    )


class RunFail(InputModel):
    """Why the run failed."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "CUDA OOM at stage 3"}]})

    reason: str = Field(min_length=1, max_length=2000)
