"""Presolve: the pairs and ranges it fixes hold in every feasible order, and it fixes what it
should."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings

from ordo_server.solver.constraints import check_order
from ordo_server.solver.cpsat import build_ordering_model
from ordo_server.solver.presolve import fix_pairs
from ordo_server.solver.types import (
    ContiguousGroup,
    KindOrder,
    OrderingProblem,
    PinnedPosition,
    PositionWindow,
    Precedence,
    RequiredAdjacency,
)
from tests.solver.conftest import feasible_problems
from tests.solver.factories import make_problem, random_model


@settings(max_examples=80, deadline=None)
@given(problem=feasible_problems(max_n=7, max_constraints=5, allow_prefix=False))
def test_fixings_hold_in_every_feasible_order(problem: OrderingProblem) -> None:
    fixing = fix_pairs(problem)
    for order in itertools.permutations(range(problem.n)):
        if check_order(problem, order):
            continue
        position = np.empty(problem.n, dtype=np.int64)
        position[list(order)] = np.arange(problem.n)
        assert np.all(~fixing.before | (position[:, None] < position[None, :]))
        assert np.all((fixing.earliest <= position) & (position <= fixing.latest))


def test_kind_order_over_two_halves_fixes_their_pairs() -> None:
    n = 30
    problem = make_problem(
        random_model(np.random.default_rng(0), n),
        constraints=[KindOrder(frozenset(range(15)), frozenset(range(15, n)))],
    )
    fixing = fix_pairs(problem)
    assert fixing.fixed_pairs == 15 * 15
    built = build_ordering_model(problem)
    assert len(built.variables.fixed) == 225
    # only triples within a half keep a transitivity constraint (a triple across the halves has
    # two fixed pairs); plus n position links and the kind order itself
    triples_within_halves = 2 * 455
    assert len(built.model.proto.constraints) == triples_within_halves + n + 1


def test_closure_through_pins_groups_and_adjacency() -> None:
    problem = make_problem(
        random_model(np.random.default_rng(1), 8),
        constraints=[
            PinnedPosition(0, 0),
            Precedence(1, 2),
            Precedence(2, 3),
            ContiguousGroup(frozenset({3, 4})),
            RequiredAdjacency(5, 6),
            PositionWindow(7, 6, 7),
            Precedence(6, 1),
        ],
    )
    fixing = fix_pairs(problem)
    assert fixing.fixed(0, 5) is True  # pinned first precedes everything
    assert fixing.fixed(1, 3) is True  # transitivity
    assert fixing.fixed(1, 4) is True  # 4 is consecutive with 3, and 1 precedes 3
    assert fixing.fixed(5, 2) is True  # 5 -> 6 -> 1 -> 2
    assert fixing.fixed(4, 7) is None  # 7 sits at 6..7, 4 no later than 6: both remain open
    assert fixing.earliest[3] == 5  # 0, 5, 6, 1 and 2 all precede it
    assert fixing.latest[0] == 0


def test_contradiction_fixes_nothing() -> None:
    # two windows that leave task 0 after task 1 while a precedence says before: no fixing
    problem = make_problem(
        random_model(np.random.default_rng(2), 4),
        constraints=[PositionWindow(0, 3, 3), PositionWindow(1, 0, 0), Precedence(0, 1)],
    )
    assert fix_pairs(problem).fixed_pairs == 0
