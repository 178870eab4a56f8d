"""The scoring oracle: any order's value in original units (docs/design.md §2).

Every solver path (subset DP, CP-SAT, LOP heuristics) reports the objective recomputed here, so
this module is the single definition of what an order is worth. It is written from the per-task
utilities ``S_j`` directly, not from the LOP weights, so that tests can check the LOP reduction
(:func:`lop_weights`) against it.

Definitions (tasks ``0..n-1``, ``M[i, j]`` = effect of training ``i`` on ``j``; diagonals ignored)::

    S_j(pi)    = L[j] + rho * sum_{i before j} F[i, j] + sum_{i after j} B[i, j]
    Var S_j    = VarL[j] + rho^2 * sum_{i before j} VarF[i, j] + sum_{i after j} VarB[i, j]
    adjacency  = sum_k A[pi[k], pi[k+1]]            (variance: same sum over VarA)

Objectives:

* ``expected``: ``sum_j w_j S_j + adjacency``.
* ``mean_variance``: ``expected - kappa * (sum_j w_j^2 Var S_j + adjacency variance)``: the
  effects are independent, so the variance of the weighted sum is the weighted sum of variances.
* ``maximin``: ``min_j S_j``. Weights are ignored (no task may be sacrificed, whatever its
  weight), and so is the adjacency term: it is an effect on the *objective*, not attributed to a
  task, so it has no place in a per-task minimum. Adjacency *constraints* still apply.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ordo_server.solver.types import EffectModel, FloatMatrix, Objective, Order, OrderingProblem
from ordo_server.solver.validation import validate_order

__all__ = [
    "adjacency_sum",
    "before_matrix",
    "lop_weights",
    "objective_weights",
    "predicted_utilities",
    "predicted_variances",
    "score_order",
    "variance_weights",
]


def lop_weights(model: EffectModel, rho: float) -> tuple[FloatMatrix, float]:
    """Linear Ordering Problem weights of the ``expected`` objective.

    Returns
    -------
    W : FloatMatrix, shape (n, n)
        ``W[a, b] = w_a * B[b, a] + rho * w_b * F[a, b]``: what the objective gains when ``a`` is
        trained before ``b`` (weighted utility units); zero diagonal.
    constant : float
        ``sum_j w_j L[j]``, so that ``objective = constant + sum_{a before b} W[a, b]``.
    """
    w = model.weights
    weights = w[:, None] * model.backward_mean.T + rho * model.forward_mean * w[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights, float(w @ model.level_mean)


def variance_weights(model: EffectModel, rho: float) -> tuple[FloatMatrix, float]:
    """LOP weights of the objective's variance (independent effects).

    Returns
    -------
    V : FloatMatrix, shape (n, n)
        ``V[a, b] = w_a^2 VarB[b, a] + rho^2 w_b^2 VarF[a, b]`` (squared weighted utility units);
        zero diagonal.
    constant : float
        ``sum_j w_j^2 VarL[j]``, so that ``Var = constant + sum_{a before b} V[a, b]``.
    """
    w2 = model.weights**2
    weights = w2[:, None] * model.backward_var.T + rho**2 * model.forward_var * w2[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights, float(w2 @ model.level_var)


def objective_weights(
    problem: OrderingProblem,
) -> tuple[FloatMatrix, float, FloatMatrix | None]:
    """LOP form of the ``expected`` or ``mean_variance`` objective.

    Returns ``(W, constant, A)`` with ``objective(pi) = constant + sum_{a before b} W[a, b] +
    sum_k A[pi[k], pi[k+1]]``; ``A`` is ``None`` when the model has no adjacency term. For
    ``mean_variance`` each part is ``mean - kappa * variance``. Not defined for ``maximin``.
    """
    if problem.objective is Objective.MAXIMIN:
        raise ValueError("maximin is not a linear ordering objective")
    model = problem.model
    weights, constant = lop_weights(model, problem.rho)
    adjacency = _zero_diagonal(model.adjacency_mean)
    if problem.objective is Objective.MEAN_VARIANCE:
        var_weights, var_constant = variance_weights(model, problem.rho)
        weights = weights - problem.kappa * var_weights
        constant -= problem.kappa * var_constant
        adjacency_var = _zero_diagonal(model.adjacency_var)
        if adjacency is not None and adjacency_var is not None:
            adjacency = adjacency - problem.kappa * adjacency_var
    return weights, constant, adjacency


def before_matrix(order: Order) -> npt.NDArray[np.bool_]:
    """``M[i, j]`` is True when task ``i`` is trained before task ``j`` in ``order``; (n, n)."""
    position = np.empty(len(order), dtype=np.int64)
    position[list(order)] = np.arange(len(order))
    return position[:, None] < position[None, :]


def predicted_utilities(model: EffectModel, order: Order, rho: float) -> FloatMatrix:
    """Predicted final utility ``S_j`` of every task under ``order``; shape (n,), utility units.

    Cost ``O(n^2)``.
    """
    before = before_matrix(order)
    after = before.T
    forward = np.where(before, model.forward_mean, 0.0).sum(axis=0)
    backward = np.where(after, model.backward_mean, 0.0).sum(axis=0)
    result: FloatMatrix = model.level_mean + rho * forward + backward
    return result


def predicted_variances(model: EffectModel, order: Order, rho: float) -> FloatMatrix:
    """Variance of ``S_j`` under ``order`` (independent effects); shape (n,), squared units."""
    before = before_matrix(order)
    after = before.T
    forward = np.where(before, model.forward_var, 0.0).sum(axis=0)
    backward = np.where(after, model.backward_var, 0.0).sum(axis=0)
    result: FloatMatrix = model.level_var + rho**2 * forward + backward
    return result


def adjacency_sum(matrix: FloatMatrix | None, order: Sequence[int]) -> float:
    """``sum_k matrix[order[k], order[k+1]]``; ``0`` when ``matrix`` is ``None``."""
    if matrix is None or len(order) < 2:
        return 0.0
    firsts = np.asarray(order[:-1], dtype=np.int64)
    seconds = np.asarray(order[1:], dtype=np.int64)
    return float(matrix[firsts, seconds].sum())


def score_order(problem: OrderingProblem, order: Sequence[int]) -> float:
    """The objective value of ``order`` in original units (see the module docstring).

    Raises :class:`~solver.errors.InvalidProblemError` when ``order`` is not a permutation of
    ``0..n-1``. Constraints are not checked here (see :func:`solver.constraints.check_order`).
    """
    checked = validate_order(order, problem.n)
    model = problem.model
    utilities = predicted_utilities(model, checked, problem.rho)
    if problem.objective is Objective.MAXIMIN:
        return float(utilities.min())
    expected = float(model.weights @ utilities) + adjacency_sum(model.adjacency_mean, checked)
    if problem.objective is Objective.EXPECTED:
        return expected
    variances = predicted_variances(model, checked, problem.rho)
    variance = float(model.weights**2 @ variances) + adjacency_sum(model.adjacency_var, checked)
    return expected - problem.kappa * variance


def _zero_diagonal(matrix: FloatMatrix | None) -> FloatMatrix | None:
    if matrix is None:
        return None
    result = matrix.copy()
    np.fill_diagonal(result, 0.0)
    return result
