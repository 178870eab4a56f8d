"""solve_ordering end to end: properties, each constraint binding, re-planning, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings

from ordo_server.solver import SolveParams, check_order, score_order, solve_ordering
from ordo_server.solver.exact import solve_exact
from ordo_server.solver.solve import Method
from ordo_server.solver.types import (
    Constraint,
    ContiguousGroup,
    ForbiddenAdjacency,
    KindOrder,
    Objective,
    OrderingProblem,
    PinnedPosition,
    PositionWindow,
    Precedence,
    RequiredAdjacency,
)
from tests.solver.conftest import feasible_problems
from tests.solver.factories import (
    CODE,
    MATH,
    POETRY,
    brute_force,
    five_mixed_constraints,
    make_problem,
    random_model,
    worked_example_model,
)

FAST = SolveParams(time_limit_s=10.0, num_workers=1, seed=0)


def assert_valid(problem: OrderingProblem, order: tuple[int, ...]) -> None:
    assert sorted(order) == list(range(problem.n))
    assert check_order(problem, order) == []
    assert order[: len(problem.prefix)] == problem.prefix


@settings(max_examples=60, deadline=None)
@given(problem=feasible_problems(max_n=8, max_constraints=4))
def test_auto_and_cpsat_reach_the_exact_optimum(problem: OrderingProblem) -> None:
    exact = solve_ordering(problem, FAST, method="auto")
    assert_valid(problem, exact.order)
    assert exact.objective == pytest.approx(score_order(problem, exact.order), abs=1e-12)
    assert exact.status == "optimal"
    assert exact.bound >= exact.objective - 1e-9
    if len(problem.prefix) < problem.n:
        result = solve_ordering(problem, FAST, method="cpsat")
        assert_valid(problem, result.order)
        assert result.status == "optimal"
        assert result.bound >= result.objective - 1e-9
        assert result.objective == pytest.approx(exact.objective, abs=1e-7)
        assert result.gap <= 1e-6


@settings(max_examples=25, deadline=None)
@given(problem=feasible_problems(max_n=7, max_constraints=3))
def test_auto_equals_brute_force(problem: OrderingProblem) -> None:
    best = brute_force(problem)
    assert best is not None
    assert solve_ordering(problem, FAST).objective == pytest.approx(best[0], abs=1e-9)


def test_worked_example_optimum() -> None:
    result = solve_ordering(make_problem(worked_example_model()), FAST)
    assert result.objective >= 1.51
    assert result.objective == pytest.approx(
        max(score_order(make_problem(worked_example_model()), o) for o in _perms(3)), abs=1e-12
    )
    assert result.order[-1] == POETRY  # poetry last: it suffers most from later training
    assert {result.order[0], result.order[1]} == {MATH, CODE}


def _perms(n: int) -> list[tuple[int, ...]]:
    return list(itertools.permutations(range(n)))


def _binding_constraint(kind: str, best: tuple[int, ...]) -> Constraint:
    first, second, last = best[0], best[1], best[-1]
    n = len(best)
    options: dict[str, Constraint] = {
        "precedence": Precedence(last, first),
        "pinned": PinnedPosition(first, -1),
        "window": PositionWindow(first, n - 2, n - 1),
        "forbidden_adjacency": ForbiddenAdjacency(first, second),
        "required_adjacency": RequiredAdjacency(last, first),
        "kind_order": KindOrder(frozenset({last}), frozenset({first, second})),
        "contiguous": ContiguousGroup(frozenset({first, last})),
    }
    return options[kind]


@pytest.mark.parametrize(
    "kind",
    [
        "precedence",
        "pinned",
        "window",
        "forbidden_adjacency",
        "required_adjacency",
        "kind_order",
        "contiguous",
    ],
)
@pytest.mark.parametrize("method", ["exact", "cpsat"])
def test_each_constraint_binds(kind: str, method: str) -> None:
    model = random_model(np.random.default_rng(21), 7)
    free = solve_ordering(make_problem(model, rho=0.5), FAST)
    constraint = _binding_constraint(kind, free.order)
    problem = make_problem(model, rho=0.5, constraints=[constraint])
    # the unconstrained optimum violates it ...
    assert check_order(problem, free.order) == [constraint]
    bound = solve_ordering(problem, FAST, method=method)  # type: ignore[arg-type]
    # ... the constrained optimum respects it and is no better
    assert check_order(problem, bound.order) == []
    assert bound.objective <= free.objective + 1e-12
    assert bound.objective == pytest.approx(
        score_order(problem, solve_exact(problem).order), abs=1e-7
    )


def test_replanning_is_the_same_call_with_a_prefix() -> None:
    rng = np.random.default_rng(31)
    model = random_model(rng, 9, adjacency=True)
    constraints = (ContiguousGroup(frozenset({1, 2, 3})), RequiredAdjacency(4, 5))
    full = solve_ordering(make_problem(model, rho=0.5, constraints=constraints), FAST)
    # keeping the optimal plan's first stages, re-planning finds the same value
    for trained in range(len(full.order) + 1):
        problem = make_problem(model, rho=0.5, constraints=constraints, prefix=full.order[:trained])
        replanned = solve_ordering(problem, FAST)
        assert replanned.order[:trained] == full.order[:trained]
        assert replanned.objective == pytest.approx(full.objective, abs=1e-9)
    # an off-plan prefix: the rest is optimal given it (brute force over the remainder)
    problem = make_problem(model, rho=0.5, constraints=constraints, prefix=(2, 3, 1, 0))
    methods: list[Method] = ["exact", "cpsat"]
    for method in methods:
        result = solve_ordering(problem, FAST, method=method)
        best = brute_force(problem)
        assert best is not None
        assert result.objective == pytest.approx(best[0], abs=1e-7)
        assert result.objective <= full.objective + 1e-12


def test_replanning_a_large_problem_reduces_to_the_dp() -> None:
    model = random_model(np.random.default_rng(32), 30)
    problem = make_problem(model, rho=0.5, prefix=tuple(range(20)))
    result = solve_ordering(problem, FAST)
    assert result.method == "exact"
    assert result.stats["remaining_tasks"] == 10
    assert result.order[:20] == tuple(range(20))
    assert result.status == "optimal"


def test_lop_path_for_a_plain_mid_size_lop() -> None:
    model = random_model(np.random.default_rng(33), 18)
    problem = make_problem(model, Objective.MEAN_VARIANCE, rho=0.5, kappa=1.0)
    result = solve_ordering(problem, FAST)
    assert result.method == "lop"
    assert result.bound >= result.objective - 1e-9
    cpsat = solve_ordering(problem, FAST, method="cpsat")
    assert cpsat.bound >= result.objective - 1e-7
    if result.status == "optimal" and cpsat.status == "optimal":
        assert cpsat.objective == pytest.approx(result.objective, abs=1e-7)


@pytest.mark.parametrize("seed", [2, 6])
def test_plain_random_n30_lops_are_proven_fast(seed: int) -> None:
    # bench.solver_shapes n30_free: these seeds' LPs keep a real gap; the LOP engine closes it
    # with CP-SAT (the MILP over the LP's pool ran into the 10 s limit on both before).
    problem = make_problem(random_model(np.random.default_rng(seed), 30), rho=0.5, kappa=1.0)
    result = solve_ordering(problem, SolveParams(time_limit_s=10.0, num_workers=1, seed=seed))
    assert result.method == "lop"
    assert result.status == "optimal"
    assert result.gap <= 1e-9
    assert result.wall_time_s < 5.0
    assert_valid(problem, result.order)


def test_mid_size_mixed_constraints_use_cpsat_and_prove() -> None:
    model = random_model(np.random.default_rng(34), 17)
    problem = make_problem(model, rho=0.5, constraints=five_mixed_constraints())
    result = solve_ordering(problem, SolveParams(time_limit_s=20.0, num_workers=1))
    assert result.method == "cpsat"
    assert result.status == "optimal"
    assert check_order(problem, result.order) == []
    exact = solve_exact(problem)
    assert result.objective == pytest.approx(score_order(problem, exact.order), abs=1e-7)


@pytest.mark.parametrize("objective", list(Objective))
def test_deterministic_for_a_seed(objective: Objective) -> None:
    model = random_model(np.random.default_rng(35), 18)
    problem = make_problem(
        model, objective, rho=0.5, kappa=1.0, constraints=[Precedence(0, 1), PinnedPosition(2, 5)]
    )
    params = SolveParams(time_limit_s=20.0, num_workers=1, seed=7)
    first = solve_ordering(problem, params)
    second = solve_ordering(problem, params)
    assert first.status == "optimal"
    assert (first.order, first.objective, first.bound) == (
        second.order,
        second.objective,
        second.bound,
    )


def test_everything_trained_returns_the_prefix() -> None:
    problem = make_problem(worked_example_model(), prefix=(POETRY, MATH, CODE))
    result = solve_ordering(problem, FAST)
    assert result.order == (POETRY, MATH, CODE)
    assert result.objective == pytest.approx(1.35)
    assert result.method == "prefix"
