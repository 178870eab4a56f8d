"""bench/order_structure.py: the feature sets and the share of variance they explain."""

from __future__ import annotations

import numpy as np
import pytest

from bench.order_structure import explained, family_row, features, main
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
    main(["--families", "additive", "--n", "4", "--seeds", "1"])
    assert "additive" in capsys.readouterr().out
