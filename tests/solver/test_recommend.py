"""solver.recommend: the ensemble learns which model to believe, and plans from it.

Two small hand-written worlds generate the runs (numpy only, ``n = 4`` or ``5`` tasks):

- the **additive** world of the run model (pairwise effects): a task not trained yet is at
  ``base_j + sum_{i trained} F[i, j]``; once trained, at
  ``L_j + sum_{i before j} F[i, j] + sum_{i after j} B[i, j]``, so the final objective is a Linear
  Ordering Problem and every intermediate evaluation is consistent with it;
- the **last-task** world, which contradicts the pairwise model: every evaluation is
  ``base_j + G[t, j]`` with ``t`` the task trained at the latest stage (training overwrites a
  shared skill, only the last task counts): strongly order-dependent and not a sum of pairs.

Every run reports a baseline (stage 0) and an evaluation of every task after every stage.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ordo_server.solver.estimation import TaskKind
from ordo_server.solver.learning import (
    RunRecord,
    fit_run_model,
    fit_run_model_posteriors,
    insertion_moves,
)
from ordo_server.solver.recommend import (
    Kernel,
    OrderPosterior,
    RecommendConfig,
    _member_moments,
    explore_order,
    fit_order_posterior,
    improvement_order,
    plan_seed,
    recommend,
    thompson_order,
)
from ordo_server.solver.types import Order

S, OE = TaskKind.STRUCTURED, TaskKind.OPEN_ENDED
World = dict[str, np.ndarray]
Utility = Callable[[World, Order, int], float]


# --- the worlds -----------------------------------------------------------------------------


def _additive_world(n: int, seed: int) -> World:
    """Levels, baselines and pair effects ``F``, ``B`` (n, n, zero diagonal; utility units)."""
    rng = np.random.default_rng(seed)
    forward, backward = rng.normal(0.0, 0.05, (2, n, n))
    np.fill_diagonal(forward, 0.0)
    np.fill_diagonal(backward, 0.0)
    return {
        "base": rng.uniform(0.1, 0.3, n),
        "L": rng.uniform(0.5, 0.8, n),
        "F": forward,
        "B": backward,
    }


def _additive_utility(world: World, trained: Order, task: int) -> float:
    if task not in trained:
        return float(world["base"][task] + sum(world["F"][i, task] for i in trained))
    own = trained.index(task)
    before = sum(world["F"][i, task] for i in trained[:own])
    after = sum(world["B"][i, task] for i in trained[own + 1 :])
    return float(world["L"][task] + before + after)


def _last_task_world(n: int, seed: int) -> World:
    """Baselines and ``G[t, j]``: utility of ``j`` when ``t`` was trained last."""
    rng = np.random.default_rng(seed)
    gain = rng.uniform(-0.15, 0.05, (n, n))
    np.fill_diagonal(gain, rng.uniform(0.3, 0.4, n))
    return {"base": rng.uniform(0.1, 0.3, n), "G": gain}


def _last_task_utility(world: World, trained: Order, task: int) -> float:
    if not trained:
        return float(world["base"][task])
    return float(world["base"][task] + world["G"][trained[-1], task])


def _slot_world(n: int, seed: int) -> World:
    """``P[j, p]``: what task ``j`` is worth when trained at position ``p`` (no pair structure:
    each task has its own slots, not a linear trend in its position)."""
    rng = np.random.default_rng(seed)
    return {"base": rng.uniform(0.1, 0.3, n), "P": rng.uniform(0.3, 0.7, (n, n))}


def _slot_utility(world: World, trained: Order, task: int) -> float:
    if task not in trained:
        return float(world["base"][task])
    return float(world["P"][task, trained.index(task)])


def _run(
    world: World,
    utility: Utility,
    order: Order,
    *,
    noise_sd: float = 0.0,
    rng: np.random.Generator | None = None,
    stages: int | None = None,
) -> RunRecord:
    """A run of ``order`` reporting every task after each of its first ``stages`` stages (all by
    default); a run stopped early has trained only those stages."""
    n = len(order)
    rng = rng or np.random.default_rng(0)
    last = n if stages is None else stages
    utilities = [
        {
            j: utility(world, order[:k], j) + noise_sd * float(rng.standard_normal())
            for j in range(n)
        }
        for k in range(last + 1)
    ]
    return RunRecord(trained=order[:last], utilities=utilities)


def _runs(
    world: World,
    utility: Utility,
    count: int,
    *,
    seed: int,
    noise_sd: float = 0.0,
) -> list[RunRecord]:
    """``count`` completed runs of random orders."""
    rng = np.random.default_rng(seed)
    n = len(world["base"])
    orders = [tuple(int(t) for t in rng.permutation(n)) for _ in range(count)]
    return [_run(world, utility, order, noise_sd=noise_sd, rng=rng) for order in orders]


def _objective(world: World, utility: Utility, order: Order) -> float:
    """True final objective (unit weights) of ``order``."""
    return sum(utility(world, order, j) for j in range(len(order)))


def _reported_final(run: RunRecord) -> float:
    """The run's reported final objective (unit weights)."""
    return sum(run.utilities[-1].values())


