"""Tests of the LOP engine: exactness on small instances, proven bounds, a LOLIB instance."""

from __future__ import annotations

import csv
import itertools
import multiprocessing
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from solver.errors import InvalidProblemError
from solver.heuristics import (
    _HELPER_QUEUE,
    becker_order,
    insertion_local_search,
    lop_value,
    memetic_lop,
    serve_local_search,
)
from solver.lop import _LocalSearchProcess, _Shared, solve_lop
from solver.lp_bound import cutting_plane_bound
from solver.scoring import lop_weights
from solver.types import FloatMatrix
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


def test_a_solve_with_the_helper_process_ends_on_time_and_leaves_no_process() -> None:
    # From n = 100 the helper starts at once and the search keeps orders in flight with it; the
    # end of the run must close the helper (answers unread) without overrunning the budget.
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
    weights = planted_order_weights(150, 28.0)
    result = solve_lop(weights, time_limit_s=3.0, seed=0, num_workers=2)
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


def ready_helper(weights: FloatMatrix, shared: _Shared, *, seconds: float) -> _LocalSearchProcess:
    helper = _LocalSearchProcess(weights, shared, time.time() + seconds)
    deadline = time.perf_counter() + 20.0
    while not helper.submit(np.arange(weights.shape[0])) and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert helper.collect() is not None
    return helper


class HelperLog:
    """Records what a search does with a helper: the orders queued at it after each one sent,
    the values it answered, and whether each answer had to be waited for."""

    def __init__(self, helper: _LocalSearchProcess) -> None:
        self.queued: list[int] = []
        self.answered: list[float] = []
        self.waited: list[bool] = []
        self._submit, self._collect, self._ready = helper.submit, helper.collect, helper.ready
        helper.submit = self.submit  # type: ignore[method-assign]
        helper.collect = self.collect  # type: ignore[method-assign]

    def submit(self, perm: npt.NDArray[np.int64]) -> bool:
        sent = self._submit(perm)
        if sent:
            self.queued.append(len(self.queued) + 1 - len(self.answered))
        return sent

    def collect(self) -> tuple[npt.NDArray[np.int64], float] | None:
        self.waited.append(not self._ready())
        answer = self._collect()
        if answer is not None:
            self.answered.append(answer[1])
        return answer


def kill_helper_process(helper: _LocalSearchProcess) -> None:
    process = helper._process
    assert process is not None
    process.kill()
    process.join()


def test_the_helper_answers_orders_with_their_local_optima_and_leaves_no_process() -> None:
    # With two workers above n = 70 the memetic search sends every other child to a helper
    # process; its answer must be the local optimum the search itself would have reached.
    weights = random_weights(90, 11, integral=True)
    helper = ready_helper(weights, shared_from_becker(weights), seconds=30.0)
    try:
        for seed in range(3):
            start = np.random.default_rng(seed).permutation(90).astype(np.int64)
            assert helper.submit(start)
            answer = helper.collect()
            assert answer is not None
            perm, value = answer
            assert tuple(int(x) for x in perm) == insertion_local_search(weights, tuple(start))
            assert value == lop_value(weights, perm)
    finally:
        helper.close()
    assert multiprocessing.active_children() == []


def test_the_memetic_search_sends_children_to_the_helper() -> None:
    weights = random_weights(90, 12, integral=True)
    shared = shared_from_becker(weights)
    helper = ready_helper(weights, shared, seconds=30.0)
    log = HelperLog(helper)
    try:
        order, value = memetic_lop(
            weights, seed=0, time_limit_s=60.0, max_generations=40, helper=helper
        )
    finally:
        helper.close()
    # One helper child per generation, collected a generation later: the last is in flight.
    assert len(log.answered) == 39
    assert value == lop_value(weights, order) >= max(log.answered)
    assert multiprocessing.active_children() == []


def test_an_uncapped_search_keeps_the_helper_queue_full_but_short() -> None:
    # A run cut by its time limit tops the helper's queue up to _HELPER_QUEUE (3) orders, also
    # while it seeds its population, and reads only the answers already there: the helper
    # rarely idles while the search works, and the search never waits for it (nor queues more).
    weights = random_weights(90, 16, integral=True)
    helper = ready_helper(weights, shared_from_becker(weights), seconds=30.0)
    log = HelperLog(helper)
    try:
        order, value = memetic_lop(weights, seed=0, time_limit_s=1.5, helper=helper)
    finally:
        helper.close()
    assert len(log.answered) > 10
    assert max(log.queued) == _HELPER_QUEUE
    assert not any(log.waited)  # only answers already there were read
    assert value == lop_value(weights, order) >= max(log.answered)
    assert multiprocessing.active_children() == []


