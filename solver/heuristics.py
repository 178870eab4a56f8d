"""Heuristics for the unconstrained Linear Ordering Problem (LOP).

The LOP: given ``W`` of shape ``(n, n)`` (``W[a, b]``: gain, in objective units, of placing ``a``
anywhere before ``b``; the diagonal is ignored), find an order ``p`` (a permutation of
``0..n-1``) maximizing ``sum_{k < l} W[p[k], p[l]]``.

Building blocks, all over the antisymmetric matrix ``D = W - W.T``:

* :func:`lop_value`: the objective of an order, ``O(n^2)``.
* :func:`becker_order`: Becker's quotient order, a cheap start, ``O(n^2 + n log n)``.
* :func:`insertion_local_search`: insertion local search to a local optimum. The gain of moving
  the element at position ``i`` to position ``j`` is a prefix sum of ``D[p[i], p[k]]`` along the
  order (Schiavinotto & Stützle 2004, "LS_f"); the matrix of all those prefix sums is kept up to
  date under moves (``O(n |i - j|)`` per move), so one row-minimum scan (``O(n^2)``) finds the
  best insertion of every element. Every round applies several improving moves whose position
  intervals are disjoint, because such moves do not change each other's gains.
* :func:`memetic_lop`: a memetic algorithm after Schiavinotto & Stützle (2004): a population of
  local optima, crossover (cycle or order-based), local search on each child, and either
  replacement of the closest member the child beats (below ``n = 100``) or, from ``n = 100``,
  dynamic diversity management (Segura et al. 2016; Lugo, Segura & Miranda 2022): orders closer
  than a threshold to a better member lose their place, and the threshold shrinks to zero at the
  deadline, so the population stays diverse early and converges by the end; a restart around
  the best order when the population stagnates. :func:`serve_memetic` runs a second,
  independent search in another process and reports its improvements.

Everything random comes from ``numpy.random.default_rng(seed)``; for a given seed the run is
deterministic apart from where the time limit cuts it (``max_generations`` removes that).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ordo_server.solver.types import FloatMatrix, Order

logger = logging.getLogger(__name__)

IntVector = npt.NDArray[np.int64]

# Gains below this fraction of the largest |D| entry count as zero, so that float rounding never
# makes the local search cycle on "improvements" that are only noise.
_RELATIVE_GAIN_TOLERANCE = 1e-9
# Integer data whose prefix sums stay below 2**31 runs on int32: exact, half the memory of
# float64, and its cumulative sums run ~1.7x faster than float32 ones (numpy 2.4, n = 250).
_INT32_LIMIT = float(2**31 - 1)


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
    ``tolerance``: smallest gain taken as an improvement (objective units); ``total``: sum of
    the off-diagonal entries of ``W``.
    """

    diff: npt.NDArray[np.floating]
    diff_t: npt.NDArray[np.floating]
    tolerance: float
    total: float

    @classmethod
    def of(cls, weights: FloatMatrix) -> _SearchSpace:
        w = np.asarray(weights, dtype=np.float64)
        diff = w - w.T
        np.fill_diagonal(diff, 0.0)
        scale = float(np.abs(diff).max()) if diff.size else 0.0
        integral = bool(np.all(diff == np.round(diff)))
        row_mass = float(np.abs(diff).sum(axis=1).max()) if diff.size else 0.0
        total = float(w.sum() - np.trace(w))
        if integral and row_mass < _INT32_LIMIT:
            diff = diff.astype(np.int32)
            return cls(diff=diff, diff_t=np.ascontiguousarray(diff.T), tolerance=0.5, total=total)
        tolerance = _RELATIVE_GAIN_TOLERANCE * max(scale, 1e-300)
        return cls(diff=diff, diff_t=np.ascontiguousarray(diff.T), tolerance=tolerance, total=total)


