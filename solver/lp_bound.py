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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.optimize
import scipy.sparse

from ordo_server.solver.types import FloatMatrix

try:  # scipy's bundled HiGHS binding (private; see _IncrementalLp)
    from scipy.optimize._highspy import _core as _highs_core
except ImportError:  # pragma: no cover - depends on the scipy build
    _highs_core = None

logger = logging.getLogger(__name__)

IntVector = npt.NDArray[np.int64]

# A 3-dicycle inequality counts as violated when it exceeds its right-hand side by this much
# (x is in [0, 1], so this is an absolute tolerance on a sum of three variables).
_VIOLATION_TOLERANCE = 1e-6
# An LP value this close to 0 or 1 counts as integral.
_INTEGRALITY_TOLERANCE = 1e-6
# Triples scanned per numpy step of the separation (memory: 8 bytes each, a few arrays).
_SEPARATION_BLOCK = 1 << 21
# The LP is abandoned when, after this share of its budget, the bound is still this far (relative)
# above the target: on random instances (RandA1, xLOLIB) it stays 10-20 % above and gets slow.
_FUTILE_AFTER = 0.1
_FUTILE_GAP = 0.05
# ... and at once when its bound exceeds the target by more than this multiple of the target's
# lead over the mean order value (a shift-invariant gap): after one round RandA1 reads 1.8-3.0,
# SGB 0.7-0.9, xLOLIB 0.5-1.0, input-output tables at most 0.1 (measured on the shipped files).
_HOPELESS_GAP = 1.5
# A row whose slack exceeds this (and has a zero dual) is dropped from the LP after a round.
_PURGE_SLACK = 1e-9


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

    def keep(self, mask: npt.NDArray[np.bool_]) -> None:
        """Keep only the rows where ``mask`` is true."""
        self.triples = self.triples[mask]
        self.signs = self.signs[mask]

    def matrix(self) -> scipy.sparse.csr_array:
        """Row matrix ``A`` of shape ``(size, n (n - 1) / 2)`` over the pair variables."""
        return rows_matrix(self.n, self.triples, self.signs)


