"""Engine for large unconstrained Linear Ordering Problems: best order, proven bound.

``solve_lop(W)`` maximizes ``sum_{k<l} W[p_k, p_l]`` over permutations ``p`` (diagonal ignored)
and returns the best order with a *proven* upper bound:

1. ``n <= 10``: exact subset dynamic programme (``O(2^n n^2)``).
2. The memetic heuristic (:func:`solver.heuristics.memetic_lop`) finds good orders.
3. The 3-dicycle LP relaxation (:mod:`solver.lp_bound`, warm-started HiGHS cutting planes)
   gives a bound; on real-world (input-output) instances it usually equals the heuristic value
   or has an integral, hence optimal, solution.
4. What the LP leaves open is closed after reduced-cost fixing (pairs whose flip would cost
   more than the gap keep their LP side): up to ``n = 50``, when the LP stopped early or its
   gap is more than 0.3 % of the incumbent's lead over the mean order value, by a
   lean CP-SAT model of the LOP (pair literals, all 3-dicycle constraints, linearization level
   2, hinted with the incumbent): its search proves dense random instances whose LP gap is
   real in about a second at ``n = 30``, where a MILP over a weakly fixed pool stalls for
   minutes. Otherwise by a MILP over the LP's cut set, re-separating 3-dicycle cuts from its
   integer optimum until it is transitive (input-output tables: most pairs are fixed).

Up to ``n = 70`` (or with one worker) the phases run in turn: a short heuristic run, the LP, the
MILP, then the heuristic again for the remaining time. Above that, with two workers, the
bounding (2-4) runs in a thread beside the heuristic (HiGHS releases the interpreter lock), and
the LP is abandoned early when its bound stays far above the incumbent (random instances);
when its first round leaves a large gap (SGB, xLOLIB) it waits until a tenth of the budget has
passed, so that the heuristic has the interpreter to itself while it improves fastest, or, from
``n = 150``, stops there with that round's bound. From ``n = 150`` the LP is not started at all
when the pairwise bound (every pair on its better side) is already far above a local optimum
(xLOLIB, RandA1): that bound is reported. Whatever proves optimality first stops the other.
A second, independent memetic search (seed ``seed + 1``) runs in another process
(``forkserver``: the interpreter lock keeps a thread off the second core) and reports its
improvements; the better order of the two is the result. Below ``n = 100`` it starts only if
optimality is not proven within a second. Entry scripts must guard their main code with
``if __name__ == "__main__":``, as for any ``multiprocessing`` use.

Optimality is proven when ``bound - value <= 1e-9 * max(1, |bound|)``; when every off-diagonal
entry of ``W`` is an integer the bound is rounded down to an integer first. The LP bound is
recomputed from the dual values by weak duality (valid whatever the LP's accuracy); the MILP
bound is HiGHS's dual bound at ``mip_rel_gap = 0``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import multiprocessing
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np
from ortools.sat.python import cp_model

from ordo_server.solver.cpsat import solver_parameters
from ordo_server.solver.errors import InvalidProblemError
from ordo_server.solver.heuristics import (
    becker_order,
    insertion_local_search,
    lop_value,
    memetic_lop,
    serve_memetic,
)
from ordo_server.solver.lp_bound import (
    LpBoundResult,
    cutting_plane_bound,
    fixed_pair_bounds,
    milp_over_pool,
    order_to_pairs,
    pair_objective,
    pairs_to_order,
)
from ordo_server.solver.types import FloatMatrix, Order

logger = logging.getLogger(__name__)

_DP_MAX_N = 10
# Below this size the LP proves fast, and a bounding thread only competes with the heuristic
# for the interpreter lock; above it, HiGHS (which releases the lock) runs beside the heuristic.
_PARALLEL_MIN_N = 70
_PROOF_RELATIVE_TOLERANCE = 1e-9
# Largest n closed by CP-SAT rather than the MILP (C(50, 3) = 19600 transitivity rows).
_CPSAT_MAX_N = 50
# ... unless the complete LP's shift-invariant gap (see _relative_gap) is at most this: then the
# MILP over the pool is faster (input-output tables: 1e-4 at most; dense random n = 30: ~1e-2).
_MILP_MAX_GAP = 3e-3
# A bounding thread whose first LP round leaves a shift-invariant gap above _DEFER_GAP pauses
# until _DEFER_SHARE of the budget has passed (see _bound_and_close).
_DEFER_GAP = 0.3
_DEFER_SHARE = 0.1
# ... or, from this size on, stops after that round (see _bound_and_close).
_GIVE_UP_FAR_LP_N = 150
# From that size on, the LP is not even started when the pairwise bound (every pair on its
# better side) is this far above a local optimum of the start order, by the shift-invariant gap
# of _relative_gap: its first round would hardly lower that bound (xLOLIB be75eec_150: 0.55
# before, 0.44 after; be75np_250: 1.0 and 0.9; RandA1 n = 150: 3.2-3.3), while the instances
# the LP helps read 0.18-0.28 before (MB r150b1, r250c0).
_SKIP_LP_GAP = 0.45
# Non-integer pair gains are scaled so that their absolute sum is about 2^50: the rounding slack
# of the bound (half a unit per pair) then stays near 1e-12 of the objective's range.
_CPSAT_SCALED_MASS = float(2**50)
# With two workers above _PARALLEL_MIN_N a second search runs in another process (the
# interpreter lock keeps a thread from using the second core). It starts after this many
# seconds unless optimality is proven by then (input-output tables: median 0.08 s, worst
# 0.65 s), so easy instances never pay for a process: the first start in an interpreter waits
# ~1 s for the fork server to import the solver (usa79 took 1.2 s with 0.25 s here).
_SECOND_SEARCH_DELAY_S = 1.0
# From this size on nothing proves optimality within that second (MB n = 100: the LP proves in
# 2-2.5 s; xLOLIB and RandA1 never), so the second search starts at once.
_SECOND_SEARCH_AT_ONCE_N = 100
# How long closing waits for the second search to stop before it is terminated.
_SECOND_SEARCH_GRACE_S = 0.5


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
    if not math.isfinite(bound):
        return False
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


class _Shared:
    """Incumbent and bound shared by the heuristic (main thread) and the bounding thread."""

    def __init__(self, order: Order, value: float, integral: bool, started: float) -> None:
        self.lock = threading.Lock()
        self.order = order
        self.value = value
        self.found_at = time.perf_counter()
        self.bound = math.inf
        self.integral = integral
        self.started = started
        self.method = "heuristic"
        self.lp_rounds = 0
        self.lp_rows = 0
        self.proven = threading.Event()
        self.finished = threading.Event()

    def should_stop(self) -> bool:
        return self.proven.is_set() or self.finished.is_set()

    def offer(self, order: Order, value: float) -> None:
        with self.lock:
            if value > self.value:
                self.order, self.value, self.found_at = order, value, time.perf_counter()
            self._check()

    def tighten_bound(self, bound: float, method: str) -> None:
        with self.lock:
            rounded = _tighten(bound, self.integral)
            if rounded < self.bound:
                self.bound = rounded
                self.method = method
            self._check()

    def proof_target(self) -> float:
        return _proof_target(self.value, self.integral)

    def _check(self) -> None:
        if _is_proven(self.value, self.bound):
            self.proven.set()


def _bound_and_close(
    weights: FloatMatrix,
    shared: _Shared,
    *,
    time_limit_s: float,
    num_workers: int = 1,
    seed: int = 0,
    in_thread: bool = False,
) -> None:
    """Bounding phase: 3-dicycle LP, then CP-SAT or a MILP over reduced-cost-fixed pairs.

    ``in_thread``: it runs beside the heuristic (which it then lets go first on hard LPs).
    """
    n = weights.shape[0]
    deadline = time.perf_counter() + time_limit_s
    defer_until = time.perf_counter() + _DEFER_SHARE * time_limit_s
    if in_thread and n >= _GIVE_UP_FAR_LP_N:
        far_bound = _pairwise_bound_out_of_lp_reach(weights, shared.order)
        if far_bound is not None:
            # Its first round would hold a core for 0.6-1.8 s at n = 250 and stop there anyway.
            shared.tighten_bound(far_bound, "lp")
            return

    given_up = threading.Event()

    def yield_to_heuristic(rounds: int, bound: float, baseline: float) -> None:
        # Beside the heuristic, an LP far from the incumbent after its first round (SGB, xLOLIB:
        # shift-invariant gap 0.4-1; MB 0.15-0.2; input-output tables <= 0.1) waits a tenth of
        # the budget: its separation holds the interpreter lock and would slow the heuristic
        # just when it finds most of its improvements. From n = 150 on, such an LP stops there
        # with its first bound: each later round costs seconds of a core there and the bound
        # stays 10-30 % above the optimum (xLOLIB), while SGB (n = 75) is proven in under a
        # minute.
        lead = shared.value - baseline
        if not in_thread or rounds != 1 or lead <= 0 or bound - shared.value <= _DEFER_GAP * lead:
            return
        if n >= _GIVE_UP_FAR_LP_N:
            given_up.set()
            return
        while time.perf_counter() < defer_until and not shared.should_stop():
            shared.proven.wait(0.05)

    lp = cutting_plane_bound(
        weights,
        time_limit_s=time_limit_s,
        target=shared.proof_target,
        should_stop=lambda: shared.should_stop() or given_up.is_set(),
        on_round=yield_to_heuristic,
    )
    shared.lp_rounds, shared.lp_rows = lp.rounds, lp.pool.size
    if lp.integral:
        order = tuple(int(x) for x in pairs_to_order(lp.x, n))
        shared.offer(order, lop_value(weights, order))
    shared.tighten_bound(lp.bound, "lp")
    if shared.proven.is_set() or time.perf_counter() >= deadline:
        return
    if n <= _CPSAT_MAX_N and (
        not lp.complete or _relative_gap(weights, lp.bound, shared.value) > _MILP_MAX_GAP
    ):
        _close_with_cpsat(
            weights, shared, lp, deadline=deadline, num_workers=num_workers, seed=seed
        )
        return
    if not lp.complete:
        return
    incumbent = shared.value
    lower, upper = fixed_pair_bounds(lp, incumbent=incumbent, integral=shared.integral)
    logger.debug("MILP: %d of %d pairs fixed", int((upper - lower == 0).sum()), lower.size)
    milp_bound, milp_order = milp_over_pool(
        weights,
        lp.pool,
        lower=lower,
        upper=upper,
        time_limit_s=deadline - time.perf_counter(),
    )
    if milp_order is not None:
        order = tuple(int(x) for x in milp_order)
        shared.offer(order, lop_value(weights, order))
    # Orders outside the fixed pairs are worth at most the incumbent (see fixed_pair_bounds).
    shared.tighten_bound(max(milp_bound, incumbent), "milp")


def _close_with_cpsat(
    weights: FloatMatrix,
    shared: _Shared,
    lp: LpBoundResult,
    *,
    deadline: float,
    num_workers: int,
    seed: int,
) -> None:
    """Close the gap with CP-SAT over the pairs that reduced-cost fixing leaves free.

    Every order better than the incumbent keeps the fixed pairs on their LP side (see
    :func:`solver.lp_bound.fixed_pair_bounds`), so ``max(CP-SAT bound, incumbent)`` bounds the
    optimum. Fixing is used only when the LP finished (its reduced costs price every pair).
    """
    n = weights.shape[0]
    incumbent = shared.value
    d, const = pair_objective(weights)
    if lp.complete:
        lower, upper = fixed_pair_bounds(lp, incumbent=incumbent, integral=shared.integral)
    else:
        lower, upper = np.zeros_like(d), np.ones_like(d)
    scale = _pair_scale(d, shared.integral)
    scaled = np.rint(d * scale)
    # True gain <= scaled / scale + slack for each pair taken "before" (x = 1).
    slack = float(np.maximum(d - scaled / scale, 0.0).sum())
    model = cp_model.CpModel()
    rows, cols = np.triu_indices(n, 1)
    pairs = [
        model.new_int_var(int(low), int(high), f"y_{a}_{b}")
        for a, b, low, high in zip(rows, cols, lower, upper, strict=True)
    ]
    for a, b, c in itertools.combinations(range(n), 3):
        ab, bc, ac = pairs[_pair(n, a, b)], pairs[_pair(n, b, c)], pairs[_pair(n, a, c)]
        model.add_linear_constraint(ab + bc - ac, 0, 1)
    model.maximize(sum(int(k) * y for k, y in zip(scaled, pairs, strict=True) if k != 0))
    x_hint = order_to_pairs(np.asarray(shared.order, dtype=np.int64), n)
    for y, value in zip(pairs, x_hint, strict=True):
        model.add_hint(y, int(value))
    solver = solver_parameters(
        time_limit_s=max(0.01, deadline - time.perf_counter()),
        num_workers=num_workers,
        seed=seed,
    )
    status = solver.solve(model)
    logger.debug(
        "CP-SAT close: n=%d fixed=%d/%d status=%s %.2fs",
        n,
        int((upper - lower == 0).sum()),
        d.size,
        solver.status_name(status),
        solver.wall_time,
    )
    if status == cp_model.INFEASIBLE:
        # No order keeps the fixed pairs: none beats the incumbent.
        shared.tighten_bound(incumbent, "cpsat")
        return
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return
    x = np.array([solver.value(y) for y in pairs], dtype=np.float64)
    order = tuple(int(k) for k in pairs_to_order(x, n))
    shared.offer(order, lop_value(weights, order))
    cp_bound = const + solver.best_objective_bound / scale + slack
    shared.tighten_bound(max(cp_bound, incumbent) if lp.complete else cp_bound, "cpsat")


def _process_context() -> multiprocessing.context.ForkServerContext:
    """Process context of the second search: ``forkserver``, preloading this module.

    Children fork from a server that imported the solver once (``spawn`` re-imports numpy,
    scipy and OR-Tools in every child, ~1 s of a 10 s budget); plain ``fork`` is unsafe from a
    process that runs HiGHS threads.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