class _OrderState:
    """An order with its prefix matrix, kept up to date under insertion moves.

    ``prefix[m, e] = sum_{k < m} D[e, perm[k]]``, shape ``(n + 1, n)``: row ``m`` (a *cut*
    before position ``m``; row 0 is zero), one column per *element* ``e``. Moving ``e`` from its
    position ``i`` to position ``m <= i`` gains ``prefix[i, e] - prefix[m, e]``; to position
    ``m - 1 >= i`` it gains the same (the diagonal of ``D`` is zero), so every element's best
    insertion is its column minimum: one ``O(n^2)`` reduction evaluates the whole neighbourhood.
    A move from ``i`` to ``j`` only shifts the rows between ``i`` and ``j`` and adds one row of
    ``D``: ``O(n |i - j|)`` work on contiguous memory instead of a fresh ``O(n^2)`` cumulative
    sum. Columns follow elements, not positions, so a move never shifts columns.
    """

    __slots__ = ("_positions", "_scratch", "perm", "prefix", "space", "value")

    def __init__(self, space: _SearchSpace, perm: IntVector) -> None:
        n = perm.shape[0]
        self.space = space
        self.perm = perm.copy()
        self.prefix = np.zeros((n + 1, n), dtype=space.diff.dtype)
        self._scratch = np.zeros((n, n), dtype=space.diff.dtype)
        self.value = 0.0
        self._positions = np.arange(n)
        self.load(perm)

    def recompute(self) -> None:
        """Rebuild ``prefix`` from ``perm`` (``O(n^2)``; also clears float drift)."""
        diff = self.space.diff
        if diff.dtype == np.int32:
            # Cumulative sums along contiguous rows, then one transposed copy: ~30 % faster on
            # int32 than the strided cumulative sum down the columns (numpy 2.4, n = 250).
            scratch = self._scratch
            np.cumsum(diff.take(self.perm, axis=1), axis=1, out=scratch)
            np.copyto(self.prefix[1:], scratch.T)
        else:
            # Row k of D.T is D[:, k]: what the element at position k adds to every column.
            np.cumsum(self.space.diff_t.take(self.perm, axis=0), axis=0, out=self.prefix[1:])

    def _own_cuts(self) -> npt.NDArray[np.floating]:
        """``prefix[i, perm[i]]`` for every position ``i``: what precedes each element now."""
        return self.prefix[self._positions, self.perm]

    def load(self, perm: IntVector) -> None:
        """Become ``perm``; its value comes from the new prefix matrix in ``O(n)``."""
        np.copyto(self.perm, perm)
        self.recompute()
        self.value = self._value_from_prefix()

    def _value_from_prefix(self) -> float:
        """The order's value, read off ``prefix`` in ``O(n)``."""
        n = self.perm.shape[0]
        # sum_{k<l} D[p_k, p_l] = sum_k (prefix[n, p_k] - prefix[k, p_k]), and the value is half
        # of that plus half the off-diagonal total of W.
        ahead = self.prefix[n].astype(np.float64).sum() - self._own_cuts().astype(np.float64).sum()
        return 0.5 * (self.space.total + float(ahead))

    def copy_from(self, other: _OrderState) -> None:
        np.copyto(self.perm, other.perm)
        np.copyto(self.prefix, other.prefix)
        self.value = other.value

    def move(self, source: int, target: int) -> None:
        """Insert the element at ``source`` at position ``target``; updates value and prefix."""
        if source == target:
            return
        moved = int(self.perm[source])
        cut = target + 1 if source < target else target
        self.value += float(self.prefix[source, moved] - self.prefix[cut, moved])
        self._shift(source, target)

    def _shift(self, source: int, target: int) -> None:
        """``move`` without the value update (the local search reads the value at its end)."""
        prefix = self.prefix
        perm = self.perm
        moved = perm[source]
        # Every column e gains or loses D[e, moved] = -D[moved, e] in the shifted rows.
        if source < target:
            np.add(
                prefix[source + 2 : target + 2],
                self.space.diff[moved],
                out=prefix[source + 1 : target + 1],
            )
            perm[source:target] = perm[source + 1 : target + 1]
        else:
            np.subtract(
                prefix[target:source], self.space.diff[moved], out=prefix[target + 1 : source + 1]
            )
            perm[target + 1 : source + 1] = perm[target:source]
        perm[target] = moved

    def improving_moves(self, limit: int) -> tuple[list[int], list[int]]:
        """Up to ``limit`` improving moves, largest gain first: source and target positions.

        Each is the best insertion of its element; gains above ``space.tolerance`` only.
        """
        perm = self.perm
        n = perm.shape[0]
        gains = self._own_cuts()
        gains -= self.prefix.min(axis=0)[perm]
        # The ``limit`` largest gains, then those that improve: one partition of all n gains
        # costs less than selecting the improving ones first. (Array methods, not the np.*
        # wrappers: this runs ~16 times per local search.)
        top = gains.argpartition(n - limit)[n - limit :] if n > limit else self._positions
        top = top[gains[top] > self.space.tolerance]
        if top.size == 0:
            return [], []
        if top.size > 1:
            top = top[(-gains[top]).argsort(kind="stable")]
        best_cuts = self.prefix[:, perm[top]].argmin(axis=0)
        targets = np.where(best_cuts <= top, best_cuts, best_cuts - 1)
        return top.tolist(), targets.tolist()

    def local_search(self, moves_per_round: int = 32) -> None:
        """Insertion local search to a local optimum; never lowers ``value``.

        Each round scans all ``n^2`` moves and applies the best move of as many elements as fit
        in disjoint position intervals (among the ``moves_per_round`` largest gains): moves on
        disjoint intervals do not change each other's gains.
        """
        perm, prefix, diff = self.perm, self.prefix, self.space.diff
        n = perm.shape[0]
        if n < 2:
            return
        # Positions taken by this round's moves. A bytearray: find() and slice assignment run in
        # C, far cheaper than interval tests in Python.
        taken = bytearray(n)
        free = bytes(n)
        while True:
            sources, targets = self.improving_moves(moves_per_round)
            if not sources:
                break
            taken[:] = free
            for source, target in zip(sources, targets, strict=True):
                low, high = (source, target) if source < target else (target, source)
                if taken.find(1, low, high + 1) >= 0:
                    continue
                taken[low : high + 1] = b"\x01" * (high + 1 - low)
                # _shift(source, target), inlined: the search makes ~100 moves per order at
                # n = 250, and the call cost ~8 % of its time.
                moved = perm[source]
                if source < target:
                    np.add(prefix[low + 2 : high + 2], diff[moved], out=prefix[low + 1 : high + 1])
                    perm[low:high] = perm[low + 1 : high + 1]
                else:
                    np.subtract(prefix[low:high], diff[moved], out=prefix[low + 1 : high + 1])
                    perm[low + 1 : high + 1] = perm[low:high]
                perm[target] = moved
        self.value = self._value_from_prefix()


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
        A permutation where no single insertion move improves the value. Each round is
        ``O(n^2)``.
    """
    space = _SearchSpace.of(weights)
    perm = np.asarray(order, dtype=np.int64)
    state = _OrderState(space, perm)
    state.local_search()
    return tuple(int(x) for x in state.perm)


def _cycle_crossover(first: IntVector, second: IntVector, rng: np.random.Generator) -> IntVector:
    """Cycle crossover (CX): each position keeps the element of one parent.

    The positions split into cycles (position k -> position in ``first`` of ``second[k]``); each
    cycle takes its elements from a parent chosen at random. ``O(n)``.
    """
    n = first.shape[0]
    position_in_first = np.empty(n, dtype=np.int64)
    position_in_first[first] = np.arange(n)
    # Python lists: the cycle walk is a scalar loop, where numpy indexing costs ~10x more.
    next_position = position_in_first[second].tolist()
    take_second = np.zeros(n, dtype=bool)
    seen = [False] * n
    for start in range(n):
        if seen[start]:
            continue
        cycle = []
        k = start
        while not seen[k]:
            seen[k] = True
            cycle.append(k)
            k = next_position[k]
        if rng.random() < 0.5:
            take_second[cycle] = True
    return np.where(take_second, second, first)


def _order_based_crossover(
    first: IntVector, second: IntVector, rng: np.random.Generator
) -> IntVector:
    """Order-based crossover (OB): a random half of the elements, in ``first``'s positions,
    is reordered as in ``second``. ``O(n)``.
    """
    n = first.shape[0]
    chosen = second[rng.random(n) < 0.5]
    in_chosen = np.zeros(n, dtype=bool)
    in_chosen[chosen] = True
    child = first.copy()
    child[np.flatnonzero(in_chosen[first])] = chosen
    return child


def _positions(perm: IntVector) -> IntVector:
    """Inverse permutation: ``positions[e]`` is the position of element ``e`` in ``perm``."""
    positions = np.empty_like(perm)
    positions[perm] = np.arange(perm.shape[0])
    return positions


@dataclass(slots=True)
class _Individual:
    perm: IntVector
    value: float
    _positions: IntVector | None = None

    @property
    def positions(self) -> IntVector:
        """Inverse permutation of ``perm`` (computed once)."""
        if self._positions is None:
            self._positions = _positions(self.perm)
        return self._positions


def _diverse_choice(
    distance: list[list[float]], values: list[float], threshold: float, keep: int
) -> list[int]:
    """Indices of ``keep`` of the ``len(values)`` orders, in the order the greedy chooses them.

    The greedy of :meth:`_Memetic._select_diverse`: repeatedly the best order whose distance
    (``distance``, a symmetric ``(m, m)`` list of lists) to every chosen one is at least
    ``threshold``, or, when none is, the order farthest from the chosen ones; ties go to the
    lower index. An order's distance to the chosen set only shrinks as the set grows, so an order
    that fails the threshold once fails it for good: the first phase is one pass in value order,
    and once nothing passes, the rest is farthest-first. Plain Python lists: the pass touches
    ``m^2 / 2`` scalars at most, where numpy calls cost more than the work.
    """
    by_value = sorted(range(len(values)), key=values.__getitem__, reverse=True)
    # sorted(reverse=True) keeps equal values in index order, as the greedy's ties need.
    chosen: list[int] = []
    failed: list[int] = []
    for k in by_value:
        row = distance[k]
        if not chosen or min(map(row.__getitem__, chosen)) >= threshold:
            chosen.append(k)
            if len(chosen) == keep:
                return chosen
        else:
            failed.append(k)
    failed.sort()
    nearest = {k: min(distance[k][j] for j in chosen) for k in failed}
    while len(chosen) < keep:
        pick = max(failed, key=nearest.__getitem__)
        chosen.append(pick)
        failed.remove(pick)
        row = distance[pick]
        for k in failed:
            if row[k] < nearest[k]:
                nearest[k] = row[k]
    return chosen


@dataclass(frozen=True, slots=True)
class _Settings:
    """Tuning of the memetic search.

    Chosen by 10 s CPU-time runs on RandA1 (t1d100.01, t1d150.01) and xLOLIB (be75eec_150,
    be75np_250): a plain memetic algorithm (no iterated search per child) with a large
    population and restarts beat iterated local search and mixed variants there, as in
    Schiavinotto & Stützle (2004) and Martí, Reinelt & Duarte (2012).
    """

    population_size: int = 50
    # Kick-and-search steps of the iterated local search run on every child, per element.
    kicks_per_element: float = 0.0
    # A kick is 1..max_kick random insertion moves, each over at most kick_span positions
    # (a fraction of n; at least 2).
    max_kick: int = 3
    kick_span: float = 1.0
    # Improving moves tried per local search round (largest gains first).
    moves_per_round: int = 32
    # Generations without any replacement in the population before it is re-seeded.
    patience: int = 30
    # Share of children made by cycle crossover (CX); the others by order-based crossover (OB),
    # which keeps more of the first parent's relative order. CX did better on RandA1
    # n = 100-150, OB on xLOLIB n = 250 (3 of 3 seeded runs): see ``for_size``.
    cycle_crossover_share: float = 1.0
    # Replacement: the child replaces the member closest to it (Spearman footrule between
    # positions) among those it beats, not the worst one: keeps the population diverse
    # (after Lugo, Segura & Miranda 2022's distance-aware replacement).
    closest_replacement: bool = False
    # Dynamic diversity management (after Segura et al.; Lugo, Segura & Miranda 2022): above 0,
    # the population is re-selected from members plus child, skipping orders closer than
    # ``diversity_threshold * (share of the time left)`` (normalized Spearman footrule) to one
    # already chosen, so that it stays diverse early and converges by the deadline.
    diversity_threshold: float = 0.0

    @classmethod
    def for_size(cls, n: int) -> _Settings:
        """Defaults for ``n`` elements: from ``n = 100`` on, OB crossover, a population of 20
        and dynamic diversity management (threshold 0.15); below, CX, 50 and replacement of the
        closest beaten member (the LP or CP-SAT usually proves those sizes first).

        Measured with 10 s and 20 s single-process runs (``memetic_lop``, seeds 0-3, mean gap
        to best known), against the former defaults (population 10 and worst replacement from
        n = 200; CX, 50 and closest replacement below): be75np_250 at 20 s 0.242 -> 0.161 %;
        t1d150.01 at 10 s 0.113 -> 0.065 %; be75eec_150 at 10 s 0.047 -> 0.063 % (within the
        seed-to-seed spread, 0.02-0.11 %). Thresholds 0.1, 0.2 and 0.25, populations 12 and
        30, order-based crossover over 30 % of the elements, a zero-threshold final quarter
        and restarts around the best order did no better on be75np_250.
        """
        if n < 100:
            return cls(cycle_crossover_share=1.0, closest_replacement=True)
        return cls(cycle_crossover_share=0.0, population_size=20, diversity_threshold=0.15)


class SearchChannel(Protocol):
    """The second search's end of a pipe (``multiprocessing.connection.Connection``)."""

    def poll(self) -> bool: ...

    def send(self, obj: object) -> None: ...