def rows_matrix(
    n: int, triples: IntVector, signs: npt.NDArray[np.float64]
) -> scipy.sparse.csr_array:
    """Sparse rows ``sign * (x[a,b] + x[b,c] - x[a,c])``, shape ``(len(signs), n (n - 1) / 2)``."""
    a, b, c = triples[:, 0], triples[:, 1], triples[:, 2]
    # Column order ab < ac < bc keeps every row's indices sorted.
    columns = np.stack([pair_index(n, a, b), pair_index(n, a, c), pair_index(n, b, c)], axis=1)
    values = signs[:, None] * np.array([1.0, -1.0, 1.0])[None, :]
    indptr = np.arange(0, 3 * signs.shape[0] + 1, 3)
    return scipy.sparse.csr_array(
        (values.ravel(), columns.ravel(), indptr), shape=(signs.shape[0], n * (n - 1) // 2)
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
    :class:`CutPool`). ``O(n^3)`` time, in blocks of about ``2^21`` triples.
    """
    upper = pairs_to_matrix(x, n)
    ordered = np.triu(np.ones((n, n), dtype=bool), 1)  # b < c
    block = max(1, _SEPARATION_BLOCK // (n * n))
    found: list[tuple[IntVector, float, npt.NDArray[np.float64]]] = []
    for first in range(0, max(0, n - 2), block):
        heads = np.arange(first, min(n - 2, first + block))
        rows = upper[heads]  # x[a, .] for the block's a
        # s[a, b, c] = x[a,b] + x[b,c] - x[a,c]; only a < b < c is meaningful.
        s = rows[:, :, None] + upper[None, :, :] - rows[:, None, :]
        valid = ordered[None, :, :] & (np.arange(n)[None, :, None] > heads[:, None, None])
        for sign, violation in ((1.0, s - 1.0), (-1.0, -s)):
            a, b, c = np.nonzero(valid & (violation > _VIOLATION_TOLERANCE))
            if a.size:
                triples = np.stack([heads[a], b, c], axis=1).astype(np.int64)
                found.append((triples, sign, violation[a, b, c]))
    if not found:
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0), np.zeros(0)
    triples = np.concatenate([t for t, _, _ in found])
    signs = np.concatenate([np.full(t.shape[0], sign) for t, sign, _ in found])
    violations = np.concatenate([v for _, _, v in found])
    keep = np.argsort(-violations, kind="stable")[:max_cuts]
    return triples[keep], signs[keep], violations[keep]


def reduced_costs(
    d: npt.NDArray[np.float64], matrix: scipy.sparse.csr_array, duals: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """``d - A^T y`` for nonnegative row multipliers ``y`` (negative duals are clipped)."""
    y = np.maximum(duals, 0.0)
    return d - matrix.T @ y if matrix.shape[0] else d.copy()


def dual_bound(
    const: float,
    rhs: npt.NDArray[np.float64],
    duals: npt.NDArray[np.float64],
    reduced: npt.NDArray[np.float64],
    *,
    lower: npt.NDArray[np.float64] | None = None,
    upper: npt.NDArray[np.float64] | None = None,
) -> float:
    """Weak-duality upper bound ``const + y . rhs + max over the box of reduced . x``.

    Valid for *any* nonnegative ``y`` (negative entries are clipped), whatever the accuracy of
    the LP solve that produced it; ``lower``/``upper`` default to the box ``[0, 1]``.
    """
    y = np.maximum(duals, 0.0)
    low = np.zeros_like(reduced) if lower is None else lower
    high = np.ones_like(reduced) if upper is None else upper
    box = np.where(reduced > 0, reduced * high, reduced * low)
    return const + float(y @ rhs) + float(box.sum())


class _IncrementalLp:
    """``max d . x`` over ``0 <= x <= 1`` and a changing set of 3-dicycle rows (``pool``).

    Uses the HiGHS object that scipy bundles, so that each re-solve warm-starts the dual simplex
    from the previous basis (rows added, slack rows deleted). That module
    (``scipy.optimize._highspy``) is private to scipy; when it is missing, every solve goes
    through the public ``scipy.optimize.linprog`` from scratch.
    """

    def __init__(self, d: npt.NDArray[np.float64], n: int) -> None:
        self.d = d
        self.pool = CutPool(n)
        self.highs = _new_highs(d)

    def add(self, triples: IntVector, signs: npt.NDArray[np.float64]) -> None:
        """Append rows."""
        self.pool.add(triples, signs)
        if self.highs is not None:
            matrix = rows_matrix(self.pool.n, triples, signs)
            self.highs.addRows(
                matrix.shape[0],
                np.full(matrix.shape[0], -np.inf),
                np.where(signs > 0, 1.0, 0.0),
                matrix.nnz,
                matrix.indptr[:-1].astype(np.int32),
                matrix.indices.astype(np.int32),
                matrix.data.astype(np.float64),
            )

    def drop(self, rows: IntVector) -> None:
        """Delete rows by index (their slack variables are basic, so the basis stays valid)."""
        if rows.size == 0:
            return
        mask = np.ones(self.pool.size, dtype=bool)
        mask[rows] = False
        self.pool.keep(mask)
        if self.highs is not None:
            self.highs.deleteRows(int(rows.size), rows.astype(np.int32))

    def solve(
        self, time_limit_s: float
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
        """``(x, y)``: optimal columns and row duals (``y >= 0``), or ``None`` if not solved."""
        if self.highs is not None:
            self.highs.setOptionValue("time_limit", max(0.01, time_limit_s))
            self.highs.run()
            if self.highs.getModelStatus() != _highs_core.HighsModelStatus.kOptimal:
                return None
            solution = self.highs.getSolution()
            return (
                np.asarray(solution.col_value, dtype=np.float64),
                np.abs(np.asarray(solution.row_dual, dtype=np.float64)),
            )
        result = scipy.optimize.linprog(
            -self.d,
            A_ub=self.pool.matrix(),
            b_ub=self.pool.rhs,
            bounds=(0.0, 1.0),
            method="highs",
            options={"time_limit": max(0.01, time_limit_s)},
        )
        if result.status != 0 or result.x is None:
            return None
        return (
            np.asarray(result.x, dtype=np.float64),
            -np.asarray(result.ineqlin.marginals, dtype=np.float64),
        )


def _new_highs(d: npt.NDArray[np.float64]) -> Any:
    if _highs_core is None:
        return None
    highs = _highs_core._Highs()
    highs.setOptionValue("output_flag", False)
    m = d.shape[0]
    highs.addCols(
        m,
        d,
        np.zeros(m),
        np.ones(m),
        0,
        np.zeros(m, dtype=np.int32),
        np.zeros(0, dtype=np.int32),
        np.zeros(0),
    )
    highs.changeObjectiveSense(_highs_core.ObjSense.kMaximize)
    return highs


@dataclass(frozen=True, slots=True)
class LpBoundResult:
    """Outcome of the cutting-plane loop.

    Attributes
    ----------
    bound : float
        Proven upper bound on the LOP optimum (objective units).
    x : ndarray, shape (n (n - 1) / 2,)
        The last LP optimum over pairs ``a < b``.
    reduced : ndarray, shape (n (n - 1) / 2,)
        Reduced costs ``d - A^T y`` of the multipliers that gave ``bound``: forcing pair ``e``
        against the sign of ``reduced[e]`` lowers the bound by ``|reduced[e]|``.
    complete : bool
        ``x`` violates no 3-dicycle inequality, so ``bound`` is the full 3-dicycle LP bound.
    integral : bool
        ``complete`` and ``x`` is 0/1: it is then an optimal order (see :func:`pairs_to_order`).
    rounds : int
        LP solves.
    pool : CutPool
        The rows found, reusable by a MILP.
    """

    bound: float
    x: npt.NDArray[np.float64]
    reduced: npt.NDArray[np.float64]
    complete: bool
    integral: bool
    rounds: int
    pool: CutPool


def pairs_to_order(x: npt.NDArray[np.float64], n: int) -> IntVector:
    """The order of a 0/1 transitive pair vector: by decreasing number of elements each precedes."""
    upper = pairs_to_matrix(np.rint(x), n)
    before = upper + np.tril(1.0 - upper.T, -1)
    return np.argsort(-before.sum(axis=1), kind="stable").astype(np.int64)


def cutting_plane_bound(
    weights: FloatMatrix,
    *,
    time_limit_s: float,
    target: Callable[[], float] | None = None,
    max_cuts_per_round: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_round: Callable[[int, float, float], None] | None = None,
) -> LpBoundResult:
    """3-dicycle LP bound by a cutting-plane loop with HiGHS.

    Parameters
    ----------
    weights : FloatMatrix, shape (n, n)
        LOP gains ``W`` (objective units), ``n >= 3``; the diagonal is ignored.
    time_limit_s : float
        Wall-clock budget (seconds); a round in progress is cut at the deadline.
    target : callable, optional
        Returns the bound that suffices (e.g. the best known order's value, plus what rounding
        allows); polled between rounds, the loop stops once the bound is at most that.
    max_cuts_per_round : int, optional
        Most violated rows added per round (default ``60 n``).
    should_stop : callable, optional
        Polled between rounds; the loop ends when it returns true.
    on_round : callable, optional
        Called after every LP solve with ``(rounds, bound, baseline)``: the solves so far, the
        best bound (objective units) and the mean value of all orders, ``const + sum(d) / 2``
        (the reference point of a shift-invariant gap).

    The loop also gives up, as futile, once a tenth of the budget is spent while the bound is
    still more than 5 % above ``target`` (random instances: their LP gap is 10-20 %), and at
    once when the bound's excess over ``target`` is more than 1.5 times ``target``'s lead over
    the mean order value (RandA1-like instances, where the LP only slows the heuristic).

    Returns
    -------
    LpBoundResult
        Each round re-solves (warm) an LP with ``n (n - 1) / 2`` columns and the pool's rows, then
        scans the ``O(n^3)`` triples.
    """
    n = weights.shape[0]
    started = time.perf_counter()
    deadline = started + time_limit_s
    d, const = pair_objective(np.asarray(weights, dtype=np.float64))
    lp = _IncrementalLp(d, n)
    per_round = max_cuts_per_round or max(500, 60 * n)
    reduced = d.copy()
    bound = dual_bound(const, np.zeros(0), np.zeros(0), reduced)
    baseline = const + 0.5 * float(d.sum())
    x = (d > 0).astype(np.float64)
    rounds = 0
    complete = False
    while True:
        triples, signs, _ = separate(x, n, max_cuts=per_round)
        if triples.shape[0] == 0:
            complete = True
            break
        if _should_end(bound, target, should_stop, started, deadline):
            break
        lp.add(triples, signs)
        solved = lp.solve(deadline - time.perf_counter())
        rounds += 1
        if solved is None:
            logger.debug("LP round %d not solved (time limit or numerical trouble)", rounds)
            break
        x, duals = solved
        matrix = lp.pool.matrix()
        round_reduced = reduced_costs(d, matrix, duals)
        round_bound = dual_bound(const, lp.pool.rhs, duals, round_reduced)
        if round_bound < bound:
            bound, reduced = round_bound, round_reduced
        if target is not None and _hopeless(bound, target(), baseline):
            logger.debug("LP abandoned after %d rounds: bound %s far above target", rounds, bound)
            break
        if on_round is not None:
            paused = time.perf_counter()
            on_round(rounds, bound, baseline)
            # Time the caller spends here (e.g. waiting) does not count toward futility.
            started += time.perf_counter() - paused
        if should_stop is not None and should_stop():
            break  # before another separation (n = 250: 0.2-0.3 s)
        # Rows neither tight nor priced are dropped: the LOP LP is highly degenerate, and a
        # small active set keeps each warm re-solve cheap (dropped rows come back if violated).
        slack = lp.pool.rhs - matrix @ x
        lp.drop(np.flatnonzero((slack > _PURGE_SLACK) & (duals <= 0.0)))
    integral = complete and bool(np.all(np.minimum(x, 1.0 - x) <= _INTEGRALITY_TOLERANCE))
    logger.debug(
        "LP: n=%d rounds=%d rows=%d bound=%s complete=%s", n, rounds, lp.pool.size, bound, complete
    )
    return LpBoundResult(
        bound=bound,
        x=x,
        reduced=reduced,
        complete=complete,
        integral=integral,
        rounds=rounds,
        pool=lp.pool,
    )


def _should_end(
    bound: float,
    target: Callable[[], float] | None,
    should_stop: Callable[[], bool] | None,
    started: float,
    deadline: float,
) -> bool:
    now = time.perf_counter()
    if now >= deadline or (should_stop is not None and should_stop()):
        return True
    if target is None:
        return False
    goal = target()
    if bound <= goal:
        return True
    spent = (now - started) / max(1e-9, deadline - started)
    return spent >= _FUTILE_AFTER and bound - goal > _FUTILE_GAP * max(1.0, abs(goal))


def _hopeless(bound: float, goal: float, baseline: float) -> bool:
    """The bound is so far above ``goal`` (relative to ``goal - baseline``) that the LP cannot
    prove it in any useful time: random dense instances."""
    lead = goal - baseline
    return lead > 0 and bound - goal > _HOPELESS_GAP * lead


def fixed_pair_bounds(
    lp: LpBoundResult, *, incumbent: float, integral: bool
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Reduced-cost fixing: pair bounds ``(lower, upper)`` that every better order satisfies.

    An order with pair ``e`` against the sign of ``lp.reduced[e]`` is worth at most
    ``lp.bound - |lp.reduced[e]|``; when that cannot beat ``incumbent`` (by at least 1 for integer
    data), pair ``e`` is fixed to the side its reduced cost favours.
    """
    slack = lp.bound - incumbent - (1.0 if integral else 0.0)
    margin = 1e-9 * max(1.0, abs(lp.bound))
    fixable = np.abs(lp.reduced) > slack + margin
    lower = np.where(fixable & (lp.reduced > 0), 1.0, 0.0)
    upper = np.where(fixable & (lp.reduced < 0), 0.0, 1.0)
    return lower, upper


def milp_over_pool(
    weights: FloatMatrix,
    pool: CutPool,
    *,
    lower: npt.NDArray[np.float64],
    upper: npt.NDArray[np.float64],
    time_limit_s: float,
) -> tuple[float, IntVector | None]:
    """MILP over the pool's rows and the given pair bounds, re-separating until transitive.

    Returns ``(bound, order)``: an upper bound on every order within the pair bounds and, when the
    MILP optimum satisfies every 3-dicycle inequality, its order (optimal within those bounds).
    ``bound`` is ``inf`` when no MILP finished its root.
    """
    n = weights.shape[0]
    deadline = time.perf_counter() + time_limit_s
    d, const = pair_objective(np.asarray(weights, dtype=np.float64))
    bound = np.inf
    while time.perf_counter() < deadline:
        result = scipy.optimize.milp(
            -d,
            integrality=np.ones_like(d),
            bounds=scipy.optimize.Bounds(lower, upper),
            constraints=scipy.optimize.LinearConstraint(pool.matrix(), -np.inf, pool.rhs),
            options={"time_limit": max(0.01, deadline - time.perf_counter()), "mip_rel_gap": 0.0},
        )
        dual = getattr(result, "mip_dual_bound", None)
        if result.status == 2:  # infeasible: no order within the bounds at all
            return -np.inf, None
        if dual is not None and np.isfinite(dual):
            bound = min(bound, const - float(dual))
        if result.status != 0 or result.x is None:
            return bound, None
        x = np.rint(np.asarray(result.x, dtype=np.float64)).astype(np.float64)
        triples, signs, _ = separate(x, n, max_cuts=max(200, 25 * n))
        if triples.shape[0] == 0:
            return min(bound, const + float(d @ x)), pairs_to_order(x, n)
        pool.add(triples, signs)
    return bound, None