class _SecondSearch:
    """A second, independent memetic search in another process (:func:`serve_memetic`).

    Started from a thread after ``delay_s`` unless optimality is proven by then (starting a
    process may wait about a second for the fork server). That thread then reads the search's
    improvements and offers each to ``shared`` with its value recomputed here, so the proof
    and the result see them at once. If the process fails to start or dies, the first search
    simply goes on alone.
    """

    def __init__(
        self,
        weights: FloatMatrix,
        shared: _Shared,
        *,
        seed: int,
        deadline_epoch_s: float,
        delay_s: float = _SECOND_SEARCH_DELAY_S,
    ) -> None:
        self._weights = weights
        self._shared = shared
        self._seed = seed
        self._deadline_epoch_s = deadline_epoch_s
        self._delay_s = delay_s
        self._closing = threading.Event()
        # Set once the start is done or given up: _connection and _process are final then.
        self._start_done = threading.Event()
        self._connection: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self.improvements = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            connection = self._start()
        finally:
            self._start_done.set()
        if connection is not None:
            self._read(connection)

    def _start(self) -> Connection | None:
        if self._closing.wait(self._delay_s) or self._shared.proven.is_set():
            return None
        context = _process_context()
        parent_end, child_end = context.Pipe()
        process = context.Process(
            target=serve_memetic,
            args=(child_end, self._weights),
            kwargs={
                "seed": self._seed,
                "deadline_epoch_s": self._deadline_epoch_s,
                "initial": self._shared.order,
            },
            daemon=True,
        )
        try:
            process.start()
        except OSError:  # no process to be had (limits): the first search goes on alone
            logger.warning("LOP second search process did not start", exc_info=True)
            parent_end.close()
            return None
        finally:
            child_end.close()
        self._connection, self._process = parent_end, process
        return parent_end

    def _read(self, connection: Connection) -> None:
        """Offer every improvement the search reports until it ends (``None``) or dies."""
        n = self._weights.shape[0]
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                return
            if message is None:
                return
            order = tuple(int(x) for x in message[0])
            if sorted(order) == list(range(n)):
                self.improvements += 1
                self._shared.offer(order, lop_value(self._weights, order))

    def close(self) -> None:
        """Stop the search (or its start) and join it, after reading all it reported;
        terminated if it does not stop within ``_SECOND_SEARCH_GRACE_S``."""
        self._closing.set()
        self._start_done.wait()
        connection, process = self._connection, self._process
        if connection is None or process is None:
            self._thread.join()
            return
        with contextlib.suppress(OSError, ValueError):  # it may have died: EPIPE
            connection.send(None)
        process.join(timeout=_SECOND_SEARCH_GRACE_S)
        if process.is_alive():
            process.terminate()
            process.join()
        self._thread.join()  # the reader drains the pipe to the search's None or EOF
        process.close()
        connection.close()


