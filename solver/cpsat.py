"""CP-SAT model of the constrained ordering problem (docs/design.md §7).

Model over tasks ``0..n-1``:

* one boolean ``y[a, b]`` per pair ``a < b`` ("a before b"; "b before a" is its negation),
  kept transitive by the 3-cycle constraints ``0 <= y[a,b] + y[b,c] - y[a,c] <= 1`` for
  ``a < b < c`` up to :data:`TRIPLE_MAX_TASKS` tasks; above, by the ``O(n^2)`` half-reified
  pair links ``y[a, b] => pos[a] < pos[b]`` and ``not y[a, b] => pos[a] > pos[b]`` instead
  (exact as well, a weaker LP relaxation), so that building never grows as ``n^3``;
* ``pos[j] = number of tasks before j`` (linear in ``y``; no all-different, which presolve
  would expand into ``n^2`` literals); pins and windows are bounds on it;
* when there is an adjacency term or an adjacency constraint: a circuit (``AddCircuit``) over
  arc literals ``x[i, j]`` ("j right after i") with a depot node ``n`` (``x[n, j]``: j first,
  ``x[i, n]``: i last), linked to positions by ``x[i, j] => pos[j] = pos[i] + 1``, tightened up
  to :data:`TRIPLE_MAX_TASKS` tasks by "no task between i and j" clauses (``2 n (n-1) (n-2)``);
* contiguity, kind orders and the rest: :func:`solver.constraints.add_constraint`.

Objectives: ``expected`` and ``mean_variance`` are the LOP ``sum_{a before b} W[a, b]`` (with
``W - kappa V`` for mean-variance) plus the adjacency arcs; ``maximin`` maximizes an auxiliary
``t <= S_j`` for every task, ``S_j`` linear in ``y``.

Scaling: CP-SAT needs integer coefficients. Every coefficient ``c`` (original units) becomes
``round(c * OBJECTIVE_SCALE)``, ``OBJECTIVE_SCALE = 10**9`` (lowered by powers of ten only when
the objective could overflow 2^60). The reported objective is recomputed by
:mod:`solver.scoring`; the bound is CP-SAT's bound divided by the scale plus the worst-case
upward rounding error (``sum`` of positive per-term errors, or their ``max`` over tasks for
maximin), so ``bound >= true optimum`` always holds.

Determinism: with ``num_workers = 1`` and a fixed seed a solve that ends before its time limit is
reproducible. With several workers the order found may differ between runs among ties, but an
*optimal* objective value is the same.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from ortools.sat.python import cp_model

from ordo_server.solver.constraints import (
    OrderVariables,
    add_constraint,
    describe_constraint,
    needs_arcs,
)
from ordo_server.solver.errors import InfeasibleError, NoSolutionError
from ordo_server.solver.presolve import PairFixing, fix_pairs
from ordo_server.solver.scoring import objective_weights
from ordo_server.solver.types import Constraint, FloatMatrix, Objective, Order, OrderingProblem

__all__ = [
    "OBJECTIVE_SCALE",
    "TRIPLE_MAX_TASKS",
    "CpsatSolution",
    "OrderingModel",
    "ScaledObjective",
    "build_ordering_model",
    "explain_infeasibility",
    "solve_cpsat",
]

logger = logging.getLogger(__name__)

OBJECTIVE_SCALE = 10**9
"""Integer units per original objective unit in the CP-SAT model."""

TRIPLE_MAX_TASKS = 40
"""Most tasks for which the model enumerates triples of tasks (transitivity rows, betweenness
clauses): ``C(40, 3) = 9880`` rows. Above it the model is ``O(n^2)`` in size (pair links)."""

_MAX_SCALED = 2**60  # keep |scaled objective| far from int64 overflow inside CP-SAT


@dataclass(frozen=True, slots=True)
class ScaledObjective:
    """How the integer CP-SAT objective maps back to original units.

    ``true objective <= constant + cp_value / scale + slack`` for every feasible order.
    """

    scale: int
    constant: float
    slack: float

    def bound_from(self, cp_bound: float) -> float:
        """An upper bound on the optimum (original units) from CP-SAT's objective bound."""
        return float(self.constant + cp_bound / self.scale + self.slack)


@dataclass(frozen=True, slots=True)
class OrderingModel:
    """A built CP-SAT model with its variable handles (inspectable in tests).

    Attributes
    ----------
    model : CpModel
        The model.
    variables : OrderVariables
        Pair literals, positions and circuit arcs.
    objective : ScaledObjective or None
        ``None`` for a pure feasibility model.
    enforcement : tuple of BoolVar
        When built with ``enforce_constraints=True``: one literal per constraint of the
        problem, in order (assume them all to solve; a conflict is a subset of them).
    """

    model: cp_model.CpModel
    variables: OrderVariables
    objective: ScaledObjective | None
    enforcement: tuple[cp_model.IntVar, ...]


