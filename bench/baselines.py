"""Baselines of the closed-loop benchmark, on any world of :mod:`bench.worlds`.

Every sequential baseline sees a world only through jobs (``world.start``, ``job.train``,
``job.evaluate``: noisy evaluations), never through :meth:`World.final_utilities`, which is the
oracle's. The objective is the final *mean* utility over tasks (utility units). A baseline
returns a :class:`Trace`: its recommendation after each of its runs.

- :func:`best_of_random`: ``R`` random orders, the best reported one.
- :func:`gp_over_orders`: BOPS (Deshwal et al., AAAI 2022, arXiv 2112.01049), a Gaussian
  process over permutations with the Mallows kernel on the reported final means only, expected
  improvement maximized by local search over orders.
- :func:`naive_pairwise`: plain means of the in-run pairwise effects, no priors, no
  uncertainty; each run and the recommendation is the exact maximizer of that prediction.
- :func:`paper_protocol`: Omni-Thinker's single-task and two-stage measurements.
- :func:`structured_first_value`, :func:`random_value`, :func:`joint_value`: exact values of
  the fixed heuristics, from the oracle.

Orders are tuples of task indices, first trained first.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Protocol

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.stats

from bench.worlds.base import Evaluation, FloatArray, IntArray, World
from bench.worlds.oracle import OracleResult
from ordo_server.solver.estimation import TaskKind
from ordo_server.solver.lop import solve_lop
from ordo_server.solver.types import Order

__all__ = [
    "GPHyper",
    "GPPosterior",
    "Method",
    "NaivePairwise",
    "SearchResult",
    "Trace",
    "before_indicators",
    "best_of_random",
    "expected_improvement",
    "fit_gp_hyper",
    "gp_over_orders",
    "joint_value",
    "kendall_distance",
    "local_search",
    "lop_argmax",
    "mallows_kernel",
    "naive_pairwise",
    "paper_protocol",
    "propose_by_ei",
    "random_value",
    "recommend_by_mean",
    "regret_percent",
    "run_order",
    "structured_first_value",
]

BRUTE_FORCE_MAX_N = 8
"""Up to this ``n`` the LOP maximizers are found by enumerating all ``n!`` orders."""
LOP_TIME_LIMIT_S = 10.0
"""Time limit of :func:`solver.lop.solve_lop` above :data:`BRUTE_FORCE_MAX_N` (exact DP there
up to its own limit)."""


@dataclass(frozen=True, slots=True)
class Trace:
    """A sequential method's choices after each of its runs (index r - 1: after r runs)."""

    method: str
    recommended: list[Order]
    """The method's recommendation after r runs."""
    best_run: list[Order]
    """The run whose REPORTED final mean was best so far."""
    stages: list[int]
    """Training stages used so far (cumulative)."""
    runs: list[Order] = field(default_factory=list)
    """The order trained in each run."""
    reported: list[float] = field(default_factory=list)
    """The reported (noisy) final mean utility of each run (utility units)."""


# --- runs ----------------------------------------------------------------------------------


def run_order(world: World, order: Sequence[int], *, seed: int) -> tuple[float, list[Evaluation]]:
    """Train ``order`` in a fresh job of ``world``, evaluating before and after every stage.

    Returns
    -------
    final, evaluations
        The reported (noisy) final mean utility over tasks (utility units), and the
        ``len(order) + 1`` evaluations: index 0 the baseline, index ``k`` after ``k`` stages.
    """
    job = world.start(seed)
    evaluations = [job.evaluate()]
    for task in order:
        job.train(int(task))
        evaluations.append(job.evaluate())
    return _reported_mean(evaluations[-1]), evaluations


def _reported_mean(evaluation: Evaluation) -> float:
    return float(np.mean(list(evaluation.values.values())))


def _as_order(values: Sequence[int] | IntArray) -> Order:
    return tuple(int(t) for t in values)


