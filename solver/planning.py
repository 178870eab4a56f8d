"""From effect posteriors to the solver's inputs: mean models, Thompson samples, problems.

Three level models, all Linear Ordering Problems (docs/design.md §5):

- ``constant`` (pairwise): ``S_j = L[j] + rho * sum_{i before j} F[i, j]
  + sum_{i after j} B[i, j]``;
- ``entropy``: the level of ``j`` depends on the policy entropy when ``j`` is trained, and that
  entropy is the baseline plus the drifts ``D[i]`` of the stages before::

      S_j = a_j + c_j * sum_{i before j} D[i] + rho * sum_{i before j} F[i, j]
            + sum_{i after j} B[i, j]

- ``state``: the level also keeps a share ``rho_j`` (estimated, replacing ``rho``) of the uplift
  that earlier stages gave ``j``, predicted as ``sum_{i before j} F[i, j]``::

      S_j = a_j + sum_{i before j} (rho_j F[i, j] + c_j D[i]) + sum_{i after j} B[i, j]

``a_j``, ``rho_j``, ``c_j`` come from ``EffectEstimates.level_entropy`` / ``level_state``. The
extra terms are one weight per ordered pair, so they fold into the forward matrix: the model
carries ``F'[i, j]`` = the bracket and the problem uses ``rho = 1``. :func:`ordering_problem`
does that bookkeeping; build problems through it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from ordo_server.solver.estimation import EffectEstimates, LevelModel, Posterior
from ordo_server.solver.types import (
    Constraint,
    EffectModel,
    FloatMatrix,
    Objective,
    Order,
    OrderingProblem,
)

LevelModelName = Literal["constant", "entropy", "state"]


def _off_diagonal(matrix: FloatMatrix) -> FloatMatrix:
    """A copy with a zero diagonal (a task has no effect on itself)."""
    out = np.array(matrix, dtype=np.float64, copy=True)
    np.fill_diagonal(out, 0.0)
    return out


def _product_var(
    a_mean: FloatMatrix, a_var: FloatMatrix, b_mean: FloatMatrix, b_var: FloatMatrix
) -> FloatMatrix:
    """Variance of a product of independent factors (broadcast)."""
    return np.asarray(a_var * b_mean**2 + a_mean**2 * b_var + a_var * b_var, dtype=np.float64)


def effect_model(
    estimates: EffectEstimates,
    weights: npt.ArrayLike,
    *,
    rho: float = 0.0,
    level_model: LevelModelName = "constant",
) -> EffectModel:
    """The posterior-mean effect model to solve.

    Parameters
    ----------
    estimates : EffectEstimates
        Posteriors of ``n`` tasks.
    weights : array_like, shape (n,)
        Non-negative task weights.
    rho : float
        Forward-transfer retention in ``[0, 1]`` (``state`` estimates its own and ignores it).
    level_model : {"constant", "entropy", "state"}
        Module docstring.

    Returns
    -------
    EffectModel
        ``constant``: ``rho`` is *not* applied (the problem applies it). ``entropy`` and
        ``state``: the forward matrix already holds the folded terms; solve with ``rho = 1``.
        Variances treat factors as independent: ``Var(xy) = x^2 Var(y) + y^2 Var(x) +
        Var(x) Var(y)``.
    """
    w = np.asarray(weights, dtype=np.float64)
    n = estimates.n
    if w.shape != (n,) or np.any(~np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be {n} finite non-negative numbers")
    backward_mean = _off_diagonal(estimates.backward.mean)
    backward_var = _off_diagonal(estimates.backward.var)
    f_mean, f_var = estimates.forward.mean, estimates.forward.var
    if level_model == "constant":
        return EffectModel(
            level_mean=estimates.level.mean.copy(),
            level_var=estimates.level.var.copy(),
            forward_mean=_off_diagonal(f_mean),
            forward_var=_off_diagonal(f_var),
            backward_mean=backward_mean,
            backward_var=backward_var,
            weights=w.copy(),
        )
    levels: LevelModel = (
        estimates.level_entropy if level_model == "entropy" else estimates.level_state
    )
    d_mean, d_var = estimates.drift.mean[:, None], estimates.drift.var[:, None]
    c_mean, c_var = levels.entropy_slope.mean[None, :], levels.entropy_slope.var[None, :]
    forward_mean = c_mean * d_mean
    forward_var = _product_var(c_mean, c_var, d_mean, d_var)
    if level_model == "entropy":
        forward_mean = forward_mean + rho * f_mean
        forward_var = forward_var + rho**2 * f_var
    else:
        r_mean = levels.uplift_slope.mean[None, :]
        r_var = levels.uplift_slope.var[None, :]
        forward_mean = forward_mean + r_mean * f_mean
        forward_var = forward_var + _product_var(r_mean, r_var, f_mean, f_var)
    return EffectModel(
        level_mean=levels.intercept.mean.copy(),
        level_var=levels.intercept.var.copy(),
        forward_mean=_off_diagonal(forward_mean),
        forward_var=_off_diagonal(forward_var),
        backward_mean=backward_mean,
        backward_var=backward_var,
        weights=w.copy(),
    )


def ordering_problem(
    estimates: EffectEstimates,
    weights: npt.ArrayLike,
    *,
    rho: float = 0.0,
    level_model: LevelModelName = "constant",
    objective: Objective = Objective.EXPECTED,
    kappa: float = 0.0,
    constraints: tuple[Constraint, ...] = (),
    prefix: Order = (),
) -> OrderingProblem:
    """The ordering problem of the posterior-mean model (see :func:`effect_model`).

    ``prefix`` is the trained prefix of a run being re-planned.
    """
    model = effect_model(estimates, weights, rho=rho, level_model=level_model)
    return OrderingProblem(
        model=model,
        objective=objective,
        rho=rho if level_model == "constant" else 1.0,
        kappa=kappa,
        constraints=constraints,
        prefix=prefix,
    )


def _draw(posterior: Posterior, rng: np.random.Generator) -> Posterior:
    """One sample of every cell, returned as a posterior with the same variances."""
    sample = rng.normal(posterior.mean, np.sqrt(posterior.var))
    return Posterior(mean=np.asarray(sample, dtype=np.float64), var=posterior.var)


def sample_estimates(estimates: EffectEstimates, *, seed: int) -> EffectEstimates:
    """A Thompson sample: every effect drawn independently from its posterior.

    The returned estimates carry the sampled values as means (variances unchanged), so
    :func:`ordering_problem` on them solves the sampled model. Deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    return replace(
        estimates,
        forward=_draw(estimates.forward, rng),
        backward=_draw(estimates.backward, rng),
        level=_draw(estimates.level, rng),
        gain=_draw(estimates.gain, rng),
        drift=_draw(estimates.drift, rng),
        level_entropy=_draw_levels(estimates.level_entropy, rng),
        level_state=_draw_levels(estimates.level_state, rng),
    )


def _draw_levels(levels: LevelModel, rng: np.random.Generator) -> LevelModel:
    """A sample of a level model (slopes drawn per task: a slight over-dispersion, harmless)."""
    return LevelModel(
        intercept=_draw(levels.intercept, rng),
        uplift_slope=_draw(levels.uplift_slope, rng),
        entropy_slope=_draw(levels.entropy_slope, rng),
    )


def predicted_utilities(model: EffectModel, order: Order, *, rho: float) -> FloatMatrix:
    """Predicted final utility of every task under ``order``, shape (n,) (utility units).

    ``S_j = L[j] + rho * sum_{i before j} F[i, j] + sum_{i after j} B[i, j]``; ``O(n^2)``.
    """
    n = model.n
    if sorted(order) != list(range(n)):
        raise ValueError(f"order must be a permutation of 0..{n - 1}")
    position = np.empty(n, dtype=np.int64)
    position[list(order)] = np.arange(n)
    before = position[:, None] < position[None, :]
    forward = np.where(before, model.forward_mean, 0.0).sum(axis=0)
    backward = np.where(before.T, model.backward_mean, 0.0).sum(axis=0)
    return np.asarray(model.level_mean + rho * forward + backward, dtype=np.float64)
