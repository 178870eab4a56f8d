"""The scoring oracle: docs/design.md §2's worked example, and the LOP reduction against it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ordo_server.solver.scoring import (
    lop_weights,
    objective_weights,
    predicted_utilities,
    score_order,
    variance_weights,
)
from ordo_server.solver.types import Objective
from tests.solver.factories import (
    CODE,
    MATH,
    POETRY,
    make_problem,
    random_model,
    worked_example_model,
)


def test_worked_example_totals() -> None:
    problem = make_problem(worked_example_model())
    assert score_order(problem, (MATH, CODE, POETRY)) == pytest.approx(1.51, abs=1e-12)
    assert score_order(problem, (POETRY, MATH, CODE)) == pytest.approx(1.35, abs=1e-12)


def test_worked_example_utilities_and_lop_form() -> None:
    model = worked_example_model()
    utilities = predicted_utilities(model, (POETRY, MATH, CODE), 0.0)
    np.testing.assert_allclose(utilities, [0.63, 0.40, 0.32], atol=1e-12)
    weights, constant = lop_weights(model, 0.0)
    assert constant == pytest.approx(1.50)
    lop_value = constant + weights[MATH, CODE] + weights[MATH, POETRY] + weights[CODE, POETRY]
    assert lop_value == pytest.approx(1.51, abs=1e-12)


def test_maximin_is_the_worst_task_and_ignores_weights() -> None:
    model = worked_example_model()
    problem = make_problem(model, Objective.MAXIMIN)
    assert score_order(problem, (POETRY, MATH, CODE)) == pytest.approx(0.32)
    assert score_order(problem, (MATH, CODE, POETRY)) == pytest.approx(0.40)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 7),
    rho=st.floats(0, 1),
    kappa=st.floats(0, 5),
    objective=st.sampled_from([Objective.EXPECTED, Objective.MEAN_VARIANCE]),
    adjacency=st.booleans(),
)
def test_lop_form_equals_oracle(
    seed: int, n: int, rho: float, kappa: float, objective: Objective, adjacency: bool
) -> None:
    rng = np.random.default_rng(seed)
    problem = make_problem(
        random_model(rng, n, adjacency=adjacency), objective, rho=rho, kappa=kappa
    )
    weights, constant, adjacency_matrix = objective_weights(problem)
    order = tuple(int(t) for t in rng.permutation(n))
    position = np.argsort(order)
    before = position[:, None] < position[None, :]
    value = constant + float(weights[before].sum())
    if adjacency_matrix is not None:
        value += sum(adjacency_matrix[order[k], order[k + 1]] for k in range(n - 1))
    assert value == pytest.approx(score_order(problem, order), abs=1e-9)


def test_variance_weights_match_the_variance_of_the_weighted_sum() -> None:
    rng = np.random.default_rng(5)
    model = random_model(rng, 5)
    order = (3, 0, 4, 1, 2)
    var_weights, constant = variance_weights(model, 0.7)
    position = np.argsort(order)
    before = position[:, None] < position[None, :]
    expected_var = constant + float(var_weights[before].sum())
    mean_only = make_problem(model, Objective.EXPECTED, rho=0.7)
    penalized = make_problem(model, Objective.MEAN_VARIANCE, rho=0.7, kappa=2.0)
    gap = score_order(mean_only, order) - score_order(penalized, order)
    assert gap == pytest.approx(2.0 * expected_var, abs=1e-12)


def test_score_order_rejects_a_non_permutation() -> None:
    problem = make_problem(worked_example_model())
    with pytest.raises(ValueError, match=r"order is not a permutation of 0\.\.2"):
        score_order(problem, (0, 0, 1))
