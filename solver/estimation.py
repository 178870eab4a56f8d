"""Gaussian posteriors of effects from additive sufficient statistics (DESIGN §2, Estimation).

Each effect (one cell of F or B, or one task's L, G or D) has a prior ``N(m0, v0)`` and
observations ``x_1..x_n`` with noise variance ``s2``. The statistics ``(n, sum x, sum x^2)`` only
grow by addition, so concurrent writers update them with ``x = x + delta``.

Conjugate normal update with known noise::

    v_post = 1 / (1 / v0 + n / s2)
    m_post = v_post * (m0 / v0 + sum_x / s2)

All functions are vectorized: arguments broadcast against each other (scalars, ``(n,)`` vectors
or ``(n, n)`` matrices).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from solver.types import FloatMatrix

ArrayLike = npt.ArrayLike


@dataclass(frozen=True, slots=True)
class Posterior:
    """Posterior mean and variance, same shape as the inputs (utility units, squared units)."""

    mean: FloatMatrix
    var: FloatMatrix

    @property
    def std(self) -> FloatMatrix:
        """Posterior standard deviation (utility units)."""
        return np.sqrt(self.var)


def gaussian_posterior(
    prior_mean: ArrayLike,
    prior_var: ArrayLike,
    noise_var: ArrayLike,
    count: ArrayLike,
    total: ArrayLike,
) -> Posterior:
    """Posterior of a Gaussian mean with known noise variance.

    Parameters
    ----------
    prior_mean, prior_var : array_like
        ``m0`` and ``v0 > 0``.
    noise_var : array_like
        Observation noise variance ``s2 > 0``.
    count, total : array_like
        ``n`` observations and their sum ``sum x``.

    Returns
    -------
    Posterior
        ``mean`` and ``var`` broadcast to the common shape.
    """
    m0 = np.asarray(prior_mean, dtype=np.float64)
    v0 = np.asarray(prior_var, dtype=np.float64)
    s2 = np.asarray(noise_var, dtype=np.float64)
    n = np.asarray(count, dtype=np.float64)
    sx = np.asarray(total, dtype=np.float64)
    if np.any(v0 <= 0) or np.any(s2 <= 0):
        raise ValueError("prior_var and noise_var must be positive")
    precision = 1.0 / v0 + n / s2
    var = 1.0 / precision
    mean = var * (m0 / v0 + sx / s2)
    return Posterior(mean=np.asarray(mean, dtype=np.float64), var=np.asarray(var, dtype=np.float64))
