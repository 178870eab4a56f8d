"""Tests of the LOP heuristics against brute force on small instances."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from ordo_server.solver.heuristics import (
    becker_order,
    insertion_local_search,
    lop_value,
    memetic_lop,
)
from ordo_server.solver.types import FloatMatrix, Order


def random_weights(n: int, seed: int, *, integral: bool = True) -> FloatMatrix:
    """Random LOP matrix with a nonzero diagonal (which must be ignored)."""
    rng = np.random.default_rng(seed)
    if integral:
        return rng.integers(-20, 50, size=(n, n)).astype(np.float64)
    return rng.normal(size=(n, n))


def brute_force(weights: FloatMatrix) -> tuple[Order, float]:
    n = weights.shape[0]
    best: tuple[Order, float] = ((), -np.inf)
    for perm in itertools.permutations(range(n)):
        value = sum(weights[perm[k], perm[m]] for k in range(n) for m in range(k + 1, n))
        if value > best[1]:
            best = (perm, float(value))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_lop_value_matches_the_definition(seed: int) -> None:
    weights = random_weights(7, seed, integral=False)
    order = tuple(int(x) for x in np.random.default_rng(seed).permutation(7))
    expected = sum(weights[order[k], order[m]] for k in range(7) for m in range(k + 1, 7))
    assert lop_value(weights, order) == pytest.approx(expected, rel=1e-12)


def test_lop_value_ignores_the_diagonal() -> None:
    weights = np.array([[100.0, 2.0], [3.0, -50.0]])
    assert lop_value(weights, (0, 1)) == 2.0
    assert lop_value(weights, (1, 0)) == 3.0


def test_becker_order_is_a_permutation_and_handles_zero_columns() -> None:
    weights = np.array([[0.0, 5.0, 1.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    order = becker_order(weights)
    assert sorted(order) == [0, 1, 2]
    assert order[0] == 0  # column sum 0: quotient infinite, goes first


@pytest.mark.parametrize("seed", range(20))
def test_local_search_never_worsens_and_reaches_a_local_optimum(seed: int) -> None:
    n = 12
    weights = random_weights(n, seed, integral=seed % 2 == 0)
    start = tuple(int(x) for x in np.random.default_rng(seed).permutation(n))
    result = insertion_local_search(weights, start)
    assert sorted(result) == list(range(n))
    value = lop_value(weights, result)
    assert value >= lop_value(weights, start) - 1e-9
    for source in range(n):
        for target in range(n):
            moved = list(result)
            moved.insert(target, moved.pop(source))
            assert lop_value(weights, tuple(moved)) <= value + 1e-9


@pytest.mark.parametrize("seed", range(10))
def test_memetic_finds_the_brute_force_optimum_on_small_instances(seed: int) -> None:
    weights = random_weights(7, seed, integral=seed % 2 == 0)
    _, optimum = brute_force(weights)
    order, value = memetic_lop(weights, seed=seed, time_limit_s=5.0, max_generations=20)
    assert sorted(order) == list(range(7))
    assert value == pytest.approx(lop_value(weights, order), rel=1e-12)
    assert value == pytest.approx(optimum, rel=1e-12)


def test_memetic_is_deterministic_for_a_seed() -> None:
    weights = random_weights(30, 3)
    first = memetic_lop(weights, seed=11, time_limit_s=60.0, max_generations=5)
    second = memetic_lop(weights, seed=11, time_limit_s=60.0, max_generations=5)
    assert first == second


def test_diversity_managed_memetic_is_deterministic_with_capped_generations() -> None:
    # From n = 100 the diversity threshold shrinks over the run; with max_generations it must
    # follow the generations, not the clock: a budget of 5 s instead of 60 s changes nothing.
    weights = random_weights(100, 5)
    first = memetic_lop(weights, seed=2, time_limit_s=60.0, max_generations=60)
    second = memetic_lop(weights, seed=2, time_limit_s=5.0, max_generations=60)
    assert first == second


def test_memetic_is_never_worse_than_its_initial_order() -> None:
    weights = random_weights(25, 4)
    initial = becker_order(weights)
    _, value = memetic_lop(weights, seed=0, time_limit_s=0.0, initial=initial)
    assert value >= lop_value(weights, initial)


@pytest.mark.parametrize("n", [0, 1])
def test_memetic_handles_trivial_sizes(n: int) -> None:
    assert memetic_lop(np.zeros((n, n)), seed=0, time_limit_s=1.0) == (tuple(range(n)), 0.0)


@pytest.mark.parametrize("integral", [True, False])
def test_incremental_prefix_matrix_matches_a_fresh_one_after_many_moves(integral: bool) -> None:
    # The search keeps the prefix matrix and value up to date move by move (O(n |i-j|) each);
    # any slip would silently mislead it, so compare with a recomputation.
    from ordo_server.solver.heuristics import _OrderState, _SearchSpace

    n = 30
    weights = random_weights(n, 9, integral=integral)
    rng = np.random.default_rng(9)
    state = _OrderState(_SearchSpace.of(weights), rng.permutation(n).astype(np.int64))
    for _ in range(300):
        source, target = (int(v) for v in rng.integers(0, n, size=2))
        state.move(source, target)
    tracked = state.prefix.copy()
    state.recompute()
    np.testing.assert_allclose(tracked, state.prefix, atol=1e-9)
    assert state.value == pytest.approx(lop_value(weights, state.perm), abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_crossovers_give_permutations_and_keep_common_parents(seed: int) -> None:
    from ordo_server.solver.heuristics import _cycle_crossover, _order_based_crossover

    rng = np.random.default_rng(seed)
    first = rng.permutation(40).astype(np.int64)
    second = rng.permutation(40).astype(np.int64)
    for crossover in (_cycle_crossover, _order_based_crossover):
        child = crossover(first, second, rng)
        assert sorted(child.tolist()) == list(range(40))
        np.testing.assert_array_equal(crossover(first, first.copy(), rng), first)


@pytest.mark.parametrize("closest", [False, True])
def test_a_child_replaces_the_worst_or_the_closest_member_it_beats(closest: bool) -> None:
    # Closest replacement keeps the population diverse: of the members worse than the child, the
    # one nearest to it (positions) goes, not the worst; members better than it always stay.
    from ordo_server.solver.heuristics import _Individual, _Memetic, _Settings

    n = 6
    search = _Memetic(
        random_weights(n, 3),
        np.random.default_rng(0),
        settings=_Settings(closest_replacement=closest),
        deadline=float("inf"),
    )
    identity = np.arange(n, dtype=np.int64)
    far = identity[::-1].copy()
    near = np.array([1, 0, 2, 3, 4, 5], dtype=np.int64)
    search.population = [
        _Individual(far, 1.0),  # worst, far from the child
        _Individual(near, 2.0),  # beaten, close to the child
        _Individual(identity.copy(), 9.0),  # better than the child: never replaced
    ]
    child = _Individual(np.array([0, 1, 3, 2, 4, 5], dtype=np.int64), 5.0)
    assert search._replaced(child, [0, 1]) == (1 if closest else 0)


def test_diverse_selection_keeps_a_distant_child_over_a_near_copy_of_the_best() -> None:
    # Dynamic diversity management: early in the run an order closer than the threshold to a
    # better one loses its place to a distant child, even a worse one; the best always stays.
    from ordo_server.solver.heuristics import _Individual, _Memetic, _Settings

    n = 40
    weights = random_weights(n, 3, integral=True)
    settings = _Settings(population_size=3, diversity_threshold=0.5)
    search = _Memetic(
        weights,
        np.random.default_rng(0),
        settings=settings,
        deadline=time.perf_counter() + 3600.0,
    )
    best = np.asarray(memetic_lop(weights, seed=0, time_limit_s=5.0, max_generations=5)[0])
    near = best.copy()
    near[[0, 1]] = near[[1, 0]]
    reverse = best[::-1].copy()
    search.population = [
        _Individual(best, lop_value(weights, best)),
        _Individual(near, lop_value(weights, near)),
        _Individual(reverse, lop_value(weights, reverse)),
    ]
    distant = np.roll(best, n // 2)
    child = _Individual(distant, lop_value(weights, distant))
    assert child.value < search.population[1].value  # worse than the near copy
    assert search._admit(child)
    kept = [tuple(ind.perm) for ind in search.population]
    assert len(kept) == 3
    assert tuple(best) in kept
    assert tuple(distant) in kept
    assert tuple(near) not in kept


def stepwise_diverse_choice(
    distance: list[list[float]], values: list[float], threshold: float, keep: int
) -> list[int]:
    """The diverse selection as first written: one full scan of the candidates per choice."""
    first = max(range(len(values)), key=values.__getitem__)
    chosen = [first]
    nearest = list(distance[first])
    unchosen = [k for k in range(len(values)) if k != first]
    while len(chosen) < keep:
        pick, pick_value, farthest, farthest_distance = -1, -np.inf, -1, -1.0
        for k in unchosen:
            if nearest[k] >= threshold:
                if values[k] > pick_value:
                    pick, pick_value = k, values[k]
            elif nearest[k] > farthest_distance:
                farthest, farthest_distance = k, nearest[k]
        chosen.append(pick if pick >= 0 else farthest)
        unchosen.remove(chosen[-1])
        for k in unchosen:
            nearest[k] = min(nearest[k], distance[chosen[-1]][k])
    return chosen


def test_diverse_choice_chooses_as_the_stepwise_greedy() -> None:
    # The one-pass selection must choose the same orders in the same sequence as the greedy
    # that rescans every candidate per choice, ties in value and distance included: 200 random
    # pools of 2-24 orders on a coarse grid (many ties) and thresholds from ~0 to 0.7.
    from ordo_server.solver.heuristics import _diverse_choice

    for seed in range(200):
        rng = np.random.default_rng(seed)
        size = int(rng.integers(2, 25))
        points = rng.integers(0, 6, size=(size, 3))
        distance = (np.abs(points[:, None, :] - points[None, :, :]).sum(axis=2) / 15.0).tolist()
        values = rng.integers(0, 5, size=size).astype(float).tolist()
        threshold = float(rng.choice([1e-12, 0.1, 0.2, 0.4, 0.7]))
        expected = stepwise_diverse_choice(distance, values, threshold, size - 1)
        assert _diverse_choice(distance, values, threshold, size - 1) == expected, seed
