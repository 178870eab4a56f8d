"""Predictions: per-task utility with std for an order and for a random order."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ordo_server.solver import predict_order, predict_random_order, score_order
from tests.solver.factories import make_problem, random_model


def test_prediction_of_an_order_matches_the_oracle() -> None:
    model = random_model(np.random.default_rng(11), 5, adjacency=True)
    order = (4, 2, 0, 3, 1)
    prediction = predict_order(model, order, 0.3)
    assert prediction.objective_mean == pytest.approx(
        score_order(make_problem(model, rho=0.3), order), abs=1e-12
    )
    position = np.argsort(order)
    j = 3
    expected_var = (
        model.level_var[j]
        + 0.09 * sum(model.forward_var[i, j] for i in range(5) if position[i] < position[j])
        + sum(model.backward_var[i, j] for i in range(5) if position[i] > position[j])
    )
    assert prediction.std[j] ** 2 == pytest.approx(expected_var, abs=1e-15)
    adjacency_var = sum(model.adjacency_var[order[k], order[k + 1]] for k in range(4))  # type: ignore[index]
    objective_var = float(model.weights**2 @ prediction.std**2) + adjacency_var
    assert prediction.objective_std**2 == pytest.approx(objective_var, abs=1e-15)


def test_random_order_prediction_equals_enumeration() -> None:
    model = random_model(np.random.default_rng(12), 5)
    predictions = [predict_order(model, order, 0.6) for order in itertools.permutations(range(5))]
    means = np.array([p.mean for p in predictions])
    variances = np.array([p.std**2 for p in predictions])
    objective_means = np.array([p.objective_mean for p in predictions])
    objective_vars = np.array([p.objective_std**2 for p in predictions])
    random = predict_random_order(model, 0.6)
    np.testing.assert_allclose(random.mean, means.mean(axis=0), atol=1e-12)
    # law of total variance over the uniformly random order
    np.testing.assert_allclose(
        random.std**2, variances.mean(axis=0) + means.var(axis=0), atol=1e-12
    )
    assert random.objective_mean == pytest.approx(objective_means.mean(), abs=1e-12)
    assert random.objective_std**2 == pytest.approx(
        objective_vars.mean() + objective_means.var(), abs=1e-12
    )


def test_random_order_adjacency_mean() -> None:
    model = random_model(np.random.default_rng(13), 4, adjacency=True)
    orders = list(itertools.permutations(range(4)))
    mean = np.mean([predict_order(model, order, 0.0).objective_mean for order in orders])
    assert predict_random_order(model, 0.0).objective_mean == pytest.approx(mean, abs=1e-12)
