"""Tests of the LOP engine: exactness on small instances, proven bounds, a LOLIB instance."""

from __future__ import annotations

import csv
import itertools
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest

from ordo_server.solver.errors import InvalidProblemError
from ordo_server.solver.heuristics import (
    becker_order,
    lop_value,
    memetic_lop,
    serve_memetic,
)
from ordo_server.solver.lop import _SecondSearch, _Shared, solve_lop
from ordo_server.solver.lp_bound import cutting_plane_bound
from ordo_server.solver.scoring import lop_weights
from ordo_server.solver.types import FloatMatrix
from tests.solver.factories import random_model

LOLIB_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks" / "lop"


def random_weights(n: int, seed: int, *, integral: bool) -> FloatMatrix:
    rng = np.random.default_rng(seed)
    if integral:
        return rng.integers(0, 100, size=(n, n)).astype(np.float64)
    return rng.normal(size=(n, n))


def brute_force_value(weights: FloatMatrix) -> float:
    n = weights.shape[0]
    return float(
        max(
            sum(weights[p[k], p[m]] for k in range(n) for m in range(k + 1, n))
            for p in itertools.permutations(range(n))
        )
    )


@pytest.mark.parametrize("seed", range(12))
def test_small_instances_are_solved_exactly_and_proven(seed: int) -> None:
    n = 3 + seed % 6  # 3..8
    weights = random_weights(n, seed, integral=seed % 2 == 0)
    result = solve_lop(weights, time_limit_s=5.0, seed=seed, num_workers=1)
    assert sorted(result.order) == list(range(n))
    assert result.value == pytest.approx(brute_force_value(weights), rel=1e-12)
    assert result.value == pytest.approx(lop_value(weights, result.order), rel=1e-12)
    assert result.proven_optimal
    assert result.bound >= result.value