def _streams(seed: int, count: int) -> list[np.random.Generator]:
    """Independent generators derived from ``seed`` (job seeds apart from search randomness)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(count)]


def _job_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31))


class _TraceBuilder:
    """Accumulates a trace's best reported run and cumulative stages."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.recommended: list[Order] = []
        self.best_run: list[Order] = []
        self.stages: list[int] = []
        self.runs: list[Order] = []
        self.reported: list[float] = []
        self._best_value = -math.inf
        self._best_order: Order = ()

    def add(self, order: Order, reported: float, recommended: Order | None) -> None:
        """Record one run; ``recommended=None``: recommend the best reported run."""
        if reported > self._best_value:
            self._best_value, self._best_order = reported, order
        self.best_run.append(self._best_order)
        self.recommended.append(self._best_order if recommended is None else recommended)
        self.stages.append((self.stages[-1] if self.stages else 0) + len(order))
        self.runs.append(order)
        self.reported.append(reported)

    def trace(self) -> Trace:
        return Trace(
            self.method, self.recommended, self.best_run, self.stages, self.runs, self.reported
        )


class Method(Protocol):
    """A sequential baseline: ``runs`` runs in ``world``, deterministic for ``seed``."""

    def __call__(self, world: World, runs: int, *, seed: int) -> Trace:
        """The method's trace after each of its runs."""


def best_of_random(world: World, runs: int, *, seed: int) -> Trace:
    """``runs`` uniformly random orders; after each, recommend the best reported so far."""
    order_rng, job_rng = _streams(seed, 2)
    builder = _TraceBuilder("best of random")
    for _ in range(runs):
        order = _as_order(order_rng.permutation(world.n))
        reported, _ = run_order(world, order, seed=_job_seed(job_rng))
        builder.add(order, reported, None)
    return builder.trace()


# --- permutations: pairwise indicators, Kendall distance, local search ----------------------


def before_indicators(orders: IntArray) -> FloatArray:
    """``X[p, k] = 1`` where task ``a_k`` precedes ``b_k`` in order ``p``, else 0.

    ``orders`` (P, n); the pairs ``(a_k, b_k)`` are ``np.triu_indices(n, 1)`` (``a < b``), so
    the result has shape (P, n (n - 1) / 2).
    """
    orders = np.atleast_2d(np.asarray(orders, dtype=np.int64))
    position = np.argsort(orders, axis=1)
    a, b = np.triu_indices(orders.shape[1], 1)
    return (position[:, a] < position[:, b]).astype(np.float64)


def kendall_distance(x: FloatArray, y: FloatArray) -> FloatArray:
    """Discordant pairs between every order of ``x`` (P, C) and of ``y`` (Q, C), shape (P, Q).

    ``x`` and ``y`` are :func:`before_indicators`; cost O(P Q C) in two matrix products.
    """
    distance: FloatArray = x @ (1.0 - y).T + (1.0 - x) @ y.T
    return distance


@cache
def _move_maps(n: int) -> IntArray:
    """Index maps of every swap and insertion move of ``n`` positions, shape (K, n), unique.

    ``order[maps[k]]`` is the ``k``-th neighbour of ``order``.
    """
    identity = list(range(n))
    maps: set[tuple[int, ...]] = set()
    for i, j in itertools.combinations(range(n), 2):
        swapped = identity.copy()
        swapped[i], swapped[j] = swapped[j], swapped[i]
        maps.add(tuple(swapped))
    for i, j in itertools.permutations(range(n), 2):
        moved = identity.copy()
        moved.insert(j, moved.pop(i))
        maps.add(tuple(moved))
    return np.array(sorted(maps), dtype=np.int64).reshape(-1, n)