def _best_runs(runs: Sequence[RunRecord]) -> set[Order]:
    """The orders of the runs with the highest reported final objective (ties within 1e-12)."""
    best = max(map(_reported_final, runs))
    return {run.trained for run in runs if _reported_final(run) >= best - 1e-12}


def _model_weight(weights: dict[str, float], model: str) -> float:
    return sum(w for name, w in weights.items() if name.startswith(f"{model}@"))


def _fresh(runs: list[RunRecord]) -> list[RunRecord]:
    """Equal but distinct copies of the records."""
    return [RunRecord(tuple(run.trained), [dict(stage) for stage in run.utilities]) for run in runs]


N = 5
KINDS = [S, S, OE, OE, S]
ONES = np.ones(N)
NOISELESS = RecommendConfig(noise_sd=1e-4)


# --- 1. model weights follow the evidence ----------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_pairwise_model_loses_weight_in_a_world_that_contradicts_it(seed: int) -> None:
    world = _last_task_world(N, seed)
    runs = _runs(world, _last_task_utility, 8, seed=100 + seed)
    weight = {
        count: _model_weight(
            fit_order_posterior(runs[:count], kinds=KINDS, weights=ONES).weights, "run"
        )
        for count in (3, 8)
    }
    assert weight[8] < weight[3]
    assert weight[8] < 1.0 / 3.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_pairwise_model_wins_in_the_additive_world(seed: int) -> None:
    world = _additive_world(N, seed)
    runs = _runs(world, _additive_utility, 8, seed=100 + seed)
    weights = fit_order_posterior(runs, kinds=KINDS, weights=ONES).weights
    assert sum(weights.values()) == pytest.approx(1.0)
    assert _model_weight(weights, "run") > _model_weight(weights, "constant")
    assert _model_weight(weights, "run") > 1.0 / 3.0


def _kernel_weight(weights: dict[str, float], kernel: str) -> float:
    positional = {name: w for name, w in weights.items() if name.endswith("/position")}
    if kernel == "position":
        return sum(positional.values())
    return sum(w for name, w in weights.items() if name not in positional)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_residual_kernel_follows_what_the_world_is_made_of(seed: int) -> None:
    """Twenty runs, both kernels offered: the position kernel takes most of the weight where
    each task has its own best slot, the Kendall (precedence) kernel where pairs add up."""
    slots = _runs(_slot_world(N, seed), _slot_utility, 20, seed=200 + seed, noise_sd=0.005)
    pairs = _runs(_additive_world(N, seed), _additive_utility, 20, seed=200 + seed, noise_sd=0.005)
    both = RecommendConfig(residual_kernels=("kendall", "position"))
    on_slots = fit_order_posterior(slots, kinds=KINDS, weights=ONES, config=both).weights
    on_pairs = fit_order_posterior(pairs, kinds=KINDS, weights=ONES, config=both).weights
    assert _kernel_weight(on_slots, "position") > 0.6
    assert _kernel_weight(on_pairs, "kendall") > 0.6


def test_one_kernel_alone_leaves_the_others_out() -> None:
    world = _additive_world(N, 0)
    runs = _runs(world, _additive_utility, 4, seed=3)
    assert RecommendConfig().residual_kernels == ("kendall",)
    kernels: list[tuple[Kernel, str]] = [
        ("kendall", ""),
        ("position", "/position"),
        ("mixed", "/mixed"),
    ]
    for kernel, suffix in kernels:
        config = RecommendConfig(residual_kernels=(kernel,))
        posterior = fit_order_posterior(runs, kinds=KINDS, weights=ONES, config=config)
        assert len(posterior.weights) == 3 * len(config.residual_scales)
        scales = {f"@{scale:g}{suffix}" for scale in config.residual_scales}
        assert {name[name.index("@") :] for name in posterior.weights} == scales
        mean, std = posterior.moments(runs[0].trained)
        assert np.isfinite(mean).all()
        assert (std > 0).all()


# --- 2. never below the best observed order -------------------------------------------------


def test_on_noiseless_data_the_posterior_is_pinned_to_the_observed_orders() -> None:
    world = _additive_world(N, seed=5)
    runs = _runs(world, _additive_utility, 6, seed=7)
    rec = recommend(runs, kinds=KINDS, weights=ONES, config=NOISELESS)
    assert rec.best_observed_mean is not None
    assert rec.mean >= rec.best_observed_mean - 1e-9
    observed = [run.trained for run in runs]
    mean, _ = rec.posterior.moments(observed)
    finals = [sum(run.utilities[-1].values()) for run in runs]
    assert mean == pytest.approx(finals, abs=2e-3)
    assert rec.best_observed_mean == pytest.approx(max(finals), abs=2e-3)


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(4, 5),
    count=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    additive=st.booleans(),
)
def test_the_recommendation_is_never_below_the_best_run(
    n: int, count: int, seed: int, additive: bool
) -> None:
    """The best run's order, or one the posterior puts above it."""
    world = _additive_world(n, seed) if additive else _last_task_world(n, seed)
    utility = _additive_utility if additive else _last_task_utility
    runs = _runs(world, utility, count, seed=seed)
    rec = recommend(runs, kinds=[S] * n, weights=np.ones(n), config=NOISELESS)
    # Any of the best runs on a tie: noiseless, two orders can end with the same utilities.
    assert rec.best_observed in _best_runs(runs)
    if rec.order != rec.best_observed:
        assert not rec.observed
        (best_run_mean,), _ = rec.posterior.moments([rec.best_observed])
        assert rec.mean > best_run_mean
    assert sorted(rec.order) == list(range(n))


