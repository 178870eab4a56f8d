"""What-if predictions: given orders evaluated over the current estimates, with intervals."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field, JsonValue

from ordo_server.app.schemas.common import MAX_BATCH, InputModel, OutputModel
from ordo_server.app.schemas.schedule import MAX_KAPPA, ObjectivePrediction, TaskPrediction
from ordo_server.app.schemas.task import TaskKey

MAX_ORDERS = 100


class PredictionObjective(StrEnum):
    """Which objective ``score`` reports (docs/design.md §4)."""

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


_PREDICTION_READ_EXAMPLE: dict[str, JsonValue] = {
    "estimates_version": 4,
    "rho": 0.0,
    "objective": "expected",
    "tasks": ["math", "code", "poetry"],
    "orders": [
        {
            "order": ["math", "code", "poetry"],
            "tasks": [
                {"task": "math", "mean": 0.61, "std": 0.05, "lower": 0.512, "upper": 0.708},
                {"task": "code", "mean": 0.4, "std": 0.06, "lower": 0.2824, "upper": 0.5176},
                {"task": "poetry", "mean": 0.5, "std": 0.04, "lower": 0.4216, "upper": 0.5784},
            ],
            "objective": {"mean": 1.51, "std": 0.09},
            "score": 1.51,
        },
        {
            "order": ["poetry", "math", "code"],
            "tasks": [
                {"task": "poetry", "mean": 0.32, "std": 0.06, "lower": 0.2024, "upper": 0.4376},
                {"task": "math", "mean": 0.63, "std": 0.05, "lower": 0.532, "upper": 0.728},
                {"task": "code", "mean": 0.4, "std": 0.06, "lower": 0.2824, "upper": 0.5176},
            ],
            "objective": {"mean": 1.35, "std": 0.1},
            "score": 1.35,
        },
    ],
    "random_order": {
        "tasks": [
            {"task": "math", "mean": 0.605, "std": 0.05, "lower": 0.507, "upper": 0.703},
            {"task": "code", "mean": 0.405, "std": 0.06, "lower": 0.2874, "upper": 0.5226},
            {"task": "poetry", "mean": 0.41, "std": 0.05, "lower": 0.312, "upper": 0.508},
        ],
        "objective": {"mean": 1.42, "std": 0.09},
        "score": 1.42,
    },
}


class PredictionRead(OutputModel):
    """Predictions of each given order and of a random order."""

    model_config = ConfigDict(json_schema_extra={"examples": [_PREDICTION_READ_EXAMPLE]})

    estimates_version: int
    rho: float
    objective: PredictionObjective
    tasks: list[str] = Field(description="The tasks the orders permute, in index order.")
    orders: list[OrderPrediction]
    random_order: RandomOrderPrediction
