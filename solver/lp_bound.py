"""Upper bounds for the Linear Ordering Problem from the 3-dicycle LP relaxation.

Formulation (Grötschel, Jünger & Reinelt 1984), one variable per unordered pair ``a < b``:
``x[a, b] = 1`` when ``a`` comes before ``b`` (``x[b, a] = 1 - x[a, b]`` is substituted), so

    maximize  const + sum_{a<b} d[a, b] x[a, b],   d = W - W.T,  const = sum_{a<b} W[b, a]
    subject to 0 <= x[a, b] + x[b, c] - x[a, c] <= 1   for a < b < c   (3-dicycle inequalities)
               0 <= x <= 1.

There are ``2 C(n, 3)`` such inequalities (1.1 million at ``n = 150``), so they are separated: a
cutting-plane loop solves the LP over the cuts found so far with HiGHS (through scipy), finds the
violated 3-dicycle inequalities of its optimum by an ``O(n^3)`` numpy scan, adds the most violated
ones, and repeats. The optimum of every intermediate LP is already an upper bound (it relaxes the
full LP), and so is the optimum of a MILP over the same cut set.

Bounds are made safe against the LP solver's tolerances by recomputing them from the dual values
``y >= 0`` of the cut rows with weak duality over the box ``0 <= x <= 1``:

    bound(y) = const + sum_r y_r rhs_r + sum_e max(0, d_e - (A^T y)_e),

which is an upper bound for *any* ``y >= 0``, whatever the solver's accuracy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.optimize
import scipy.sparse

from solver.types import FloatMatrix

logger = logging.getLogger(__name__)

IntVector = npt.NDArray[np.int64]

# A 3-dicycle inequality counts as violated when it exceeds its right-hand side by this much
# (x is in [0, 1], so this is an absolute tolerance on a sum of three variables).
_VIOLATION_TOLERANCE = 1e-6
# An LP value this close to 0 or 1 counts as integral.
_INTEGRALITY_TOLERANCE = 1e-6


@dataclass(slots=True)
class CutPool:
    """3-dicycle inequalities found so far.

    Row ``r`` reads ``sign[r] * (x[a,b] + x[b,c] - x[a,c]) <= rhs[r]`` with ``a < b < c`` stored in
    ``triples[r]``; ``sign = +1`` has ``rhs = 1`` and ``sign = -1`` has ``rhs = 0``.
    """

    n: int
    triples: IntVector = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    signs: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    @property
    def size(self) -> int:
        """Number of rows."""
        return int(self.signs.shape[0])

    @property
    def rhs(self) -> npt.NDArray[np.float64]:
        """Right-hand sides, shape ``(size,)``."""
        return np.where(self.signs > 0, 1.0, 0.0)

    def add(self, triples: IntVector, signs: npt.NDArray[np.float64]) -> None:
        """Append rows (no duplicate check: callers only add violated, hence new, rows)."""
        self.triples = np.concatenate([self.triples, triples])
        self.signs = np.concatenate([self.signs, signs])

    def matrix(self) -> scipy.sparse.csr_array:
        """Row matrix ``A`` of shape ``(size, n (n - 1) / 2)`` over the pair variables."""
        a, b, c = self.triples[:, 0], self.triples[:, 1], self.triples[:, 2]
        columns = np.stack(
            [pair_index(self.n, a, b), pair_index(self.n, b, c), pair_index(self.n, a, c)], axis=1
        )
        values = self.signs[:, None] * np.array([1.0, 1.0, -1.0])[None, :]
        rows = np.repeat(np.arange(self.size), 3)
        return scipy.sparse.csr_array(
            (values.ravel(), (rows, columns.ravel())), shape=(self.size, self.n * (self.n - 1) // 2)
        )


def pair_index(n: int, a: IntVector | int, b: IntVector | int) -> IntVector:
    """Index of the pair variable ``x[a, b]`` (``a < b``) in row-major upper-triangle order."""
    a_arr = np.asarray(a, dtype=np.int64)
    b_arr = np.asarray(b, dtype=np.int64)
    return a_arr * (2 * n - a_arr - 1) // 2 + (b_arr - a_arr - 1)


def pair_objective(weights: FloatMatrix) -> tuple[npt.NDArray[np.float64], float]:
    """``(d, const)``: LP objective coefficients over pairs ``a < b`` and the constant.

    ``d[e] = W[a, b] - W[b, a]`` for the pair ``e = (a, b)``, ``const = sum_{a<b} W[b, a]``, so
    that an order's value is ``const + d . x``. ``O(n^2)``.
    """
    upper_rows, upper_cols = np.triu_indices(weights.shape[0], 1)
    d = weights[upper_rows, upper_cols] - weights[upper_cols, upper_rows]
    const = float(weights[upper_cols, upper_rows].sum())
    return d, const


def order_to_pairs(order: IntVector, n: int) -> npt.NDArray[np.float64]:
    """Pair vector ``x``, shape ``(n (n - 1) / 2,)``, of an order: ``x[a, b] = 1`` iff a first."""
    position = np.empty(n, dtype=np.int64)
    position[np.asarray(order, dtype=np.int64)] = np.arange(n)
    upper_rows, upper_cols = np.triu_indices(n, 1)
    return (position[upper_rows] < position[upper_cols]).astype(np.float64)


def pairs_to_matrix(x: npt.NDArray[np.float64], n: int) -> FloatMatrix:
    """Upper-triangular ``U`` (shape ``(n, n)``) with ``U[a, b] = x[a, b]`` for ``a < b``."""
    upper = np.zeros((n, n))
    upper[np.triu_indices(n, 1)] = x
    return upper


def separate(
    x: npt.NDArray[np.float64], n: int, *, max_cuts: int
) -> tuple[IntVector, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Violated 3-dicycle inequalities of the pair vector ``x``, most violated first.

    Returns ``(triples, signs, violations)`` for at most ``max_cuts`` rows (see
    :class:`CutPool`). ``O(n^3)`` time in ``n`` numpy steps of ``O(n^2)`` memory each.
    """
    upper = pairs_to_matrix(x, n)
    found_triples: list[IntVector] = []
    found_signs: list[npt.NDArray[np.float64]] = []
    found_violations: list[npt.NDArray[np.float64]] = []
    for a in range(n - 2):
        tail = upper[a, a + 1 :]
        # s[b', c'] = x[a,b] + x[b,c] - x[a,c] for b = a+1+b', c = a+1+c', needed for b < c only.
        s = tail[:, None] + upper[a + 1 :, a + 1 :] - tail[None, :]
        over = s - 1.0
        for sign, violation in ((1.0, over), (-1.0, -s)):
            bs, cs = np.nonzero(np.triu(violation > _VIOLATION_TOLERANCE, 1))
            if bs.size == 0:
                continue
            found_triples.append(np.stack([np.full(bs.size, a), bs + a + 1, cs + a + 1], axis=1))
            found_signs.append(np.full(bs.size, sign))
            found_violations.append(violation[bs, cs])
    if not found_triples:
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0), np.zeros(0)
    triples = np.concatenate(found_triples).astype(np.int64)
    signs = np.concatenate(found_signs)
    violations = np.concatenate(found_violations)
    keep = np.argsort(-violations, kind="stable")[:max_cuts]
    return triples[keep], signs[keep], violations[keep]