def test_the_incumbent_is_the_best_reported_run_not_the_highest_posterior_mean() -> None:
    """Noisy finals: the posterior ranks two observed orders against their reports; the
    recommendation holds on to the best reported run unless the other clearly beats it."""
    world = _additive_world(N, seed=0)
    runs = _runs(world, _additive_utility, 6, seed=1, noise_sd=0.03)
    best_run = max(runs, key=_reported_final).trained
    reported = recommend(runs, kinds=KINDS, weights=ONES)
    by_posterior = recommend(
        runs, kinds=KINDS, weights=ONES, config=RecommendConfig(incumbent="posterior")
    )
    observed = [run.trained for run in runs]
    means, _ = reported.posterior.moments(observed)
    assert observed[int(np.argmax(means))] != best_run  # the case this rule is about
    assert reported.best_observed == best_run
    assert by_posterior.best_observed == observed[int(np.argmax(means))]
    # Here neither is beaten: each rule recommends its own incumbent.
    assert reported.order == best_run
    assert by_posterior.order == observed[int(np.argmax(means))]


def test_runs_reported_alike_are_told_apart_by_the_posterior_whatever_the_candidates_order() -> (
    None
):
    """Two runs report the same final objective (a tie, as with rounded reports): the incumbent
    is the one the posterior puts higher, not whichever the candidates list first (the service
    lists the constrained solver's order first, a caller may list others)."""
    world = _additive_world(N, seed=0)
    runs = _runs(world, _additive_utility, 5, seed=1, noise_sd=0.03)
    ranked = sorted(range(len(runs)), key=lambda i: _reported_final(runs[i]), reverse=True)
    best, second = runs[ranked[0]], runs[ranked[1]]
    runs[ranked[1]] = RunRecord(
        trained=second.trained, utilities=[*second.utilities[:-1], dict(best.utilities[-1])]
    )
    tied = [best.trained, second.trained]
    chosen = []
    for starts in (tied, tied[::-1]):
        rec = recommend(runs, kinds=KINDS, weights=ONES, starts=starts)
        means, _ = rec.posterior.moments(tied)
        assert rec.best_observed == tied[int(np.argmax(means))]
        chosen.append(rec.order)
    assert chosen[0] == chosen[1]


# --- 3. plans are reproducible ----------------------------------------------------------------


def test_plans_are_identical_for_identical_inputs() -> None:
    world = _additive_world(N, seed=2)
    runs = _runs(world, _additive_utility, 4, seed=3, noise_sd=0.01)
    first = recommend(runs, kinds=KINDS, weights=ONES)
    second = recommend(_fresh(runs), kinds=list(KINDS), weights=ONES.copy())
    assert (first.order, first.mean, first.std) == (second.order, second.mean, second.std)
    assert first.posterior.weights == second.posterior.weights
    for seed in (0, 17):
        a = thompson_order(runs, kinds=KINDS, weights=ONES, seed=seed)
        b = thompson_order(_fresh(runs), kinds=list(KINDS), weights=ONES.copy(), seed=seed)
        assert a == b


def test_one_fit_conditioned_on_each_run_plans_as_a_fit_for_that_run_alone() -> None:
    world = _additive_world(N, seed=8)
    runs = _runs(world, _additive_utility, 4, seed=5, noise_sd=0.01)
    partial = [
        _run(world, _additive_utility, order, stages=stages)
        for order, stages in (((4, 2, 0, 1, 3), 1), ((1, 3, 2, 0, 4), 2), ((0, 4, 3, 2, 1), 3))
    ]
    data = [*runs, *partial]
    shared = fit_order_posterior(data, kinds=KINDS, weights=ONES)
    orders = np.array(list(itertools.permutations(range(N))), dtype=np.int64)
    # Last to first: conditioning on one run leaves the shared fit as it was for the next.
    for current in reversed(partial):
        alone = fit_order_posterior(_fresh(data), kinds=list(KINDS), weights=ONES, current=current)
        given = shared.given(current)
        assert given.prefix == alone.prefix == current.trained
        # The best observed mean is computed once for the fit and every run conditioned on it.
        assert given.shared is shared.shared
        assert given.best_observed_mean() == alone.best_observed_mean() > -np.inf
        for conditioned in (True, False):
            expected = alone.moments(orders, conditioned=conditioned)
            actual = given.moments(orders, conditioned=conditioned)
            assert all(np.array_equal(a, b) for a, b in zip(actual, expected, strict=True))
        for seed in (0, 9):
            assert explore_order(
                data, kinds=KINDS, weights=ONES, seed=seed, current=current, posterior=given
            ) == explore_order(data, kinds=KINDS, weights=ONES, seed=seed, current=current)
    assert shared.prefix == ()


