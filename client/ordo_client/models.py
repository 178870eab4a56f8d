"""The client's own models of the API's answers (it never imports the server).

Answers are parsed leniently: fields the server adds later are kept (``extra="allow"``), so an
older client keeps working against a newer server. Request inputs that have a shape of their own
(tasks, priors) have models here too; plain dicts are accepted wherever a model is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TaskKind = Literal["structured", "open_ended", "other"]
RewardKind = Literal["verifiable", "preference", "other"]
Goal = Literal["maximize", "minimize"]
EffectName = Literal["F", "B", "L", "G", "D"]
Role = Literal["admin", "trainer"]


class OrdoModel(BaseModel):
    """Base of every answer: unknown fields are kept, instances are read-only."""

    model_config = ConfigDict(extra="allow", frozen=True)


class InputSpec(BaseModel):
    """Base of request inputs: unknown fields are a mistake in the caller's code."""

    model_config = ConfigDict(extra="forbid")


# --- projects and keys -------------------------------------------------------------------------


class ProjectSettings(OrdoModel):
    """Defaults of a project's estimation and planning (utility units)."""

    default_prior_std: float = 0.1
    default_noise_std: float = 0.05
    rho: float = 0.0


class Project(OrdoModel):
    """A project: a set of tasks with its own estimates."""

    id: str
    name: str
    description: str = ""
    created_at: datetime
    estimates_version: int = 0
    settings: ProjectSettings = Field(default_factory=ProjectSettings)


class ApiKey(OrdoModel):
    """An API key as listed: its display prefix, never the secret."""

    key_id: str
    name: str = ""
    role: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKey):
    """A key just created: ``key`` is the full token, shown this once."""

    key: str


# --- tasks -------------------------------------------------------------------------------------


class TaskSpec(InputSpec):
    """A task to create; the server gives it the next free index."""

    key: str
    name: str = ""
    kind: TaskKind = "other"
    reward: RewardKind = "other"
    goal: Goal = "maximize"
    scale: float = 1.0
    weight: float = 1.0
    metadata: dict[str, Any] = Field(default_factory=dict)


class Task(OrdoModel):
    """A task; ``index`` is its row and column in every matrix."""

    key: str
    index: int
    name: str = ""
    kind: str = "other"
    reward: str = "other"
    goal: str = "maximize"
    scale: float = 1.0
    weight: float = 1.0
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


# --- priors and estimates ----------------------------------------------------------------------


class PriorEntry(InputSpec):
    """One prior in long form: ``src`` is omitted for the per-task effects L, G and D."""

    effect: EffectName
    src: str | None = None
    dst: str
    mean: float
    std: float


class PriorMatrix(InputSpec):
    """Priors in wide form: ``mean[i][j]`` is the effect of ``tasks[i]`` on ``tasks[j]``."""

    effect: EffectName
    tasks: list[str]
    mean: list[list[float | None]] | list[float | None]
    std: float | list[list[float | None]] | list[float | None]


class PriorsImported(OrdoModel):
    """How many cells the import wrote, and the estimates version after it."""

    imported: int
    estimates_version: int


class MatrixEstimate(OrdoModel):
    """Posterior of a pairwise effect: ``[i][j]`` is ``tasks[i]`` on ``tasks[j]``."""

    mean: list[list[float | None]]
    std: list[list[float | None]]
    count: list[list[int | None]]


class VectorEstimate(OrdoModel):
    """Posterior of a per-task effect, in task order."""

    mean: list[float]
    std: list[float]
    count: list[int]


class Estimates(OrdoModel):
    """Current posteriors of every effect; the diagonal of F and B is ``None``."""

    version: int
    tasks: list[str]
    F: MatrixEstimate
    B: MatrixEstimate
    L: VectorEstimate
    G: VectorEstimate
    D: VectorEstimate

    def pair(
        self, effect: Literal["F", "B"], src: str, dst: str
    ) -> tuple[float | None, float | None]:
        """Posterior mean and std of ``effect`` of training ``src`` on ``dst``."""
        matrix = self.F if effect == "F" else self.B
        i, j = self.tasks.index(src), self.tasks.index(dst)
        return matrix.mean[i][j], matrix.std[i][j]


# --- schedules and predictions ------------------------------------------------------------------

Objective = Literal["expected", "maximin", "mean_variance", "thompson"]
Strategy = Literal["exploit", "thompson", "mean_variance"]


class ScheduleRequest(InputSpec):
    """What to solve. Constraints are dicts as the API documents them, for example
    ``{"type": "precedence", "before": "math", "after": "poetry"}`` or
    ``{"type": "kind_order", "earlier": "structured", "later": "open_ended"}``.
    """

    objective: Objective = "expected"
    rho: float | None = None
    kappa: float = 0.0
    constraints: list[dict[str, Any]] = Field(default_factory=list)
    tasks: list[str] | None = None
    time_limit_s: float | None = None
    seed: int = 0
    label: str = ""


class TaskPrediction(OrdoModel):
    """Predicted final utility of one task: posterior mean, std and a 95 % interval."""

    task: str
    mean: float
    std: float
    lower: float
    upper: float


class ObjectivePrediction(OrdoModel):
    """Predicted objective (weighted sum of final utilities)."""

    mean: float
    std: float


class SchedulePrediction(OrdoModel):
    """Predicted final utilities of a schedule's order (tasks in stage order)."""

    tasks: list[TaskPrediction]
    objective: ObjectivePrediction


