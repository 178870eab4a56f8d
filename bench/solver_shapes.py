"""Solver latency by problem shape: median / p90 wall time and proven-optimal count (prints).

Usage::

    python -m bench.solver_shapes [--seeds 20] [--workers 1] [--time-limit 10]
                                  [--shapes NAME[,NAME...]] [--method auto|exact|lop|cpsat]

Every shape is solved once per seed with :func:`solver.solve_ordering` in this process (no
HTTP, no database), seed ``k`` drawing the random effects of instance ``k`` (the factories of
``tests/solver/factories.py``: ``B ~ N(0, 0.05)``, ``F ~ N(0.02, 0.05)``) and seeding the
solver. Wall time is measured around the call, so it includes validation, pre-checks, the
heuristic hint, model building and the search. One line per shape; the issue-3 target for the
constrained n = 30 shapes is a median well under 300 ms in the solver (500 ms through the API),
every answer proven optimal.

Shapes (``rho = 0.5`` unless stated; ``five mixed`` is ``five_mixed_constraints()``: precedence,
pinned first, window, forbidden adjacency, contiguous group; ``api`` is what
``bench/api_solve.py`` sends: precedence, pinned, window, kind order over two halves,
contiguous group, ``rho = 0.3``):

* ``n12_free``, ``n12_mixed``: n = 12 (the DP path);
* ``n30_free``: n = 30 without constraints (the LOP engine);
* ``n30_mixed``, ``n30_mixed_maximin``, ``n30_mixed_mean_variance``: n = 30, five mixed, one
  per objective (``kappa = 1``);
* ``n30_api``: n = 30 with the API benchmark's constraints;
* ``n20_adjacency``: n = 20 with an adjacency term, no constraints.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ordo_server.solver import SolveParams, solve_ordering
from ordo_server.solver.solve import Method
from ordo_server.solver.types import (
    Constraint,
    ContiguousGroup,
    KindOrder,
    Objective,
    OrderingProblem,
    PinnedPosition,
    PositionWindow,
    Precedence,
)
from tests.solver.factories import five_mixed_constraints, make_problem, random_model


@dataclass(frozen=True, slots=True)
class Shape:
    """A family of random problems, one per seed."""

    name: str
    make: Callable[[int], OrderingProblem]


def api_constraints(n: int) -> tuple[Constraint, ...]:
    """The five constraints of ``bench/api_solve.py`` (first half of the tasks structured), its
    1-based stages turned into 0-based positions."""
    half = n // 2
    return (
        Precedence(n - 1, half),
        PinnedPosition(3, 1),
        PositionWindow(half + 1, half, half + 3),
        KindOrder(frozenset(range(half)), frozenset(range(half, n))),
        ContiguousGroup(frozenset({5, 6, 7})),
    )


def _problem(
    n: int,
    *,
    objective: Objective = Objective.EXPECTED,
    constraints: Callable[[int], tuple[Constraint, ...]] | None = None,
    adjacency: bool = False,
    rho: float = 0.5,
) -> Callable[[int], OrderingProblem]:
    def make(seed: int) -> OrderingProblem:
        model = random_model(np.random.default_rng(seed), n, adjacency=adjacency)
        return make_problem(
            model,
            objective,
            rho=rho,
            kappa=1.0,
            constraints=constraints(n) if constraints else (),
        )

    return make


def _mixed(_: int) -> tuple[Constraint, ...]:
    return five_mixed_constraints()


SHAPES = (
    Shape("n12_free", _problem(12)),
    Shape("n12_mixed", _problem(12, constraints=_mixed)),
    Shape("n30_free", _problem(30)),
    Shape("n30_mixed", _problem(30, constraints=_mixed)),
    Shape("n30_mixed_maximin", _problem(30, objective=Objective.MAXIMIN, constraints=_mixed)),
    Shape(
        "n30_mixed_mean_variance",
        _problem(30, objective=Objective.MEAN_VARIANCE, constraints=_mixed),
    ),
    Shape("n30_api", _problem(30, constraints=api_constraints, rho=0.3)),
    Shape("n20_adjacency", _problem(20, adjacency=True)),
)


def run_shape(shape: Shape, *, seeds: int, params: SolveParams, method: Method) -> str:
    """Solve ``seeds`` instances of ``shape``; one summary line."""
    times_ms: list[float] = []
    proven = 0
    gaps: list[float] = []
    methods: set[str] = set()
    for seed in range(seeds):
        problem = shape.make(seed)
        seeded = SolveParams(
            time_limit_s=params.time_limit_s, num_workers=params.num_workers, seed=seed
        )
        started = time.perf_counter()
        result = solve_ordering(problem, seeded, method=method)
        times_ms.append(1000.0 * (time.perf_counter() - started))
        proven += result.status == "optimal"
        gaps.append(result.gap)
        methods.add(result.method)
    ordered = sorted(times_ms)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
    return (
        f"{shape.name:<24} median {statistics.median(ordered):8.1f} ms  p90 {p90:8.1f} ms  "
        f"max {ordered[-1]:8.1f} ms  optimal {proven:2d}/{seeds}  max gap {max(gaps):.2e}  "
        f"methods {','.join(sorted(methods))}"
    )


def main() -> None:
    """Parse flags, run the chosen shapes, print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per solve")
    parser.add_argument("--shapes", default=",".join(s.name for s in SHAPES))
    parser.add_argument("--method", default="auto", choices=["auto", "exact", "lop", "cpsat"])
    args = parser.parse_args()
    wanted = args.shapes.split(",")
    unknown = set(wanted) - {s.name for s in SHAPES}
    if unknown:
        parser.error(f"unknown shapes: {', '.join(sorted(unknown))}")
    params = SolveParams(time_limit_s=args.time_limit, num_workers=args.workers)
    print(
        f"seeds={args.seeds} workers={args.workers} time_limit={args.time_limit:g}s "
        f"method={args.method}"
    )
    for shape in SHAPES:
        if shape.name in wanted:
            print(run_shape(shape, seeds=args.seeds, params=params, method=args.method), flush=True)


if __name__ == "__main__":
    main()
