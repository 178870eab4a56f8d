"""Constraint checks, cheap pre-checks and infeasibility explanations."""

from __future__ import annotations

import numpy as np
import pytest

from ordo_server.solver import InfeasibleError, solve_ordering
from ordo_server.solver.constraints import check_order, precheck_constraints
from ordo_server.solver.solve import Method
from ordo_server.solver.types import (
    Constraint,
    ContiguousGroup,
    ForbiddenAdjacency,
    KindOrder,
    PinnedPosition,
    PositionWindow,
    Precedence,
    RequiredAdjacency,
)
from tests.solver.factories import WORKED_NAMES, make_problem, random_model, worked_example_model

ORDER = (2, 0, 3, 1, 4)  # positions: task 2 at 0, 0 at 1, 3 at 2, 1 at 3, 4 at 4


@pytest.mark.parametrize(
    ("constraint", "holds"),
    [
        (Precedence(2, 4), True),
        (Precedence(4, 2), False),
        (PinnedPosition(4, -1), True),
        (PinnedPosition(4, 3), False),
        (PositionWindow(3, 1, 2), True),
        (PositionWindow(3, 3, 4), False),
        (ForbiddenAdjacency(0, 2), True),
        (ForbiddenAdjacency(2, 0), False),
        (RequiredAdjacency(1, 4), True),
        (RequiredAdjacency(4, 1), False),
        (KindOrder(frozenset({2, 0}), frozenset({1, 4})), True),
        (KindOrder(frozenset({2, 1}), frozenset({3})), False),
        (ContiguousGroup(frozenset({0, 2, 3})), True),
        (ContiguousGroup(frozenset({2, 3})), False),
    ],
)
def test_check_order_per_type(constraint: Constraint, holds: bool) -> None:
    problem = make_problem(random_model(np.random.default_rng(0), 5), constraints=[constraint])
    assert check_order(problem, ORDER) == ([] if holds else [constraint])


def test_precedence_cycle_is_named_task_by_task() -> None:
    cycle = [Precedence(0, 1), Precedence(1, 2), Precedence(2, 0)]
    problem = make_problem(worked_example_model(), constraints=cycle)
    with pytest.raises(InfeasibleError) as caught:
        solve_ordering(problem, task_names=list(WORKED_NAMES))
    assert str(caught.value) == "precedence cycle: math -> code -> poetry -> math"
    assert caught.value.cycle == (0, 1, 2, 0)
    assert set(caught.value.conflict) == set(cycle)


def test_cycle_through_kind_order_and_required_adjacency() -> None:
    constraints: list[Constraint] = [
        KindOrder(frozenset({0}), frozenset({1, 2})),
        RequiredAdjacency(2, 0),
    ]
    problem = make_problem(worked_example_model(), constraints=constraints)
    with pytest.raises(InfeasibleError, match=r"^precedence cycle: task (0|2) -> task") as caught:
        precheck_constraints(problem)
    assert set(caught.value.conflict) == set(constraints)


@pytest.mark.parametrize(
    ("constraints", "message"),
    [
        (
            [PinnedPosition(0, 0), PinnedPosition(1, 0)],
            "two tasks are pinned to position 0 (pinned: task 0 at position 0; "
            "pinned: task 1 at position 0)",
        ),
        (
            [PinnedPosition(2, -1), PinnedPosition(2, 1)],
            "task 2 is pinned to two positions (pinned: task 2 at the last position; "
            "pinned: task 2 at position 1)",
        ),
        (
            [PositionWindow(1, 5, 9)],
            "no position >= 5 exists with 4 tasks (window: task 1 at positions 5..9)",
        ),
        (
            [PinnedPosition(1, 0), PositionWindow(1, 2, 3)],
            "no position satisfies every pin and window of task 1 (pinned: task 1 at "
            "position 0; window: task 1 at positions 2..3)",
        ),
        (
            [RequiredAdjacency(0, 1), RequiredAdjacency(0, 2)],
            "task 0 cannot be followed by two different tasks (required adjacency: task 1 "
            "right after task 0; required adjacency: task 2 right after task 0)",
        ),
        (
            [ForbiddenAdjacency(3, 1), RequiredAdjacency(3, 1)],
            "an adjacency is both required and forbidden (required adjacency: task 1 right "
            "after task 3; forbidden adjacency: task 1 right after task 3)",
        ),
    ],
)
def test_cheap_prechecks(constraints: list[Constraint], message: str) -> None:
    problem = make_problem(random_model(np.random.default_rng(2), 4), constraints=constraints)
    with pytest.raises(InfeasibleError) as caught:
        solve_ordering(problem)
    assert str(caught.value) == message
    assert set(caught.value.conflict) == set(constraints)


def test_pinned_conflict_is_explained_by_assumptions() -> None:
    # task 3 pinned first but it must follow task 1: no cheap check sees that, CP-SAT does
    culprits: list[Constraint] = [PinnedPosition(3, 0), Precedence(1, 3)]
    bystanders: list[Constraint] = [ContiguousGroup(frozenset({0, 2})), PositionWindow(4, 1, 4)]
    problem = make_problem(
        random_model(np.random.default_rng(3), 6),
        constraints=[bystanders[0], *culprits, bystanders[1]],
    )
    methods: list[Method] = ["auto", "cpsat"]
    for method in methods:
        with pytest.raises(InfeasibleError) as caught:
            solve_ordering(problem, method=method)
        assert set(caught.value.conflict) == set(culprits)
        assert str(caught.value) == (
            "these constraints cannot hold together: pinned: task 3 at position 0; "
            "precedence: task 1 before task 3"
        )


def test_window_and_contiguity_conflict_is_explained() -> None:
    # {0, 1, 2} contiguous, 0 in the first two positions, 2 in the last two of 7: impossible
    culprits: list[Constraint] = [
        ContiguousGroup(frozenset({0, 1, 2})),
        PositionWindow(0, 0, 1),
        PositionWindow(2, 5, 6),
    ]
    problem = make_problem(
        random_model(np.random.default_rng(4), 7), constraints=[Precedence(5, 6), *culprits]
    )
    with pytest.raises(InfeasibleError) as caught:
        solve_ordering(problem)
    assert set(caught.value.conflict) == set(culprits)


def test_prefix_that_breaks_a_constraint_is_named() -> None:
    problem = make_problem(worked_example_model(), constraints=[Precedence(1, 0)], prefix=(0,))
    with pytest.raises(InfeasibleError) as caught:
        solve_ordering(problem, task_names=list(WORKED_NAMES))
    assert str(caught.value) == "the trained prefix violates precedence: code before math"
    assert caught.value.conflict == (Precedence(1, 0),)