@dataclass(frozen=True, slots=True)
class CpsatSolution:
    """Result of :func:`solve_cpsat`.

    ``bound`` is an upper bound on the optimum in original units; ``proven_optimal`` means
    CP-SAT closed the gap of the scaled model (so the order is optimal up to the rounding slack).
    """

    order: Order
    bound: float
    proven_optimal: bool
    status: str
    wall_time_s: float
    branches: int


def build_ordering_model(
    problem: OrderingProblem,
    *,
    with_objective: bool = True,
    enforce_constraints: bool = False,
) -> OrderingModel:
    """Build the CP-SAT model of ``problem`` (prefix excluded: pass a reduced problem or pin it).

    Size: ``n (n-1) / 2`` pair literals, ``n^2`` arcs when adjacency is involved, and, up to
    :data:`TRIPLE_MAX_TASKS` tasks, a transitivity constraint for each triple ``a < b < c`` with
    at most one pair fixed by the presolve (:func:`solver.presolve.fix_pairs`; up to
    ``C(n, 3)``). A triple with two or three fixed pairs needs none: the fixed relation is
    transitively closed, so its third pair is then fixed too or free either way. Above
    :data:`TRIPLE_MAX_TASKS` tasks no triple is enumerated: two half-reified position links per
    free pair (``n (n-1)`` constraints) keep the pairs transitive, and the circuit drops its
    betweenness clauses, so the model has ``O(n^2 + size of the constraints)`` constraints.

    Pairs the constraints fix become constants and position domains shrink to the presolved
    ranges. With ``enforce_constraints=True`` (explaining infeasibility) nothing is presolved,
    since fixings hold only when every constraint does.
    """
    n = problem.n
    model = cp_model.CpModel()
    fixing = None if enforce_constraints else fix_pairs(problem)
    variables = _order_variables(model, n, with_arcs=needs_arcs(problem), fixing=fixing)
    enforcement: list[cp_model.IntVar] = []
    for index, constraint in enumerate(problem.constraints):
        literal = model.new_bool_var(f"enforce_{index}") if enforce_constraints else None
        add_constraint(model, variables, constraint, literal)
        if literal is not None:
            enforcement.append(literal)
    objective = _add_objective(model, variables, problem) if with_objective else None
    return OrderingModel(model, variables, objective, tuple(enforcement))


def _order_variables(
    model: cp_model.CpModel, n: int, *, with_arcs: bool, fixing: PairFixing | None
) -> OrderVariables:
    pairs: dict[tuple[int, int], cp_model.IntVar] = {}
    fixed: dict[tuple[int, int], bool] = {}
    free = np.ones((n, n), dtype=np.bool_)
    for a, b in itertools.combinations(range(n), 2):
        known = None if fixing is None else fixing.fixed(a, b)
        if known is None:
            pairs[a, b] = model.new_bool_var(f"y_{a}_{b}")
        else:
            pairs[a, b] = model.new_constant(int(known))
            fixed[a, b] = known
            free[a, b] = free[b, a] = False
    triples = n <= TRIPLE_MAX_TASKS
    if triples:
        for a, b, c in _triples_to_constrain(free):
            model.add_linear_constraint(pairs[a, b] + pairs[b, c] - pairs[a, c], 0, 1)
    positions = []
    for j in range(n):
        low, high = (0, n - 1) if fixing is None else (fixing.earliest[j], fixing.latest[j])
        positions.append(model.new_int_var(int(low), int(high), f"pos_{j}"))
    for j in range(n):
        earlier = [pairs[i, j] for i in range(j)]
        later = [pairs[j, i] for i in range(j + 1, n)]
        # pos[j] = #{i < j before j} + #{i > j before j} = sum y[i, j] + sum (1 - y[j, i])
        model.add(positions[j] == sum(earlier) + (n - 1 - j) - sum(later))
    if not triples:
        _add_pair_links(model, pairs, positions, fixed)
    arcs: dict[tuple[int, int], cp_model.IntVar] = {}
    if with_arcs:
        arcs = _add_circuit(model, pairs, positions, n, betweenness=triples)
    return OrderVariables(n=n, pairs=pairs, positions=positions, arcs=arcs, fixed=fixed)