Score = Callable[[IntArray], FloatArray]
"""Scores (P,) of orders (P, n); higher is better."""


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One local search: its optimum and every order it scored (``visited`` (V, n), (V,))."""

    order: Order
    value: float
    visited: IntArray
    visited_values: FloatArray


def local_search(
    start: Sequence[int] | IntArray, score: Score, *, max_steps: int = 1000
) -> SearchResult:
    """Steepest ascent over swap and insertion moves from ``start`` until no move improves."""
    current = np.asarray(start, dtype=np.int64)
    current_value = float(score(current[None, :])[0])
    maps = _move_maps(len(current))
    visited, values = [current[None, :]], [np.array([current_value])]
    for _ in range(max_steps):
        neighbours = current[maps]
        scores = score(neighbours)
        visited.append(neighbours)
        values.append(scores)
        k = int(np.argmax(scores))
        if not scores[k] > current_value + 1e-12 * max(1.0, abs(current_value)):
            break
        current, current_value = neighbours[k], float(scores[k])
    return SearchResult(
        _as_order(current), current_value, np.concatenate(visited), np.concatenate(values)
    )


# --- the Mallows-kernel Gaussian process -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GPHyper:
    """Hyperparameters of the GP over orders, in the units of its targets.

    ``k(p, q) = s2 * exp(-lam * kendall(p, q) / C(n, 2))``; ``noise``: observation noise
    variance; ``mean``: constant prior mean.
    """

    s2: float
    lam: float
    noise: float
    mean: float


JITTER = 1e-10
"""Added to the kernel's diagonal, relative to ``s2``, so that its Cholesky factor exists."""


def mallows_kernel(x: FloatArray, y: FloatArray, hyper: GPHyper) -> FloatArray:
    """Kernel matrix (P, Q) between :func:`before_indicators` ``x`` (P, C) and ``y`` (Q, C)."""
    pairs = max(x.shape[1], 1)
    kernel: FloatArray = hyper.s2 * np.exp(-hyper.lam * kendall_distance(x, y) / pairs)
    return kernel


@dataclass(frozen=True, slots=True)
class GPPosterior:
    """The GP conditioned on ``values`` (m,) at the orders of indicators ``x`` (m, C)."""

    hyper: GPHyper
    x: FloatArray
    chol_inverse: FloatArray
    """Inverse (m, m) of the lower Cholesky factor of the noisy kernel matrix."""
    alpha: FloatArray

    @classmethod
    def fit(cls, orders: IntArray, values: FloatArray, hyper: GPHyper) -> GPPosterior:
        """Condition on the observed ``orders`` (m, n) and their ``values`` (m,)."""
        x = before_indicators(orders)
        gram = mallows_kernel(x, x, hyper)
        gram[np.diag_indices_from(gram)] += hyper.noise + JITTER * hyper.s2
        chol = np.linalg.cholesky(gram)
        chol_inverse = scipy.linalg.solve_triangular(chol, np.eye(len(gram)), lower=True)
        alpha = scipy.linalg.cho_solve((chol, True), np.asarray(values) - hyper.mean)
        return cls(
            hyper,
            x,
            np.asarray(chol_inverse, dtype=np.float64),
            np.asarray(alpha, dtype=np.float64),
        )

    def predict(self, orders: IntArray) -> tuple[FloatArray, FloatArray]:
        """Posterior mean and standard deviation (P,) of the noise-free value of ``orders``."""
        cross = mallows_kernel(before_indicators(orders), self.x, self.hyper)
        mean = self.hyper.mean + cross @ self.alpha
        # One small matrix product per call: many tiny triangular solves cost far more.
        v = self.chol_inverse @ cross.T
        variance = np.maximum(self.hyper.s2 - np.sum(v**2, axis=0), 0.0)
        return np.asarray(mean, dtype=np.float64), np.sqrt(variance)

    def mean(self, orders: IntArray) -> FloatArray:
        """Posterior mean (P,) of ``orders`` (P, n)."""
        return self.predict(orders)[0]


def expected_improvement(mean: FloatArray, sd: FloatArray, best: float) -> FloatArray:
    """``E[max(f - best, 0)]`` under ``f ~ N(mean, sd^2)``, elementwise (shape of ``mean``)."""
    sd = np.maximum(sd, 1e-12)
    z = (mean - best) / sd
    gap = mean - best
    improvement: FloatArray = gap * scipy.stats.norm.cdf(z) + sd * scipy.stats.norm.pdf(z)
    return np.maximum(improvement, 0.0)


