"""Typed factories of solver inputs for tests and measurements (seeded, no global randomness)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ordo_server.solver.constraints import check_order
from ordo_server.solver.scoring import score_order
from ordo_server.solver.types import (
    Constraint,
    ContiguousGroup,
    EffectModel,
    FloatMatrix,
    ForbiddenAdjacency,
    KindOrder,
    Objective,
    Order,
    OrderingProblem,
    PinnedPosition,
    PositionWindow,
    Precedence,
    RequiredAdjacency,
)

MATH, CODE, POETRY = 0, 1, 2
WORKED_NAMES = ("math", "code", "poetry")


def worked_example_model() -> EffectModel:
    """docs/design.md §2 worked example: math, code, poetry; rho = 0, unit weights."""
    backward = np.zeros((3, 3))
    backward[CODE, POETRY] = -0.10
    backward[MATH, POETRY] = -0.08
    backward[POETRY, MATH] = -0.02
    backward[CODE, MATH] = 0.03
    backward[MATH, CODE] = 0.01
    zeros = np.zeros((3, 3))
    return EffectModel(
        level_mean=np.array([0.60, 0.40, 0.50]),
        level_var=np.zeros(3),
        forward_mean=zeros.copy(),
        forward_var=zeros.copy(),
        backward_mean=backward,
        backward_var=zeros.copy(),
        weights=np.ones(3),
    )


def random_model(
    rng: np.random.Generator,
    n: int,
    *,
    adjacency: bool = False,
    backward_std: float = 0.05,
    forward_mean: float = 0.02,
    forward_std: float = 0.05,
) -> EffectModel:
    """Random effects: ``B ~ N(0, backward_std)``, ``F ~ N(forward_mean, forward_std)``,
    levels ``U(0.3, 0.8)``, weights ``U(0.5, 1.5)``, small variances; optional adjacency."""

    def matrix(mean: float, std: float) -> FloatMatrix:
        values = rng.normal(mean, std, size=(n, n))
        np.fill_diagonal(values, 0.0)
        return values

    def variances(size: tuple[int, ...], high: float) -> FloatMatrix:
        return rng.uniform(0.0, high, size=size)

    return EffectModel(
        level_mean=rng.uniform(0.3, 0.8, size=n),
        level_var=variances((n,), 0.004),
        forward_mean=matrix(forward_mean, forward_std),
        forward_var=variances((n, n), 0.002),
        backward_mean=matrix(0.0, backward_std),
        backward_var=variances((n, n), 0.002),
        weights=rng.uniform(0.5, 1.5, size=n),
        adjacency_mean=matrix(0.0, 0.05) if adjacency else None,
        adjacency_var=variances((n, n), 0.002) if adjacency else None,
    )


def constraints_satisfied_by(
    rng: np.random.Generator, hidden: Order, count: int
) -> tuple[Constraint, ...]:
    """``count`` random constraints of random types that the order ``hidden`` satisfies."""
    n = len(hidden)
    position = {task: k for k, task in enumerate(hidden)}
    made: list[Constraint] = []
    kinds = ["precedence", "pinned", "window", "forbidden", "required", "kind_order", "contiguous"]
    while len(made) < count and n >= 2:
        kind = kinds[int(rng.integers(len(kinds)))]
        a, b = (int(x) for x in rng.choice(n, size=2, replace=False))
        if position[a] > position[b]:
            a, b = b, a
        if kind == "precedence":
            made.append(Precedence(a, b))
        elif kind == "pinned":
            spot = position[a]
            made.append(PinnedPosition(a, -1 if spot == n - 1 and rng.random() < 0.5 else spot))
        elif kind == "window":
            low = int(rng.integers(0, position[a] + 1))
            high = int(rng.integers(position[a], n))
            made.append(PositionWindow(a, low, high))
        elif kind == "forbidden":
            if position[b] != position[a] + 1:
                made.append(ForbiddenAdjacency(a, b))
            else:
                made.append(ForbiddenAdjacency(b, a))
        elif kind == "required":
            k = int(rng.integers(n - 1))
            made.append(RequiredAdjacency(hidden[k], hidden[k + 1]))
        elif kind == "kind_order":
            cut = int(rng.integers(1, n))
            earlier = frozenset(t for t in hidden[:cut] if rng.random() < 0.6) or {hidden[0]}
            later = frozenset(t for t in hidden[cut:] if rng.random() < 0.6) or {hidden[-1]}
            made.append(KindOrder(frozenset(earlier), frozenset(later)))
        else:
            start = int(rng.integers(n - 1))
            size = int(rng.integers(2, n - start + 1))
            made.append(ContiguousGroup(frozenset(hidden[start : start + size])))
    return tuple(made)


def brute_force(problem: OrderingProblem) -> tuple[float, Order] | None:
    """Best feasible order by enumerating all permutations (n <= 8); ``None`` if infeasible."""
    best: tuple[float, Order] | None = None
    prefix = problem.prefix
    rest = [t for t in range(problem.n) if t not in set(prefix)]
    for tail in itertools.permutations(rest):
        order = (*prefix, *tail)
        if check_order(problem, order):
            continue
        value = score_order(problem, order)
        if best is None or value > best[0] + 1e-12:
            best = (value, order)
    return best


def make_problem(
    model: EffectModel,
    objective: Objective = Objective.EXPECTED,
    *,
    rho: float = 0.0,
    kappa: float = 0.0,
    constraints: Sequence[Constraint] = (),
    prefix: Order = (),
) -> OrderingProblem:
    """An :class:`OrderingProblem` with keyword defaults (tests read better with this)."""
    return OrderingProblem(
        model=model,
        objective=objective,
        rho=rho,
        kappa=kappa,
        constraints=tuple(constraints),
        prefix=tuple(prefix),
    )


def five_mixed_constraints() -> tuple[Constraint, ...]:
    """The issue's "five mixed constraints" shape (needs n >= 11): one of each of precedence,
    pinned first, window, forbidden adjacency and contiguous group."""
    return (
        Precedence(0, 1),
        PinnedPosition(2, 0),
        PositionWindow(3, 5, 10),
        ForbiddenAdjacency(4, 5),
        ContiguousGroup(frozenset({6, 7, 8})),
    )