def serve_memetic(
    channel: SearchChannel,
    weights: FloatMatrix,
    *,
    seed: int,
    deadline_epoch_s: float,
    initial: Order | None = None,
) -> None:
    """Body of a second, independent memetic search (another process).

    Runs :func:`memetic_lop` until ``deadline_epoch_s`` (seconds since the epoch, as
    ``time.time()``) or until anything arrives on ``channel`` (the parent asks it to stop),
    sends ``(order, value)`` for every improvement of its best order and ``None`` when it ends.
    Two independent searches beat one population fed by both processes: a 10 s run on
    be75np_250 ends 0.11-0.33 % from the best known, depending on its seed, so the better of
    two runs gains more (one process 0.176 % over 40 runs, the better of two 0.150 %) than the
    ~70 % more children a shared population got from a second process (0.181 % over 60 runs).
    """

    def report(order: Order, value: float) -> None:
        channel.send((order, value))

    with contextlib.suppress(OSError):  # the parent closed its end (BrokenPipeError): done
        memetic_lop(
            weights,
            seed=seed,
            time_limit_s=max(0.0, deadline_epoch_s - time.time()),
            initial=initial,
            should_stop=channel.poll,
            on_improvement=report,
        )
        channel.send(None)


class _Memetic:
    """State of one memetic run: population, best order, the scratch states, counters."""

    def __init__(
        self,
        weights: FloatMatrix,
        rng: np.random.Generator,
        *,
        settings: _Settings,
        deadline: float,
        should_stop: Callable[[], bool] | None = None,
        on_improvement: Callable[[Order, float], None] | None = None,
        max_generations: int | None = None,
    ) -> None:
        self.weights = np.asarray(weights, dtype=np.float64)
        self.max_generations = max_generations
        self.generations = 0
        self.n = int(self.weights.shape[0])
        self.space = _SearchSpace.of(self.weights)
        self.rng = rng
        self.settings = settings
        self.deadline = deadline
        self.budget = max(1e-9, deadline - time.perf_counter())
        self.should_stop = should_stop
        self.on_improvement = on_improvement
        self.population: list[_Individual] = []
        # _select_diverse's cache: the members it was computed for (identity), their positions
        # (shape (size, n)) and distances (shape (size, size)); stale once the members change.
        self._cached_members: list[_Individual] = []
        self._cached_positions: IntVector = np.empty((0, self.n), dtype=np.int64)
        self._cached_distances: npt.NDArray[np.float64] = np.empty((0, 0))
        self.best: _Individual | None = None
        identity = np.arange(self.n, dtype=np.int64)
        self.current = _OrderState(self.space, identity)
        self.trial = _OrderState(self.space, identity)
        self.local_searches = 0
        self.span = max(2, int(settings.kick_span * self.n))

    def timed_out(self) -> bool:
        if self.should_stop is not None and self.should_stop():
            return True
        return time.perf_counter() >= self.deadline

    def _record(self, state: _OrderState) -> None:
        state.value = self._record_order(state.perm, state.value)

    def _record_order(self, perm: IntVector, value: float) -> float:
        """Keep ``perm`` if it beats the best order; returns its value (exact when it might)."""
        if self.best is not None and value <= self.best.value + self.space.tolerance:
            return value
        exact = lop_value(self.weights, perm)  # clears any float drift of the tracking
        if self.best is None or exact > self.best.value:
            self.best = _Individual(perm.copy(), exact)
            if self.on_improvement is not None:
                self.on_improvement(tuple(int(x) for x in perm), exact)
        return exact

    def improve(self, perm: IntVector) -> _Individual:
        """Iterated local search from ``perm``; returns the result (exact value)."""
        self.current.load(perm)
        self.current.local_search(self.settings.moves_per_round)
        self.local_searches += 1
        self._record(self.current)
        self._iterate(int(self.settings.kicks_per_element * self.n))
        return _Individual(self.current.perm.copy(), self.current.value)

    def _iterate(self, kicks: int) -> None:
        """``kicks`` times: kick ``current`` into ``trial``, search, keep it if not worse."""
        current, trial = self.current, self.trial
        for _ in range(kicks):
            if self.timed_out():
                return
            trial.copy_from(current)
            strength = int(self.rng.integers(1, self.settings.max_kick + 1))
            for _ in range(strength):
                source = int(self.rng.integers(0, self.n))
                offset = int(self.rng.integers(-self.span, self.span + 1))
                trial.move(source, min(self.n - 1, max(0, source + offset)))
            trial.local_search(self.settings.moves_per_round)
            self.local_searches += 1
            if trial.value >= current.value - self.space.tolerance:
                current, trial = trial, current
                self._record(current)
        self.current, self.trial = current, trial

    def seed_population(self, first: IntVector | None) -> None:
        """A new population: ``first`` and random orders, each taken to its local optimum."""
        self.population = []
        if first is not None:
            self.population.append(self.improve(first))
        while len(self.population) < self.settings.population_size and not self.timed_out():
            self.population.append(self.improve(self.rng.permutation(self.n).astype(np.int64)))

    def generation(self) -> bool:
        """One generation: crossover of two parents, local search on the child, selection.

        Returns whether the child entered the population.
        """
        if len(self.population) < 2:
            self.population[0] = self.improve(self.population[0].perm)
            return True
        return self._admit(self.improve(self._child_perm()))

    def _child_perm(self) -> IntVector:
        """Crossover of two distinct random members (CX or OB, by the settings)."""
        first, second = self.rng.choice(len(self.population), size=2, replace=False)
        use_cycle = self.rng.random() < self.settings.cycle_crossover_share
        cross = _cycle_crossover if use_cycle else _order_based_crossover
        return cross(self.population[first].perm, self.population[second].perm, self.rng)

    def _admit(self, child: _Individual) -> bool:
        """Let ``child`` into the population if it earns a place; returns whether it did."""
        if self.settings.diversity_threshold > 0:
            return self._select_diverse(child)
        # Equal orders have equal values: compare orders only among equal values.
        duplicate = any(
            other.value == child.value and np.array_equal(child.perm, other.perm)
            for other in self.population
        )
        beaten = [k for k in range(len(self.population)) if self.population[k].value < child.value]
        if duplicate or not beaten:
            return False
        self.population[self._replaced(child, beaten)] = child
        return True

    def _select_diverse(self, child: _Individual) -> bool:
        """Re-select the population from its members and ``child`` (dynamic diversity management).

        Greedy: the best order first, then repeatedly the best order whose distance to every
        chosen one is at least the threshold, or, when none is, the order farthest from the
        chosen ones. Distance: Spearman footrule over ``n^2 / 2`` (0 for equal orders, about
        2/3 for two random ones). The threshold falls linearly from ``diversity_threshold`` at
        the start to 0 at the end of the run (:meth:`_share_left`). Returns whether ``child``
        was chosen.
        """
        size = len(self.population)
        pool_distance, pool_positions = self._pool_distances(child)
        values = [ind.value for ind in self.population] + [child.value]
        threshold = max(self.settings.diversity_threshold * self._share_left(), 1e-12)
        chosen = _diverse_choice(pool_distance.tolist(), values, threshold, size)
        pool = [*self.population, child]
        self.population = [pool[k] for k in chosen]
        self._cached_members = list(self.population)
        self._cached_distances = pool_distance[chosen][:, chosen]
        self._cached_positions = pool_positions[chosen]
        return size in chosen

    def _share_left(self) -> float:
        """Share of the run still ahead: of the generations when they are capped (so that such
        a run does not depend on the clock), else of the time budget."""
        if self.max_generations is not None:
            return max(0.0, 1.0 - self.generations / max(1, self.max_generations))
        return max(0.0, self.deadline - time.perf_counter()) / self.budget

    def _pool_distances(self, child: _Individual) -> tuple[npt.NDArray[np.float64], IntVector]:
        """Distances among the members and ``child``, shape ``(size + 1, size + 1)``, and their
        positions, shape ``(size + 1, n)``. The members' part is kept between generations, so a
        call costs ``O(size n)``, not ``O(size^2 n)``."""
        size = len(self.population)
        scale = 0.5 * self.n * self.n
        members, among = self._cached_positions, self._cached_distances
        cached = self._cached_members
        stale = len(cached) != size or any(
            a is not b for a, b in zip(cached, self.population, strict=True)
        )
        if stale:
            members = np.stack([ind.positions for ind in self.population])
            among = np.abs(members[:, None, :] - members[None, :, :]).sum(axis=2) / scale
        to_child = np.abs(members - child.positions).sum(axis=1) / scale
        distance = np.zeros((size + 1, size + 1))
        distance[:size, :size] = among
        distance[size, :size] = distance[:size, size] = to_child
        return distance, np.vstack([members, child.positions])

    def _replaced(self, child: _Individual, beaten: list[int]) -> int:
        """Index of the member the child replaces, among ``beaten`` (those worse than it)."""
        if not self.settings.closest_replacement:
            return min(beaten, key=lambda k: self.population[k].value)
        distances = [
            int(np.abs(self.population[k].positions - child.positions).sum()) for k in beaten
        ]
        return beaten[int(np.argmin(distances))]

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
    """Memetic algorithm for the LOP (after Schiavinotto & Stützle 2004).

    A population of orders, each improved by an iterated local search (insertion local search,
    kicks of a few random insertions, accept if not worse); each generation crosses two parents
    (cycle crossover), improves the child the same way and lets it replace a worse member (the
    worst, or below ``n = 200`` the closest); a converged population is re-seeded around the
    best order.

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
    A local search round is ``O(n^2)`` (a row-minimum scan) and a move ``O(n |i - j|)``; a
    generation is a crossover (``O(n)``) and ``2 n`` kick-and-search steps.
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
        settings=_Settings.for_size(n),
        deadline=deadline,
        should_stop=should_stop,
        on_improvement=on_improvement,
        max_generations=max_generations,
    )
    start = becker_order(weights) if initial is None else initial
    search.seed_population(np.asarray(start, dtype=np.int64))
    stale = 0
    while not search.timed_out() and (
        max_generations is None or search.generations < max_generations
    ):
        stale = 0 if search.generation() else stale + 1
        search.generations += 1
        if search.converged() or stale >= search.settings.patience:
            search.seed_population(None if search.best is None else search.best.perm)
            stale = 0
    best = search.best
    assert best is not None
    logger.debug(
        "memetic_lop: n=%d generations=%d local_searches=%d value=%s",
        n,
        search.generations,
        search.local_searches,
        best.value,
    )
    return tuple(int(x) for x in best.perm), best.value