def dual_bound(
    d: npt.NDArray[np.float64],
    const: float,
    pool: CutPool,
    matrix: scipy.sparse.csr_array,
    duals: npt.NDArray[np.float64],
) -> float:
    """Weak-duality upper bound from nonnegative row multipliers (any ``duals`` give a bound)."""
    y = np.maximum(duals, 0.0)
    reduced = d - matrix.T @ y if pool.size else d
    return const + float(y @ pool.rhs) + float(np.maximum(reduced, 0.0).sum())


@dataclass(frozen=True, slots=True)
class LpBoundResult:
    """Outcome of the cutting-plane loop.

    Attributes
    ----------
    bound : float
        Proven upper bound on the LOP optimum (objective units).
    x : ndarray, shape (n (n - 1) / 2,)
        The last LP optimum over pairs ``a < b``.
    complete : bool
        ``x`` violates no 3-dicycle inequality, so ``bound`` is the full 3-dicycle LP bound.
    integral : bool
        ``complete`` and ``x`` is 0/1: it is then an optimal order (see :func:`pairs_to_order`).
    rounds, cuts : int
        LP solves and rows in the final pool.
    pool : CutPool
        The rows found, reusable by a MILP.
    """

    bound: float
    x: npt.NDArray[np.float64]
    complete: bool
    integral: bool
    rounds: int
    cuts: int
    pool: CutPool