# Bounds of the fit in standardized target units: log s2, log lam, log noise, mean.
_LOG_BOUNDS = [
    (math.log(1e-2), math.log(1e2)),
    (math.log(0.05), math.log(200.0)),
    (math.log(1e-6), math.log(10.0)),
    (-3.0, 3.0),
]
_FIT_METHOD = "SLSQP"
"""Bounded quasi-Newton method of the fit. L-BFGS-B finds the same optima but its many tiny
threaded BLAS calls cost ~1 ms each on a loaded machine (5x slower fits, measured)."""
_DEFAULT_THETA = np.array([0.0, math.log(5.0), math.log(0.1), 0.0])


def _negative_log_likelihood(
    theta: FloatArray, distance: FloatArray, y: FloatArray
) -> tuple[float, FloatArray]:
    """Negative log marginal likelihood and its gradient in ``theta``.

    ``theta`` = (log s2, log lam, log noise, mean); ``distance`` (m, m) Kendall distance over
    ``C(n, 2)``; ``y`` (m,) standardized targets.
    """
    s2, lam, noise = np.exp(theta[:3])
    m = len(y)
    shape = np.exp(-lam * distance)
    gram = s2 * shape + (noise + JITTER * s2) * np.eye(m)
    try:
        chol = np.linalg.cholesky(gram)
    except np.linalg.LinAlgError:
        return 1e25, np.zeros(4)
    residual = y - theta[3]
    alpha = scipy.linalg.cho_solve((chol, True), residual)
    value = 0.5 * residual @ alpha + np.log(np.diag(chol)).sum() + 0.5 * m * math.log(2 * math.pi)
    inner = np.outer(alpha, alpha) - scipy.linalg.cho_solve((chol, True), np.eye(m))
    derivatives = (s2 * shape, -lam * s2 * shape * distance, noise * np.eye(m))
    gradient = [-0.5 * float(np.sum(inner * d)) for d in derivatives]
    gradient.append(-float(alpha.sum()))
    return float(value), np.array(gradient)


def fit_gp_hyper(
    orders: IntArray, values: FloatArray, *, rng: np.random.Generator, restarts: int = 3
) -> GPHyper:
    """Maximum marginal likelihood hyperparameters for ``values`` (m,) at ``orders`` (m, n).

    Fitted on standardized targets with L-BFGS-B within fixed bounds, from a default start and
    ``restarts - 1`` random ones; returned in the targets' units.
    """
    values = np.asarray(values, dtype=np.float64)
    shift = float(values.mean())
    scale = float(values.std()) or 1.0
    y = (values - shift) / scale
    x = before_indicators(orders)
    distance = kendall_distance(x, x) / max(x.shape[1], 1)
    low, high = np.array(_LOG_BOUNDS).T
    starts = [_DEFAULT_THETA] + [rng.uniform(low, high) for _ in range(restarts - 1)]
    best: tuple[float, FloatArray] = (math.inf, _DEFAULT_THETA)
    for start in starts:
        result = scipy.optimize.minimize(
            _negative_log_likelihood,
            start,
            args=(distance, y),
            jac=True,
            method=_FIT_METHOD,
            bounds=_LOG_BOUNDS,
        )
        if float(result.fun) < best[0]:
            best = (float(result.fun), np.asarray(result.x, dtype=np.float64))
    theta = best[1]
    return GPHyper(
        s2=float(np.exp(theta[0])) * scale**2,
        lam=float(np.exp(theta[1])),
        noise=float(np.exp(theta[2])) * scale**2,
        mean=float(theta[3]) * scale + shift,
    )


def _search_starts(
    observed: IntArray, values: FloatArray, rng: np.random.Generator, *, best: int, random: int
) -> list[IntArray]:
    """The ``best`` observed orders by ``values`` and ``random`` uniformly random orders."""
    top = [observed[k] for k in np.argsort(-values, kind="stable")[:best]]
    n = observed.shape[1]
    return top + [rng.permutation(n) for _ in range(random)]


