"""Predictions with uncertainty: each task's final utility and the objective, for an order or a
uniformly random order (docs/design.md §4; effects independent Gaussians).

For an order ``pi``::

    E S_j   = L[j] + rho * sum_{i before j} F[i, j] + sum_{i after j} B[i, j]
    Var S_j = VarL[j] + rho^2 * sum_{i before j} VarF[i, j] + sum_{i after j} VarB[i, j]
    objective = sum_j w_j S_j + sum_k A[pi[k], pi[k+1]]

The ``S_j`` use disjoint effects (column j), so the objective's variance is
``sum_j w_j^2 Var S_j + sum_k VarA[pi[k], pi[k+1]]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ordo_server.solver.scoring import (
    adjacency_sum,
    lop_weights,
    predicted_utilities,
    predicted_variances,
)
from ordo_server.solver.types import EffectModel, FloatMatrix
from ordo_server.solver.validation import validate_order

__all__ = ["Prediction", "predict_order", "predict_random_order"]


@dataclass(frozen=True, slots=True)
class Prediction:
    """Predicted final utilities and objective.

    Attributes
    ----------
    mean, std : FloatMatrix, shape (n,)
        Per task (utility units).
    objective_mean, objective_std : float
        Of ``sum_j w_j S_j`` plus the adjacency term (weighted utility units).
    """

    mean: FloatMatrix
    std: FloatMatrix
    objective_mean: float
    objective_std: float


def predict_order(model: EffectModel, order: Sequence[int], rho: float) -> Prediction:
    """Prediction for ``order`` (a permutation of ``0..n-1``); the std covers the effects'
    posterior uncertainty. Cost ``O(n^2)``."""
    checked = validate_order(order, model.n)
    mean = predicted_utilities(model, checked, rho)
    variance = predicted_variances(model, checked, rho)
    w = model.weights
    objective_mean = float(w @ mean) + adjacency_sum(model.adjacency_mean, checked)
    objective_var = float(w**2 @ variance) + adjacency_sum(model.adjacency_var, checked)
    return Prediction(
        mean=mean,
        std=np.sqrt(variance),
        objective_mean=objective_mean,
        objective_std=float(np.sqrt(objective_var)),
    )


def predict_random_order(model: EffectModel, rho: float) -> Prediction:
    """Prediction for a uniformly random order (the baseline a chosen order should beat).

    Each ``i`` precedes ``j`` with probability 1/2. The std combines both sources of
    uncertainty (law of total variance): the effects' posterior variance, averaged over orders,
    plus the variance over random orders of the expected value. For the order part, with
    ``X_i = [i before j]``: ``Var X_i = 1/4`` and ``Cov(X_i, X_k) = 1/12`` (i, k both before j
    with probability 1/3), so ``Var sum_i c_i X_i = (1/6) sum c_i^2 + (1/12) (sum c_i)^2``.
    For the objective, with ``D = W - W^T`` and row sums ``r``, the LOP value over random
    orders has variance ``(1/12) (sum_{a<b} D[a,b]^2 + sum_a r_a^2)``. The adjacency term
    contributes its mean ``sum A / n`` and its effect variance, but not its variance over
    orders (it is not included in ``objective_std``).
    """
    n = model.n
    off_diagonal = ~np.eye(n, dtype=np.bool_)
    forward = np.where(off_diagonal, model.forward_mean, 0.0)
    backward = np.where(off_diagonal, model.backward_mean, 0.0)
    forward_var = np.where(off_diagonal, model.forward_var, 0.0).sum(axis=0)
    backward_var = np.where(off_diagonal, model.backward_var, 0.0).sum(axis=0)

    mean = model.level_mean + 0.5 * (rho * forward + backward).sum(axis=0)
    effect_var = model.level_var + 0.5 * (rho**2 * forward_var + backward_var)
    contrast = rho * forward - backward  # change of S_j when i moves from after j to before
    order_var = (contrast**2).sum(axis=0) / 6.0 + contrast.sum(axis=0) ** 2 / 12.0
    variance = effect_var + order_var

    w = model.weights
    weights, constant = lop_weights(model, rho)
    difference = weights - weights.T
    objective_mean = constant + 0.5 * float(np.triu(weights + weights.T, 1).sum())
    upper = np.triu(difference, 1)
    row_sums = difference.sum(axis=1)
    objective_order_var = (float((upper**2).sum()) + float((row_sums**2).sum())) / 12.0
    objective_effect_var = float(w**2 @ effect_var)
    if model.adjacency_mean is not None and n > 1:
        objective_mean += float(np.where(off_diagonal, model.adjacency_mean, 0.0).sum()) / n
        if model.adjacency_var is not None:
            objective_effect_var += (
                float(np.where(off_diagonal, model.adjacency_var, 0.0).sum()) / n
            )
    return Prediction(
        mean=mean,
        std=np.sqrt(variance),
        objective_mean=objective_mean,
        objective_std=float(np.sqrt(objective_effect_var + objective_order_var)),
    )