class Schedule(OrdoModel):
    """One immutable schedule: stage ``k`` (1-based) trains ``order[k-1]``."""

    id: str
    version: int
    parent_id: str | None = None
    run_id: str | None = None
    estimates_version: int
    label: str = ""
    request: dict[str, Any] = Field(default_factory=dict)
    order: list[str]
    objective: float
    bound: float | None = None
    gap: float | None = None
    status: str
    method: str = ""
    wall_time_s: float = 0.0
    predicted: SchedulePrediction
    created_at: datetime


class SchedulePage(OrdoModel):
    """One page of the schedule history, newest first."""

    items: list[Schedule]
    next_page_token: str | None = None


class ScheduleJob(OrdoModel):
    """A schedule solve running off the request (the server answered 202): poll it."""

    id: str
    status: str = Field(description="queued, running, succeeded or failed.")
    attempts: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    schedule_id: str | None = None
    problem: dict[str, Any] | None = None


class OrderPrediction(OrdoModel):
    """Predicted final utilities of one given order."""

    order: list[str]
    tasks: list[TaskPrediction]
    objective: ObjectivePrediction
    score: float


class RandomOrderPrediction(OrdoModel):
    """The same figures for a uniformly random order (tasks in index order)."""

    tasks: list[TaskPrediction]
    objective: ObjectivePrediction
    score: float


class Predictions(OrdoModel):
    """Predictions of each given order and of a random order."""

    estimates_version: int
    rho: float
    objective: str
    tasks: list[str]
    orders: list[OrderPrediction]
    random_order: RandomOrderPrediction


# --- runs and reports --------------------------------------------------------------------------


class Lease(OrdoModel):
    """A run's lease: heartbeat before ``expires_at``; ``token`` fences off older holders."""

    token: int
    expires_at: datetime | None = None
    heartbeat_interval_s: float


class StageInfo(OrdoModel):
    """One stage of a run's current plan (1-based)."""

    index: int
    task: str
    status: str


class ScheduleVersion(OrdoModel):
    """A schedule a run followed."""

    id: str
    version: int
    parent_id: str | None = None
    created_at: datetime


class NextStage(OrdoModel):
    """What to do now: evaluate (stage 0, the baseline), train ``task``, or stop (``done``)."""

    done: bool
    stage: int | None = None
    task: str | None = None
    status: str = "active"
    lease: Lease | None = None
    # A plan is being made; with no stage, ask again (``Run.next`` does).
    plan_pending: bool = False


class EvaluationRecord(OrdoModel):
    """A stored evaluation; ``utility`` is the value converted to higher-is-better."""

    task: str
    value: float
    utility: float
    stderr: float | None = None
    entropy: float | None = None


class ReportRecord(OrdoModel):
    """A stored stage report."""

    stage: int
    task: str | None = None
    late: bool = False
    steps: int | None = None
    tokens: int | None = None
    wall_time_s: float | None = None
    evaluations: list[EvaluationRecord]
    created_at: datetime


class StageAssignment(OrdoModel):
    """The stage to report next and its task (``done``: none left)."""

    done: bool
    stage: int | None = None
    task: str | None = None


class ReportAccepted(OrdoModel):
    """The answer to a report (the same body again returns it unchanged)."""

    run_id: str
    report: ReportRecord
    observations: int
    estimates_version: int
    schedule_id: str | None = None
    replanned: bool = False
    # A re-plan was queued: ``next`` may change; ``Run.next()`` waits for it.
    plan_pending: bool = False
    next: StageAssignment


class RunSummary(OrdoModel):
    """A run as listed."""

    id: str
    client_id: str | None = None
    status: str
    adaptive: bool
    strategy: str
    schedule_id: str | None = None
    next_stage: int
    stage_count: int
    created_at: datetime
    finished_at: datetime | None = None
    fail_reason: str | None = None


class RunInfo(RunSummary):
    """One run in full: stages, the schedules it followed, its reports and its lease."""

    stages: list[StageInfo] = Field(default_factory=list)
    schedules: list[ScheduleVersion] = Field(default_factory=list)
    reports: list[ReportRecord] = Field(default_factory=list)
    lease: Lease | None = None


class RunPage(OrdoModel):
    """One page of runs, newest first."""

    items: list[RunSummary]
    next_page_token: str | None = None


# --- calibration -------------------------------------------------------------------------------


class TaskCalibration(OrdoModel):
    """One task of a completed run: observed final utility and the plans' predictions of it."""

    task: str
    observed: float
    predicted_initial: float | None = None
    predicted_final: float | None = None
    inside_initial: bool | None = None
    inside_final: bool | None = None


class RunCalibration(OrdoModel):
    """One completed run: its first and last plan against what it observed."""

    run_id: str
    initial_schedule_id: str | None = None
    final_schedule_id: str | None = None
    stages_reported: int
    tasks: list[TaskCalibration]
    mae_initial: float | None = None
    mae_final: float | None = None
    coverage_initial: float | None = None
    coverage_final: float | None = None


class Calibration(OrdoModel):
    """Predicted against observed final utilities over the most recent completed runs."""

    runs: list[RunCalibration]
    count: int
    mae_initial: float | None = None
    mae_final: float | None = None
    coverage_initial: float | None = None
    coverage_final: float | None = None


# --- health ------------------------------------------------------------------------------------


class Health(OrdoModel):
    """Liveness."""

    status: str


class Readiness(OrdoModel):
    """Readiness: the database answers and its schema is at head."""

    status: str
    checks: dict[str, str] = Field(default_factory=dict)