def test_the_first_plans_of_one_fit_share_their_climbs_and_plan_as_fits_of_their_own() -> None:
    # First plans (no prefix) of a batch: the same posterior, different seeds. Scoring every
    # completion is off, so each plan climbs from the shared starts and its random one.
    world = _additive_world(N, seed=11)
    runs = _runs(world, _additive_utility, 4, seed=12, noise_sd=0.01)
    searching = RecommendConfig(exhaustive_completions=0)
    fit = fit_order_posterior(runs, kinds=KINDS, weights=ONES, config=searching)
    planned = []
    for seed in range(6):
        given = fit.given(None)
        order = explore_order(
            runs, kinds=KINDS, weights=ONES, seed=seed, posterior=given, config=searching
        )
        alone = explore_order(
            _fresh(runs), kinds=list(KINDS), weights=ONES, seed=seed, config=searching
        )
        assert order == alone
        planned.append(len(fit.shared.climbs))
    # The shared starts were climbed by the first plan; later ones add their random start.
    assert planned[0] >= 2
    assert all(b - a <= 1 for a, b in itertools.pairwise(planned))
    assert len(fit.shared.lop_starts) == 1
    # With a prefix, or with constraints, nothing is shared.
    current = _run(world, _additive_utility, (3, 1, 0, 2, 4), stages=1)
    before = dict(fit.shared.climbs)
    explore_order(
        runs, kinds=KINDS, weights=ONES, seed=0, posterior=fit.given(current), config=searching
    )
    explore_order(
        runs,
        kinds=KINDS,
        weights=ONES,
        seed=0,
        posterior=fit.given(None),
        config=searching,
        is_feasible=lambda order: order[0] != 4,
    )
    assert fit.shared.climbs == before


def _conditioned_fit(
    seed: int, partial: Order
) -> tuple[list[RunRecord], RunRecord, OrderPosterior]:
    """Four additive runs and one two stages into ``partial``: the data, that run, and the
    data's fit conditioned on it."""
    world = _additive_world(N, seed=seed)
    runs = _runs(world, _additive_utility, 4, seed=seed + 1, noise_sd=0.01)
    current = _run(world, _additive_utility, partial, stages=2)
    data = [*runs, current]
    return data, current, fit_order_posterior(data, kinds=KINDS, weights=ONES).given(current)


def test_a_posterior_asked_in_any_order_answers_as_a_fresh_one() -> None:
    # Predictors keep their last rollout for the next question about the same orders.
    data, current, asked = _conditioned_fit(3, (2, 0, 4, 1, 3))
    a = np.array([(2, 0, 1, 3, 4)], dtype=np.int64)
    b = np.array([(2, 0, 4, 3, 1), (2, 0, 3, 1, 4)], dtype=np.int64)
    questions = [
        ("moments", a, True),
        ("utility_moments", a, True),
        ("moments", a, False),
        ("utility_moments", b, True),
        ("moments", b, True),
        ("moments", a, True),
        ("utility_moments", np.vstack([a, b]), True),  # the same first order, and more
        ("moments", b, True),
        ("utility_moments", b[1:], True),  # one of the orders just rolled out, alone
    ]
    for name, orders, conditioned in questions:
        fresh = fit_order_posterior(_fresh(data), kinds=list(KINDS), weights=ONES).given(current)
        if name == "moments":
            expected = fresh.moments(orders, conditioned=conditioned)
            actual = asked.moments(orders, conditioned=conditioned)
        else:
            expected, actual = fresh.utility_moments(orders), asked.utility_moments(orders)
        assert all(np.array_equal(x, y) for x, y in zip(actual, expected, strict=True)), name


def test_an_order_scored_with_others_is_predicted_alone_as_their_row() -> None:
    # A plan's prediction asks again for the order its search chose among the scored ones.
    data, current, asked = _conditioned_fit(5, (1, 3, 0, 2, 4))
    scored = np.array([(1, 3, *rest) for rest in itertools.permutations((0, 2, 4))])
    batch = asked.moments(scored)
    fresh = fit_order_posterior(_fresh(data), kinds=list(KINDS), weights=ONES).given(current)
    for row in (4, 0):
        alone = asked.moments(scored[row : row + 1])
        assert all(np.array_equal(x, y[row : row + 1]) for x, y in zip(alone, batch, strict=True))
        own = fresh.moments(scored[row : row + 1])
        assert all(np.allclose(x, y, rtol=1e-12, atol=0) for x, y in zip(alone, own, strict=True))
    # Other questions are their own computations: several orders, or from the start.
    other = scored[[1, 3]]
    assert all(
        np.array_equal(x, y)
        for x, y in zip(asked.moments(other), fresh.moments(other), strict=True)
    )
    start = scored[2:3]
    unconditioned = asked.moments(start, conditioned=False)
    assert all(
        np.array_equal(x, y)
        for x, y in zip(unconditioned, fresh.moments(start, conditioned=False), strict=True)
    )


