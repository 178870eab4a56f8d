"""solver.transition: the stage-transition model recovers a known world and rolls it forward.

The **additive-increment** world (numpy only, ``n = 5``): every task starts at ``base_j``; a stage
that trains ``t`` changes task ``j``'s utility by ``c[t, j]`` while ``j`` has not been trained at
an earlier stage, and by ``d[t, j]`` once it has. In the model's terms the intercept is
``c[t, j]``, the trained flag's coefficient ``d[t, j] - c[t, j]``, the saturation slope 0.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ordo_server.solver.estimation import TaskKind
from ordo_server.solver.learning import RunRecord
from ordo_server.solver.recommend import RecommendConfig, recommend
from ordo_server.solver.transition import (
    StageTable,
    TransitionConfig,
    TransitionState,
    baseline_noise,
    fit_transition_model,
    rollout,
    sample_transition_params,
)
from ordo_server.solver.types import Order

S, OE = TaskKind.STRUCTURED, TaskKind.OPEN_ENDED
N = 5
KINDS = [S, S, OE, OE, S]
World = dict[str, np.ndarray]


def _world(n: int, seed: int) -> World:
    """Baselines (n,) and increments ``c``, ``d`` (n, n) in utility units."""
    rng = np.random.default_rng(seed)
    return {
        "base": rng.uniform(0.2, 0.3, n),
        "c": rng.uniform(-0.03, 0.08, (n, n)),
        "d": rng.uniform(-0.06, 0.02, (n, n)),
    }


def _trajectory(world: World, order: Order) -> list[np.ndarray]:
    """Utilities of every task before training and after each stage, ``n + 1`` arrays (n,)."""
    utilities = world["base"].copy()
    trained = np.zeros(len(order), dtype=bool)
    out = [utilities.copy()]
    for t in order:
        utilities = utilities + np.where(trained, world["d"][t], world["c"][t])
        trained[t] = True
        out.append(utilities.copy())
    return out


def _run(
    world: World, order: Order, *, rng: np.random.Generator, noise_sd: float = 0.0
) -> RunRecord:
    stages = _trajectory(world, order)
    utilities = [
        {j: float(u[j] + noise_sd * rng.standard_normal()) for j in range(len(order))}
        for u in stages
    ]
    return RunRecord(trained=order, utilities=utilities)


UNSEEN: Order = (4, 2, 0, 3, 1)


def _training_runs(world: World, count: int, seed: int) -> list[RunRecord]:
    """``count`` noiseless runs of random orders other than ``UNSEEN``."""
    rng = np.random.default_rng(seed)
    orders: list[Order] = []
    while len(orders) < count:
        order = tuple(int(t) for t in rng.permutation(N))
        if order != UNSEEN:
            orders.append(order)
    return [_run(world, order, rng=rng) for order in orders]


TIGHT = TransitionConfig(noise_sd=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_fit_recovers_the_increments_of_an_additive_world(seed: int) -> None:
    world = _world(N, seed)
    runs = _training_runs(world, 40, seed=10 + seed)
    model = fit_transition_model(runs, kinds=KINDS, config=TIGHT)
    assert model.observations == 40 * N * N
    assert model.baseline_mean == pytest.approx(world["base"], abs=1e-4)
    assert model.mean[..., 0] == pytest.approx(world["c"], abs=5e-3)
    off = ~np.eye(N, dtype=bool)  # j == t: j is never trained before its own stage
    flag = (world["d"] - world["c"])[off]
    assert model.mean[..., 3][off] == pytest.approx(flag, abs=5e-3)
    assert model.mean[..., 1] == pytest.approx(np.zeros((N, N)), abs=0.02)


def test_the_mean_rollout_predicts_an_unseen_order() -> None:
    world = _world(N, seed=4)
    runs = _training_runs(world, 40, seed=5)
    model = fit_transition_model(runs, kinds=KINDS, config=TIGHT)
    predicted = rollout(model, model.mean, [UNSEEN])
    assert predicted.shape == (1, 1, N)
    assert predicted[0, 0] == pytest.approx(_trajectory(world, UNSEEN)[-1], abs=2e-3)


def test_a_rollout_from_a_reached_state_continues_it() -> None:
    world = _world(N, seed=6)
    runs = _training_runs(world, 40, seed=7)
    model = fit_transition_model(runs, kinds=KINDS, config=TIGHT)
    after_two = _trajectory(world, UNSEEN)[2]
    trained = np.zeros(N, dtype=bool)
    trained[list(UNSEEN[:2])] = True
    start = TransitionState(after_two, model.entropy0, trained)
    predicted = rollout(model, model.mean, [UNSEEN], start=start, skip=2)
    assert predicted[0, 0] == pytest.approx(_trajectory(world, UNSEEN)[-1], abs=2e-3)


def test_baseline_noise_estimates_the_spread_of_repeated_baselines() -> None:
    rng = np.random.default_rng(0)
    truth = np.array([0.2, 0.4, 0.5, 0.6])
    runs = [
        RunRecord((), [{j: float(truth[j] + 0.03 * rng.standard_normal()) for j in range(4)}])
        for _ in range(200)
    ]
    noise = baseline_noise(runs, 4, prior_sd=0.02)
    assert noise.shape == (4,)
    assert noise == pytest.approx(np.full(4, 0.03), rel=0.15)
    # Without baselines the prior stands; a task never reported keeps it too.
    assert baseline_noise([], 3, prior_sd=0.02) == pytest.approx(np.full(3, 0.02))
    assert baseline_noise(runs, 5, prior_sd=0.02)[4] == pytest.approx(0.02)


def test_rollouts_stay_within_the_reported_range() -> None:
    world = _world(N, seed=8)
    rng = np.random.default_rng(3)
    runs = [_run(world, (0, 1, 2, 3, 4), rng=rng, noise_sd=0.02)]
    model = fit_transition_model(runs, kinds=KINDS)
    low, high = model.bounds
    reported = [v for run in runs for stage in run.utilities for v in stage.values()]
    assert low < min(reported) <= max(reported) < high
    orders = np.array(list(itertools.permutations(range(N))))
    params = sample_transition_params(model, 32, np.random.default_rng(0))
    # One run leaves the draws wide: unbounded, their rollouts leave the range (about -0.05..0.58
    # here, the reports 0.20..0.42).
    finals = rollout(model, params, orders)
    assert finals.shape == (32, len(orders), N)
    assert np.all((finals >= low) & (finals <= high))


def test_an_empty_fit_is_the_prior() -> None:
    model = fit_transition_model([], kinds=[S, OE])
    assert model.observations == 0
    assert model.baseline_mean == pytest.approx([0.5, 0.5])
    assert model.bounds == (-np.inf, np.inf)
    assert not np.any(model.mean)


def test_the_ensemble_recommends_the_best_order_of_an_increment_world() -> None:
    """Noiseless and fully explored (n = 4): the recommendation is the true best order."""
    world = _world(4, seed=9)
    orders = list(itertools.permutations(range(4)))
    rng = np.random.default_rng(0)
    runs = [_run(world, order, rng=rng) for order in orders]
    rec = recommend(runs, kinds=[S] * 4, weights=np.ones(4), config=RecommendConfig(noise_sd=1e-4))
    finals = {order: float(_trajectory(world, order)[-1].sum()) for order in orders}
    assert finals[rec.order] == pytest.approx(max(finals.values()), abs=1e-6)


def _partial_runs_with_entropy(count: int, seed: int) -> list[RunRecord]:
    """Noisy runs of random orders, some stopped early, with entropies (and a gap in them)."""
    rng = np.random.default_rng(seed)
    world = _world(N, seed)
    runs = []
    for index in range(count):
        run = _run(world, tuple(int(t) for t in rng.permutation(N)), rng=rng, noise_sd=0.02)
        stages = N + 1 if index % 3 else int(rng.integers(1, N + 1))
        entropies = [{j: float(rng.uniform(0.5, 1.5)) for j in range(N)} for _ in range(stages)]
        if index % 4 == 0:
            entropies[stages // 2] = {}
        runs.append(RunRecord(run.trained, run.utilities[:stages], entropies))
    return runs


@pytest.mark.parametrize("seed", [0, 1])
def test_a_fit_on_kept_runs_of_a_shared_table_is_the_fit_on_those_runs(seed: int) -> None:
    runs = _partial_runs_with_entropy(12, seed)
    table = StageTable.of(runs)
    for dropped in ([0], [3, 7], list(range(12))):
        kept = np.ones(len(runs), dtype=bool)
        kept[dropped] = False
        shared = fit_transition_model(runs, kinds=KINDS, table=table, kept=kept)
        alone = fit_transition_model([r for r, k in zip(runs, kept, strict=True) if k], kinds=KINDS)
        for field in ("mean", "chol", "baseline_mean", "baseline_var", "entropy_map", "noise_sd"):
            assert np.array_equal(getattr(shared, field), getattr(alone, field)), field
        assert (shared.entropy_ref, shared.observations, shared.bounds) == (
            alone.entropy_ref,
            alone.observations,
            alone.bounds,
        )
