"""Validation at the public boundary: exact messages naming the field."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ordo_server.solver import InvalidProblemError, SolveParams, solve_ordering
from ordo_server.solver.types import (
    ContiguousGroup,
    KindOrder,
    OrderingProblem,
    PinnedPosition,
    PositionWindow,
    Precedence,
    RequiredAdjacency,
)
from ordo_server.solver.validation import validate_params, validate_problem
from tests.solver.factories import make_problem, random_model


@pytest.fixture
def problem() -> OrderingProblem:
    return make_problem(random_model(np.random.default_rng(1), 4))


def with_entry(
    problem: OrderingProblem, name: str, index: tuple[int, ...], value: float
) -> OrderingProblem:
    array = getattr(problem.model, name).copy()
    array[index] = value
    return replace(problem, model=replace(problem.model, **{name: array}))


@pytest.mark.parametrize(
    ("name", "index", "value", "message"),
    [
        ("backward_mean", (2, 3), float("nan"), "backward_mean[2, 3] is NaN"),
        ("forward_mean", (0, 1), float("inf"), "forward_mean[0, 1] is inf"),
        ("level_mean", (1,), float("-inf"), "level_mean[1] is -inf"),
        ("weights", (3,), float("nan"), "weights[3] is NaN"),
        ("backward_var", (1, 0), -0.5, "backward_var[1, 0] is negative (-0.5); it must be >= 0"),
        ("weights", (0,), -1.0, "weights[0] is negative (-1.0); it must be >= 0"),
    ],
)
def test_non_finite_and_negative_entries(
    problem: OrderingProblem, name: str, index: tuple[int, ...], value: float, message: str
) -> None:
    with pytest.raises(InvalidProblemError) as caught:
        validate_problem(with_entry(problem, name, index, value))
    assert str(caught.value) == message
    assert caught.value.field == name


def test_shape_and_dtype(problem: OrderingProblem) -> None:
    bad_shape = replace(problem, model=replace(problem.model, forward_mean=np.zeros((4, 3))))
    with pytest.raises(
        InvalidProblemError, match=r"^forward_mean has shape \(4, 3\), expected \(4, 4\)$"
    ):
        validate_problem(bad_shape)
    bad_dtype = replace(problem, model=replace(problem.model, weights=np.ones(4, dtype=np.int64)))
    with pytest.raises(InvalidProblemError, match=r"^weights has dtype int64, expected float64$"):
        validate_problem(bad_dtype)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rho": 1.5}, "rho must be a number in [0, 1], got 1.5"),
        ({"kappa": -1.0}, "kappa must be a finite number >= 0, got -1.0"),
        ({"prefix": (0, 4)}, "prefix[1] is 4, expected a task index in 0..3"),
        ({"prefix": (1, 1)}, "prefix[1]: task 1 appears twice in the prefix"),
        (
            {"constraints": (Precedence(0, 7),)},
            "constraints[0].after is 7, expected a task index in 0..3",
        ),
        ({"constraints": (Precedence(2, 2),)}, "constraints[0]: task 2 cannot precede itself"),
        (
            {"constraints": (PinnedPosition(1, -2),)},
            "constraints[0].position is -2, expected a stage index >= -1 (-1 means the last stage)",
        ),
        (
            {"constraints": (PositionWindow(1, 3, 2),)},
            "constraints[0]: earliest (3) is after latest (2)",
        ),
        (
            {"constraints": (RequiredAdjacency(3, 3),)},
            "constraints[0]: an adjacency needs two distinct tasks, got 3 twice",
        ),
        (
            {"constraints": (KindOrder(frozenset({0, 1}), frozenset({1, 2})),)},
            "constraints[0]: task 1 is in both earlier and later",
        ),
        (
            {"constraints": (ContiguousGroup(frozenset({0, 9})),)},
            "constraints[0].tasks is 9, expected a task index in 0..3",
        ),
    ],
)
def test_problem_fields(problem: OrderingProblem, changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidProblemError) as caught:
        validate_problem(replace(problem, **changes))  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_params_and_solve_boundary(problem: OrderingProblem) -> None:
    with pytest.raises(InvalidProblemError, match=r"^time_limit_s must be a finite number > 0"):
        validate_params(SolveParams(time_limit_s=0.0))
    with pytest.raises(InvalidProblemError, match=r"^num_workers must be an integer >= 1, got 0$"):
        solve_ordering(problem, SolveParams(num_workers=0))
    with pytest.raises(InvalidProblemError, match=r"^task_names has 2 names for 4 tasks$"):
        solve_ordering(problem, task_names=["a", "b"])


def test_empty_problem_is_rejected() -> None:
    empty = np.zeros(0)
    model = replace(random_model(np.random.default_rng(0), 1), level_mean=empty)
    with pytest.raises(InvalidProblemError, match=r"at least one task"):
        validate_problem(make_problem(model))