def test_the_members_of_one_residual_process_share_its_variance_to_the_bit() -> None:
    # Models paired with the same kernel and scale compute its cross covariance once.
    world = _additive_world(N, seed=7)
    runs = _runs(world, _additive_utility, 5, seed=8, noise_sd=0.01)
    posterior = fit_order_posterior(runs, kinds=KINDS, weights=ONES)
    orders = np.array(list(itertools.permutations(range(N)))[::7])
    members = [member for member, _ in posterior._active()]
    assert len({id(member.residual.factor) for member in members}) < len(members)
    together = posterior.member_moments(orders)
    for member, (_, mean, var) in zip(members, together, strict=True):
        own_mean, own_var = _member_moments(member, orders)
        assert np.array_equal(mean, own_mean), member.name
        assert np.array_equal(var, own_var), member.name


def test_the_run_models_summary_at_its_mean_is_made_once_and_read_only() -> None:
    world = _additive_world(N, seed=9)
    runs = _runs(world, _additive_utility, 4, seed=10, noise_sd=0.01)
    fitted = fit_run_model_posteriors(runs, kinds=KINDS)[0]
    summary = fitted.summary()
    assert fitted.summary() is summary
    assert fitted.summary(fitted.mean) is summary
    with pytest.raises(ValueError, match="read-only"):
        summary.carry_mean[0, 1] = 1.0
    made = fitted.summary_of(fitted.mean)
    assert made is not summary
    assert np.array_equal(made.carry_var, summary.carry_var)
    shifted = fitted.summary(fitted.mean + 0.01)
    assert not np.array_equal(shifted.level_mean, summary.level_mean)
    assert fit_run_model(runs, kinds=KINDS).carry_mean.flags.writeable


def test_thompson_explores_while_the_posterior_is_uncertain() -> None:
    world = _additive_world(N, seed=4)
    runs = _runs(world, _additive_utility, 2, seed=9, noise_sd=0.01)
    posterior = fit_order_posterior(runs, kinds=KINDS, weights=ONES)
    orders = {
        thompson_order(runs, kinds=KINDS, weights=ONES, seed=seed, posterior=posterior)
        for seed in range(8)
    }
    assert len(orders) >= 2
    assert all(sorted(order) == list(range(N)) for order in orders)


def test_plan_seed_is_a_stable_derivation() -> None:
    # Hard-coded: a change of the derivation changes every project's plans.
    assert plan_seed("p", "run-1") == 734243881
    assert plan_seed("p", 1) == 2078568405
    assert plan_seed("p", "run-2") != plan_seed("p", "run-1")
    assert plan_seed("q", "run-1") != plan_seed("p", "run-1")
    assert 0 <= plan_seed("anything", 12345) < 2**31 - 1


# --- 4. prefixes and constraints -------------------------------------------------------------


def test_a_partial_run_keeps_its_trained_prefix() -> None:
    world = _additive_world(N, seed=6)
    runs = _runs(world, _additive_utility, 5, seed=11, noise_sd=0.01)
    current = _run(world, _additive_utility, (3, 1, 0, 2, 4), stages=2)
    data = [*runs, current]
    rec = recommend(data, kinds=KINDS, weights=ONES, current=current)
    assert rec.order[:2] == (3, 1)
    assert rec.posterior.prefix == (3, 1)
    for seed in range(4):
        order = thompson_order(data, kinds=KINDS, weights=ONES, seed=seed, current=current)
        assert order[:2] == (3, 1)
        assert sorted(order) == list(range(N))


def _forbid(order: Order) -> tuple[int, int]:
    """A pair ``(a, b)`` with ``a`` before ``b`` in ``order`` (the first two tasks)."""
    return order[0], order[1]


def test_constraints_hold_for_recommendations_and_draws() -> None:
    world = _additive_world(N, seed=8)
    runs = _runs(world, _additive_utility, 5, seed=13, noise_sd=0.01)
    free = recommend(runs, kinds=KINDS, weights=ONES)
    a, b = _forbid(free.order)

    def feasible(order: Order) -> bool:
        return order.index(a) > order.index(b)  # a may not come before b

    assert not feasible(free.order)
    rec = recommend(runs, kinds=KINDS, weights=ONES, is_feasible=feasible)
    assert feasible(rec.order)
    assert rec.mean <= free.mean + 1e-9
    for seed in range(6):
        assert feasible(
            thompson_order(runs, kinds=KINDS, weights=ONES, seed=seed, is_feasible=feasible)
        )
    # Prefix and constraint together.
    current = _run(
        world, _additive_utility, (b, a, *[t for t in range(N) if t not in (a, b)]), stages=1
    )
    both = recommend(
        [*runs, current], kinds=KINDS, weights=ONES, current=current, is_feasible=feasible
    )
    assert both.order[0] == b
    assert feasible(both.order)


# --- 6. interval coverage --------------------------------------------------------------------


def test_the_90_percent_interval_covers_the_truth_mostly() -> None:
    hits = []
    for seed in range(30):
        world = _additive_world(4, seed)
        runs = _runs(world, _additive_utility, 5, seed=1000 + seed, noise_sd=0.01)
        rec = recommend(runs, kinds=[S, S, OE, OE], weights=np.ones(4))
        low, high = rec.interval
        hits.append(low <= _objective(world, _additive_utility, rec.order) <= high)
    assert np.mean(hits) >= 0.7


