"""bench/order_structure.py: the feature sets and the share of variance they explain."""

from __future__ import annotations

import numpy as np
import pytest

from bench.order_structure import (
    ceiling_row,
    expected_best_of_random,
    explained,
    family_row,
    features,
    fit_regret,
    main,
    order_distances,
    unseen_picks,
    unseen_row,
)
from bench.worlds.oracle import all_orders


def test_features_encode_last_task_positions_and_precedences() -> None:
    orders = np.array([[2, 0, 1], [0, 1, 2]], dtype=np.int64)
    designs = features(orders)
    assert designs["last task"].tolist() == [[0, 1, 0], [0, 0, 1]]
    # task t at position p: column t * n + p
    assert np.flatnonzero(designs["task x position"][0]).tolist() == [1, 5, 6]
    # pairs (0, 1), (0, 2), (1, 2): does the first precede the second?
    assert designs["precedence"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert designs["both"].shape == (2, 9 + 3)


def test_a_value_made_of_precedences_is_explained_by_them_alone() -> None:
    orders = all_orders(5)
    rng = np.random.default_rng(0)
    designs = features(orders)
    values = designs["precedence"] @ rng.normal(size=designs["precedence"].shape[1])
    assert explained(designs["precedence"], values) == pytest.approx(1.0)
    assert explained(designs["last task"], values) < 0.9
    noise = rng.normal(size=len(orders))
    assert explained(designs["precedence"], noise) < 0.1


def test_additive_worlds_are_pairwise(capsys: pytest.CaptureFixture[str]) -> None:
    row = family_row("additive", 4, [0, 1])
    shares = [float(v) for v in row.split()[1:5]]
    assert shares[2] == pytest.approx(1.0, abs=1e-6)  # precedence: the world's own model
    main(["--families", "additive", "--n", "4", "--seeds", "1", "--train", "0"])
    assert "additive" in capsys.readouterr().out


def test_expected_best_of_random_is_the_exact_expectation_of_the_best_draw() -> None:
    values = np.array([1.0, 2.0, 4.0])
    assert expected_best_of_random(values, 1) == pytest.approx(100.0 * (4.0 - 7.0 / 3.0) / 4.0)
    # two draws: the best is 4 unless neither is (4/9), then 2 unless both are 1 (1/9)
    expected = 4.0 * 5 / 9 + 2.0 * 3 / 9 + 1.0 * 1 / 9
    assert expected_best_of_random(values, 2) == pytest.approx(100.0 * (4.0 - expected) / 4.0)
    rng = np.random.default_rng(3)
    many = rng.normal(10.0, 1.0, 50)
    draws = many[rng.integers(0, 50, (200_000, 4))].max(axis=1)
    simulated = 100.0 * (many.max() - draws.mean()) / many.max()
    assert expected_best_of_random(many, 4) == pytest.approx(simulated, abs=0.05)


def test_a_fit_of_the_worlds_own_form_finds_its_best_order() -> None:
    orders = all_orders(5)
    designs = features(orders)
    rng = np.random.default_rng(1)
    values = 10.0 + designs["precedence"] @ rng.normal(size=designs["precedence"].shape[1])
    assert fit_regret(designs["precedence"], values) == 0.0
    # the last task alone misses a best order made of precedences
    assert fit_regret(designs["last task"], values) > 0.0


def test_the_ceiling_table_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    row = ceiling_row("additive", 4, [0], [4])
    cells = row.split()
    assert cells[0] == "additive"
    assert float(cells[3]) == pytest.approx(0.0, abs=1e-9)  # precedence: exact for additive
    assert float(cells[5]) == pytest.approx(2.0 * float(cells[7]), abs=0.011)
    main(
        ["--families", "additive", "--n", "4", "--seeds", "1", "--runs", "2", "--train", "5", "99"]
    )
    out = capsys.readouterr().out
    assert "ceiling" in out
    assert "best-of-2" in out
    assert "fitted to 5 orders' true values" in out
    assert "fitted to 12 orders' true values" in out  # 99 asked: half of the 24 orders


def test_order_distances_count_discordant_pairs_and_moved_tasks() -> None:
    left = np.array([[0, 1, 2, 3]], dtype=np.int64)
    right = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [3, 2, 1, 0]], dtype=np.int64)
    kendall, hamming = order_distances(left, right)
    assert kendall.tolist() == [[0.0, 1 / 6, 1.0]]
    assert hamming.tolist() == [[0.0, 0.5, 1.0]]


def test_a_gp_fitted_to_a_pairwise_world_finds_its_unseen_best_orders() -> None:
    orders = all_orders(5)
    designs = features(orders)
    rng = np.random.default_rng(2)
    values = 10.0 + designs["precedence"] @ rng.normal(size=designs["precedence"].shape[1])
    found = unseen_picks(orders, values, 60, np.random.default_rng(0), picks=(1, 4))
    assert found.rank > 0.9
    assert found.picked[1] <= found.best_unseen + 1.0
    # more picks keep a better best, never worse, and never better than the best unseen order
    assert found.best_unseen <= found.picked[4] <= found.picked[1]
    # values that are noise: nothing to learn from 60 orders
    noise = 10.0 + rng.normal(size=len(orders))
    assert abs(unseen_picks(orders, noise, 60, np.random.default_rng(0)).rank) < 0.3
    row = unseen_row("additive", 4, [0], 12)
    assert row.split()[0] == "additive"
    assert len(row.split()) == 6  # top 1, 4, 8, the best unseen, the rank
    with pytest.raises(ValueError, match="train"):
        unseen_picks(orders, values, len(orders), np.random.default_rng(0))


def test_the_best_of_the_top_picks_is_read_off_the_ranking() -> None:
    """Six orders of three tasks: the GP sees three; running all three others keeps the best."""
    orders = all_orders(3)
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    found = unseen_picks(orders, values, 3, np.random.default_rng(5), picks=(1, 3))
    unseen_best = found.best_unseen
    assert found.picked[3] == pytest.approx(unseen_best)  # all three unseen orders run
    assert found.picked[1] >= unseen_best
