"""The world suite's registry, oracle and synthetic families (skills, additive, recency), n = 6."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bench import simulator
from bench.worlds import FAMILIES, additive, draw_world, family_names, recency
from bench.worlds.additive import AdditiveWorld, additive_world
from bench.worlds.base import FloatArray, IntArray, World
from bench.worlds.oracle import (
    OracleResult,
    StepJob,
    all_orders,
    cache_dir,
    oracle,
    true_mean_utility,
)
from bench.worlds.recency import RecencyWorld, recency_world
from bench.worlds.skills import SkillsWorld, skills_world
from ordo_server.app.simulation import joint_final_scores
from ordo_server.solver.estimation import TaskKind

FAMILY_NAMES = ("skills", "additive", "recency")
N = 6


def _random_orders(n: int, count: int, seed: int) -> IntArray:
    rng = np.random.default_rng(seed)
    return np.array([rng.permutation(n) for _ in range(count)], dtype=np.int64)


def _driven(world: World, order: IntArray) -> FloatArray:
    """Noise-free utilities after training ``order`` through a job, stage by stage."""
    job = world.start(seed=0)
    assert isinstance(job, StepJob | simulator.Simulator)
    for task in order:
        job.train(int(task))
    return job.true_utilities()


@pytest.fixture(params=FAMILY_NAMES)
def family(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_every_factory_returns_a_world() -> None:
    worlds: list[World] = [skills_world(N, 1), additive_world(N, 1), recency_world(N, 1)]
    assert [w.family for w in worlds] == list(FAMILY_NAMES)
    for world in worlds:
        assert world.n == N
        assert len(world.names) == len(set(world.names)) == N
        assert set(world.kinds) == {TaskKind.STRUCTURED, TaskKind.OPEN_ENDED}
        assert 0.01 <= world.noise_sd <= 0.03


def test_registry_names_every_family_and_rejects_unknown_ones() -> None:
    assert family_names() == tuple(FAMILIES)
    assert set(family_names()) == {
        "skills",
        "additive",
        "recency",
        "mlp-split",
        "mlp-permuted",
        "mlp-rotated",
        "policy",
    }
    assert isinstance(draw_world("additive", N, 3), AdditiveWorld)
    assert isinstance(draw_world("recency", N, 3), RecencyWorld)
    assert isinstance(draw_world("skills", N, 3), SkillsWorld)
    with pytest.raises(ValueError, match="unknown world family 'nope'"):
        draw_world("nope", N, 0)


def test_skills_is_the_closed_loop_benchmark_world() -> None:
    world = skills_world(N, 4)
    params = simulator.draw_world(N, 4)
    orders = _random_orders(N, 20, 0)
    np.testing.assert_array_equal(
        world.final_utilities(orders), simulator.final_scores(params, orders)
    )
    assert world.noise_sd == pytest.approx(float(np.mean(params.noise_sd)))


def test_worlds_are_deterministic_per_seed(family: str) -> None:
    a, b = draw_world(family, N, 7), draw_world(family, N, 7)
    orders = _random_orders(N, 30, 1)
    assert (a.names, a.kinds, a.noise_sd) == (b.names, b.kinds, b.noise_sd)
    np.testing.assert_array_equal(a.final_utilities(orders), b.final_utilities(orders))
    ev_a, ev_b = a.start(seed=5).evaluate(), b.start(seed=5).evaluate()
    assert ev_a == ev_b


def test_different_seeds_give_different_worlds(family: str) -> None:
    orders = _random_orders(N, 30, 2)
    finals = [draw_world(family, N, seed).final_utilities(orders) for seed in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.allclose(finals[i], finals[j])


def test_final_utilities_agree_with_driving_a_job(family: str) -> None:
    world = draw_world(family, N, 11)
    orders = _random_orders(N, 5, 3)
    finals = world.final_utilities(orders)
    for order, final in zip(orders, finals, strict=True):
        np.testing.assert_allclose(_driven(world, order), final, rtol=0, atol=1e-12)


def test_noisy_evaluations_average_to_the_truth(family: str) -> None:
    world = draw_world(family, N, 12)
    order = _random_orders(N, 1, 4)[0]
    job = world.start(seed=9)
    for task in order[:3]:
        job.train(int(task))
    evaluations = [job.evaluate() for _ in range(400)]
    mean = np.array([[e.values[j] for j in range(N)] for e in evaluations]).mean(axis=0)
    assert isinstance(job, StepJob | simulator.Simulator)
    # 400 draws of sd <= 0.03: the mean is within 0.0015 per sd; 0.01 is > 6 sd.
    np.testing.assert_allclose(mean, job.true_utilities(), rtol=0, atol=0.01)
    assert all(len(e.entropies) == N for e in evaluations)


def test_a_task_trains_once(family: str) -> None:
    job = draw_world(family, N, 0).start(seed=0)
    job.train(2)
    with pytest.raises(ValueError, match="cannot be trained"):
        job.train(2)
    with pytest.raises(ValueError, match="cannot be trained"):
        job.train(N)
    assert job.trained == [2]


def test_utilities_stay_in_the_unit_interval(family: str) -> None:
    world = draw_world(family, N, 13)
    orders = all_orders(N)
    finals = world.final_utilities(orders)
    assert finals.shape == (len(orders), N)
    assert finals.min() >= 0.0
    assert finals.max() <= 1.0
    for order in orders[::97]:
        job = world.start(seed=1)
        for task in order:
            job.train(int(task))
            assert isinstance(job, StepJob | simulator.Simulator)
            assert 0.0 <= job.true_utilities().min() <= job.true_utilities().max() <= 1.0


def test_synthetic_utilities_stay_in_bounds_at_every_size() -> None:
    for n in (4, 8, 14):
        for seed in range(3):
            orders = _random_orders(n, 200, seed)
            for world in (additive_world(n, seed), recency_world(n, seed)):
                finals = world.final_utilities(orders)
                assert 0.0 <= finals.min() <= finals.max() <= 1.0


def test_oracle_best_order_is_the_max(family: str, tmp_path: Path) -> None:
    world = draw_world(family, N, 14)
    result = oracle(world, cache=tmp_path)
    assert result.orders.shape == (720, N)
    assert result.utilities.shape == (720,)
    assert true_mean_utility(world, result.best_order) == pytest.approx(result.best_value)
    for order in _random_orders(N, 50, 5):
        assert true_mean_utility(world, order) <= result.best_value + 1e-12
    index = 123
    assert true_mean_utility(world, result.orders[index]) == pytest.approx(result.utilities[index])
    assert result.worst_value < result.mean_value < result.best_value


def test_the_best_order_beats_the_average_by_a_few_percent(family: str) -> None:
    gaps = []
    for seed in range(5):
        result = oracle(draw_world(family, N, seed), use_cache=False)
        gaps.append((result.best_value - result.mean_value) / result.best_value)
    assert 0.015 < float(np.mean(gaps)) < 0.1


def test_oracle_cache_round_trips(tmp_path: Path) -> None:
    world = additive_world(N, 15)
    first = oracle(world, cache=tmp_path)
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [f"additive-n6-seed15-v{additive.VERSION}.npz"]
    second = oracle(world, cache=tmp_path)
    np.testing.assert_array_equal(first.utilities, second.utilities)
    assert second.best_order == first.best_order
    # The second call read the file: a planted value comes back.
    planted = first.utilities.copy()
    planted[0] = 2.0
    np.savez(files[0], utilities=planted)
    assert oracle(world, cache=tmp_path).best_order == tuple(range(N))
    # A corrupt file is recomputed and replaced.
    files[0].write_bytes(b"not an npz")
    third = oracle(world, cache=tmp_path)
    np.testing.assert_array_equal(third.utilities, first.utilities)
    assert list(tmp_path.iterdir()) == files


def test_cache_location_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDO_BENCH_CACHE", str(tmp_path / "explicit"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("ORDO_BENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "ordo-bench"
    oracle(recency_world(N, 0))
    assert [f.name for f in (tmp_path / "xdg" / "ordo-bench").iterdir()] == [
        f"recency-n6-seed0-v{recency.VERSION}.npz"
    ]


def test_oracle_result_of_picks_the_argmax() -> None:
    orders = all_orders(3)
    utilities = np.array([0.1, 0.5, 0.3, 0.2, 0.4, 0.0])
    result = OracleResult.of(orders, utilities)
    assert result.best_order == (0, 2, 1)
    assert result.best_value == 0.5
    assert result.mean_value == pytest.approx(0.25)
    with pytest.raises(ValueError, match="n <= 8"):
        all_orders(9)


def test_additive_world_is_its_pairwise_formula() -> None:
    for seed in range(3):
        world = additive_world(N, seed)
        orders = _random_orders(N, 200, seed)
        np.testing.assert_allclose(
            world.final_utilities(orders), world.pairwise_utilities(orders), rtol=0, atol=1e-12
        )


def test_additive_stages_are_exactly_additive() -> None:
    world = additive_world(N, 21)
    d = world.dynamics
    order = _random_orders(N, 1, 6)[0]
    job = world.start(seed=0)
    before = job.true_utilities()
    np.testing.assert_allclose(before, d.base)
    for stage, task in enumerate(order):
        job.train(int(task))
        after = job.true_utilities()
        done, rest = order[:stage], order[stage + 1 :]
        expected_level = d.level[task] + d.forward[done, task].sum()
        assert after[task] == pytest.approx(expected_level, abs=1e-12)
        np.testing.assert_allclose(after[done] - before[done], d.backward[task, done], atol=1e-12)
        np.testing.assert_allclose(after[rest] - before[rest], d.transfer[task, rest], atol=1e-12)
        before = after


def test_additive_effects_have_kind_structure() -> None:
    signs: dict[str, list[float]] = {"b_structured_after_open": [], "f_same_kind": []}
    for seed in range(10):
        d = additive_world(8, seed).dynamics
        is_open = np.array([k == TaskKind.OPEN_ENDED for k in additive_world(8, seed).kinds])
        signs["b_structured_after_open"].extend(d.backward[np.ix_(~is_open, is_open)].ravel())
        same = is_open[:, None] == is_open[None, :]
        np.fill_diagonal(same, False)
        signs["f_same_kind"].extend(d.forward[same])
    assert np.mean(np.array(signs["b_structured_after_open"]) < 0) > 0.8
    assert np.mean(np.array(signs["f_same_kind"]) > 0) > 0.8


@pytest.mark.parametrize("maker", [additive_world, recency_world])
def test_entropy_drifts_by_kind(maker: Callable[[int, int], AdditiveWorld | RecencyWorld]) -> None:
    world = maker(N, 2)
    structured = world.kinds.index(TaskKind.STRUCTURED)
    open_ended = world.kinds.index(TaskKind.OPEN_ENDED)
    job = world.start(seed=0)
    start = job.true_entropy()
    job.train(structured)
    lowered = job.true_entropy()
    job.train(open_ended)
    assert lowered < start
    assert job.true_entropy() > lowered


def test_joint_training() -> None:
    assert additive_world(N, 0).joint_utilities() is None
    joint = recency_world(N, 0).joint_utilities()
    assert joint is not None
    assert joint.shape == (N,)
    assert 0.0 <= joint.min() <= joint.max() <= 1.0
    skills_joint = skills_world(N, 0).joint_utilities()
    assert skills_joint is not None
    np.testing.assert_array_equal(skills_joint, joint_final_scores(simulator.draw_world(N, 0)))


def test_recency_last_trainer_dominates_a_slot() -> None:
    world = recency_world(N, 3)
    d = world.dynamics
    k = d.slot_count
    users = [j for j in range(N) if d.pull[j, 0] > 0]
    assert len(users) >= 2, "slot 0 needs two users in this world"
    first, last = users[0], users[1]
    others = [j for j in range(N) if j not in (first, last)]
    state = d.initial(1)
    for task in others:
        state = d.step(state, np.array([task], dtype=np.int64))
    ends, middles = [], []
    for pair in ((first, last), (last, first)):
        middle = d.step(state, np.array([pair[0]], dtype=np.int64))
        middles.append(middle[0, 0])
        ends.append(d.step(middle, np.array([pair[1]], dtype=np.int64))[0, 0])
    # The last trainer closes at least half of the slot's gap to its own setting ...
    for end, middle, trainer in ((ends[0], middles[0], last), (ends[1], middles[1], first)):
        gap = abs(end - d.pref[trainer, 0])
        assert gap == pytest.approx((1 - d.pull[trainer, 0]) * abs(middle - d.pref[trainer, 0]))
        assert gap <= 0.5 * abs(middle - d.pref[trainer, 0]) + 1e-12
    # ... so the slot ends nearer the setting of whoever trained it last.
    assert abs(ends[0] - d.pref[last, 0]) < abs(ends[1] - d.pref[last, 0])
    assert abs(ends[1] - d.pref[first, 0]) < abs(ends[0] - d.pref[first, 0])
    proficiency = d.step(state, np.array([first], dtype=np.int64))[0, k:]
    assert proficiency[first] > d.proficiency0[first]
    assert proficiency[first] < 1.0


def test_recency_proficiency_saturates() -> None:
    d = recency_world(N, 5).dynamics
    k = d.slot_count
    state = d.initial(1)
    state[0, :k] = d.pref[0]  # a perfect fit: the gain is rate * (1 - level)
    trained = d.step(state, np.array([0], dtype=np.int64))
    level = d.proficiency0[0]
    assert trained[0, k] == pytest.approx(level + d.rate[0] * (1.0 - level))
    np.testing.assert_allclose(trained[0, k + 1 :], d.proficiency0[1:])
