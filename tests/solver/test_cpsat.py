"""The CP-SAT model: its structure, and its optimum against the subset DP."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from ordo_server.solver import cpsat
from ordo_server.solver.cpsat import (
    OBJECTIVE_SCALE,
    TRIPLE_MAX_TASKS,
    build_ordering_model,
    solve_cpsat,
)
from ordo_server.solver.errors import NoSolutionError
from ordo_server.solver.exact import solve_exact
from ordo_server.solver.scoring import score_order
from ordo_server.solver.types import ContiguousGroup, Objective, OrderingProblem, RequiredAdjacency
from tests.solver.conftest import feasible_problems
from tests.solver.factories import five_mixed_constraints, make_problem, random_model


def test_model_structure_without_adjacency() -> None:
    problem = make_problem(random_model(np.random.default_rng(0), 6))
    built = build_ordering_model(problem)
    assert len(built.variables.pairs) == 15
    assert len(built.variables.positions) == 6
    assert built.variables.arcs == {}
    proto = built.model.proto
    # 2 transitivity rows per triple (C(6, 3) = 20) as one two-sided linear each, 6 positions
    assert len(proto.constraints) == 20 + 6
    assert built.objective is not None
    assert built.objective.scale == OBJECTIVE_SCALE


def test_model_structure_at_the_triple_threshold_keeps_the_triples() -> None:
    n = TRIPLE_MAX_TASKS
    built = build_ordering_model(make_problem(random_model(np.random.default_rng(0), n)))
    assert len(built.model.proto.constraints) == n * (n - 1) * (n - 2) // 6 + n


def test_model_structure_past_the_triple_threshold_links_pairs_to_positions() -> None:
    n = TRIPLE_MAX_TASKS + 1
    built = build_ordering_model(make_problem(random_model(np.random.default_rng(0), n)))
    # no triple: n position definitions and two half-reified links per pair
    assert len(built.model.proto.constraints) == n + n * (n - 1)


def test_model_structure_with_adjacency_term() -> None:
    problem = make_problem(
        random_model(np.random.default_rng(0), 4, adjacency=True),
        constraints=[RequiredAdjacency(0, 1), ContiguousGroup(frozenset({2, 3}))],
    )
    built = build_ordering_model(problem, enforce_constraints=True)
    assert len(built.variables.arcs) == 4 * 3 + 2 * 4  # task arcs plus depot arcs
    assert len(built.enforcement) == 2


@settings(max_examples=60, deadline=None)
@given(problem=feasible_problems(max_n=8, max_constraints=4, allow_prefix=False))
def test_cpsat_equals_dp(problem: OrderingProblem) -> None:
    solution = solve_cpsat(problem, time_limit_s=10.0, num_workers=1, seed=0)
    assert solution.proven_optimal
    value = score_order(problem, solution.order)
    assert solution.bound >= value - 1e-9
    assert value == pytest.approx(score_order(problem, solve_exact(problem).order), abs=1e-7)


@settings(max_examples=40, deadline=None)
@given(problem=feasible_problems(max_n=8, max_constraints=4, allow_prefix=False))
def test_quadratic_model_equals_dp(problem: OrderingProblem) -> None:
    # The model built past TRIPLE_MAX_TASKS (pair links, no betweenness clauses), forced on
    # small problems: still exact.
    saved = cpsat.TRIPLE_MAX_TASKS
    cpsat.TRIPLE_MAX_TASKS = 0
    try:
        solution = solve_cpsat(problem, time_limit_s=10.0, num_workers=1, seed=0)
    finally:
        cpsat.TRIPLE_MAX_TASKS = saved
    assert solution.proven_optimal
    value = score_order(problem, solution.order)
    assert solution.bound >= value - 1e-9
    assert value == pytest.approx(score_order(problem, solve_exact(problem).order), abs=1e-7)


@pytest.mark.parametrize("n", [TRIPLE_MAX_TASKS + 1, 60, 100])
def test_model_size_past_the_triple_threshold_is_quadratic(n: int) -> None:
    # Issue 13: a schedule past 16 tasks reaches CP-SAT; building must not enumerate C(n, 3)
    # triples (161700 rows at n = 100, four times that in betweenness clauses with adjacency).
    constraints = (*five_mixed_constraints(), RequiredAdjacency(9, 10))
    problem = make_problem(
        random_model(np.random.default_rng(1), n, adjacency=True), constraints=constraints
    )
    built = build_ordering_model(problem)
    pairs = n * (n - 1) // 2
    arcs = n * (n - 1) + 2 * n
    assert len(built.variables.pairs) == pairs
    assert len(built.variables.arcs) == arcs
    # positions, two links per pair, per arc a position link and an implication, per task the
    # two depot links, one circuit, and the six constraints (contiguity: O(n) each)
    assert len(built.model.proto.constraints) <= n + 2 * pairs + 2 * arcs + 1 + 10 * n
    triples = n * (n - 1) * (n - 2) // 6
    assert len(built.model.proto.constraints) < triples


def test_bound_stays_above_optimum_with_coarse_rounding() -> None:
    # values near the rounding resolution: the slack must keep bound >= optimum
    rng = np.random.default_rng(9)
    model = random_model(rng, 9, backward_std=3e-9, forward_mean=0.0, forward_std=3e-9)
    for objective in Objective:
        problem = make_problem(model, objective, rho=1.0, kappa=1.0)
        solution = solve_cpsat(problem, time_limit_s=10.0, num_workers=1, seed=0)
        optimum = score_order(problem, solve_exact(problem).order)
        assert solution.bound >= optimum - 1e-12


def test_no_order_within_the_time_limit_raises_no_solution() -> None:
    # A microsecond is less than CP-SAT needs to load 4060 transitivity constraints, and without
    # a hint there is no order to fall back on: the status is UNKNOWN, never FEASIBLE.
    problem = make_problem(
        random_model(np.random.default_rng(3), 30), rho=0.5, constraints=five_mixed_constraints()
    )
    with pytest.raises(NoSolutionError, match="no order found within"):
        solve_cpsat(problem, time_limit_s=1e-6, num_workers=1, seed=0)
