"""From effect posteriors to the solver's inputs: mean models, Thompson samples, problems.

Two outcome models, both Linear Ordering Problems (DESIGN §2):

- *pairwise*: ``S_j = L[j] + rho * sum_{i before j} F[i, j] + sum_{i after j} B[i, j]``;
- *entropy-aware*: the level of ``j`` depends on the policy entropy when ``j`` is trained, and
  that entropy is the baseline plus the drifts ``D[i]`` of the stages before::

      S_j = L0[j] + c_j * sum_{i before j} D[i] + rho * sum_{i before j} F[i, j]
            + sum_{i after j} B[i, j]

  with ``L0[j]`` the level at zero entropy shift and ``c_j`` its entropy slope. The new term
  ``c_j * D[i]`` is again one weight per ordered pair, so it folds into the forward matrix:
  the model carries ``F'[i, j] = rho * F[i, j] + c_j * D[i]`` and the problem uses ``rho = 1``.
  :func:`ordering_problem` does that bookkeeping; build problems through it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt

from solver.estimation import EffectEstimates, Posterior
from solver.types import (
    Constraint,
    EffectModel,
    FloatMatrix,
    Objective,
    Order,
    OrderingProblem,
)


def _off_diagonal(matrix: FloatMatrix) -> FloatMatrix:
    """A copy with a zero diagonal (a task has no effect on itself)."""
    out = np.array(matrix, dtype=np.float64, copy=True)
    np.fill_diagonal(out, 0.0)
    return out


def effect_model(
    estimates: EffectEstimates,
    weights: npt.ArrayLike,
    *,
    rho: float = 0.0,
    entropy_aware: bool = False,
) -> EffectModel:
    """The posterior-mean effect model to solve.

    Parameters
    ----------
    estimates : EffectEstimates
        Posteriors of ``n`` tasks.
    weights : array_like, shape (n,)
        Non-negative task weights.
    rho : float
        Forward-transfer retention in ``[0, 1]``.
    entropy_aware : bool
        Use the entropy-aware level model (module docstring).

    Returns
    -------
    EffectModel
        Pairwise: ``rho`` is *not* applied (the problem applies it). Entropy-aware: the forward
        matrix already holds ``rho * F + c_j * D[i]``; solve it with ``rho = 1``.
        Variances treat the factors as independent:
        ``Var(c D) = c^2 Var(D) + D^2 Var(c) + Var(c) Var(D)``.
    """
    w = np.asarray(weights, dtype=np.float64)
    n = estimates.n
    if w.shape != (n,) or np.any(~np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be {n} finite non-negative numbers")
    backward_mean = _off_diagonal(estimates.backward.mean)
    backward_var = _off_diagonal(estimates.backward.var)
    if not entropy_aware:
        return EffectModel(
            level_mean=estimates.level.mean.copy(),
            level_var=estimates.level.var.copy(),
            forward_mean=_off_diagonal(estimates.forward.mean),
            forward_var=_off_diagonal(estimates.forward.var),
            backward_mean=backward_mean,
            backward_var=backward_var,
            weights=w.copy(),
        )
    d_mean, d_var = estimates.drift.mean, estimates.drift.var
    c_mean, c_var = estimates.level_slope.mean, estimates.level_slope.var
    entropy_mean = np.outer(d_mean, c_mean)
    entropy_var = np.outer(d_var, c_mean**2) + np.outer(d_mean**2, c_var) + np.outer(d_var, c_var)
    return EffectModel(
        level_mean=estimates.level_at_baseline.mean.copy(),
        level_var=estimates.level_at_baseline.var.copy(),
        forward_mean=_off_diagonal(rho * estimates.forward.mean + entropy_mean),
        forward_var=_off_diagonal(rho**2 * estimates.forward.var + entropy_var),
        backward_mean=backward_mean,
        backward_var=backward_var,
        weights=w.copy(),
    )


def ordering_problem(
    estimates: EffectEstimates,
    weights: npt.ArrayLike,
    *,
    rho: float = 0.0,
    entropy_aware: bool = False,
    objective: Objective = Objective.EXPECTED,
    kappa: float = 0.0,
    constraints: tuple[Constraint, ...] = (),
    prefix: Order = (),
) -> OrderingProblem:
    """The ordering problem of the posterior-mean model (see :func:`effect_model`).

    ``prefix`` is the trained prefix of a run being re-planned.
    """
    model = effect_model(estimates, weights, rho=rho, entropy_aware=entropy_aware)
    return OrderingProblem(
        model=model,
        objective=objective,
        rho=1.0 if entropy_aware else rho,
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
        level_slope=_draw(estimates.level_slope, rng),
        level_at_baseline=_draw(estimates.level_at_baseline, rng),
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
