"""The digits worlds: a real MLP trained with SGD, deterministic, with real forgetting."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from bench.worlds.base import Job, World
from bench.worlds.digits import (
    VERSION,
    DigitsWorld,
    Heads,
    permuted_world,
    rotated_world,
    split_world,
)
from ordo_server.solver.estimation import TaskKind

Factory = Callable[..., DigitsWorld]
FAMILIES: list[Factory] = [split_world, permuted_world, rotated_world]


def _all_orders(n: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n))), dtype=np.int64)


def _job_utilities(world: DigitsWorld, order: np.ndarray) -> np.ndarray:
    job = world.start(seed=0)
    for t in order:
        job.train(int(t))
    return job.true_utilities()


def test_version_is_a_string_and_worlds_meet_the_protocol() -> None:
    assert isinstance(VERSION, str)
    world: World = split_world(4, 0)
    job: Job = world.start(seed=0)
    assert job.trained == []
    assert [f(4, 0).family for f in FAMILIES] == ["mlp-split", "mlp-permuted", "mlp-rotated"]


@pytest.mark.parametrize("factory", FAMILIES)
def test_world_is_deterministic(factory: Factory) -> None:
    orders = _all_orders(3)
    a, b = factory(3, 5), factory(3, 5)
    assert a.names == b.names
    assert a.kinds == b.kinds
    np.testing.assert_array_equal(a.final_utilities(orders), b.final_utilities(orders))
    assert factory(3, 6).names != a.names or factory(3, 6).heads != a.heads


@pytest.mark.parametrize("factory", FAMILIES)
def test_final_utilities_equal_a_job_driven_stage_by_stage(factory: Factory) -> None:
    world = factory(4, 2)
    orders = _all_orders(4)
    final = world.final_utilities(orders)
    assert final.shape == (24, 4)
    for row in (0, 7, 23):
        np.testing.assert_array_equal(final[row], _job_utilities(world, orders[row]))
    # A subset of orders gives the same rows as the whole set (prefix sharing is exact).
    np.testing.assert_array_equal(world.final_utilities(orders[[23, 7]]), final[[23, 7]])


@pytest.mark.parametrize("factory", FAMILIES)
def test_order_matters_and_forgetting_exists(factory: Factory) -> None:
    world = factory(4, 1)
    final = world.final_utilities(_all_orders(4))
    assert np.ptp(final.mean(axis=1)) > 0.02
    drops = []
    for j, t in itertools.permutations(range(4), 2):
        job = world.start(seed=0)
        job.train(j)
        before = job.true_utilities()[j]
        job.train(t)
        drops.append(before - job.true_utilities()[j])
    forgot = max(drops) > 0.015
    assert forgot


@pytest.mark.parametrize("factory", FAMILIES)
def test_noisy_evaluations_are_close_to_the_truth(factory: Factory) -> None:
    world = factory(4, 0)
    job = world.start(seed=3)
    for t in (2, 0):
        job.train(t)
    truth = job.true_utilities()
    errors = []
    for _ in range(30):
        ev = job.evaluate()
        assert set(ev.values) == set(range(4))
        assert set(ev.entropies) == set(range(4))
        assert all(h >= 0.0 for h in ev.entropies.values())
        errors.append([ev.values[j] - truth[j] for j in range(4)])
    err = np.asarray(errors)
    assert np.abs(err.mean(axis=0)).max() < 3 * world.noise_sd
    assert 0.0 < err.std() < 3 * world.noise_sd
    assert 0.005 < world.noise_sd < 0.05


def test_same_job_seed_gives_the_same_evaluation() -> None:
    world = split_world(4, 0)
    evals = []
    for _ in range(2):
        job = world.start(seed=11)
        job.train(1)
        evals.append(job.evaluate())
    assert evals[0] == evals[1]


@pytest.mark.parametrize("heads", ["shared", "separate"])
@pytest.mark.parametrize("factory", FAMILIES)
def test_both_heads_learn(factory: Factory, heads: Heads) -> None:
    world = factory(4, 0, heads=heads)
    assert world.heads == heads
    job = world.start(seed=0)
    chance = 0.5 if factory is split_world else 0.1
    before = job.true_utilities()
    job.train(0)
    after = job.true_utilities()
    assert after[0] > max(before[0], chance) + 0.1


def test_heads_follow_the_seed_and_kinds_are_balanced() -> None:
    assert split_world(4, 2).heads == "shared"
    assert split_world(4, 3).heads == "separate"
    kinds = permuted_world(6, 4).kinds
    assert kinds.count(TaskKind.STRUCTURED) == 3
    assert kinds.count(TaskKind.OPEN_ENDED) == 3


def test_split_tasks_use_distinct_pairs() -> None:
    names = split_world(8, 9).names
    pairs = {frozenset(name.split()[1].split("v")) for name in names}
    assert len(pairs) == 8


@pytest.mark.parametrize("factory", FAMILIES)
def test_joint_utilities_are_accuracies(factory: Factory) -> None:
    joint = factory(4, 1).joint_utilities()
    assert joint.shape == (4,)
    assert np.all((joint >= 0.0) & (joint <= 1.0))
    assert joint.mean() > 0.3


def test_a_task_cannot_be_trained_twice() -> None:
    job = rotated_world(3, 0).start(seed=0)
    job.train(1)
    with pytest.raises(ValueError, match="cannot be trained"):
        job.train(1)
    assert job.trained == [1]
