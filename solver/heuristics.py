"""Heuristics for the unconstrained Linear Ordering Problem (LOP).

The LOP: given ``W`` of shape ``(n, n)`` (``W[a, b]``: gain, in objective units, of placing ``a``
anywhere before ``b``; the diagonal is ignored), find an order ``p`` (a permutation of
``0..n-1``) maximizing ``sum_{k < l} W[p[k], p[l]]``.

Building blocks, all over the antisymmetric matrix ``D = W - W.T``:

* :func:`lop_value`: the objective of an order, ``O(n^2)``.
* :func:`becker_order`: Becker's quotient order, a cheap start, ``O(n^2 + n log n)``.
* :func:`insertion_local_search`: insertion local search to a local optimum. One sweep evaluates
  *every* insertion move (each element to each position) in ``O(n^2)`` numpy operations: the
  gain of moving the element at position ``i`` to position ``j`` is a prefix sum of
  ``D[p[i], p[k]]`` along the order (Schiavinotto & Stützle 2004, "LS_f"), and one cumulative sum
  over the permuted ``D`` gives all of them. Every sweep then applies a set of improving moves
  whose position intervals are disjoint, because such moves do not change each other's gains.
* :func:`memetic_lop`: a memetic algorithm in the spirit of Schiavinotto & Stützle (2004):
  a small population of local optima, cycle crossover (CX), an iterated local search on each
  child (random insertion kicks), and a restart of the population when it has converged.

Everything random comes from ``numpy.random.default_rng(seed)``; for a given seed the run is
deterministic apart from where the time limit cuts it (``max_generations`` removes that).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from solver.types import FloatMatrix, Order

logger = logging.getLogger(__name__)

IntVector = npt.NDArray[np.int64]

# Gains below this fraction of the largest |D| entry count as zero, so that float rounding never
# makes the local search cycle on "improvements" that are only noise.
_RELATIVE_GAIN_TOLERANCE = 1e-9
# float32 sums of integers are exact below 2**24; the search then runs on float32 (about twice as
# fast to gather at n >= 200 on the reference machines).
_FLOAT32_EXACT_LIMIT = float(2**24)


def lop_value(weights: FloatMatrix, order: Order | IntVector) -> float:
    """Objective value of an order.

    Parameters
    ----------
    weights : FloatMatrix, shape (n, n)
        ``W[a, b]``: gain of placing ``a`` before ``b`` (objective units); diagonal ignored.
    order : Order or int array, shape (n,)
        A permutation of ``0..n-1``; ``order[k]`` is at position ``k``.

    Returns
    -------
    float
        ``sum_{k < l} W[order[k], order[l]]``, in objective units. ``O(n^2)``.
    """
    perm = np.asarray(order, dtype=np.int64)
    permuted = weights[np.ix_(perm, perm)]
    return float(np.triu(permuted, 1).sum())


def becker_order(weights: FloatMatrix) -> Order:
    """Becker's quotient order: elements by decreasing ``row sum / column sum`` of ``W``.

    Off-diagonal sums only; an element with a zero column sum goes first (its quotient is
    infinite). Ties are broken by index. ``O(n^2)``.
    """
    off = weights - np.diag(np.diag(weights))
    row = off.sum(axis=1)
    col = off.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        quotient = np.where(col > 0, row / np.where(col > 0, col, 1.0), np.inf)
    # lexsort: last key is primary; stable on index for ties.
    order = np.lexsort((np.arange(len(row)), -quotient))
    return tuple(int(x) for x in order)


@dataclass(slots=True)
class _SearchSpace:
    """The precomputed data every local search step reads.

    ``diff[a, b] = W[a, b] - W[b, a]`` (antisymmetric, zero diagonal), in the working dtype;
    ``tolerance``: smallest gain taken as an improvement (objective units).
    """

    diff: npt.NDArray[np.floating]
    tolerance: float

    @classmethod
    def of(cls, weights: FloatMatrix) -> _SearchSpace:
        w = np.asarray(weights, dtype=np.float64)
        diff = w - w.T
        np.fill_diagonal(diff, 0.0)
        scale = float(np.abs(diff).max()) if diff.size else 0.0
        integral = bool(np.all(diff == np.round(diff)))
        row_mass = float(np.abs(diff).sum(axis=1).max()) if diff.size else 0.0
        if integral and row_mass < _FLOAT32_EXACT_LIMIT:
            return cls(diff=diff.astype(np.float32), tolerance=0.5)
        return cls(diff=diff, tolerance=_RELATIVE_GAIN_TOLERANCE * max(scale, 1e-300))


def _apply_insertion(perm: IntVector, source: int, target: int) -> None:
    """Move ``perm[source]`` to position ``target`` in place, shifting the elements between."""
    moved = perm[source]
    if source < target:
        perm[source:target] = perm[source + 1 : target + 1].copy()
    else:
        perm[target + 1 : source + 1] = perm[target:source].copy()
    perm[target] = moved


def _best_insertions(
    space: _SearchSpace, perm: IntVector, prefix: npt.NDArray[np.floating]
) -> tuple[npt.NDArray[np.floating], IntVector]:
    """Best insertion of every element: its gain and target position. ``O(n^2)``.

    ``prefix[i, m] = sum_{k < m} D[perm[i], perm[k]]`` (shape ``(n, n + 1)``, column 0 is zero).
    Moving the element at ``i`` to position ``m <= i`` gains ``prefix[i, i] - prefix[i, m]``; to
    position ``m - 1 >= i`` it gains ``prefix[i, i + 1] - prefix[i, m]`` and
    ``prefix[i, i + 1] = prefix[i, i]`` (zero diagonal). So the best move of every element is
    the row minimum of ``prefix``.
    """
    n = perm.shape[0]
    permuted = space.diff.take(perm, axis=0).take(perm, axis=1)
    np.cumsum(permuted, axis=1, out=prefix[:, 1:])
    best_column = prefix.argmin(axis=1)
    rows = np.arange(n)
    gains = prefix.ravel()[:: n + 2][:n] - prefix[rows, best_column]
    targets = np.where(best_column <= rows, best_column, best_column - 1)
    return gains, targets


def _local_search_in_place(space: _SearchSpace, perm: IntVector) -> float:
    """Insertion local search on ``perm`` (modified in place) to a local optimum.

    Returns the total gain (objective units). Each round costs ``O(n^2)`` numpy work and applies
    the best improving move of as many elements as fit in disjoint position intervals, largest
    gains first; it stops when no insertion move gains more than the tolerance.
    """
    n = perm.shape[0]
    if n < 2:
        return 0.0
    prefix = np.zeros((n, n + 1), dtype=space.diff.dtype)
    total = 0.0
    while True:
        gains, targets = _best_insertions(space, perm, prefix)
        improving = np.flatnonzero(gains > space.tolerance)
        if improving.size == 0:
            return total
        improving = improving[np.argsort(-gains[improving], kind="stable")]
        occupied = np.zeros(n, dtype=bool)
        for source in improving.tolist():
            target = int(targets[source])
            low, high = min(source, target), max(source, target)
            if occupied[low : high + 1].any():
                continue
            occupied[low : high + 1] = True
            _apply_insertion(perm, source, target)
            total += float(gains[source])


def insertion_local_search(weights: FloatMatrix, order: Order) -> Order:
    """Insertion local search from ``order`` to a local optimum; never worsens the value.

    Parameters
    ----------
    weights : FloatMatrix, shape (n, n)
        LOP gains ``W`` (objective units).
    order : Order
        Start permutation.

    Returns
    -------
    Order
        A permutation where no single insertion move improves the value. Each sweep is
        ``O(n^2)``.
    """
    space = _SearchSpace.of(weights)
    perm = np.asarray(order, dtype=np.int64).copy()
    _local_search_in_place(space, perm)
    return tuple(int(x) for x in perm)


def _cycle_crossover(first: IntVector, second: IntVector, rng: np.random.Generator) -> IntVector:
    """Cycle crossover (CX): each position keeps the element of one parent.

    The positions split into cycles (position k -> position in ``first`` of ``second[k]``); each
    cycle takes its elements from a parent chosen at random. ``O(n)``.
    """
    n = first.shape[0]
    position_in_first = np.empty(n, dtype=np.int64)
    position_in_first[first] = np.arange(n)
    child = first.copy()
    seen = np.zeros(n, dtype=bool)
    for start in range(n):
        if seen[start]:
            continue
        cycle = []
        k = start
        while not seen[k]:
            seen[k] = True
            cycle.append(k)
            k = int(position_in_first[second[k]])
        if rng.random() < 0.5:
            child[cycle] = second[cycle]
    return child


def _kick(perm: IntVector, strength: int, rng: np.random.Generator) -> IntVector:
    """A perturbation: ``strength`` random insertion moves on a copy of ``perm``."""
    kicked = perm.copy()
    n = perm.shape[0]
    for _ in range(strength):
        source, target = (int(v) for v in rng.integers(0, n, size=2))
        _apply_insertion(kicked, source, target)
    return kicked


@dataclass(slots=True)
class _Individual:
    perm: IntVector
    value: float


class _Memetic:
    """State of one memetic run (population, best, counters)."""

    def __init__(
        self,
        weights: FloatMatrix,
        rng: np.random.Generator,
        *,
        population_size: int,
        deadline: float,
        should_stop: Callable[[], bool] | None = None,
        on_improvement: Callable[[Order, float], None] | None = None,
    ) -> None:
        self.weights = np.asarray(weights, dtype=np.float64)
        self.space = _SearchSpace.of(self.weights)
        self.rng = rng
        self.population_size = population_size
        self.deadline = deadline
        self.should_stop = should_stop
        self.on_improvement = on_improvement
        self.population: list[_Individual] = []
        self.best: _Individual | None = None
        self.local_searches = 0

    def timed_out(self) -> bool:
        if self.should_stop is not None and self.should_stop():
            return True
        return time.perf_counter() >= self.deadline

    def improve(self, perm: IntVector) -> _Individual:
        """Local search from ``perm`` (a copy is changed) and the exact value of the result."""
        improved = perm.copy()
        _local_search_in_place(self.space, improved)
        self.local_searches += 1
        candidate = _Individual(improved, lop_value(self.weights, improved))
        if self.best is None or candidate.value > self.best.value:
            self.best = _Individual(improved.copy(), candidate.value)
            if self.on_improvement is not None:
                self.on_improvement(tuple(int(x) for x in improved), candidate.value)
        return candidate

    def iterated_search(self, start: _Individual, kicks: int) -> _Individual:
        """Iterated local search from ``start``: ``kicks`` kick + local search steps."""
        current = start
        n = current.perm.shape[0]
        for _ in range(kicks):
            if self.timed_out():
                break
            strength = int(self.rng.integers(1, max(2, min(8, n // 8) + 1)))
            candidate = self.improve(_kick(current.perm, strength, self.rng))
            if candidate.value >= current.value:
                current = candidate
        return current

    def seed_population(self, first: IntVector | None) -> None:
        n = self.weights.shape[0]
        self.population = []
        if first is not None:
            self.population.append(self.improve(first))
        while len(self.population) < self.population_size and not self.timed_out():
            self.population.append(self.improve(self.rng.permutation(n).astype(np.int64)))

    def generation(self, kicks: int) -> None:
        """One generation: crossover of two parents, ILS on the child, replace the worst."""
        size = len(self.population)
        if size < 2:
            child = self.population[0]
            self.population[0] = self.iterated_search(child, kicks)
            return
        first, second = self.rng.choice(size, size=2, replace=False)
        child_perm = _cycle_crossover(
            self.population[first].perm, self.population[second].perm, self.rng
        )
        child = self.iterated_search(self.improve(child_perm), kicks)
        worst = min(range(size), key=lambda k: self.population[k].value)
        duplicate = any(np.array_equal(child.perm, other.perm) for other in self.population)
        if not duplicate and child.value > self.population[worst].value:
            self.population[worst] = child

    def converged(self) -> bool:
        values = [ind.value for ind in self.population]
        return max(values) - min(values) <= self.space.tolerance


def memetic_lop(
    weights: FloatMatrix,
    *,
    seed: int,
    time_limit_s: float,
    initial: Order | None = None,
    max_generations: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_improvement: Callable[[Order, float], None] | None = None,
) -> tuple[Order, float]:
    """Memetic algorithm for the LOP (Schiavinotto & Stützle 2004 style).

    Parameters
    ----------
    weights : FloatMatrix, shape (n, n)
        ``W[a, b]``: gain of placing ``a`` before ``b`` (objective units); finite; the diagonal
        is ignored.
    seed : int
        Seed of ``numpy.random.default_rng``; the only source of randomness.
    time_limit_s : float
        Wall-clock budget in seconds (checked between local searches).
    initial : Order, optional
        A start order; Becker's order is used when absent. The result is never worse than the
        local optimum reached from it.
    max_generations : int, optional
        Stop after this many generations (makes the run independent of the clock).
    should_stop : callable, optional
        Polled between local searches; the run ends when it returns true (e.g. optimality was
        proven elsewhere).
    on_improvement : callable, optional
        Called with ``(order, value)`` whenever the best value improves.

    Returns
    -------
    tuple of (Order, float)
        The best order found and its value ``sum_{k<l} W[p_k, p_l]``.

    Notes
    -----
    Each local search sweep is ``O(n^2)``; a generation is a crossover (``O(n)``) followed by a
    few dozen local searches.
    """
    n = int(np.asarray(weights).shape[0])
    if n <= 1:
        order = tuple(range(n))
        return order, 0.0
    rng = np.random.default_rng(seed)
    deadline = time.perf_counter() + max(0.0, time_limit_s)
    search = _Memetic(
        weights,
        rng,
        population_size=10,
        deadline=deadline,
        should_stop=should_stop,
        on_improvement=on_improvement,
    )
    start = becker_order(weights) if initial is None else initial
    search.seed_population(np.asarray(start, dtype=np.int64))
    kicks = max(10, 2 * n)
    generations = 0
    while not search.timed_out() and (max_generations is None or generations < max_generations):
        search.generation(kicks)
        generations += 1
        if search.converged():
            search.seed_population(None if search.best is None else search.best.perm)
    best = search.best
    assert best is not None
    logger.debug(
        "memetic_lop: n=%d generations=%d local_searches=%d value=%s",
        n,
        generations,
        search.local_searches,
        best.value,
    )
    return tuple(int(x) for x in best.perm), best.value
