"""Prior import and estimate models (effects F, B per ordered pair; L, G, D per task)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Discriminator, Field, JsonValue, Tag

from ordo_server.app.schemas.common import MAX_BATCH, InputModel, OutputModel
from ordo_server.app.schemas.task import TaskKey

MAX_PRIOR_ENTRIES = 100_000
# Priors and effects are utility differences; anything beyond this is a unit mistake.
MAX_ABS_EFFECT = 1e6

# A smaller std is a unit mistake too, and a harmful one: its square (a variance) underflows to
# zero or its inverse (a precision) overflows, and the posterior's arithmetic fails.
MIN_STD = 1e-6

Mean = Annotated[float, Field(ge=-MAX_ABS_EFFECT, le=MAX_ABS_EFFECT)]
Std = Annotated[float, Field(ge=MIN_STD, le=MAX_ABS_EFFECT)]


class Effect(StrEnum):
    """``F``/``B``: forward/backward transfer of src on dst; ``L``/``G``/``D``: per task."""

    F = "F"
    B = "B"
    L = "L"
    G = "G"
    D = "D"


PAIR_EFFECTS = frozenset({Effect.F, Effect.B})


class PriorEntry(InputModel):
    """One prior in long form; ``src`` is omitted for the per-task effects L, G and D."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"effect": "B", "src": "code", "dst": "poetry", "mean": -0.1, "std": 0.05}]
        }
    )

    effect: Effect
    src: TaskKey | None = None
    dst: TaskKey
    mean: Mean
    std: Std


def _cells_shape(value: Any) -> str:
    if not isinstance(value, list):
        return "<scalar>"
    if value and isinstance(value[0], list):
        return "<matrix>"
    return "<vector>"


# Tagged by shape so that an error names one path (``mean[1][2]``), not one per union branch.
MeanCells = Annotated[
    Annotated[list[list[Mean | None]], Tag("<matrix>")]
    | Annotated[list[Mean | None], Tag("<vector>")],
    Discriminator(
        _cells_shape,
        custom_error_type="shape",
        custom_error_message="Input should be a list (vector) or a list of lists (matrix)",
    ),
]
StdCells = Annotated[
    Annotated[Std, Tag("<scalar>")]
    | Annotated[list[list[Std | None]], Tag("<matrix>")]
    | Annotated[list[Std | None], Tag("<vector>")],
    Discriminator(_cells_shape),
]


class PriorMatrix(InputModel):
    """Priors in wide form: an n x n matrix (F, B; diagonal ignored) or an n-vector (L, G, D).

    ``mean[i][j]`` is the effect of training ``tasks[i]`` on ``tasks[j]``; ``null`` cells are
    left as they are. ``std`` is one number for every cell or the same shape as ``mean``.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "effect": "B",
                    "tasks": ["math", "code", "poetry"],
                    "mean": [[None, 0.01, -0.08], [0.03, None, -0.1], [-0.02, 0.0, None]],
                    "std": 0.05,
                }
            ]
        }
    )

    effect: Effect
    tasks: list[TaskKey] = Field(min_length=1, max_length=MAX_BATCH)
    mean: MeanCells
    std: StdCells


def _prior_form(value: Any) -> str:
    return "<long>" if isinstance(value, list) else "<wide>"


PriorsImport = Annotated[
    Annotated[list[PriorEntry], Field(max_length=MAX_PRIOR_ENTRIES), Tag("<long>")]
    | Annotated[PriorMatrix, Tag("<wide>")],
    Discriminator(_prior_form),
]


_PRIORS_IMPORTED_EXAMPLE: dict[str, JsonValue] = {"imported": 6, "estimates_version": 1}


class PriorsImported(OutputModel):
    """How many prior cells were written, and the estimates version after the import."""

    model_config = ConfigDict(json_schema_extra={"examples": [_PRIORS_IMPORTED_EXAMPLE]})

    imported: int
    estimates_version: int


class MatrixEstimate(OutputModel):
    """Posterior of a pairwise effect: ``[i][j]`` is src ``tasks[i]`` on dst ``tasks[j]``."""

    mean: list[list[float | None]]
    std: list[list[float | None]]
    count: list[list[int | None]]


class VectorEstimate(OutputModel):
    """Posterior of a per-task effect, in task order."""

    mean: list[float]
    std: list[float]
    count: list[int]


_ESTIMATES_READ_EXAMPLE: dict[str, JsonValue] = {
    "version": 4,
    "tasks": ["math", "code", "poetry"],
    "F": {
        "mean": [[None, 0.05, 0.0], [0.04, None, -0.01], [-0.01, 0.0, None]],
        "std": [[None, 0.06, 0.07], [0.06, None, 0.07], [0.08, 0.08, None]],
        "count": [[None, 1, 1], [1, None, 1], [0, 0, None]],
    },
    "B": {
        "mean": [[None, 0.01, -0.08], [0.03, None, -0.1], [-0.02, 0.0, None]],
        "std": [[None, 0.05, 0.03], [0.05, None, 0.03], [0.04, 0.04, None]],
        "count": [[None, 1, 2], [1, None, 2], [2, 2, None]],
    },
    "L": {"mean": [0.6, 0.4, 0.5], "std": [0.03, 0.04, 0.03], "count": [2, 2, 2]},
    "G": {"mean": [0.18, 0.09, 0.09], "std": [0.04, 0.05, 0.04], "count": [2, 2, 2]},
    "D": {"mean": [-0.12, -0.08, 0.09], "std": [0.05, 0.05, 0.05], "count": [2, 2, 2]},
}


class EstimatesRead(OutputModel):
    """Current posteriors of every effect; the diagonal of F and B is ``null``."""

    model_config = ConfigDict(json_schema_extra={"examples": [_ESTIMATES_READ_EXAMPLE]})

    version: int = Field(description="Bumped on every change of the estimates.")
    tasks: list[str] = Field(description="Task keys in index order: the matrices' axes.")
    F: MatrixEstimate
    B: MatrixEstimate
    L: VectorEstimate
    G: VectorEstimate
    D: VectorEstimate