def _triples_to_constrain(free: npt.NDArray[np.bool_]) -> list[tuple[int, int, int]]:
    """Triples ``a < b < c`` with at least two free pairs (``free``: (n, n), symmetric)."""
    n = free.shape[0]
    if n < 3:
        return []
    a, b, c = np.array(list(itertools.combinations(range(n), 3)), dtype=np.int64).T
    keep = free[a, b].astype(np.int64) + free[b, c] + free[a, c] >= 2
    return [(int(x), int(y), int(z)) for x, y, z in zip(a[keep], b[keep], c[keep], strict=True)]


def _add_pair_links(
    model: cp_model.CpModel,
    pairs: dict[tuple[int, int], cp_model.IntVar],
    positions: list[cp_model.IntVar],
    fixed: dict[tuple[int, int], bool],
) -> None:
    """``y[a, b] => pos[a] < pos[b]`` and ``not y[a, b] => pos[a] > pos[b]`` per free pair.

    Strictly ordered integer positions make the pair relation acyclic, hence transitive, with
    two constraints per pair (``n (n-1)`` in all) instead of ``C(n, 3)`` transitivity rows;
    a pair fixed by the presolve gets its one unconditional inequality.
    """
    for (a, b), literal in pairs.items():
        known = fixed.get((a, b))
        if known is not None:
            model.add(positions[a] < positions[b] if known else positions[a] > positions[b])
            continue
        model.add(positions[a] < positions[b]).only_enforce_if(literal)
        model.add(positions[a] > positions[b]).only_enforce_if(literal.negated())


def _add_circuit(
    model: cp_model.CpModel,
    pairs: dict[tuple[int, int], cp_model.IntVar],
    positions: list[cp_model.IntVar],
    n: int,
    *,
    betweenness: bool,
) -> dict[tuple[int, int], cp_model.IntVar]:
    """Circuit over the arcs, linked to positions; ``betweenness`` adds the ``O(n^3)`` clauses
    "no task lies between i and j" that tighten the LP (exact without them)."""
    depot = n
    arcs: dict[tuple[int, int], cp_model.IntVar] = {}
    for task in range(n):
        first = model.new_bool_var(f"first_{task}")
        last = model.new_bool_var(f"last_{task}")
        arcs[depot, task] = first
        arcs[task, depot] = last
        model.add(positions[task] == 0).only_enforce_if(first)
        model.add(positions[task] == n - 1).only_enforce_if(last)
    for i, j in itertools.permutations(range(n), 2):
        arc = model.new_bool_var(f"x_{i}_{j}")
        arcs[i, j] = arc
        model.add(positions[j] == positions[i] + 1).only_enforce_if(arc)
        model.add_implication(arc, _before(pairs, i, j))
        if not betweenness:
            continue
        # nothing lies between i and j: every other task is on the same side of both, which
        # tightens the LP far more than the position link alone
        for k in range(n):
            if k not in (i, j):
                model.add_bool_or(
                    [arc.negated(), _before(pairs, k, i).negated(), _before(pairs, k, j)]
                )
                model.add_bool_or(
                    [arc.negated(), _before(pairs, k, i), _before(pairs, k, j).negated()]
                )
    model.add_circuit([(i, j, arc) for (i, j), arc in arcs.items()])
    return arcs


def _before(pairs: dict[tuple[int, int], cp_model.IntVar], a: int, b: int) -> cp_model.BoolVarT:
    return pairs[a, b] if a < b else pairs[b, a].negated()


def _add_objective(
    model: cp_model.CpModel, variables: OrderVariables, problem: OrderingProblem
) -> ScaledObjective:
    if problem.objective is Objective.MAXIMIN:
        return _add_maximin_objective(model, variables, problem)
    weights, constant, adjacency = objective_weights(problem)
    n = problem.n
    coefficients: list[float] = []
    literals: list[cp_model.IntVar] = []
    for (a, b), literal in variables.pairs.items():
        known = variables.fixed.get((a, b))
        if known is not None:
            constant += weights[a, b] if known else weights[b, a]
            continue
        # W[a,b] y + W[b,a] (1 - y): the constant part goes to the offset
        constant += weights[b, a]
        coefficients.append(weights[a, b] - weights[b, a])
        literals.append(literal)
    if adjacency is not None:
        for (i, j), arc in variables.arcs.items():
            if i < n and j < n:
                coefficients.append(adjacency[i, j])
                literals.append(arc)
    scale = _safe_scale(np.abs(coefficients).sum() if coefficients else 0.0)
    scaled = [round(c * scale) for c in coefficients]
    slack = sum(max(0.0, c - s / scale) for c, s in zip(coefficients, scaled, strict=True))
    model.maximize(sum(s * lit for s, lit in zip(scaled, literals, strict=True) if s != 0))
    return ScaledObjective(scale=scale, constant=constant, slack=slack)