def pairs_to_order(x: npt.NDArray[np.float64], n: int) -> IntVector:
    """The order of a 0/1 transitive pair vector: by decreasing number of elements each precedes."""
    upper = pairs_to_matrix(np.round(x), n)
    before = upper + np.tril(1.0 - upper.T, -1)
    return np.argsort(-before.sum(axis=1), kind="stable").astype(np.int64)


def cutting_plane_bound(
    weights: FloatMatrix,
    *,
    time_limit_s: float,
    target: float | None = None,
    pool: CutPool | None = None,
) -> LpBoundResult:
    """3-dicycle LP bound by a cutting-plane loop with HiGHS.

    Parameters
    ----------
    weights : FloatMatrix, shape (n, n)
        LOP gains ``W`` (objective units), ``n >= 3``; the diagonal is ignored.
    time_limit_s : float
        Wall-clock budget (seconds); the loop stops after the round that exceeds it.
    target : float, optional
        Stop as soon as the bound is ``<= target`` (e.g. a known order's value, rounded up to what
        proves it).
    pool : CutPool, optional
        Rows to start from.

    Returns
    -------
    LpBoundResult
        Each round solves an LP with ``n (n - 1) / 2`` columns and the pool's rows, then scans
        ``O(n^3)`` triples.
    """
    n = weights.shape[0]
    deadline = time.perf_counter() + time_limit_s
    d, const = pair_objective(np.asarray(weights, dtype=np.float64))
    pool = CutPool(n) if pool is None else pool
    max_cuts_per_round = max(200, 8 * n)
    bound = const + float(np.maximum(d, 0.0).sum())
    x = (d > 0).astype(np.float64)
    rounds = 0
    complete = False
    while True:
        triples, signs, _ = separate(x, n, max_cuts=max_cuts_per_round)
        if triples.shape[0] == 0:
            complete = True
            break
        if time.perf_counter() >= deadline or (target is not None and bound <= target):
            break
        pool.add(triples, signs)
        matrix = pool.matrix()
        result = scipy.optimize.linprog(
            -d,
            A_ub=matrix,
            b_ub=pool.rhs,
            bounds=(0.0, 1.0),
            method="highs",
            options={"time_limit": max(0.01, deadline - time.perf_counter())},
        )
        rounds += 1
        if result.status != 0 or result.x is None:
            logger.debug("LP round %d stopped: %s", rounds, result.message)
            break
        x = np.asarray(result.x, dtype=np.float64)
        duals = -np.asarray(result.ineqlin.marginals, dtype=np.float64)
        bound = min(bound, dual_bound(d, const, pool, matrix, duals))
    integral = complete and bool(np.all(np.minimum(x, 1.0 - x) <= _INTEGRALITY_TOLERANCE))
    return LpBoundResult(
        bound=bound,
        x=x,
        complete=complete,
        integral=integral,
        rounds=rounds,
        cuts=pool.size,
        pool=pool,
    )
