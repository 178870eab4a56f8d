"""``solve_ordering``: the one entry point of the ordering solver.

Pipeline: validate the problem; reject a precedence cycle (named task by task) and other cheap
contradictions; reduce a trained prefix to the remaining tasks (:mod:`solver.prefix`); then

* ``exact``: the subset DP (:mod:`solver.exact`) when few tasks remain: at most
  :data:`EXACT_MAX_TASKS` (:data:`EXACT_MAX_TASKS_SEQUENCED` when adjacency or contiguity makes
  states carry the last task). A few milliseconds there, so the API's n <= 12 path stays fast;
* ``lop``: :func:`solver.lop.solve_lop` for a plain LOP (``expected`` or ``mean_variance``, no
  constraints, no adjacency) with more tasks. It proves by the 3-dicycle LP where that is tight
  (input-output-like data) and closes a real LP gap up to 50 tasks with a lean CP-SAT LOP model
  (dense random data: n = 30 in ~0.25 s median, where the MILP route timed out on half);
* ``cpsat``: otherwise, the CP-SAT model (:mod:`solver.cpsat`) hinted with a heuristic order.

The objective is always recomputed by :func:`solver.scoring.score_order` on the full order.

Guarantees on determinism: for a given problem, ``seed`` and ``num_workers = 1`` the result is
reproducible when the solve ends before its time limit (the DP always is). With several CP-SAT
workers the proven-optimal *objective* is reproducible, the order may differ among ties. A solve
stopped by its time limit depends on machine speed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Literal

from ordo_server.solver.constraints import (
    check_order,
    compile_constraints,
    describe_constraint,
    precheck_constraints,
)
from ordo_server.solver.cpsat import explain_infeasibility, solve_cpsat
from ordo_server.solver.errors import InfeasibleError, InvalidProblemError
from ordo_server.solver.exact import MAX_EXACT_TASKS, solve_exact
from ordo_server.solver.heuristics import memetic_lop
from ordo_server.solver.lop import solve_lop
from ordo_server.solver.prefix import PrefixReduction, reduce_prefix
from ordo_server.solver.scoring import lop_weights, objective_weights, score_order
from ordo_server.solver.types import (
    Objective,
    Order,
    OrderingProblem,
    OrderingResult,
    SolveParams,
    SolveStatus,
)
from ordo_server.solver.validation import validate_params, validate_problem

__all__ = ["EXACT_MAX_TASKS", "EXACT_MAX_TASKS_SEQUENCED", "Method", "solve_ordering"]

logger = logging.getLogger(__name__)

Method = Literal["auto", "exact", "lop", "cpsat"]

EXACT_MAX_TASKS = 16
"""Largest remaining n for the plain subset DP (about 4 ms at n = 12, 60 ms at n = 16, one core);
CP-SAT with five mixed constraints takes 0.1-0.3 s at n = 16."""

EXACT_MAX_TASKS_SEQUENCED = 16
"""Largest remaining n for the Held-Karp DP (adjacency, contiguity; about 7 ms at n = 12,
85 ms at n = 16); CP-SAT with an adjacency term may not prove n = 16 within 10 s."""

_EXPLAIN_MIN_TIME_S = 1.0


def solve_ordering(
    problem: OrderingProblem,
    params: SolveParams | None = None,
    *,
    method: Method = "auto",
    task_names: Sequence[str] | None = None,
) -> OrderingResult:
    """Best order of ``problem`` with its objective, proven bound, gap and status.

    Parameters
    ----------
    problem : OrderingProblem
        Effects, objective, constraints and the trained prefix (re-planning is this same call
        with the prefix set).
    params : SolveParams, optional
        Time limit (seconds, CP-SAT and the LOP engine), worker count and seed.
    method : {"auto", "exact", "lop", "cpsat"}
        Force a path (tests and benchmarks); ``auto`` picks as the module docstring says.
    task_names : sequence of str, optional
        Names used in error messages instead of ``task 3``.

    Returns
    -------
    OrderingResult
        ``objective`` by the scoring oracle, ``bound >= objective``, ``status`` ``optimal`` when
        the path proved optimality, ``method`` the path taken.

    Raises
    ------
    InvalidProblemError
        Malformed input (shapes, NaN, indices, limits), or a ``method`` that cannot take it.
    InfeasibleError
        No order satisfies the constraints; ``conflict`` (and ``cycle``) name why.
    NoSolutionError
        CP-SAT found no order within the time limit.
    """
    started = time.perf_counter()
    params = params or SolveParams()
    validate_problem(problem)
    validate_params(params)
    if task_names is not None and len(task_names) != problem.n:
        raise InvalidProblemError(
            f"task_names has {len(task_names)} names for {problem.n} tasks", field="task_names"
        )
    precheck_constraints(problem, task_names)
    if len(problem.prefix) == problem.n:
        return _trained_already(problem, started, task_names)
    reduction = reduce_prefix(problem, task_names)
    chosen = _choose_method(reduction.problem, method)
    try:
        order, reduced_bound, proven, stats = _run(chosen, reduction.problem, params, started)
    except InfeasibleError as error:
        if error.conflict or error.cycle:
            raise
        remaining = params.time_limit_s - (time.perf_counter() - started)
        raise explain_infeasibility(
            reduction.problem,
            time_limit_s=max(remaining, _EXPLAIN_MIN_TIME_S),
            seed=params.seed,
            task_names=task_names,
            labels=reduction.labels,
        ) from None
    return _result(problem, reduction, order, reduced_bound, proven, chosen, stats, started)


def _choose_method(reduced: OrderingProblem, requested: Method) -> Method:
    n = reduced.n
    plain_lop = (
        reduced.objective is not Objective.MAXIMIN
        and not reduced.constraints
        and reduced.model.adjacency_mean is None
    )
    if requested == "exact" and n > MAX_EXACT_TASKS:
        raise InvalidProblemError(
            f"method exact takes at most {MAX_EXACT_TASKS} remaining tasks, got {n}",
            field="method",
        )
    if requested == "lop" and not plain_lop:
        raise InvalidProblemError(
            "method lop needs an expected or mean_variance objective without constraints or "
            "adjacency",
            field="method",
        )
    if requested != "auto":
        return requested
    sequenced = (
        reduced.model.adjacency_mean is not None or compile_constraints(reduced).needs_last_task
    )
    if n <= (EXACT_MAX_TASKS_SEQUENCED if sequenced else EXACT_MAX_TASKS):
        return "exact"
    return "lop" if plain_lop else "cpsat"


def _run(
    method: Method, reduced: OrderingProblem, params: SolveParams, started: float
) -> tuple[Order, float | None, bool, dict[str, float]]:
    """``(order, bound or None for exact, proven optimal, stats)`` of the reduced problem."""
    remaining = max(params.time_limit_s - (time.perf_counter() - started), 0.01)
    if method == "exact":
        return solve_exact(reduced).order, None, True, {}
    if method == "lop":
        weights, constant, _ = objective_weights(reduced)
        lop = solve_lop(
            weights, time_limit_s=remaining, seed=params.seed, num_workers=params.num_workers
        )
        stats = {"lop_time_to_best_s": lop.time_to_best_s}
        return lop.order, constant + lop.bound, lop.proven_optimal, stats
    hint_started = time.perf_counter()
    hint = _hint_order(reduced, seed=params.seed, time_limit_s=_hint_budget_s(reduced, remaining))
    hint_time = time.perf_counter() - hint_started
    solution = solve_cpsat(
        reduced,
        time_limit_s=max(remaining - hint_time, 0.01),
        num_workers=params.num_workers,
        seed=params.seed,
        hint=hint,
    )
    stats = {
        "hint_time_s": hint_time,
        "cpsat_wall_time_s": solution.wall_time_s,
        "cpsat_branches": float(solution.branches),
    }
    return solution.order, solution.bound, solution.proven_optimal, stats


def _hint_budget_s(problem: OrderingProblem, remaining_s: float) -> float:
    """Heuristic time before CP-SAT: 30 ms + 1 ms per task, at most a tenth of the budget."""
    return min(0.03 + 0.001 * problem.n, 0.1 * remaining_s)


def _hint_order(problem: OrderingProblem, *, seed: int, time_limit_s: float) -> Order:
    """A good unconstrained order for the CP-SAT hint (the LOP of the objective; for maximin
    the ``expected`` LOP as a proxy). CP-SAT repairs or ignores what the constraints forbid."""
    if problem.objective is Objective.MAXIMIN:
        weights, _ = lop_weights(problem.model, problem.rho)
    else:
        weights, _, _ = objective_weights(problem)
    order, _ = memetic_lop(weights, seed=seed, time_limit_s=time_limit_s)
    return order


def _result(
    problem: OrderingProblem,
    reduction: PrefixReduction,
    reduced_order: Order,
    reduced_bound: float | None,
    proven: bool,
    method: Method,
    stats: dict[str, float],
    started: float,
) -> OrderingResult:
    order = reduction.expand(reduced_order)
    violated = check_order(problem, order)
    if violated or order[: len(problem.prefix)] != problem.prefix:
        raise RuntimeError(f"solver returned an order violating {violated} (a solver bug)")
    objective = score_order(problem, order)
    bound = objective if reduced_bound is None else reduction.lift(reduced_bound)
    # a bound a rounding error below an achieved value is still the achieved value
    bound = float(max(bound, objective))
    status: SolveStatus = "optimal" if proven else "feasible"
    stats = {**stats, "remaining_tasks": float(reduction.problem.n)}
    return OrderingResult(
        order=order,
        objective=objective,
        bound=bound,
        gap=(bound - objective) / max(1.0, abs(bound)),
        status=status,
        wall_time_s=time.perf_counter() - started,
        method=method,
        stats=stats,
    )


def _trained_already(
    problem: OrderingProblem, started: float, task_names: Sequence[str] | None
) -> OrderingResult:
    """Every task is in the prefix: the order is decided; check it and score it."""
    violated = check_order(problem, problem.prefix)
    if violated:
        described = "; ".join(describe_constraint(c, task_names) for c in violated)
        raise InfeasibleError(f"the trained prefix violates {described}", conflict=violated)
    objective = score_order(problem, problem.prefix)
    return OrderingResult(
        order=problem.prefix,
        objective=objective,
        bound=objective,
        gap=0.0,
        status="optimal",
        wall_time_s=time.perf_counter() - started,
        method="prefix",
        stats={"remaining_tasks": 0.0},
    )