# --- 7. input validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "weights",
    [np.ones(N - 1), np.ones((N, 1)), np.array([1.0, -0.1, 1.0, 1.0, 1.0]), np.full(N, np.nan)],
)
def test_invalid_weights_are_rejected(weights: np.ndarray) -> None:
    runs = _runs(_additive_world(N, seed=0), _additive_utility, 2, seed=0)
    with pytest.raises(ValueError, match="weights"):
        fit_order_posterior(runs, kinds=KINDS, weights=weights)
    with pytest.raises(ValueError, match="weights"):
        recommend(runs, kinds=KINDS, weights=weights)
    with pytest.raises(ValueError, match="weights"):
        thompson_order(runs, kinds=KINDS, weights=weights, seed=0)


def test_exhaustive_check_of_small_recommendation() -> None:
    """n = 4, noiseless, every order observed: the recommendation is the true best order."""
    world = _additive_world(4, seed=21)
    orders = list(itertools.permutations(range(4)))
    runs = [_run(world, _additive_utility, order) for order in orders]
    rec = recommend(runs, kinds=[S] * 4, weights=np.ones(4), config=NOISELESS)
    best = max(_objective(world, _additive_utility, order) for order in orders)
    assert _objective(world, _additive_utility, rec.order) == pytest.approx(best, abs=1e-6)


# --- 6. bounded search -------------------------------------------------------------------------


def test_a_window_bounds_how_far_an_insertion_moves_a_task() -> None:
    order = tuple(range(12))
    full, windowed = insertion_moves(order, 2), insertion_moves(order, 2, window=3)
    assert len(full) == 10 * 9
    assert 0 < len(windowed) < len(full)
    assert {tuple(m) for m in windowed} <= {tuple(m) for m in full}
    for move in windowed:
        assert tuple(move[:2]) == (0, 1)
        assert max(abs(int(np.flatnonzero(move == t)[0]) - t) for t in order) <= 3


def test_a_large_project_is_planned_on_the_windowed_search() -> None:
    """n = 30 (870 full moves > max_moves): the recommendation is a permutation at least as
    good as every observed order under its own posterior, and the plan is reproducible."""
    n = 30
    world = _additive_world(n, seed=5)
    runs = _runs(world, _additive_utility, 3, seed=6, noise_sd=0.005)
    kinds = [S if t % 2 else OE for t in range(n)]
    first = recommend(runs, kinds=kinds, weights=np.ones(n))
    again = recommend(_fresh(runs), kinds=kinds, weights=np.ones(n))
    assert sorted(first.order) == list(range(n))
    assert first.order == again.order
    assert first.best_observed_mean is not None
    assert first.mean >= first.best_observed_mean - 1e-9


# --- 7. trust: the recommendation leaves the observed orders only on held-out evidence ----------