@pytest.mark.parametrize("seed", range(6))
def test_medium_instances_have_a_valid_bound(seed: int) -> None:
    weights = random_weights(16, seed, integral=seed % 2 == 0)
    result = solve_lop(weights, time_limit_s=3.0, seed=seed, num_workers=1)
    assert sorted(result.order) == list(range(16))
    assert result.bound >= result.value
    assert result.value == pytest.approx(lop_value(weights, result.order), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_lp_bound_is_at_least_the_brute_force_optimum(seed: int) -> None:
    weights = random_weights(8, 100 + seed, integral=False)
    lp = cutting_plane_bound(weights, time_limit_s=10.0)
    assert lp.complete
    assert lp.bound >= brute_force_value(weights) - 1e-9


def test_the_diagonal_is_ignored() -> None:
    weights = random_weights(12, 5, integral=True)
    noisy = weights.copy()
    np.fill_diagonal(noisy, 1e6)
    plain = solve_lop(weights, time_limit_s=3.0, seed=0, num_workers=1)
    with_diagonal = solve_lop(noisy, time_limit_s=3.0, seed=0, num_workers=1)
    assert plain.value == with_diagonal.value


@pytest.mark.parametrize(
    ("weights", "field"),
    [
        (np.zeros((2, 3)), "weights"),
        (np.array([[0.0, np.nan], [1.0, 0.0]]), "weights"),
        (np.array([[0.0, np.inf], [1.0, 0.0]]), "weights"),
    ],
)
def test_invalid_weights_are_rejected(weights: FloatMatrix, field: str) -> None:
    with pytest.raises(InvalidProblemError) as error:
        solve_lop(weights, time_limit_s=1.0, seed=0, num_workers=1)
    assert error.value.field == field


def test_initial_order_must_be_a_permutation() -> None:
    with pytest.raises(InvalidProblemError):
        solve_lop(
            np.zeros((3, 3)), time_limit_s=1.0, seed=0, num_workers=1, initial_order=(0, 0, 1)
        )


def read_lolib(path: Path) -> FloatMatrix:
    tokens = path.read_text().split()
    n = int(tokens[0])
    return np.array(tokens[1 : 1 + n * n], dtype=np.float64).reshape(n, n)


@pytest.mark.skipif(
    not (LOLIB_DIR / "best_known.csv").exists(),
    reason="the shared LOLIB benchmark folder ../shared/benchmarks/lop is not checked out here",
)
def test_smallest_io_instance_is_solved_and_proven() -> None:
    with (LOLIB_DIR / "best_known.csv").open() as handle:
        best_known = {row["instance"]: float(row["best_known"]) for row in csv.DictReader(handle)}
    weights = read_lolib(LOLIB_DIR / "N-t59b11xx")  # n = 44, has a nonzero diagonal
    result = solve_lop(weights, time_limit_s=20.0, seed=0, num_workers=2)
    assert result.value == best_known["N-t59b11xx"]
    assert result.proven_optimal
    assert result.bound == result.value


def test_large_instance_with_a_bounding_thread_returns_a_valid_bound() -> None:
    # n > 80 with two workers runs the LP beside the heuristic; the result must stay consistent.
    weights = random_weights(90, 7, integral=True)
    result = solve_lop(weights, time_limit_s=1.5, seed=0, num_workers=2)
    assert sorted(result.order) == list(range(90))
    assert result.value == lop_value(weights, result.order)
    assert result.bound >= result.value
    assert result.wall_time_s < 5.0


def test_a_solve_with_a_second_search_ends_on_time_and_leaves_no_process() -> None:
    # From n = 100 the second search starts at once; the end of the run must stop it without
    # overrunning the budget.
    weights = random_weights(120, 8, integral=True)
    result = solve_lop(weights, time_limit_s=3.0, seed=0, num_workers=2)
    assert result.value == lop_value(weights, result.order)
    assert result.wall_time_s < 4.0
    assert multiprocessing.active_children() == []


def planted_order_weights(n: int, strength: float) -> FloatMatrix:
    """Uniform integers 0-99 plus ``strength`` on every pair in the identity order."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 100, size=(n, n)) + strength * np.triu(np.ones((n, n)), 1)


def pairwise_bound(weights: FloatMatrix) -> float:
    """Every pair on its better side (the diagonal ignored)."""
    return float((np.maximum(weights, weights.T).sum() - np.trace(weights)) / 2)


def test_from_n_150_an_lp_far_above_the_incumbent_stops_after_its_first_round() -> None:
    # A planted order of strength 28: the pairwise bound is 0.42 times a local optimum's lead
    # over the mean order above it (so the LP starts), and after one round the LP bound is
    # still 0.38 of it above (xLOLIB: 0.4-0.9). At this size later rounds only take a core from
    # the search, so the bound of round 1 is kept.
    # 8 s, not 3: on a loaded machine the first round may not end within 3 s (lp_rounds 0),
    # and the point is that no second round follows however long the search runs.
    weights = planted_order_weights(150, 28.0)
    result = solve_lop(weights, time_limit_s=8.0, seed=0, num_workers=2)
    assert result.lp_rounds == 1
    assert result.value <= result.bound < pairwise_bound(weights)
    assert not result.proven_optimal


def test_from_n_150_a_pairwise_bound_far_above_a_local_optimum_skips_the_lp() -> None:
    # Strength 20: the pairwise bound is 0.77 of the lead above a local optimum, and the LP's
    # first round would only bring that to 0.72 (be75np_250: 1.0 and 0.9) after a second of a
    # core: the pairwise bound is reported instead.
    weights = planted_order_weights(150, 20.0)
    result = solve_lop(weights, time_limit_s=3.0, seed=0, num_workers=2)
    assert result.lp_rounds == 0
    assert result.value < result.bound == pairwise_bound(weights)
    assert result.wall_time_s < 4.0


def test_non_integral_data_is_proven_with_the_relative_tolerance() -> None:
    weights = random_weights(14, 21, integral=False)
    result = solve_lop(weights, time_limit_s=10.0, seed=0, num_workers=1)
    assert result.bound >= result.value
    assert result.proven_optimal
    assert result.bound - result.value <= 1e-9 * max(1.0, abs(result.bound))


def test_a_dense_random_lop_with_an_lp_gap_is_proven_by_cpsat() -> None:
    # A plain random n = 30 LOP whose 3-dicycle LP stays 0.5 % above the optimum and fixes only
    # 28 of 435 pairs: the MILP over the pool did not close it in 10 s; CP-SAT does in ~0.3 s.
    weights, _ = lop_weights(random_model(np.random.default_rng(2), 30), 0.5)
    lp = cutting_plane_bound(weights, time_limit_s=5.0)
    result = solve_lop(weights, time_limit_s=8.0, seed=0, num_workers=1)
    assert result.value == pytest.approx(lop_value(weights, result.order), rel=1e-12)
    assert result.proven_optimal
    assert result.bound - result.value <= 1e-9 * max(1.0, abs(result.bound))
    assert lp.bound > result.value + 1e-6  # the LP alone could not prove it
    assert result.method == "cpsat"
    assert result.wall_time_s < 6.0


def test_lp_gives_up_at_once_on_a_uniform_random_instance() -> None:
    # RandA1-like (uniform entries): after one round the LP bound is far above the incumbent
    # relative to the incumbent's lead over the mean order, so the loop stops (it would only
    # take time from the heuristic).
    weights = random_weights(100, 3, integral=True)
    _, incumbent = memetic_lop(weights, seed=0, time_limit_s=0.5)
    rounds: list[int] = []
    lp = cutting_plane_bound(
        weights,
        time_limit_s=20.0,
        target=lambda: incumbent,
        on_round=lambda k, bound, baseline: rounds.append(k),
    )
    assert not lp.complete
    assert lp.rounds == 1
    assert rounds == []  # stopped before reporting the round
    assert lp.bound >= incumbent


def shared_from_becker(weights: FloatMatrix) -> _Shared:
    start = becker_order(weights)
    return _Shared(start, lop_value(weights, start), True, time.perf_counter())


def started_second_search(
    weights: FloatMatrix, shared: _Shared, *, seconds: float
) -> _SecondSearch:
    """A second search started at once; returns when its process runs (or fails the test)."""
    second = _SecondSearch(
        weights, shared, seed=1, deadline_epoch_s=time.time() + seconds, delay_s=0.0
    )
    deadline = time.perf_counter() + 20.0
    while second._process is None and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert second._process is not None
    return second


def test_the_second_search_offers_its_improvements_with_values_recomputed() -> None:
    weights = random_weights(120, 11, integral=True)
    shared = shared_from_becker(weights)
    becker_value = shared.value
    second = started_second_search(weights, shared, seconds=30.0)
    try:
        deadline = time.perf_counter() + 20.0
        while second.improvements == 0 and time.perf_counter() < deadline:
            time.sleep(0.01)
        assert second.improvements > 0
    finally:
        started = time.perf_counter()
        second.close()
        closed_in = time.perf_counter() - started
    assert closed_in < 0.5  # it stopped when asked (a terminated search takes over 1 s)
    assert shared.value > becker_value
    assert shared.value == lop_value(weights, shared.order)
    assert multiprocessing.active_children() == []


def test_serve_memetic_reports_improvements_and_stops_when_asked() -> None:
    weights = random_weights(60, 12, integral=True)
    parent_end, search_end = multiprocessing.Pipe()
    parent_end.send(None)  # stop at the first check
    started = time.perf_counter()
    serve_memetic(search_end, weights, seed=0, deadline_epoch_s=time.time() + 60.0)
    assert time.perf_counter() - started < 5.0
    messages = []
    while parent_end.poll():
        messages.append(parent_end.recv())
    assert messages[-1] is None
    reported = messages[:-1]
    assert reported  # the start order's local optimum at least
    values = [value for _, value in reported]
    assert values == sorted(values)
    for order, value in reported:
        assert value == lop_value(weights, order)
    search_end.close()
    parent_end.close()


def test_serve_memetic_ends_quietly_when_the_parent_is_gone() -> None:
    # The parent closed its end (its search ended): the next report fails with a broken pipe,
    # which must end the search without a traceback.
    parent_end, search_end = multiprocessing.Pipe()
    parent_end.close()
    started = time.perf_counter()
    serve_memetic(
        search_end,
        random_weights(40, 1, integral=True),
        seed=0,
        deadline_epoch_s=time.time() + 60.0,
    )
    assert time.perf_counter() - started < 5.0
    search_end.close()


def test_a_second_search_that_dies_is_closed_cleanly() -> None:
    weights = random_weights(120, 13, integral=True)
    shared = shared_from_becker(weights)
    second = started_second_search(weights, shared, seconds=30.0)
    process = second._process
    assert process is not None
    process.kill()
    process.join()
    started = time.perf_counter()
    second.close()
    assert time.perf_counter() - started < 1.0
    assert shared.value == lop_value(weights, shared.order)
    assert multiprocessing.active_children() == []


def test_no_second_search_starts_when_optimality_is_proven_at_once() -> None:
    weights = random_weights(90, 14, integral=True)
    shared = shared_from_becker(weights)
    shared.proven.set()
    second = _SecondSearch(weights, shared, seed=1, deadline_epoch_s=time.time() + 30.0)
    time.sleep(1.5)  # past its start delay
    assert second._process is None
    started = time.perf_counter()
    second.close()
    assert time.perf_counter() - started < 0.1
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("pause_s", [0.0, 0.05, 0.3])
def test_closing_a_second_search_while_it_starts_leaves_no_process(pause_s: float) -> None:
    # close() may come before, during or just after the process start (which can take a
    # second for the fork server): it must wait for the start and stop what it started.
    weights = random_weights(120, 18, integral=True)
    shared = shared_from_becker(weights)
    second = _SecondSearch(
        weights, shared, seed=1, deadline_epoch_s=time.time() + 30.0, delay_s=0.0
    )
    time.sleep(pause_s)
    started = time.perf_counter()
    second.close()
    assert time.perf_counter() - started < 5.0
    assert not second._thread.is_alive()
    assert multiprocessing.active_children() == []
    assert shared.value == lop_value(weights, shared.order)
