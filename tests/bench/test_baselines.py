"""The closed-loop baselines of ``bench/baselines.py`` on small worlds (n = 4 or 5).

Exactness checks use :class:`AdditiveWorld`, defined here: utilities move by fixed pairwise
effects, so the naive pairwise model is exact and, without noise, reports are the truth.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from bench import baselines
from bench.baselines import GPHyper, GPPosterior, NaivePairwise, Trace
from bench.worlds import draw_world
from bench.worlds.base import Evaluation, FloatArray, IntArray
from bench.worlds.oracle import OracleResult, all_orders, true_mean_utility
from ordo_server.solver.estimation import TaskKind


class AdditiveJob:
    """A job of :class:`AdditiveWorld`."""

    def __init__(self, world: AdditiveWorld, seed: int) -> None:
        self.world = world
        self.utilities = world.base.copy()
        self.trained: list[int] = []
        self._rng = np.random.default_rng(seed)

    def train(self, task: int) -> None:
        w = self.world
        effect = np.where(np.isin(np.arange(w.n), self.trained), w.backward[task], w.forward[task])
        effect[task] = w.gain[task]
        self.utilities = self.utilities + effect
        self.trained.append(task)

    def evaluate(self) -> Evaluation:
        values = self.utilities + self._rng.normal(0.0, self.world.noise_sd, self.world.n)
        return Evaluation({j: float(v) for j, v in enumerate(values)}, {})


class AdditiveWorld:
    """Training ``i`` adds ``gain[i]`` to ``i``, ``forward[i, j]`` to every untrained ``j`` and
    ``backward[i, j]`` to every trained ``j`` (utility units, unclipped)."""

    family = "test-additive"

    def __init__(self, n: int, seed: int, *, noise_sd: float, forward: bool = True) -> None:
        rng = np.random.default_rng(seed)
        self.seed = seed
        self.names = tuple(f"task{j}" for j in range(n))
        self.kinds = tuple(TaskKind.STRUCTURED if j % 2 else TaskKind.OPEN_ENDED for j in range(n))
        self.noise_sd = noise_sd
        self.base = rng.uniform(0.1, 0.3, n)
        self.gain = rng.uniform(0.2, 0.4, n)
        self.forward = rng.normal(0.0, 0.05, (n, n)) if forward else np.zeros((n, n))
        self.backward = rng.normal(-0.03, 0.05, (n, n))
        for table in (self.forward, self.backward):
            np.fill_diagonal(table, 0.0)

    @property
    def n(self) -> int:
        return len(self.base)

    def start(self, seed: int) -> AdditiveJob:
        return AdditiveJob(self, seed)

    def final_utilities(self, orders: IntArray) -> FloatArray:
        position = np.argsort(np.asarray(orders), axis=1)
        before = position[:, :, None] < position[:, None, :]  # [p, i, j]: i before j
        forward = np.einsum("pij,ij->pj", before, self.forward)
        backward = np.einsum("pij,ij->pj", ~before, self.backward)
        finals: FloatArray = self.base + self.gain + forward + backward
        return finals

    def joint_utilities(self) -> FloatArray | None:
        return None

    def true_weights(self) -> FloatArray:
        """``W[a, b]``: gain of the sum of finals from placing ``a`` before ``b``."""
        weights: FloatArray = self.forward + self.backward.T
        return weights


def exhaustive(world: AdditiveWorld) -> OracleResult:
    orders = all_orders(world.n)
    return OracleResult.of(orders, world.final_utilities(orders).mean(axis=1))


def assert_trace_shape(trace: Trace, n: int, runs: int) -> None:
    for column in (trace.recommended, trace.best_run, trace.runs, trace.reported):
        assert len(column) == runs
    assert trace.stages == [n * r for r in range(1, runs + 1)]
    for order in trace.recommended + trace.best_run + trace.runs:
        assert sorted(order) == list(range(n))


# --- runs and best of random ---


def test_run_order_reports_baseline_and_every_stage() -> None:
    world = AdditiveWorld(5, 0, noise_sd=0.0)
    order = (3, 1, 4, 0, 2)
    final, evaluations = baselines.run_order(world, order, seed=7)
    assert len(evaluations) == 6
    assert evaluations[0].values == pytest.approx(dict(enumerate(world.base)))
    assert final == pytest.approx(true_mean_utility(world, order))


def test_best_of_random_recommends_the_best_reported_run() -> None:
    world = AdditiveWorld(5, 1, noise_sd=0.05)
    trace = baselines.best_of_random(world, 10, seed=3)
    assert_trace_shape(trace, 5, 10)
    for r in range(10):
        best = int(np.argmax(trace.reported[: r + 1]))
        assert trace.best_run[r] == trace.runs[best]
        assert trace.recommended[r] == trace.best_run[r]
    assert len(set(trace.runs)) > 1


def test_reported_values_are_the_noisy_finals() -> None:
    world = AdditiveWorld(4, 2, noise_sd=0.0)
    trace = baselines.best_of_random(world, 4, seed=0)
    for order, reported in zip(trace.runs, trace.reported, strict=True):
        assert reported == pytest.approx(true_mean_utility(world, order))


@pytest.mark.parametrize(
    "method", [baselines.best_of_random, baselines.gp_over_orders, baselines.naive_pairwise]
)
def test_traces_are_deterministic_and_cumulative(method: baselines.Method) -> None:
    world = AdditiveWorld(5, 4, noise_sd=0.05)
    first = method(world, 5, seed=11)
    assert_trace_shape(first, 5, 5)
    assert method(world, 5, seed=11) == first
    assert method(world, 5, seed=12).reported != first.reported


# --- permutations ---


def test_kendall_distance_counts_discordant_pairs() -> None:
    rng = np.random.default_rng(0)
    orders = np.array([rng.permutation(6) for _ in range(7)])
    x = baselines.before_indicators(orders)
    distance = baselines.kendall_distance(x, x)
    for p, q in itertools.product(range(7), repeat=2):
        pos_p, pos_q = np.argsort(orders[p]), np.argsort(orders[q])
        discordant = sum(
            (pos_p[a] < pos_p[b]) != (pos_q[a] < pos_q[b])
            for a, b in itertools.combinations(range(6), 2)
        )
        assert distance[p, q] == discordant
    assert baselines.kendall_distance(x[:1], x[:1])[0, 0] == 0
    reverse = baselines.before_indicators(orders[:1, ::-1])
    assert baselines.kendall_distance(x[:1], reverse)[0, 0] == 15


def test_local_search_stops_at_a_local_optimum_of_swaps_and_insertions() -> None:
    rng = np.random.default_rng(1)
    weights = rng.normal(size=(6, 6))
    _, before = baselines._before_tensor(6)

    def lop(orders: IntArray) -> FloatArray:
        position = np.argsort(orders, axis=1)
        indicator = (position[:, :, None] < position[:, None, :]).reshape(len(orders), -1)
        values: FloatArray = indicator @ weights.ravel()
        return values

    result = baselines.local_search(rng.permutation(6), lop)
    maps = baselines._move_maps(6)
    assert len(maps) == math.comb(6, 2) + 5 * 5 - 5  # adjacent swaps are also insertions
    assert lop(np.array(result.order)[maps]).max() <= result.value + 1e-12
    assert result.value == pytest.approx(lop(np.array([result.order]))[0])
    assert result.value <= (before @ weights.ravel()).max() + 1e-12


# --- the Gaussian process over orders ---


def test_posterior_interpolates_noiseless_observations() -> None:
    rng = np.random.default_rng(2)
    orders = np.array([rng.permutation(5) for _ in range(6)])
    values = rng.normal(size=6)
    hyper = GPHyper(s2=1.0, lam=3.0, noise=1e-10, mean=0.2)
    mean, sd = GPPosterior.fit(orders, values, hyper).predict(orders)
    np.testing.assert_allclose(mean, values, atol=1e-5)
    np.testing.assert_allclose(sd, 0.0, atol=1e-3)
    far_mean, far_sd = GPPosterior.fit(orders[:1], values[:1], hyper).predict(orders[:1, ::-1])
    assert far_mean[0] == pytest.approx(0.2 + math.exp(-3.0) * (values[0] - 0.2))
    assert far_sd[0] > 0.9


def test_expected_improvement_is_highest_away_from_observed_bad_orders() -> None:
    identity = np.arange(5)
    maps = baselines._move_maps(5)
    bad = np.concatenate([identity[None, :], identity[maps[:4]]])
    values = np.full(len(bad), -1.0)
    posterior = GPPosterior.fit(bad, values, GPHyper(s2=1.0, lam=5.0, noise=1e-8, mean=0.0))
    incumbent = float(posterior.mean(bad).max())
    ei_bad = baselines.expected_improvement(*posterior.predict(bad), incumbent)
    ei_far = baselines.expected_improvement(*posterior.predict(identity[None, ::-1]), incumbent)
    assert ei_bad.max() < 1e-3 < 0.5 < ei_far[0]
    proposal = baselines.propose_by_ei(posterior, bad, values, np.random.default_rng(0))
    x_bad = baselines.before_indicators(bad)
    distance = baselines.kendall_distance(baselines.before_indicators(np.array([proposal])), x_bad)
    assert distance.min() >= 3


def test_fit_improves_the_likelihood_and_its_gradient_is_exact() -> None:
    world = AdditiveWorld(5, 5, noise_sd=0.0)
    rng = np.random.default_rng(3)
    orders = np.array([rng.permutation(5) for _ in range(8)])
    values = world.final_utilities(orders).mean(axis=1)
    x = baselines.before_indicators(orders)
    distance = baselines.kendall_distance(x, x) / x.shape[1]
    y = (values - values.mean()) / values.std()
    theta = np.array([0.3, 1.2, -3.0, 0.1])
    value, gradient = baselines._negative_log_likelihood(theta, distance, y)
    step = 1e-6
    for k in range(4):
        shifted = theta.copy()
        shifted[k] += step
        numeric = (baselines._negative_log_likelihood(shifted, distance, y)[0] - value) / step
        assert gradient[k] == pytest.approx(numeric, rel=1e-3, abs=1e-4)
    hyper = baselines.fit_gp_hyper(orders, values, rng=np.random.default_rng(0))
    fitted = np.array(
        [
            math.log(hyper.s2 / values.var()),
            math.log(hyper.lam),
            math.log(hyper.noise / values.var()),
            (hyper.mean - values.mean()) / values.std(),
        ]
    )
    start = baselines._negative_log_likelihood(baselines._DEFAULT_THETA, distance, y)[0]
    assert baselines._negative_log_likelihood(fitted, distance, y)[0] <= start + 1e-9


def test_gp_starts_random_then_never_repeats_an_order() -> None:
    world = AdditiveWorld(4, 6, noise_sd=0.02)
    trace = baselines.gp_over_orders(world, 6, seed=1)
    assert_trace_shape(trace, 4, 6)
    assert len(set(trace.runs)) == 6
    assert trace.recommended[0] == trace.runs[0]


# --- the naive pairwise estimator ---


def test_naive_estimator_is_exact_on_a_noiseless_additive_world() -> None:
    world = AdditiveWorld(5, 7, noise_sd=0.0)
    estimator = NaivePairwise(5)
    for order in [(2, 0, 4, 1, 3), (3, 1, 4, 0, 2)]:  # every pair seen both ways
        _, evaluations = baselines.run_order(world, order, seed=0)
        estimator.add_run(order, evaluations)
    np.testing.assert_allclose(estimator.gain, world.gain, atol=1e-12)
    weights = world.true_weights()
    np.fill_diagonal(weights, 0.0)
    np.testing.assert_allclose(estimator.weights(), weights, atol=1e-12)
    orders = all_orders(5)
    np.testing.assert_allclose(
        estimator.predict(orders) + world.base, world.final_utilities(orders), atol=1e-12
    )
    truth = exhaustive(world)
    assert true_mean_utility(world, estimator.best_order()) == pytest.approx(truth.best_value)


def test_naive_loop_runs_its_own_recommendation() -> None:
    world = AdditiveWorld(5, 8, noise_sd=0.0)
    trace = baselines.naive_pairwise(world, 6, seed=2)
    assert_trace_shape(trace, 5, 6)
    assert trace.runs[1:] == trace.recommended[:-1]
    estimator = NaivePairwise(5)
    for r, order in enumerate(trace.runs):
        _, evaluations = baselines.run_order(world, order, seed=0)
        estimator.add_run(order, evaluations)
        predicted = estimator.predict(all_orders(5)).mean(axis=1)
        chosen = estimator.predict(np.array([trace.recommended[r]])).mean()
        assert chosen == pytest.approx(predicted.max())


def lop_value(weights: FloatArray, orders: IntArray) -> FloatArray:
    position = np.argsort(orders, axis=1)
    before = position[:, :, None] < position[:, None, :]
    values: FloatArray = np.einsum("pab,ab->p", before, weights)
    return values


@pytest.mark.parametrize("n", [5, 9])
def test_lop_argmax_is_optimal_by_brute_force_and_by_the_solver_above(n: int) -> None:
    rng = np.random.default_rng(4)
    weights = rng.normal(size=(n, n))
    np.fill_diagonal(weights, 0.0)
    best = lop_value(weights, np.array([baselines.lop_argmax(weights)]))[0]
    if n <= baselines.BRUTE_FORCE_MAX_N:
        assert best == pytest.approx(lop_value(weights, all_orders(n)).max())
    else:  # solver.lop's exact DP: no random order or local move does better
        samples = np.array([rng.permutation(n) for _ in range(2000)])
        assert lop_value(weights, samples).max() <= best + 1e-9
        result = baselines.local_search(
            baselines.lop_argmax(weights), lambda o: lop_value(weights, o)
        )
        assert result.value == pytest.approx(best)


# --- the paper's protocol and the fixed heuristics ---


def test_paper_protocol_uses_n_plus_2n_n_minus_1_stages_and_is_exact_without_forward() -> None:
    world = AdditiveWorld(5, 9, noise_sd=0.0, forward=False)
    sorted_order, lop_order, stages = baselines.paper_protocol(world, seed=0)
    assert stages == 5 + 2 * 5 * 4
    assert sorted(sorted_order) == list(range(5))
    truth = exhaustive(world)
    assert true_mean_utility(world, lop_order) == pytest.approx(truth.best_value)
    received = world.backward.sum(axis=0)  # backward change each task receives from the others
    assert list(received[list(sorted_order)]) == sorted(received, reverse=True)


def test_fixed_heuristics_are_exact_expectations() -> None:
    world = AdditiveWorld(5, 10, noise_sd=0.0)
    truth = exhaustive(world)
    structured = {j for j, kind in enumerate(world.kinds) if kind == TaskKind.STRUCTURED}
    qualifying = [
        value
        for order, value in zip(truth.orders, truth.utilities, strict=True)
        if set(order[: len(structured)].tolist()) == structured
    ]
    assert len(qualifying) == math.factorial(2) * math.factorial(3)
    assert baselines.structured_first_value(world, truth) == pytest.approx(np.mean(qualifying))
    assert baselines.random_value(truth) == pytest.approx(truth.utilities.mean())
    assert baselines.joint_value(world) is None
    assert baselines.regret_percent(truth.best_value, truth) == 0.0
    assert baselines.regret_percent(0.5 * truth.best_value, truth) == pytest.approx(50.0)


def test_every_baseline_runs_on_the_skills_family() -> None:
    world = draw_world("skills", 4, 0)
    for method in (baselines.best_of_random, baselines.gp_over_orders, baselines.naive_pairwise):
        assert_trace_shape(method(world, 3, seed=0), 4, 3)
    _, _, stages = baselines.paper_protocol(world, seed=0)
    assert stages == 4 + 2 * 4 * 3
    joint = baselines.joint_value(world)
    assert joint is not None
    assert 0.0 <= joint <= 1.0