def _unseen(candidates: IntArray, observed: IntArray) -> FloatArray:
    """1 for every candidate (P, n) not among ``observed`` (m, n), else 0."""
    same = (candidates[:, None, :] == observed[None, :, :]).all(axis=2).any(axis=1)
    mask: FloatArray = (~same).astype(np.float64)
    return mask


def propose_by_ei(
    posterior: GPPosterior, observed: IntArray, values: FloatArray, rng: np.random.Generator
) -> Order:
    """The unobserved order of highest expected improvement found by local searches.

    ``observed`` (m, n) orders run so far and ``values`` (m,) their reported final means; the
    incumbent is the best posterior mean among ``observed``. Searches start from the 3 best
    observed orders and 3 random ones; every order they score is a candidate.
    """
    incumbent = float(posterior.mean(observed).max())

    def acquisition(orders: IntArray) -> FloatArray:
        return expected_improvement(*posterior.predict(orders), incumbent)

    candidates, scores = [], []
    for start in _search_starts(observed, values, rng, best=3, random=3):
        result = local_search(start, acquisition)
        candidates.append(result.visited)
        scores.append(result.visited_values)
    pool, pool_scores = np.concatenate(candidates), np.concatenate(scores)
    fresh = _unseen(pool, observed) > 0
    if not fresh.any():
        return _as_order(rng.permutation(observed.shape[1]))
    k = int(np.argmax(np.where(fresh, pool_scores, -np.inf)))
    return _as_order(pool[k])


def recommend_by_mean(
    posterior: GPPosterior, observed: IntArray, values: FloatArray, rng: np.random.Generator
) -> Order:
    """Argmax of the posterior mean over the observed orders (m, n) and the mean's local
    optima from the 3 best observed (by ``values`` (m,)) and 2 random orders."""
    candidates = [observed]
    for start in _search_starts(observed, values, rng, best=3, random=2):
        candidates.append(np.array([local_search(start, posterior.mean).order]))
    pool = np.concatenate(candidates)
    return _as_order(pool[int(np.argmax(posterior.mean(pool)))])


def gp_over_orders(
    world: World, runs: int, *, seed: int, initial_runs: int = 2, restarts: int = 3
) -> Trace:
    """BOPS: a Mallows-kernel GP on the reported final means, expected improvement.

    The first ``max(initial_runs, 2)`` orders are uniformly random. After every run from the
    second on, the hyperparameters are refitted (:func:`fit_gp_hyper`) on every reported final
    mean; that posterior gives the recommendation and the next run's order, which
    maximizes the expected improvement over the best posterior mean among the observed orders
    (local searches from the 3 best observed and 3 random orders; never an observed order).
    Before two runs the recommendation is the best reported run; after, the argmax of the
    posterior mean over the observed orders and its local optima. Deterministic for ``seed``.
    """
    order_rng, job_rng, fit_rng = _streams(seed, 3)
    builder = _TraceBuilder("GP over orders (BOPS)")
    observed: list[Order] = []
    values: list[float] = []
    posterior: GPPosterior | None = None  # fitted on every run so far (from 2 runs on)
    for r in range(runs):
        if r < initial_runs or posterior is None:
            order = _as_order(order_rng.permutation(world.n))
        else:
            order = propose_by_ei(posterior, np.array(observed), np.array(values), order_rng)
        reported, _ = run_order(world, order, seed=_job_seed(job_rng))
        observed.append(order)
        values.append(reported)
        recommended = None
        if len(observed) >= 2:
            posterior = _posterior(observed, values, fit_rng, restarts)
            recommended = recommend_by_mean(
                posterior, np.array(observed), np.array(values), order_rng
            )
        builder.add(order, reported, recommended)
    return builder.trace()