def _add_maximin_objective(
    model: cp_model.CpModel, variables: OrderVariables, problem: OrderingProblem
) -> ScaledObjective:
    """``max t`` s.t. ``t <= S_j`` with ``S_j = base_j + sum_i D[i, j] [i before j]``."""
    n = problem.n
    data = problem.model
    backward = data.backward_mean.copy()
    np.fill_diagonal(backward, 0.0)
    forward = data.forward_mean.copy()
    np.fill_diagonal(forward, 0.0)
    step: FloatMatrix = problem.rho * forward - backward
    base: FloatMatrix = data.level_mean + backward.sum(axis=0)
    magnitude = float(np.abs(base).max() + np.abs(step).sum(axis=0).max())
    scale = _safe_scale(magnitude)
    limit = math.ceil(magnitude * scale) + 1
    floor = model.new_int_var(-limit, limit, "worst_utility")
    worst_slack = 0.0
    for j in range(n):
        scaled_base = round(base[j] * scale)
        slack = max(0.0, base[j] - scaled_base / scale)
        terms = []
        for i in range(n):
            if i == j or step[i, j] == 0.0:
                continue
            coefficient = round(step[i, j] * scale)
            slack += max(0.0, step[i, j] - coefficient / scale)
            terms.append(coefficient * variables.before(i, j))
        model.add(floor <= scaled_base + sum(terms))
        worst_slack = max(worst_slack, slack)
    model.maximize(floor)
    return ScaledObjective(scale=scale, constant=0.0, slack=worst_slack)


def _safe_scale(magnitude: float) -> int:
    """``OBJECTIVE_SCALE``, divided by 10 until ``magnitude * scale`` stays below 2^60."""
    scale = OBJECTIVE_SCALE
    while scale > 1 and magnitude * scale > _MAX_SCALED:
        scale //= 10
    if scale != OBJECTIVE_SCALE:
        logger.warning("objective scale lowered to %d to avoid overflow", scale)
    return scale


def add_order_hint(ordering: OrderingModel, order: Sequence[int]) -> None:
    """Hint CP-SAT with ``order``: pair literals, positions and arcs (a complete assignment)."""
    variables = ordering.variables
    model = ordering.model
    model.clear_hints()  # type: ignore[no-untyped-call]
    position = {task: k for k, task in enumerate(order)}
    for (a, b), literal in variables.pairs.items():
        if (a, b) not in variables.fixed:
            model.add_hint(literal, position[a] < position[b])
    for task, variable in enumerate(variables.positions):
        model.add_hint(variable, position[task])
    n = variables.n
    successor = {order[k]: order[k + 1] for k in range(n - 1)}
    if n:
        successor[order[-1]] = n
        successor[n] = order[0]
    for (i, j), arc in variables.arcs.items():
        model.add_hint(arc, successor.get(i) == j)


_PORTFOLIO = ("ordo_lp2", "quick_restart", "max_lp", "pseudo_costs", "reduced_costs", "core")
"""Full-problem subsolvers by worker count. ``ordo_lp2`` is ``default_lp`` with
``linearization_level = 2`` (the stock ``default_lp`` forces level 1, which never proved a
random n = 20 LOP within 10 s in our measurements)."""


def solver_parameters(*, time_limit_s: float, num_workers: int, seed: int) -> cp_model.CpSolver:
    """A CP-SAT solver with the limits of one solve.

    ``linearization_level = 2`` puts the transitivity constraints into the LP relaxation, which
    is what proves LOPs (measured on random dense instances, ``B ~ N(0, 0.05)``: with one worker
    n = 20 in ~0.05 s and n = 30 in ~0.6-1 s at level 2, none within 10 s at the default level).
    With several workers the portfolio is :data:`_PORTFOLIO` cut to ``num_workers``; large
    neighbourhood search joins only from 4 workers up, so that 2 workers do not spend one core
    on LNS while the LP worker proves.
    """
    solver = cp_model.CpSolver()
    parameters = solver.parameters
    parameters.max_time_in_seconds = time_limit_s
    parameters.num_workers = num_workers
    parameters.random_seed = seed
    parameters.linearization_level = 2
    # No generic cuts (MIR, zero-half, ...): the transitivity rows already make the LP; the
    # extra cut rounds cost more than they prune. On n = 30 with five mixed constraints, one
    # worker, this took the median solve from 1.14 s to 0.72 s (20 seeds) and the slowest
    # seeds from ~5 s to ~1 s.
    parameters.cut_level = 0
    if num_workers > 1:
        parameters.merge_text_format('subsolver_params { name: "ordo_lp2" linearization_level: 2 }')
        parameters.subsolvers.extend(_PORTFOLIO[:num_workers])
        parameters.use_lns = num_workers >= 4
    return solver


