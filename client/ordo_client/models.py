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


# --- health ------------------------------------------------------------------------------------


class Health(OrdoModel):
    """Liveness."""

    status: str


class Readiness(OrdoModel):
    """Readiness: the database answers and its schema is at head."""

    status: str
    checks: dict[str, str] = Field(default_factory=dict)
