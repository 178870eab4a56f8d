"""What-if predictions: given orders evaluated over the current estimates, with intervals."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field

from app.schemas.common import MAX_BATCH, InputModel, OutputModel
from app.schemas.schedule import MAX_KAPPA, ObjectivePrediction, TaskPrediction
from app.schemas.task import TaskKey

MAX_ORDERS = 100


class PredictionObjective(StrEnum):
    """Which objective ``score`` reports (DESIGN §2)."""

    EXPECTED = "expected"
    MAXIMIN = "maximin"
    MEAN_VARIANCE = "mean_variance"


class PredictionCreate(InputModel):
    """Orders to evaluate: each a permutation of the scheduled tasks (all, or ``tasks``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "orders": [["math", "code", "poetry"], ["poetry", "math", "code"]],
                    "rho": 0.0,
                    "objective": "expected",
                }
            ]
        }
    )

    orders: list[list[TaskKey]] = Field(
        min_length=1,
        max_length=MAX_ORDERS,
        description="Orders of task keys; stage k (1-based) trains `order[k-1]`.",
    )
    tasks: list[TaskKey] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_BATCH,
        description="The tasks the orders permute; default every task of the project.",
    )
    rho: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Forward-transfer retention; defaults to the project's setting.",
    )
    objective: PredictionObjective = PredictionObjective.EXPECTED
    kappa: float = Field(
        default=0.0,
        ge=0,
        le=MAX_KAPPA,
        description="Risk aversion of `mean_variance`, per unit of variance (utility^2).",
    )


class OrderPrediction(OutputModel):
    """Predicted final utilities of one given order."""

    order: list[str]
    tasks: list[TaskPrediction] = Field(description="In the order's stage order.")
    objective: ObjectivePrediction = Field(
        description="The weighted sum of final utilities: mean and std."
    )
    score: float = Field(
        description="The requested objective on the posterior means: `expected` = "
        "`objective.mean`, `mean_variance` = mean minus kappa times variance, `maximin` = the "
        "smallest task mean."
    )


class RandomOrderPrediction(OutputModel):
    """The same figures for a uniformly random order (expectation over orders)."""

    tasks: list[TaskPrediction] = Field(description="In task index order.")
    objective: ObjectivePrediction
    score: float


class PredictionRead(OutputModel):
    """Predictions of each given order and of a random order."""

    estimates_version: int
    rho: float
    objective: PredictionObjective
    tasks: list[str] = Field(description="The tasks the orders permute, in index order.")
    orders: list[OrderPrediction]
    random_order: RandomOrderPrediction