def _posterior(
    observed: list[Order], values: list[float], rng: np.random.Generator, restarts: int
) -> GPPosterior:
    orders, targets = np.array(observed, dtype=np.int64), np.array(values)
    hyper = fit_gp_hyper(orders, targets, rng=rng, restarts=restarts)
    return GPPosterior.fit(orders, targets, hyper)


# --- exact LOP maximizers ----------------------------------------------------------------------


@cache
def _before_tensor(n: int) -> tuple[IntArray, FloatArray]:
    """All orders (n!, n) and their "a before b" indicators (n!, n * n) (index ``a * n + b``)."""
    orders = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    position = np.argsort(orders, axis=1)
    before = position[:, :, None] < position[:, None, :]
    return orders, before.reshape(len(orders), n * n).astype(np.float64)


def lop_argmax(weights: FloatArray, *, seed: int = 0) -> Order:
    """An order maximizing ``sum_{a before b} W[a, b]`` (``weights`` (n, n), diagonal ignored).

    Exhaustive and vectorized up to :data:`BRUTE_FORCE_MAX_N` (first maximizer in
    lexicographic order), :func:`solver.lop.solve_lop` above.
    """
    n = weights.shape[0]
    if n <= BRUTE_FORCE_MAX_N:
        orders, before = _before_tensor(n)
        return _as_order(orders[int(np.argmax(before @ weights.ravel()))])
    solution = solve_lop(weights, time_limit_s=LOP_TIME_LIMIT_S, seed=seed, num_workers=1)
    return solution.order


# --- the naive in-run pairwise estimator -------------------------------------------------------


