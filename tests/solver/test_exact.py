"""The subset DP against brute force over all permutations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from ordo_server.solver import InfeasibleError
from ordo_server.solver.constraints import check_order
from ordo_server.solver.exact import solve_exact
from ordo_server.solver.scoring import score_order
from ordo_server.solver.types import Objective, OrderingProblem, Precedence
from tests.solver.conftest import feasible_problems
from tests.solver.factories import brute_force, make_problem, random_model


@settings(max_examples=120, deadline=None)
@given(problem=feasible_problems(max_n=6, max_constraints=4))
def test_dp_equals_brute_force(problem: OrderingProblem) -> None:
    best = brute_force(problem)
    assert best is not None  # feasible by construction
    solution = solve_exact(problem)
    assert sorted(solution.order) == list(range(problem.n))
    assert check_order(problem, solution.order) == []
    assert solution.order[: len(problem.prefix)] == problem.prefix
    oracle = score_order(problem, solution.order)
    assert solution.value == pytest.approx(oracle, abs=1e-9)
    assert oracle == pytest.approx(best[0], abs=1e-9)


@pytest.mark.parametrize("objective", list(Objective))
@pytest.mark.parametrize("adjacency", [False, True])
def test_dp_equals_brute_force_at_seven_tasks(objective: Objective, adjacency: bool) -> None:
    rng = np.random.default_rng(7)
    problem = make_problem(random_model(rng, 7, adjacency=adjacency), objective, rho=0.5, kappa=2.0)
    best = brute_force(problem)
    assert best is not None
    assert score_order(problem, solve_exact(problem).order) == pytest.approx(best[0], abs=1e-12)


def test_dp_reports_infeasibility() -> None:
    problem = make_problem(
        random_model(np.random.default_rng(0), 3), constraints=[Precedence(0, 1)], prefix=(1,)
    )
    with pytest.raises(InfeasibleError):
        solve_exact(problem)