def _noise_runs(n: int, count: int, seed: int) -> list[RunRecord]:
    """Runs whose evaluations are noise around fixed levels: the order does nothing."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(count):
        order = tuple(int(t) for t in rng.permutation(n))
        utilities = [
            {j: float(0.5 + rng.normal(0.0, 0.03)) for j in range(n)} for _ in range(n + 1)
        ]
        runs.append(RunRecord(order, utilities))
    return runs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_where_the_order_does_nothing_trust_is_low_and_an_observed_order_is_recommended(
    seed: int,
) -> None:
    runs = _noise_runs(N, 8, seed)
    rec = recommend(runs, kinds=KINDS, weights=ONES)
    assert rec.posterior.trust < 0.5
    assert rec.observed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_where_the_models_rank_held_out_runs_right_trust_is_high(seed: int) -> None:
    world = _additive_world(N, seed)
    runs = _runs(world, _additive_utility, 8, seed=300 + seed, noise_sd=0.002)
    posterior = fit_order_posterior(runs, kinds=KINDS, weights=ONES)
    assert posterior.trust > 0.8


def test_without_trust_prior_or_held_out_runs_trust_is_one() -> None:
    runs = _noise_runs(N, 8, 3)
    off = fit_order_posterior(
        runs, kinds=KINDS, weights=ONES, config=RecommendConfig(trust_prior=None)
    )
    assert off.trust == 1.0
    one = fit_order_posterior(runs[:1], kinds=KINDS, weights=ONES)
    assert one.trust == 1.0  # no held-out run: nothing to judge the models by


# --- 8. exploration by expected improvement ---------------------------------------------------


def test_explore_is_a_thompson_draw_until_a_run_has_completed() -> None:
    world = _additive_world(N, seed=3)
    running = _run(world, _additive_utility, (2, 0, 1, 3, 4), stages=2)
    for seed in (0, 5):
        assert explore_order(
            [running], kinds=KINDS, weights=ONES, seed=seed, current=running
        ) == thompson_order([running], kinds=KINDS, weights=ONES, seed=seed, current=running)


def test_explore_plans_are_identical_for_identical_inputs_and_keep_prefix_and_constraints() -> None:
    world = _additive_world(N, seed=9)
    runs = _runs(world, _additive_utility, 4, seed=21, noise_sd=0.01)
    first = explore_order(runs, kinds=KINDS, weights=ONES, seed=3)
    assert first == explore_order(_fresh(runs), kinds=list(KINDS), weights=ONES.copy(), seed=3)
    assert first == improvement_order(runs, kinds=KINDS, weights=ONES, seed=3)
    current = _run(world, _additive_utility, (4, 2, 0, 1, 3), stages=2)
    replan = explore_order([*runs, current], kinds=KINDS, weights=ONES, seed=3, current=current)
    assert replan[:2] == (4, 2)
    assert sorted(replan) == list(range(N))
    a, b = first[0], first[1]

    def feasible(order: Order) -> bool:
        return order.index(a) > order.index(b)

    assert feasible(explore_order(runs, kinds=KINDS, weights=ONES, seed=3, is_feasible=feasible))


def _every_completion(prefix: Order, feasible: Callable[[Order], bool]) -> np.ndarray:
    rest = [t for t in range(N) if t not in prefix]
    orders = [(*prefix, *tail) for tail in itertools.permutations(rest)]
    return np.array([order for order in orders if feasible(order)], dtype=np.int64)


@pytest.mark.parametrize(("stages", "constrained"), [(0, False), (1, False), (1, True), (2, True)])
def test_exploration_takes_the_best_completion_when_every_one_is_scored(
    stages: int, constrained: bool
) -> None:
    # A world and runs where the local search from a few starts stops short of the best
    # completion (5! = 120 from the start, 4! = 24 after one stage: both scored in full).
    world = _last_task_world(N, seed=28)
    runs = _runs(world, _last_task_utility, 4, seed=128, noise_sd=0.01)
    current = _run(world, _last_task_utility, (3, 1, 4, 0, 2), stages=stages)
    history = [*runs, current]

    def feasible(order: Order) -> bool:
        return not constrained or order.index(0) > order.index(2)

    posterior = fit_order_posterior(history, kinds=KINDS, weights=ONES, current=current)
    incumbent = float(np.max(posterior.moments(posterior.observed, conditioned=False)[0]))
    every = _every_completion(current.trained, feasible)
    best = float(posterior.expected_improvement(every, incumbent).max())

    def improvement(limit: int) -> float:
        order = explore_order(
            history,
            kinds=KINDS,
            weights=ONES,
            seed=7,
            current=current,
            is_feasible=feasible if constrained else None,
            # A feasible start where there are constraints, as the constrained solver's order is.
            starts=[tuple(int(t) for t in every[-1])] if constrained else (),
            config=RecommendConfig(exhaustive_completions=limit),
            posterior=posterior,
        )
        assert order[:stages] == current.trained
        assert feasible(order)
        return float(posterior.expected_improvement(np.array([order]), incumbent)[0])

    assert improvement(120) == pytest.approx(best, rel=1e-12)
    # The local search (limit 0) keeps the prefix and the constraint too (checked inside);
    # without the constraint it stops short here, which is why this world was chosen.
    local = improvement(0)
    if not constrained:
        assert local < best - 1e-9


def test_exploration_makes_its_starts_only_when_it_searches() -> None:
    # Starts given as a function (the service's: a solve of the pairwise estimates) are made
    # only where a search needs them: not where every completion is scored, and once where
    # none is feasible or there are too many.
    world = _last_task_world(N, seed=4)
    runs = _runs(world, _last_task_utility, 4, seed=41, noise_sd=0.01)
    current = _run(world, _last_task_utility, (3, 1, 4, 0, 2), stages=2)
    history = [*runs, current]
    calls: list[int] = []

    def starts() -> list[Order]:
        calls.append(1)
        return [(3, 1, 2, 0, 4)]

    def explore(config: RecommendConfig, feasible: Callable[[Order], bool] | None) -> Order:
        kept = explore_order(
            history, kinds=KINDS, weights=ONES, seed=7, current=current, is_feasible=feasible,
            starts=starts, config=config,
        )  # fmt: skip
        eager = explore_order(
            history, kinds=KINDS, weights=ONES, seed=7, current=current, is_feasible=feasible,
            starts=starts(), config=config,
        )  # fmt: skip
        calls.pop()  # the eager call's own
        assert kept == eager  # a function of the starts plans as the starts themselves
        return kept

    explore(RecommendConfig(), None)
    assert calls == []
    explore(RecommendConfig(), lambda order: order[-1] == 9)  # no completion is feasible
    assert calls == [1]
    explore(RecommendConfig(exhaustive_completions=0), None)
    assert calls == [1, 1]


def test_without_a_feasible_start_the_search_still_answers_a_feasible_order() -> None:
    # No start given and none of the posterior's own (observed orders, the pairwise optimum)
    # feasible: the search starts from an infeasible order, which must not be the answer.
    world = _last_task_world(N, seed=4)
    runs = _runs(world, _last_task_utility, 4, seed=41, noise_sd=0.01)
    current = _run(world, _last_task_utility, (3, 1, 4, 0, 2), stages=2)
    history = [*runs, current]
    local = RecommendConfig(exhaustive_completions=0)

    def feasible(order: Order) -> bool:
        return order.index(0) > order.index(2)

    explored = explore_order(
        history, kinds=KINDS, weights=ONES, seed=7, current=current, is_feasible=feasible,
        config=local,
    )  # fmt: skip
    drawn = thompson_order(
        history, kinds=KINDS, weights=ONES, seed=7, current=current, is_feasible=feasible,
        config=local,
    )  # fmt: skip
    recommended = recommend(
        history, kinds=KINDS, weights=ONES, current=current, is_feasible=feasible, config=local
    ).order
    for order in (explored, drawn, recommended):
        assert order[:2] == (3, 1)
        assert feasible(order)


def test_the_mixture_improvement_is_exact() -> None:
    # The improvement of the mixture is the weighted sum of its Gaussian members' ones: check
    # it against sampling the mixture.
    world = _last_task_world(N, seed=1)
    runs = _runs(world, _last_task_utility, 5, seed=31, noise_sd=0.01)
    posterior = fit_order_posterior(runs, kinds=KINDS, weights=ONES)
    orders = np.array([(0, 1, 2, 3, 4), (4, 3, 2, 1, 0), runs[0].trained], dtype=np.int64)
    incumbent = float(posterior.finals.max())
    exact = posterior.expected_improvement(orders, incumbent)
    rng = np.random.default_rng(0)
    members = posterior.member_moments(orders)
    weights = np.array([w for w, _, _ in members])
    pick = rng.choice(len(members), size=200_000, p=weights / weights.sum())
    means = np.array([m for _, m, _ in members])[pick]  # (S, P)
    stds = np.sqrt(np.array([v for _, _, v in members]))[pick]
    samples = means + stds * rng.standard_normal(means.shape)
    sampled = np.maximum(samples - incumbent, 0.0).mean(axis=0)
    assert np.all(exact >= 0.0)
    assert exact == pytest.approx(sampled, abs=3e-3 * max(1.0, float(exact.max())))


def test_on_noiseless_data_an_observed_order_offers_no_improvement_over_the_best() -> None:
    world = _additive_world(N, seed=5)
    runs = _runs(world, _additive_utility, 6, seed=7)
    posterior = fit_order_posterior(runs, kinds=KINDS, weights=ONES, config=NOISELESS)
    observed = [run.trained for run in runs]
    incumbent = float(posterior.moments(observed)[0].max())
    improvement = posterior.expected_improvement(observed, incumbent)
    assert np.all(improvement <= 5e-3)
    order = explore_order(runs, kinds=KINDS, weights=ONES, seed=0, config=NOISELESS)
    chosen = posterior.expected_improvement([order], incumbent)[0]
    assert chosen >= float(improvement.max()) - 1e-12


# --- 9. the best observed order is the default recommendation -------------------------------


def test_an_unobserved_order_is_recommended_only_when_it_likely_beats_the_best_observed() -> None:
    world = _last_task_world(N, seed=2)
    runs = _runs(world, _last_task_utility, 4, seed=41, noise_sd=0.01)
    observed = {run.trained for run in runs}
    never = recommend(runs, kinds=KINDS, weights=ONES, config=RecommendConfig(beat_probability=1.0))
    assert never.order in observed
    assert never.order == never.best_observed
    default = recommend(runs, kinds=KINDS, weights=ONES)
    free = recommend(runs, kinds=KINDS, weights=ONES, config=RecommendConfig(beat_probability=None))
    assert free.mean >= default.mean - 1e-12
    assert default.mean >= never.mean - 1e-12


@settings(max_examples=10, deadline=None)
@given(n=st.integers(4, 5), count=st.integers(2, 6), seed=st.integers(0, 2**32 - 1))
def test_on_noiseless_data_the_recommendation_is_the_best_observed_or_predicted_above_it(
    n: int, count: int, seed: int
) -> None:
    world = _additive_world(n, seed)
    runs = _runs(world, _additive_utility, count, seed=seed)
    rec = recommend(runs, kinds=[S] * n, weights=np.ones(n), config=NOISELESS)
    best = max(_objective(world, _additive_utility, run.trained) for run in runs)
    if rec.observed:
        assert _objective(world, _additive_utility, rec.order) == pytest.approx(best)
    else:
        assert rec.mean >= best - 2e-3


def test_a_held_out_residual_inverse_is_downdated_from_the_full_one() -> None:
    from ordo_server.solver.recommend import _inverse_without

    rng = np.random.default_rng(3)
    points = rng.standard_normal((9, 4))
    # A kernel matrix plus noise, as the residual's: symmetric positive definite.
    gram = np.exp(-0.5 * ((points[:, None] - points[None]) ** 2).sum(axis=2)) + 0.01 * np.eye(9)
    inverse = np.linalg.inv(gram)
    for i in (0, 4, 8):
        kept = np.arange(9) != i
        fresh = np.linalg.inv(gram[np.ix_(kept, kept)])
        assert _inverse_without(inverse, i) == pytest.approx(fresh, rel=1e-9, abs=1e-9)
