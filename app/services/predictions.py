"""Use case of what-if predictions: evaluate given orders over the current estimates."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sqlalchemy.orm import Session

from ordo_server.app.errors import FieldIssue, InvalidInputError
from ordo_server.app.schemas.prediction import (
    OrderPrediction,
    PredictionCreate,
    PredictionObjective,
    PredictionRead,
    RandomOrderPrediction,
)
from ordo_server.app.schemas.schedule import ObjectivePrediction
from ordo_server.app.services.auth import ProjectContext
from ordo_server.app.services.schedules import (
    PlanningInputs,
    load_planning_inputs,
    task_predictions,
)
from ordo_server.solver.predict import Prediction, predict_order, predict_random_order
from ordo_server.solver.types import Order


def _permutation_issue(order: Sequence[str], keys: Sequence[str], field: str) -> FieldIssue | None:
    """Why ``order`` is not a permutation of ``keys``, or ``None`` when it is."""
    counts = Counter(order)
    known = set(keys)
    missing = [key for key in keys if key not in counts]
    repeated = [key for key, count in counts.items() if count > 1]
    unknown = [key for key in counts if key not in known]
    if not (missing or repeated or unknown):
        return None
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing)}")
    if repeated:
        parts.append(f"repeated {', '.join(repeated)}")
    if unknown:
        parts.append(f"not scheduled {', '.join(unknown)}")
    reason = f"Not a permutation of the {len(keys)} scheduled tasks: {'; '.join(parts)}"
    return FieldIssue(field, reason)


def _orders(body: PredictionCreate, inputs: PlanningInputs) -> list[Order]:
    issues = [
        issue
        for i, order in enumerate(body.orders)
        if (issue := _permutation_issue(order, inputs.keys, f"orders[{i}]")) is not None
    ]
    if issues:
        raise InvalidInputError("Some orders are not permutations; see `errors`.", errors=issues)
    index = {key: i for i, key in enumerate(inputs.keys)}
    return [tuple(index[key] for key in order) for order in body.orders]


def _objective(prediction: Prediction) -> ObjectivePrediction:
    return ObjectivePrediction(
        mean=float(prediction.objective_mean), std=float(prediction.objective_std)
    )


def _score(body: PredictionCreate, prediction: Prediction) -> float:
    """The requested objective on the posterior means (see ``OrderPrediction.score``)."""
    if body.objective is PredictionObjective.MAXIMIN:
        return float(min(prediction.mean))
    mean = float(prediction.objective_mean)
    if body.objective is PredictionObjective.MEAN_VARIANCE:
        return mean - body.kappa * float(prediction.objective_std) ** 2
    return mean


def predict(session: Session, context: ProjectContext, body: PredictionCreate) -> PredictionRead:
    """Predicted final utilities (mean, std, 95 % interval) of each order and of a random one."""
    inputs = load_planning_inputs(session, context, body.tasks)
    orders = _orders(body, inputs)
    rho = context.settings.rho if body.rho is None else body.rho
    results = []
    for keys, order in zip(body.orders, orders, strict=True):
        prediction = predict_order(inputs.model, order, rho=rho)
        by_index = task_predictions(inputs.keys, prediction)
        results.append(
            OrderPrediction(
                order=list(keys),
                tasks=[by_index[i] for i in order],
                objective=_objective(prediction),
                score=_score(body, prediction),
            )
        )
    random = predict_random_order(inputs.model, rho=rho)
    return PredictionRead(
        estimates_version=inputs.estimates_version,
        rho=rho,
        objective=body.objective,
        tasks=list(inputs.keys),
        orders=results,
        random_order=RandomOrderPrediction(
            tasks=task_predictions(inputs.keys, random),
            objective=_objective(random),
            score=_score(body, random),
        ),
    )