def _relative_gap(weights: FloatMatrix, bound: float, value: float) -> float:
    """``(bound - value) / (value - mean order value)``: unchanged by adding a constant to every
    order's value, unlike a gap relative to ``value``."""
    d, const = pair_objective(weights)
    lead = value - (const + 0.5 * float(d.sum()))
    return (bound - value) / lead if lead > 0 else math.inf


def _pairwise_bound_out_of_lp_reach(weights: FloatMatrix, start: Order) -> float | None:
    """The pairwise bound (every pair on its better side: the LP bound without 3-dicycle rows,
    objective units) when its shift-invariant gap over the local optimum reached from ``start``
    exceeds ``_SKIP_LP_GAP``, else ``None`` (a few milliseconds at ``n = 250``)."""
    d, const = pair_objective(weights)
    bound = const + float(np.maximum(d, 0.0).sum())
    value = lop_value(weights, insertion_local_search(weights, start))
    return bound if _relative_gap(weights, bound, value) > _SKIP_LP_GAP else None


def _pair(n: int, a: int, b: int) -> int:
    """Index of pair ``a < b`` in row-major upper-triangle order (as in :mod:`solver.lp_bound`)."""
    return a * (2 * n - a - 1) // 2 + (b - a - 1)


def _pair_scale(d: FloatMatrix, integral: bool) -> float:
    """Integer units per objective unit for CP-SAT: 1 for integer data of moderate size."""
    mass = float(np.abs(d).sum())
    if integral and mass < _CPSAT_SCALED_MASS:
        return 1.0
    return _CPSAT_SCALED_MASS / max(mass, 1e-300)


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
        Threads the solver may use (``>= 1``): with 2 or more and ``n > 70`` the bound runs in
        a second thread beside the heuristic, and a second, independent memetic search (seed
        ``seed + 1``) runs in another process; more than 2 are not used yet.
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
    start = becker_order(w) if initial_order is None else initial_order
    shared = _Shared(start, lop_value(w, start), integral, started)
    if num_workers >= 2 and n > _PARALLEL_MIN_N:
        bounding = threading.Thread(
            target=_bound_and_close,
            args=(w, shared),
            kwargs={"time_limit_s": remaining(), "in_thread": True},
            daemon=True,
        )
        bounding.start()
        second = _SecondSearch(
            w,
            shared,
            seed=seed + 1,
            deadline_epoch_s=time.time() + remaining(),
            delay_s=0.0 if n >= _SECOND_SEARCH_AT_ONCE_N else _SECOND_SEARCH_DELAY_S,
        )
        try:
            memetic_lop(
                w,
                seed=seed,
                time_limit_s=remaining(),
                initial=start,
                should_stop=shared.proven.is_set,
                on_improvement=shared.offer,
            )
        finally:
            shared.finished.set()
            second.close()
        bounding.join(timeout=remaining() + 1.0)
    else:
        memetic_lop(
            w,
            seed=seed,
            time_limit_s=min(remaining(), _first_heuristic_budget(n, time_limit_s)),
            initial=start,
            on_improvement=shared.offer,
        )
        _bound_and_close(
            w, shared, time_limit_s=_bound_budget(n, remaining()), num_workers=num_workers
        )
        if not shared.proven.is_set() and remaining() > 0:
            memetic_lop(
                w,
                seed=seed + 1,
                time_limit_s=remaining(),
                initial=shared.order,
                should_stop=shared.proven.is_set,
                on_improvement=shared.offer,
            )
    with shared.lock:
        value = shared.value
        bound = max(shared.bound, value)
        return LopSolution(
            order=shared.order,
            value=value,
            bound=bound,
            proven_optimal=_is_proven(value, bound),
            method=shared.method if _is_proven(value, bound) else "heuristic",
            time_to_best_s=shared.found_at - started,
            wall_time_s=elapsed(),
            lp_rounds=shared.lp_rounds,
            lp_cuts=shared.lp_rows,
        )


def _bound_budget(n: int, remaining_s: float) -> float:
    """Seconds for the bounding phase run in turn: all of it where CP-SAT closes the gap (its
    search also finds orders), else 60 % (the heuristic gets the rest)."""
    return remaining_s if n <= _CPSAT_MAX_N else 0.6 * remaining_s


def _first_heuristic_budget(n: int, time_limit_s: float) -> float:
    """Seconds for the heuristic before the bound, single-threaded: short for LP-friendly sizes."""
    return min(0.3 * time_limit_s, 0.02 + 2e-5 * n * n)