def solve_cpsat(
    problem: OrderingProblem,
    *,
    time_limit_s: float,
    num_workers: int,
    seed: int,
    hint: Sequence[int] | None = None,
) -> CpsatSolution:
    """Solve ``problem`` (no prefix; see :mod:`solver.prefix`) with CP-SAT.

    Raises
    ------
    InfeasibleError
        CP-SAT proved that no order satisfies the constraints (conflict not named here).
    NoSolutionError
        No order was found within ``time_limit_s``.
    """
    if problem.prefix:
        raise ValueError("solve_cpsat takes a problem without prefix (reduce it first)")
    ordering = build_ordering_model(problem)
    if hint is not None:
        add_order_hint(ordering, hint)
    solver = solver_parameters(time_limit_s=time_limit_s, num_workers=num_workers, seed=seed)
    status = solver.solve(ordering.model)
    name = solver.status_name(status)
    if status == cp_model.INFEASIBLE:
        raise InfeasibleError("no order satisfies the constraints")
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        if status == cp_model.MODEL_INVALID:
            raise RuntimeError(f"CP-SAT rejected the model: {ordering.model.validate()}")
        raise NoSolutionError(f"no order found within {time_limit_s:g} s (CP-SAT status {name})")
    positions = [solver.value(p) for p in ordering.variables.positions]
    order = tuple(int(task) for task in np.argsort(positions, kind="stable"))
    assert ordering.objective is not None
    return CpsatSolution(
        order=order,
        bound=float(ordering.objective.bound_from(solver.best_objective_bound)),
        proven_optimal=status == cp_model.OPTIMAL,
        status=name,
        wall_time_s=solver.wall_time,
        branches=solver.num_branches,
    )


def explain_infeasibility(
    problem: OrderingProblem,
    *,
    time_limit_s: float,
    seed: int = 0,
    task_names: Sequence[str] | None = None,
    labels: Sequence[Constraint | None] | None = None,
) -> InfeasibleError:
    """An :class:`InfeasibleError` naming constraints of ``problem`` that cannot hold together.

    Every constraint gets an enforcement literal, all are assumed, and CP-SAT's
    ``SufficientAssumptionsForInfeasibility`` gives a conflicting subset, which is then shrunk
    by deletion (drop one, re-solve; keep it dropped while still infeasible) within the time
    limit. ``labels[k]``, when given, is what constraint ``k`` stands for in the caller's
    problem (``None``: the trained prefix); the error's ``conflict`` holds those.
    """
    ordering = build_ordering_model(problem, with_objective=False, enforce_constraints=True)
    names = list(labels) if labels is not None else list(problem.constraints)
    core = list(range(len(problem.constraints)))
    budget = max(time_limit_s, 0.05)
    status, found = _solve_assuming(ordering, core, budget, seed)
    if status != cp_model.INFEASIBLE:
        return InfeasibleError("the constraints could not be proven consistent in time")
    core = found
    for index in list(core):
        trial = [k for k in core if k != index]
        status, found = _solve_assuming(ordering, trial, budget / max(len(core), 1), seed)
        if status == cp_model.INFEASIBLE:
            core = [k for k in trial if k in found] or trial
    conflict = [names[k] for k in core]
    described = "; ".join(
        "the trained prefix" if c is None else describe_constraint(c, task_names) for c in conflict
    )
    return InfeasibleError(
        f"these constraints cannot hold together: {described}",
        conflict=[c for c in conflict if c is not None],
    )


def _solve_assuming(
    ordering: OrderingModel, indices: list[int], time_limit_s: float, seed: int
) -> tuple[int, list[int]]:
    """Solve with the enforcement literals ``indices`` assumed; return the status and, when
    infeasible, the indices CP-SAT found sufficient."""
    model = ordering.model
    model.clear_assumptions()
    model.add_assumptions([ordering.enforcement[k] for k in indices])
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = seed
    status = solver.solve(model)
    if status != cp_model.INFEASIBLE:
        return int(status), []
    by_variable = {ordering.enforcement[k].index: k for k in indices}
    sufficient = solver.sufficient_assumptions_for_infeasibility()
    return int(status), sorted(by_variable[v] for v in sufficient if v in by_variable)
