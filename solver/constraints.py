"""Constraints on orders: checking, cheap infeasibility pre-checks, DP tables and CP-SAT helpers.

Positions are 0-based stage indices; a pinned position ``-1`` means the last stage ``n - 1``.

* :func:`check_order` lists the constraints an order violates (tests and the service use it).
* :func:`precheck_constraints` rejects contradictions that are cheap to see, before any search:
  a precedence cycle (networkx; kind orders expand to precedences, a required adjacency
  ``a -> b`` implies ``a`` before ``b``) named task by task, two tasks pinned to one position,
  a task pinned twice, a pin or window outside the positions, empty pin/window intersections,
  required adjacencies that branch, a pair both required and forbidden.
* :func:`compile_constraints` turns the constraints into bitmask tables for the subset DP.
* :func:`add_constraint` adds one constraint to a CP-SAT model, optionally under an enforcement
  literal, so that an infeasible set can be explained with assumptions (see
  :func:`solver.cpsat.explain_infeasibility`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import networkx as nx
import numpy as np
import numpy.typing as npt
from ortools.sat.python import cp_model

from ordo_server.solver.errors import InfeasibleError
from ordo_server.solver.types import (
    Constraint,
    ContiguousGroup,
    ForbiddenAdjacency,
    KindOrder,
    OrderingProblem,
    PinnedPosition,
    PositionWindow,
    Precedence,
    RequiredAdjacency,
)
from ordo_server.solver.validation import validate_order

__all__ = [
    "CompiledConstraints",
    "OrderVariables",
    "add_constraint",
    "check_order",
    "compile_constraints",
    "describe_constraint",
    "find_precedence_cycle",
    "implied_precedences",
    "needs_arcs",
    "normalized_position",
    "precedence_graph",
    "precheck_constraints",
    "task_label",
]

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_Fail: TypeAlias = Callable[..., InfeasibleError]
_Enforce: TypeAlias = Callable[[cp_model.Constraint], None]


# --- naming ---------------------------------------------------------------------------------------


def task_label(task: int, task_names: Sequence[str] | None = None) -> str:
    """``task_names[task]`` when names are given, else ``"task 3"``."""
    if task_names is not None:
        return str(task_names[task])
    return f"task {task}"


def describe_constraint(constraint: Constraint, task_names: Sequence[str] | None = None) -> str:
    """A one-line human description of ``constraint`` (0-based positions)."""

    def label(task: int) -> str:
        return task_label(task, task_names)

    def labels(tasks: frozenset[int]) -> str:
        return "{" + ", ".join(label(t) for t in sorted(tasks)) + "}"

    match constraint:
        case Precedence(before=before, after=after):
            return f"precedence: {label(before)} before {label(after)}"
        case PinnedPosition(task=task, position=position):
            where = "the last position" if position == -1 else f"position {position}"
            return f"pinned: {label(task)} at {where}"
        case PositionWindow(task=task, earliest=earliest, latest=latest):
            return f"window: {label(task)} at positions {earliest}..{latest}"
        case ForbiddenAdjacency(first=first, second=second):
            return f"forbidden adjacency: {label(second)} right after {label(first)}"
        case RequiredAdjacency(first=first, second=second):
            return f"required adjacency: {label(second)} right after {label(first)}"
        case KindOrder(earlier=earlier, later=later):
            return f"kind order: {labels(earlier)} before {labels(later)}"
        case ContiguousGroup(tasks=tasks):
            return f"contiguous group: {labels(tasks)}"
    raise TypeError(f"unknown constraint {constraint!r}")


def normalized_position(position: int, n: int) -> int:
    """Map a pinned position to ``0..`` (``-1`` is the last stage, ``n - 1``)."""
    return n - 1 if position == -1 else position


# --- checking -------------------------------------------------------------------------------------


def check_order(problem: OrderingProblem, order: Sequence[int]) -> list[Constraint]:
    """The constraints of ``problem`` that ``order`` violates, in their original order.

    ``order`` must be a permutation of ``0..n-1``. The prefix is not a constraint: compare
    ``order[:len(problem.prefix)]`` with it separately. Cost ``O(n + sum of constraint sizes)``.
    """
    checked = validate_order(order, problem.n)
    position = np.empty(problem.n, dtype=np.int64)
    position[list(checked)] = np.arange(problem.n)
    return [c for c in problem.constraints if not _holds(c, position, problem.n)]


def _holds(constraint: Constraint, position: IntArray, n: int) -> bool:
    match constraint:
        case Precedence(before=before, after=after):
            return bool(position[before] < position[after])
        case PinnedPosition(task=task, position=pinned):
            return bool(position[task] == normalized_position(pinned, n))
        case PositionWindow(task=task, earliest=earliest, latest=latest):
            return bool(earliest <= position[task] <= latest)
        case ForbiddenAdjacency(first=first, second=second):
            return bool(position[second] != position[first] + 1)
        case RequiredAdjacency(first=first, second=second):
            return bool(position[second] == position[first] + 1)
        case KindOrder(earlier=earlier, later=later):
            if not earlier or not later:
                return True
            return bool(max(position[t] for t in earlier) < min(position[t] for t in later))
        case ContiguousGroup(tasks=tasks):
            if not tasks:
                return True
            spots = [int(position[t]) for t in tasks]
            return max(spots) - min(spots) == len(tasks) - 1
    raise TypeError(f"unknown constraint {constraint!r}")


# --- precedence graph -----------------------------------------------------------------------------


def implied_precedences(constraints: Sequence[Constraint]) -> Iterator[tuple[int, int, Constraint]]:
    """Yield ``(before, after, source)`` for every pair some constraint orders.

    Precedences as given; a kind order expands to every (earlier, later) pair; a required
    adjacency ``first -> second`` implies ``first`` before ``second``.
    """
    for constraint in constraints:
        match constraint:
            case Precedence(before=before, after=after):
                yield before, after, constraint
            case RequiredAdjacency(first=first, second=second):
                yield first, second, constraint
            case KindOrder(earlier=earlier, later=later):
                for before in sorted(earlier):
                    for after in sorted(later):
                        yield before, after, constraint


def precedence_graph(problem: OrderingProblem) -> nx.DiGraph:
    """Directed graph on ``0..n-1`` with an edge ``a -> b`` when ``a`` must precede ``b``.

    Each edge's ``sources`` attribute lists the constraints that imply it.
    """
    graph = nx.DiGraph()
    graph.add_nodes_from(range(problem.n))
    for before, after, source in implied_precedences(problem.constraints):
        if graph.has_edge(before, after):
            graph.edges[before, after]["sources"].append(source)
        else:
            graph.add_edge(before, after, sources=[source])
    return graph


def find_precedence_cycle(
    problem: OrderingProblem, task_names: Sequence[str] | None = None
) -> None:
    """Raise :class:`InfeasibleError` naming a precedence cycle task by task, if there is one.

    The error's ``cycle`` holds the tasks in order with the first repeated at the end and its
    ``conflict`` the constraints along the cycle (one per edge, first source).
    """
    graph = precedence_graph(problem)
    try:
        edges = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    cycle = [int(edge[0]) for edge in edges] + [int(edges[0][0])]
    conflict: list[Constraint] = []
    for before, after in edges:
        source = graph.edges[before, after]["sources"][0]
        if source not in conflict:
            conflict.append(source)
    path = " -> ".join(task_label(task, task_names) for task in cycle)
    raise InfeasibleError(f"precedence cycle: {path}", conflict=conflict, cycle=cycle)


# --- cheap pre-checks -----------------------------------------------------------------------------


def precheck_constraints(problem: OrderingProblem, task_names: Sequence[str] | None = None) -> None:
    """Raise :class:`InfeasibleError` for contradictions visible without search.

    Checked in this order: a precedence cycle; a pin or window that lies outside
    ``0..n-1``; a task pinned to two positions; two tasks pinned to one position; a task whose
    pins and windows leave no position; a task with two different required successors or
    predecessors; a pair both required and forbidden adjacent. Anything else is left to the
    search, which explains it with assumptions.
    """
    find_precedence_cycle(problem, task_names)
    n = problem.n

    def fail(reason: str, *conflict: Constraint) -> InfeasibleError:
        described = "; ".join(describe_constraint(c, task_names) for c in conflict)
        return InfeasibleError(f"{reason} ({described})", conflict=conflict)

    pins: dict[int, PinnedPosition] = {}
    pinned_at: dict[int, PinnedPosition] = {}
    for constraint in problem.constraints:
        if isinstance(constraint, PinnedPosition):
            position = normalized_position(constraint.position, n)
            if position >= n:
                raise fail(f"position {position} does not exist with {n} tasks", constraint)
            other = pins.get(constraint.task)
            if other is not None and normalized_position(other.position, n) != position:
                raise fail(
                    f"{task_label(constraint.task, task_names)} is pinned to two positions",
                    other,
                    constraint,
                )
            holder = pinned_at.get(position)
            if holder is not None and holder.task != constraint.task:
                raise fail(f"two tasks are pinned to position {position}", holder, constraint)
            pins[constraint.task] = constraint
            pinned_at[position] = constraint
        elif isinstance(constraint, PositionWindow) and constraint.earliest >= n:
            raise fail(f"no position >= {constraint.earliest} exists with {n} tasks", constraint)
    _precheck_ranges(problem, fail, task_names)
    _precheck_adjacency(problem, fail, task_names)


def _precheck_ranges(
    problem: OrderingProblem,
    fail: _Fail,
    task_names: Sequence[str] | None,
) -> None:
    n = problem.n
    ranges: dict[int, tuple[int, int, list[Constraint]]] = {}
    for constraint in problem.constraints:
        if isinstance(constraint, PinnedPosition):
            position = normalized_position(constraint.position, n)
            low, high, task = position, position, constraint.task
        elif isinstance(constraint, PositionWindow):
            low, high, task = constraint.earliest, constraint.latest, constraint.task
        else:
            continue
        old_low, old_high, sources = ranges.get(task, (0, n - 1, []))
        sources = [*sources, constraint]
        low, high = max(low, old_low), min(high, old_high)
        if low > high:
            raise fail(
                f"no position satisfies every pin and window of {task_label(task, task_names)}",
                *sources,
            )
        ranges[task] = (low, high, sources)


def _precheck_adjacency(
    problem: OrderingProblem,
    fail: _Fail,
    task_names: Sequence[str] | None,
) -> None:
    successor: dict[int, RequiredAdjacency] = {}
    predecessor: dict[int, RequiredAdjacency] = {}
    forbidden: dict[tuple[int, int], ForbiddenAdjacency] = {}
    for constraint in problem.constraints:
        if isinstance(constraint, ForbiddenAdjacency):
            forbidden[constraint.first, constraint.second] = constraint
    for constraint in problem.constraints:
        if not isinstance(constraint, RequiredAdjacency):
            continue
        first, second = constraint.first, constraint.second
        other = successor.get(first)
        if other is not None and other.second != second:
            raise fail(
                f"{task_label(first, task_names)} cannot be followed by two different tasks",
                other,
                constraint,
            )
        other = predecessor.get(second)
        if other is not None and other.first != first:
            raise fail(
                f"{task_label(second, task_names)} cannot follow two different tasks",
                other,
                constraint,
            )
        banned = forbidden.get((first, second))
        if banned is not None:
            raise fail("an adjacency is both required and forbidden", constraint, banned)
        successor[first] = constraint
        predecessor[second] = constraint


# --- tables for the subset DP ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompiledConstraints:
    """Constraints as tables over task indices, for the subset DP.

    Attributes
    ----------
    predecessors : IntArray, shape (n,)
        Bitmask of the tasks that must precede task j (direct precedences, kind orders and
        required adjacencies; not transitively closed, which the DP does not need).
    earliest, latest : IntArray, shape (n,)
        Allowed positions of task j (pins and windows intersected; ``0`` and ``n - 1`` if none).
    forbidden_next : BoolArray, shape (n, n)
        ``forbidden_next[i, j]``: j may not come right after i.
    required_next, required_prev : IntArray, shape (n,)
        The task that must come right after / right before j, or ``-1``.
    groups : tuple of int
        Bitmasks of the contiguous groups with at least two tasks.
    """

    n: int
    predecessors: IntArray
    earliest: IntArray
    latest: IntArray
    forbidden_next: BoolArray
    required_next: IntArray
    required_prev: IntArray
    groups: tuple[int, ...]

    @property
    def needs_last_task(self) -> bool:
        """Whether feasibility of a step depends on the previous task (adjacency, contiguity)."""
        return bool(
            self.forbidden_next.any() or (self.required_next >= 0).any() or len(self.groups) > 0
        )


def compile_constraints(problem: OrderingProblem) -> CompiledConstraints:
    """Tables of :class:`CompiledConstraints` for ``problem``; cost ``O(n^2 + constraints)``.

    Contradictions are not detected here: a table that admits no order makes the DP report
    infeasibility. Run :func:`precheck_constraints` first for clear messages.
    """
    n = problem.n
    predecessors = np.zeros(n, dtype=np.int64)
    earliest = np.zeros(n, dtype=np.int64)
    latest = np.full(n, n - 1, dtype=np.int64)
    forbidden_next = np.zeros((n, n), dtype=np.bool_)
    required_next = np.full(n, -1, dtype=np.int64)
    required_prev = np.full(n, -1, dtype=np.int64)
    groups: list[int] = []
    for before, after, _ in implied_precedences(problem.constraints):
        predecessors[after] |= 1 << before
    for constraint in problem.constraints:
        match constraint:
            case PinnedPosition(task=task, position=position):
                spot = normalized_position(position, n)
                earliest[task] = max(earliest[task], spot)
                latest[task] = min(latest[task], spot)
            case PositionWindow(task=task, earliest=low, latest=high):
                earliest[task] = max(earliest[task], low)
                latest[task] = min(latest[task], high)
            case ForbiddenAdjacency(first=first, second=second):
                forbidden_next[first, second] = True
            case RequiredAdjacency(first=first, second=second):
                required_next[first] = second
                required_prev[second] = first
            case ContiguousGroup(tasks=tasks) if 2 <= len(tasks) < n:
                groups.append(sum(1 << t for t in tasks))
            case _:
                pass
    return CompiledConstraints(
        n=n,
        predecessors=predecessors,
        earliest=earliest,
        latest=latest,
        forbidden_next=forbidden_next,
        required_next=required_next,
        required_prev=required_prev,
        groups=tuple(groups),
    )


# --- CP-SAT helpers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderVariables:
    """Handles of the order variables of a CP-SAT model over tasks ``0..n-1``.

    Attributes
    ----------
    pairs : mapping (a, b) -> BoolVar, a < b
        True when ``a`` is trained before ``b``; ``b`` before ``a`` is its negation.
    positions : sequence of IntVar
        0-based position of each task, equal to the number of tasks before it.
    arcs : mapping (i, j) -> BoolVar
        Circuit arcs, present only when the model needs adjacency: ``(i, j)`` true when j comes
        right after i; node ``n`` is the depot, so ``(n, j)`` means j is first and ``(i, n)``
        that i is last. A missing pair means the arc is impossible.
    fixed : mapping (a, b) -> bool, a < b
        Pairs the presolve fixed (their ``pairs`` entry is a constant): ``True`` when ``a``
        always precedes ``b``.
    """

    n: int
    pairs: Mapping[tuple[int, int], cp_model.IntVar]
    positions: Sequence[cp_model.IntVar]
    arcs: Mapping[tuple[int, int], cp_model.IntVar]
    fixed: Mapping[tuple[int, int], bool] = field(default_factory=dict)

    def before(self, a: int, b: int) -> cp_model.BoolVarT:
        """Literal "``a`` is trained before ``b``" (``a != b``)."""
        if a < b:
            return self.pairs[a, b]
        return self.pairs[b, a].negated()


def needs_arcs(problem: OrderingProblem) -> bool:
    """Whether the CP-SAT model needs circuit arcs: only for an adjacency term in the objective.

    Adjacency constraints alone are cheaper as position constraints (``n^2`` arc literals and a
    circuit slow the search down markedly at n = 30).
    """
    return problem.model.adjacency_mean is not None


def add_constraint(
    model: cp_model.CpModel,
    variables: OrderVariables,
    constraint: Constraint,
    enforcement: cp_model.IntVar | None = None,
) -> None:
    """Add ``constraint`` to ``model``, enforced only when ``enforcement`` is true (if given).

    Contiguity uses the pure-boolean form "every task outside the group lies on the same side of
    every member" (``|G| - 1`` equivalences per outside task), which propagates on the order
    literals directly, without position min/max.
    """
    n = variables.n
    literals: list[cp_model.BoolVarT]

    def enforce(built: cp_model.Constraint) -> None:
        if enforcement is not None:
            built.only_enforce_if(enforcement)

    match constraint:
        case Precedence(before=before, after=after):
            enforce(model.add_bool_and([variables.before(before, after)]))
        case KindOrder(earlier=earlier, later=later):
            literals = [variables.before(a, b) for a in sorted(earlier) for b in sorted(later)]
            if literals:
                enforce(model.add_bool_and(literals))
        case PinnedPosition(task=task, position=position):
            spot = normalized_position(position, n)
            enforce(model.add(variables.positions[task] == spot))
        case PositionWindow(task=task, earliest=earliest, latest=latest):
            enforce(model.add_linear_constraint(variables.positions[task], earliest, latest))
        case ForbiddenAdjacency(first=first, second=second):
            arc = variables.arcs.get((first, second))
            if arc is not None:
                enforce(model.add_bool_and([arc.negated()]))
            else:
                # without a circuit: if first precedes second, at least one task lies between
                built = model.add(variables.positions[second] >= variables.positions[first] + 2)
                built.only_enforce_if(_all_of(variables.before(first, second), enforcement))
        case RequiredAdjacency(first=first, second=second):
            arc = variables.arcs.get((first, second))
            if arc is not None:
                enforce(model.add_bool_and([arc]))
            else:
                enforce(model.add_bool_and([variables.before(first, second)]))
                enforce(model.add(variables.positions[second] == variables.positions[first] + 1))
        case ContiguousGroup(tasks=tasks):
            _add_contiguous(model, variables, sorted(tasks), enforce)


def _all_of(
    literal: cp_model.BoolVarT, enforcement: cp_model.IntVar | None
) -> list[cp_model.BoolVarT]:
    return [literal] if enforcement is None else [literal, enforcement]


def _add_contiguous(
    model: cp_model.CpModel,
    variables: OrderVariables,
    members: list[int],
    enforce: _Enforce,
) -> None:
    if len(members) < 2 or len(members) >= variables.n:
        return
    inside = set(members)
    anchor = members[0]
    for outsider in range(variables.n):
        if outsider in inside:
            continue
        anchor_before = variables.before(anchor, outsider)
        for member in members[1:]:
            member_before = variables.before(member, outsider)
            enforce(model.add_bool_or([anchor_before.negated(), member_before]))
            enforce(model.add_bool_or([anchor_before, member_before.negated()]))
