"""Shared fixtures and Hypothesis strategies of the solver tests (no database, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

from ordo_server.solver.types import Objective, OrderingProblem
from tests.solver.factories import constraints_satisfied_by, make_problem, random_model


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator (tests never use global randomness)."""
    return np.random.default_rng(20240601)


@st.composite
def feasible_problems(
    draw: st.DrawFn,
    *,
    max_n: int = 8,
    max_constraints: int = 4,
    allow_prefix: bool = True,
) -> OrderingProblem:
    """Random small problems whose constraints a hidden random order satisfies (so feasible)."""
    n = draw(st.integers(1, max_n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    model = random_model(rng, n, adjacency=draw(st.booleans()))
    hidden = tuple(int(t) for t in rng.permutation(n))
    constraints = constraints_satisfied_by(rng, hidden, draw(st.integers(0, max_constraints)))
    prefix_length = draw(st.integers(0, n)) if allow_prefix else 0
    return make_problem(
        model,
        draw(st.sampled_from(list(Objective))),
        rho=draw(st.sampled_from([0.0, 0.5, 1.0])),
        kappa=draw(st.sampled_from([0.0, 1.0, 5.0])),
        constraints=constraints,
        prefix=hidden[:prefix_length],
    )
