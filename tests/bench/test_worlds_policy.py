"""The policy-gradient world: deterministic training, jobs equal to the oracle's path, the
entropy mechanism (structured stages lower entropy, open-ended raise it) and real order effects."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bench.worlds.base import IntArray, World
from bench.worlds.policy import VERSION, PolicyWorld, policy_world
from ordo_server.solver.estimation import TaskKind


def _all_orders(n: int) -> IntArray:
    return np.array(list(itertools.permutations(range(n))), dtype=np.int64)


def _run(world: PolicyWorld, order: IntArray, seed: int = 0) -> np.ndarray:
    job = world.start(seed)
    for task in order:
        job.train(int(task))
    return job.true_utilities()


def test_version_is_a_string_and_the_world_fits_the_protocol() -> None:
    assert isinstance(VERSION, str)
    world: World = policy_world(4, 0)  # mypy checks the protocol here
    assert world.family == "policy"
    assert 0.0 < world.noise_sd < 0.05


@pytest.mark.parametrize("n", [2, 4, 6, 8])
def test_both_kinds_at_every_n(n: int) -> None:
    for seed in range(5):
        world = policy_world(n, seed)
        assert world.n == n == len(world.names) == len(set(world.names))
        assert set(world.kinds) == {TaskKind.STRUCTURED, TaskKind.OPEN_ENDED}


def test_deterministic_for_n_and_seed() -> None:
    orders = _all_orders(4)
    first = policy_world(4, 3).final_utilities(orders)
    again = policy_world(4, 3).final_utilities(orders)
    other = policy_world(4, 4).final_utilities(orders)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_job_equals_final_utilities_and_any_batch() -> None:
    world = policy_world(5, 1)
    orders = _all_orders(5)
    every = world.final_utilities(orders)
    rng = np.random.default_rng(0)
    picked = rng.choice(len(orders), size=6, replace=False)
    np.testing.assert_array_equal(world.final_utilities(orders[picked]), every[picked])
    for p in picked:
        np.testing.assert_array_equal(_run(world, orders[p], seed=int(p)), every[p])


def test_utilities_in_unit_interval() -> None:
    for seed in range(3):
        world = policy_world(5, seed)
        util = world.final_utilities(_all_orders(5))
        assert np.all((util >= 0.0) & (util <= 1.0))
        joint = world.joint_utilities()
        assert joint.shape == (5,)
        assert np.all((joint >= 0.0) & (joint <= 1.0))


def test_structured_lowers_and_open_ended_raises_reported_entropy() -> None:
    for seed in range(3):
        world = policy_world(6, seed)
        rng = np.random.default_rng(seed)
        change: dict[TaskKind, list[float]] = {TaskKind.STRUCTURED: [], TaskKind.OPEN_ENDED: []}
        for _ in range(3):
            job = world.start(seed)
            before = np.mean(list(job.evaluate().entropies.values()))
            for task in rng.permutation(world.n):
                job.train(int(task))
                after = np.mean(list(job.evaluate().entropies.values()))
                change[world.kinds[task]].append(float(after - before))
                before = after
        assert np.mean(change[TaskKind.STRUCTURED]) < -0.03
        assert np.mean(change[TaskKind.OPEN_ENDED]) > 0.03


def test_noisy_evaluations_near_the_truth() -> None:
    world = policy_world(5, 2)
    job = world.start(7)
    for task in (3, 0, 4):
        job.train(task)
    truth = job.true_utilities()
    values = np.array([list(job.evaluate().values.values()) for _ in range(200)])
    assert np.all(np.abs(values.mean(axis=0) - truth) < 0.01)
    sd = values.std(axis=0)
    assert np.all(sd < 0.05)
    assert 0.3 * world.noise_sd < float(np.mean(sd)) < 2.0 * world.noise_sd


def test_same_seed_same_noise_other_seed_other_noise() -> None:
    world = policy_world(4, 0)
    a, b, c = world.start(1), world.start(1), world.start(2)
    for job in (a, b, c):
        job.train(2)
    assert a.evaluate() == b.evaluate()
    assert a.evaluate().values != c.evaluate().values


def test_order_matters() -> None:
    spreads = []
    for seed in range(3):
        world = policy_world(5, seed)
        mean = world.final_utilities(_all_orders(5)).mean(axis=1)
        assert mean.max() - mean.min() > 0.02
        spreads.append((mean.max() - mean.mean()) / mean.max())
    assert np.mean(spreads) > 0.02


def test_invalid_use_is_rejected() -> None:
    world = policy_world(4, 0)
    with pytest.raises(ValueError, match="permutation"):
        world.final_utilities(np.array([[0, 0, 1, 2]]))
    with pytest.raises(ValueError, match="shape"):
        world.final_utilities(np.array([[0, 1, 2]]))
    job = world.start(0)
    job.train(1)
    with pytest.raises(ValueError, match="cannot be trained"):
        job.train(1)
    with pytest.raises(ValueError, match="cannot be trained"):
        job.train(4)