class NaivePairwise:
    """Plain means of the changes seen between consecutive evaluations of every run.

    When a stage trains ``i``: the change of ``i`` itself is a sample of ``gain[i]``; the change
    of an already trained ``j`` of ``backward[i, j]``; of a not yet trained ``j`` of
    ``forward[i, j]`` (utility units). Cells never observed count as 0.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._gain = np.zeros((2, n))
        self._forward = np.zeros((2, n, n))
        self._backward = np.zeros((2, n, n))

    def add_run(self, order: Sequence[int], evaluations: Sequence[Evaluation]) -> None:
        """Add the samples of one run: ``evaluations[k]`` after ``k`` stages of ``order``."""
        for k, task in enumerate(order):
            before, after = evaluations[k].values, evaluations[k + 1].values
            trained = set(order[:k])
            for j in set(before) & set(after):
                change = after[j] - before[j]
                if j == task:
                    self._gain[:, j] += (change, 1.0)
                elif j in trained:
                    self._backward[:, task, j] += (change, 1.0)
                else:
                    self._forward[:, task, j] += (change, 1.0)

    @staticmethod
    def _means(table: FloatArray) -> FloatArray:
        means: FloatArray = np.divide(
            table[0], table[1], out=np.zeros_like(table[0]), where=table[1] > 0
        )
        return means

    @property
    def gain(self) -> FloatArray:
        """Mean change (n,) of a task when it is trained itself."""
        return self._means(self._gain)

    @property
    def forward(self) -> FloatArray:
        """``F[i, j]`` (n, n): mean change of ``j`` when ``i`` is trained before ``j``."""
        return self._means(self._forward)

    @property
    def backward(self) -> FloatArray:
        """``B[i, j]`` (n, n): mean change of ``j`` when ``i`` is trained after ``j``."""
        return self._means(self._backward)

    def weights(self) -> FloatArray:
        """LOP weights ``W[a, b] = F[a, b] + B[b, a]``: gain of ``a`` before ``b`` (sum over
        tasks, utility units)."""
        weights: FloatArray = self.forward + self.backward.T
        np.fill_diagonal(weights, 0.0)
        return weights

    def predict(self, orders: IntArray) -> FloatArray:
        """Predicted change (P, n) of every task's utility from the baseline, orders (P, n).

        ``gain[j] + sum_{i before j} F[i, j] + sum_{i after j} B[i, j]``.
        """
        orders = np.atleast_2d(np.asarray(orders, dtype=np.int64))
        position = np.argsort(orders, axis=1)
        before = position[:, :, None] < position[:, None, :]  # [p, i, j]: i before j
        after = position[:, :, None] > position[:, None, :]
        forward = np.einsum("pij,ij->pj", before, self.forward)
        backward = np.einsum("pij,ij->pj", after, self.backward)
        prediction: FloatArray = self.gain[None, :] + forward + backward
        return prediction

    def best_order(self, *, seed: int = 0) -> Order:
        """The exact maximizer of the predicted final mean (:func:`lop_argmax`)."""
        return lop_argmax(self.weights(), seed=seed)


def naive_pairwise(world: World, runs: int, *, seed: int) -> Trace:
    """The first run random; each next run and every recommendation: the naive maximizer."""
    order_rng, job_rng = _streams(seed, 2)
    builder = _TraceBuilder("naive pairwise")
    estimator = NaivePairwise(world.n)
    order = _as_order(order_rng.permutation(world.n))
    for _ in range(runs):
        reported, evaluations = run_order(world, order, seed=_job_seed(job_rng))
        estimator.add_run(order, evaluations)
        recommended = estimator.best_order(seed=seed)
        builder.add(order, reported, recommended)
        order = recommended
    return builder.trace()


# --- the paper's protocol ----------------------------------------------------------------------


def paper_protocol(world: World, *, seed: int) -> tuple[Order, Order, int]:
    """Omni-Thinker's measurement protocol (paper.md §1.3-1.5) on noisy evaluations.

    ``n`` single-task runs give ``a*_i``; ``n(n-1)`` two-stage runs ``(i, j)`` give
    ``Delta_{j->i} = acc_i(after i, j) - acc_i(after i)`` (both evaluations from the same run).

    Returns
    -------
    sorted_order, lop_order, stages
        Tasks sorted from least to most forgettable (mean ``Delta`` received, descending); the
        exact LOP maximizer of ``sum_i a*_i + sum_{i before j} Delta_{j->i}`` on the same
        data; the training stages the measurements used, ``n + 2 n (n - 1)`` (the final run
        of the chosen order not included).
    """
    n = world.n
    rng = np.random.default_rng(seed)
    stages = 0
    for i in range(n):
        # a*_i is a constant of the LOP; measured (and its stage counted) as the paper does.
        job = world.start(_job_seed(rng))
        job.train(i)
        job.evaluate()
        stages += 1
    delta = np.zeros((n, n))  # delta[j, i]: change of task i when j is trained after i
    for i, j in itertools.permutations(range(n), 2):
        job = world.start(_job_seed(rng))
        job.train(i)
        after_i = job.evaluate().values[i]
        job.train(j)
        stages += 2
        delta[j, i] = job.evaluate().values[i] - after_i
    forgettability = delta.sum(axis=0) / (n - 1)
    sorted_order = _as_order(np.argsort(-forgettability, kind="stable"))
    return sorted_order, lop_argmax(delta.T.copy(), seed=seed), stages


# --- fixed heuristics, exact from the oracle ---------------------------------------------------


def structured_first_value(world: World, oracle: OracleResult) -> float:
    """Exact expected final mean utility of a uniformly random order that trains every
    structured task (``world.kinds``) before every other one."""
    structured = np.array([kind == TaskKind.STRUCTURED for kind in world.kinds])
    count = int(structured.sum())
    qualifying = structured[oracle.orders[:, :count]].all(axis=1)
    return float(oracle.utilities[qualifying].mean())


def random_value(oracle: OracleResult) -> float:
    """Exact expected final mean utility of a uniformly random order."""
    return float(oracle.utilities.mean())


def joint_value(world: World) -> float | None:
    """Final mean utility of joint training on the same budget, ``None`` if undefined."""
    joint = world.joint_utilities()
    return None if joint is None else float(np.mean(joint))


def regret_percent(value: float, oracle: OracleResult) -> float:
    """``100 (best - value) / best``: the shortfall from the oracle's best order, in %."""
    return 100.0 * (oracle.best_value - value) / oracle.best_value