def test_an_uncapped_search_seeds_its_population_with_the_helper() -> None:
    # Seeding takes 50 random orders to local optima at n = 90 (again at every restart); the
    # helper improves some of them meanwhile instead of idling.
    from solver.heuristics import _Memetic, _Settings

    weights = random_weights(90, 17, integral=True)
    helper = ready_helper(weights, shared_from_becker(weights), seconds=30.0)
    log = HelperLog(helper)
    settings = _Settings.for_size(90)
    search = _Memetic(
        weights,
        np.random.default_rng(0),
        settings=settings,
        deadline=time.perf_counter() + 30.0,
        helper=helper,
    )
    try:
        search.seed_population(None)
    finally:
        helper.close()
    members = {tuple(int(x) for x in ind.perm) for ind in search.population}
    assert len(search.population) == settings.population_size
    assert len(log.answered) >= 5
    assert not any(log.waited)
    assert max(log.queued) == _HELPER_QUEUE
    for individual in search.population:
        assert individual.value == lop_value(weights, individual.perm)
        assert tuple(int(x) for x in individual.perm) == insertion_local_search(
            weights, tuple(int(x) for x in individual.perm)
        )
    assert len(members) > 1


def test_the_helper_ends_quietly_when_the_search_closes_with_an_order_queued() -> None:
    # The search keeps one order in flight, so at its end the helper may still be working on
    # one whose answer nobody reads: it must stop without a BrokenPipeError traceback.
    search_end, helper_end = multiprocessing.Pipe()
    search_end.send(np.arange(40, dtype=np.int64))
    search_end.close()
    serve_local_search(helper_end, random_weights(40, 1, integral=True))
    helper_end.close()


def test_a_search_with_a_ready_helper_is_deterministic_for_a_seed() -> None:
    weights = random_weights(90, 15, integral=True)
    results = []
    for _ in range(2):
        helper = ready_helper(weights, shared_from_becker(weights), seconds=60.0)
        try:
            results.append(
                memetic_lop(weights, seed=3, time_limit_s=60.0, max_generations=30, helper=helper)
            )
        finally:
            helper.close()
    assert results[0] == results[1]


def test_a_helper_that_dies_is_dropped_and_the_search_goes_on() -> None:
    weights = random_weights(90, 13, integral=True)
    helper = ready_helper(weights, shared_from_becker(weights), seconds=30.0)
    try:
        kill_helper_process(helper)
        sent = helper.submit(np.arange(90))
        assert (helper.collect() if sent else None) is None
        assert not helper.submit(np.arange(90))  # dropped for the rest of the run
        order, value = memetic_lop(
            weights, seed=0, time_limit_s=60.0, max_generations=5, helper=helper
        )
        assert value == lop_value(weights, order)
    finally:
        helper.close()
    assert multiprocessing.active_children() == []


def test_an_uncapped_search_drops_a_helper_that_dies_and_ends_on_time() -> None:
    weights = random_weights(90, 17, integral=True)
    helper = ready_helper(weights, shared_from_becker(weights), seconds=30.0)
    try:
        kill_helper_process(helper)
        started = time.perf_counter()
        order, value = memetic_lop(weights, seed=0, time_limit_s=1.0, helper=helper)
        assert time.perf_counter() - started < 2.0
        assert value == lop_value(weights, order)
        assert not helper.submit(np.arange(90))  # dropped for the rest of the run
    finally:
        helper.close()
    assert multiprocessing.active_children() == []


def test_no_helper_process_starts_when_optimality_is_proven_at_once() -> None:
    weights = random_weights(90, 14, integral=True)
    shared = shared_from_becker(weights)
    shared.proven.set()
    helper = _LocalSearchProcess(weights, shared, time.time() + 30.0)
    time.sleep(1.5)  # past the helper's start delay
    assert not helper.submit(np.arange(90))
    started = time.perf_counter()
    helper.close()
    assert time.perf_counter() - started < 0.1
    assert multiprocessing.active_children() == []
