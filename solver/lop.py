"""Engine for large unconstrained Linear Ordering Problems: best order, proven bound.

``solve_lop(W)`` maximizes ``sum_{k<l} W[p_k, p_l]`` over permutations ``p`` (diagonal ignored)
and returns the best order with a *proven* upper bound:

1. ``n <= 10``: exact subset dynamic programme (``O(2^n n^2)``).
2. Otherwise the memetic heuristic (:func:`solver.heuristics.memetic_lop`) finds a good order.
3. The 3-dicycle LP relaxation (:mod:`solver.lp_bound`) gives a bound; on real-world
   (input-output) instances it usually equals the heuristic value or is integral itself.
4. What the LP leaves open goes to a MILP over the LP's cut set (HiGHS), re-separating
   3-dicycle cuts from its integer optimum, then back to the heuristic for the remaining time.

Optimality is proven when ``bound - value <= 1e-9 * max(1, |bound|)``; when every off-diagonal
entry of ``W`` is an integer the bound is rounded down to an integer first.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.optimize

from solver.errors import InvalidProblemError
from solver.heuristics import lop_value, memetic_lop
from solver.lp_bound import (
    CutPool,
    cutting_plane_bound,
    pair_objective,
    pairs_to_order,
    separate,
)
from solver.types import FloatMatrix, Order

logger = logging.getLogger(__name__)

_DP_MAX_N = 10
_PROOF_RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class LopSolution:
    """Result of :func:`solve_lop`.

    Attributes
    ----------
    order : Order
        Best permutation found.
    value : float
        ``sum_{k<l} W[order[k], order[l]]`` (objective units, diagonal ignored).
    bound : float
        Proven upper bound on the optimum (objective units), ``bound >= value``.
    proven_optimal : bool
        ``bound - value <= 1e-9 * max(1, |bound|)``.
    method : str
        What proved or found the result (``dp``, ``lp``, ``milp``, ``heuristic``).
    time_to_best_s, wall_time_s : float
        Seconds from the call to the last improvement of ``value``, and in all.
    lp_rounds, lp_cuts : int
        Cutting-plane LP solves and 3-dicycle rows used.
    """

    order: Order
    value: float
    bound: float
    proven_optimal: bool
    method: str
    time_to_best_s: float
    wall_time_s: float
    lp_rounds: int = 0
    lp_cuts: int = 0


def _validate(weights: FloatMatrix) -> FloatMatrix:
    w = np.asarray(weights)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise InvalidProblemError(
            f"weights must be a square matrix, got shape {w.shape}", field="weights"
        )
    w = w.astype(np.float64)
    if not np.all(np.isfinite(w)):
        raise InvalidProblemError("weights must be finite (no NaN or inf)", field="weights")
    clean = w.copy()
    np.fill_diagonal(clean, 0.0)
    return clean


def _is_integral(weights: FloatMatrix) -> bool:
    return bool(np.all(weights == np.round(weights)))


def _tighten(bound: float, integral: bool) -> float:
    """Round a bound down to an integer for integer data (with slack for float summation)."""
    if not integral:
        return bound
    return float(math.floor(bound + _PROOF_RELATIVE_TOLERANCE * max(1.0, abs(bound))))


def _proof_target(value: float, integral: bool) -> float:
    """Largest bound that proves ``value`` optimal (after :func:`_tighten`)."""
    slack = _PROOF_RELATIVE_TOLERANCE * max(1.0, abs(value))
    return value + 1.0 - 2.0 * slack if integral else value + 0.5 * slack


def _is_proven(value: float, bound: float) -> bool:
    return bound - value <= _PROOF_RELATIVE_TOLERANCE * max(1.0, abs(bound))


def _exact_dp(weights: FloatMatrix) -> tuple[Order, float]:
    """Optimal order by dynamic programming over subsets (the set placed first).

    ``best[S] = max_{x in S} best[S - x] + sum_{y in S - x} W[y, x]``. ``O(2^n n^2)`` time,
    ``O(2^n)`` memory; meant for ``n <= 10``.
    """
    n = weights.shape[0]
    size = 1 << n
    best = np.full(size, -np.inf)
    last = np.zeros(size, dtype=np.int64)
    best[0] = 0.0
    for subset in range(1, size):
        members = [k for k in range(n) if subset >> k & 1]
        for x in members:
            rest = subset & ~(1 << x)
            gain = best[rest] + sum(weights[y, x] for y in members if y != x)
            if gain > best[subset]:
                best[subset] = gain
                last[subset] = x
    order: list[int] = []
    subset = size - 1
    while subset:
        x = int(last[subset])
        order.append(x)
        subset &= ~(1 << x)
    order.reverse()
    result = tuple(order)
    return result, lop_value(weights, result)


def _milp_bound(
    weights: FloatMatrix, pool: CutPool, *, time_limit_s: float
) -> tuple[float, npt.NDArray[np.int64] | None]:
    """MILP over the pool's rows, re-separating until its optimum is transitive.

    Returns ``(bound, order)``: a proven bound and, when the MILP optimum satisfies every
    3-dicycle inequality, its (optimal) order.
    """
    n = weights.shape[0]
    deadline = time.perf_counter() + time_limit_s
    d, const = pair_objective(weights)
    bound = math.inf
    while time.perf_counter() < deadline:
        matrix = pool.matrix()
        result = scipy.optimize.milp(
            -d,
            integrality=np.ones_like(d),
            bounds=scipy.optimize.Bounds(0.0, 1.0),
            constraints=scipy.optimize.LinearConstraint(matrix, -np.inf, pool.rhs),
            options={"time_limit": max(0.01, deadline - time.perf_counter()), "mip_rel_gap": 0.0},
        )
        dual = getattr(result, "mip_dual_bound", None)
        if dual is not None and np.isfinite(dual):
            bound = min(bound, const - float(dual))
        if result.status != 0 or result.x is None:
            return bound, None
        x = np.rint(np.asarray(result.x, dtype=np.float64)).astype(np.float64)
        triples, signs, _ = separate(x, n, max_cuts=max(200, 8 * n))
        if triples.shape[0] == 0:
            return min(bound, const + float(d @ x)), pairs_to_order(x, n)
        pool.add(triples, signs)
    return bound, None


@dataclass(slots=True)
class _Incumbent:
    order: Order
    value: float
    found_at_s: float

    def offer(self, order: Order, value: float, elapsed_s: float) -> None:
        if value > self.value:
            self.order, self.value, self.found_at_s = order, value, elapsed_s


def solve_lop(
    weights: FloatMatrix,
    *,
    time_limit_s: float,
    seed: int,
    num_workers: int,
    initial_order: Order | None = None,
) -> LopSolution:
    """Best order of an unconstrained LOP and a proven upper bound.

    Parameters
    ----------
    weights : FloatMatrix, shape (n, n)
        ``W[a, b]``: gain (objective units) of placing ``a`` anywhere before ``b``. Any finite
        floats; the diagonal is ignored.
    time_limit_s : float
        Wall-clock budget in seconds (approximate: checked between phases and local searches).
    seed : int
        Seed of all randomness.
    num_workers : int
        Threads the solver may use (``>= 1``; the current phases run single-threaded).
    initial_order : Order, optional
        A start order for the heuristic.

    Returns
    -------
    LopSolution

    Raises
    ------
    InvalidProblemError
        ``weights`` is not square or has NaN or infinite entries; ``initial_order`` is not a
        permutation; ``num_workers < 1``.
    """
    started = time.perf_counter()
    w = _validate(weights)
    n = w.shape[0]
    if num_workers < 1:
        raise InvalidProblemError("num_workers must be >= 1", field="num_workers")
    if initial_order is not None and sorted(initial_order) != list(range(n)):
        raise InvalidProblemError(
            "initial_order must be a permutation of 0..n-1", field="initial_order"
        )

    def elapsed() -> float:
        return time.perf_counter() - started

    def remaining() -> float:
        return max(0.0, time_limit_s - elapsed())

    if n <= _DP_MAX_N:
        order, value = _exact_dp(w) if n > 1 else (tuple(range(n)), 0.0)
        return LopSolution(order, value, value, True, "dp", elapsed(), elapsed())

    integral = _is_integral(w)
    first_order, first_value = memetic_lop(
        w,
        seed=seed,
        time_limit_s=min(remaining(), max(0.05, 0.05 * time_limit_s)),
        initial=initial_order,
    )
    best = _Incumbent(first_order, first_value, elapsed())
    lp = cutting_plane_bound(
        w, time_limit_s=0.5 * remaining(), target=_proof_target(best.value, integral)
    )
    bound = _tighten(lp.bound, integral)
    method = "lp"
    if lp.integral:
        lp_order = tuple(int(x) for x in pairs_to_order(lp.x, n))
        best.offer(lp_order, lop_value(w, lp_order), elapsed())
    if not _is_proven(best.value, bound) and lp.complete and remaining() > 0:
        milp_bound, milp_order = _milp_bound(w, lp.pool, time_limit_s=0.5 * remaining())
        bound = min(bound, _tighten(milp_bound, integral))
        method = "milp"
        if milp_order is not None:
            order = tuple(int(x) for x in milp_order)
            best.offer(order, lop_value(w, order), elapsed())
    if not _is_proven(best.value, bound) and remaining() > 0:
        method = "heuristic"
        order, value = memetic_lop(w, seed=seed + 1, time_limit_s=remaining(), initial=best.order)
        best.offer(order, value, elapsed())
    bound = max(bound, best.value)
    return LopSolution(
        order=best.order,
        value=best.value,
        bound=bound,
        proven_optimal=_is_proven(best.value, bound),
        method=method,
        time_to_best_s=best.found_at_s,
        wall_time_s=elapsed(),
        lp_rounds=lp.rounds,
        lp_cuts=lp.cuts,
    )
