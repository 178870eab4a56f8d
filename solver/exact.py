"""Exact subset dynamic programs for small ``n`` (the test oracle and the small-problem path).

An order is built left to right; after placing the set ``S`` of tasks, the value of appending
task ``j`` depends only on ``S`` (and, for adjacency, on the last task placed):

* ``expected`` / ``mean_variance`` (a LOP with weights ``W``): appending ``j`` after ``S`` adds
  ``sum_{a in S} W[a, j]``, so ``best(S + j) = max_j best(S) + colsum(S, j)``.
* ``maximin``: when ``j`` is appended after ``S`` its utility is fully determined (``S`` before
  it, the complement after it): ``S_j = L[j] + sum_{i != j} B[i, j] + sum_{i in S} (rho F[i, j]
  - B[i, j])``; the bottleneck recursion is ``best(S + j) = max_j min(best(S), S_j)``.
* With an adjacency matrix, adjacency or contiguity constraints, states are ``(S, last)``
  (Held-Karp), and appending ``j`` after ``last`` also adds ``A[last, j]``.

Constraints: precedences need ``predecessors(j) ⊆ S``; pins and windows need ``|S|`` (the
position of ``j``) in ``j``'s range; adjacency and contiguity are checked on the step
``last -> j`` (a contiguous group may not be left before all its members are placed).

Cost: ``O(n 2^n)`` time and memory without a last task, ``O(n^2 2^n)`` time and ``O(n 2^n)``
memory with one; each layer ``|S| = k`` is processed with numpy over all its subsets at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from ordo_server.solver.constraints import CompiledConstraints, compile_constraints
from ordo_server.solver.errors import InfeasibleError
from ordo_server.solver.scoring import objective_weights
from ordo_server.solver.types import FloatMatrix, Objective, Order, OrderingProblem, PinnedPosition

__all__ = ["MAX_EXACT_TASKS", "ExactSolution", "solve_exact"]

MAX_EXACT_TASKS = 20
"""Largest ``n`` the DP accepts: its tables hold ``n 2^n`` floats (160 MiB at ``n = 20``)."""

IntArray: TypeAlias = npt.NDArray[np.int64]
# combine(previous best values, column sums of the new task, new task) -> new values
_Combine: TypeAlias = Callable[[FloatMatrix, FloatMatrix, int], FloatMatrix]


@dataclass(frozen=True, slots=True)
class ExactSolution:
    """An optimal order and its value as the DP computed it (original units)."""

    order: Order
    value: float


def solve_exact(problem: OrderingProblem) -> ExactSolution:
    """Optimal order of ``problem`` by subset DP (prefix as pins; every constraint honoured).

    Raises
    ------
    InfeasibleError
        No order satisfies the constraints (without naming them; see
        :func:`solver.cpsat.explain_infeasibility`).
    ValueError
        ``problem.n > MAX_EXACT_TASKS``.
    """
    n = problem.n
    if n > MAX_EXACT_TASKS:
        raise ValueError(f"the exact DP takes at most {MAX_EXACT_TASKS} tasks, got {n}")
    compiled = compile_constraints(_with_prefix_pins(problem))
    adjacency: FloatMatrix | None
    if problem.objective is Objective.MAXIMIN:
        step_matrix, base = _maximin_tables(problem)
        initial = np.inf

        def combine(previous: FloatMatrix, colsum: FloatMatrix, task: int) -> FloatMatrix:
            result: FloatMatrix = np.minimum(previous, base[task] + colsum)
            return result

        adjacency = None
    else:
        step_matrix, constant, adjacency = objective_weights(problem)
        initial = constant

        def combine(previous: FloatMatrix, colsum: FloatMatrix, task: int) -> FloatMatrix:
            return previous + colsum

    colsum = _subset_column_sums(step_matrix)
    layers = _popcount_layers(n)
    if compiled.needs_last_task or adjacency is not None:
        order, value = _held_karp(compiled, colsum, layers, combine, initial, adjacency)
    else:
        order, value = _subset_dp(compiled, colsum, layers, combine, initial)
    return ExactSolution(order=order, value=value)


def _with_prefix_pins(problem: OrderingProblem) -> OrderingProblem:
    pins = tuple(PinnedPosition(task, k) for k, task in enumerate(problem.prefix))
    return replace(problem, constraints=problem.constraints + pins, prefix=())


def _maximin_tables(problem: OrderingProblem) -> tuple[FloatMatrix, FloatMatrix]:
    """``(D, base)`` with ``S_j = base[j] + sum_{i in S} D[i, j]`` when j follows the set S."""
    model = problem.model
    backward = model.backward_mean.copy()
    np.fill_diagonal(backward, 0.0)
    forward = model.forward_mean.copy()
    np.fill_diagonal(forward, 0.0)
    step: FloatMatrix = problem.rho * forward - backward
    base: FloatMatrix = model.level_mean + backward.sum(axis=0)
    return step, base


def _subset_column_sums(matrix: FloatMatrix) -> FloatMatrix:
    """``table[S, j] = sum_{a in S} matrix[a, j]`` for every bitmask ``S``; shape (2^n, n)."""
    n = matrix.shape[0]
    table = np.zeros((1 << n, n), dtype=np.float64)
    for task in range(n):
        size = 1 << task
        table[size : 2 * size] = table[:size] + matrix[task]
    return table


def _popcount_layers(n: int) -> list[IntArray]:
    """``layers[k]``: the bitmasks over ``n`` tasks with exactly ``k`` bits set, ascending."""
    counts = np.zeros(1 << n, dtype=np.int64)
    for task in range(n):
        size = 1 << task
        counts[size : 2 * size] = counts[:size] + 1
    ordered = np.argsort(counts, kind="stable")
    boundaries = np.cumsum(np.bincount(counts, minlength=n + 1))[:-1]
    return [layer.astype(np.int64) for layer in np.split(ordered, boundaries)]


def _steps(
    compiled: CompiledConstraints, layers: list[IntArray], position: int, task: int
) -> tuple[IntArray, IntArray]:
    """Sets ``T`` of size ``position + 1`` that end with ``task``, and ``T - task``, where the
    position and precedence constraints of ``task`` allow that step."""
    empty = np.empty(0, dtype=np.int64)
    if not compiled.earliest[task] <= position <= compiled.latest[task]:
        return empty, empty
    bit = np.int64(1 << task)
    targets = layers[position + 1]
    targets = targets[(targets & bit) != 0]
    previous = targets ^ bit
    required = compiled.predecessors[task]
    allowed = (previous & required) == required
    return targets[allowed], previous[allowed]


def _subset_dp(
    compiled: CompiledConstraints,
    colsum: FloatMatrix,
    layers: list[IntArray],
    combine: _Combine,
    initial: float,
) -> tuple[Order, float]:
    n = compiled.n
    value = np.full(1 << n, -np.inf)
    value[0] = initial
    choice = np.full(1 << n, -1, dtype=np.int8)
    for position in range(n):
        for task in range(n):
            targets, previous = _steps(compiled, layers, position, task)
            if targets.size == 0:
                continue
            candidate = combine(value[previous], colsum[previous, task], task)
            better = candidate > value[targets]
            value[targets[better]] = candidate[better]
            choice[targets[better]] = task
    full = (1 << n) - 1
    if value[full] == -np.inf:
        raise InfeasibleError("no order satisfies the constraints")
    order: list[int] = []
    state = full
    while state:
        task = int(choice[state])
        order.append(task)
        state ^= 1 << task
    return tuple(reversed(order)), float(value[full])


def _transition_table(compiled: CompiledConstraints) -> npt.NDArray[np.bool_]:
    """``ok[last, j]``: ``j`` may follow ``last`` as far as adjacency constraints go."""
    n = compiled.n
    ok = ~compiled.forbidden_next.copy()
    np.fill_diagonal(ok, False)
    for last in range(n):
        successor = int(compiled.required_next[last])
        if successor >= 0:
            keep = ok[last, successor]
            ok[last, :] = False
            ok[last, successor] = keep
    for task in range(n):
        predecessor = int(compiled.required_prev[task])
        if predecessor >= 0:
            keep = ok[predecessor, task]
            ok[:, task] = False
            ok[predecessor, task] = keep
    return ok


def _held_karp(
    compiled: CompiledConstraints,
    colsum: FloatMatrix,
    layers: list[IntArray],
    combine: _Combine,
    initial: float,
    adjacency: FloatMatrix | None,
) -> tuple[Order, float]:
    n = compiled.n
    value = np.full((1 << n, n), -np.inf)
    parent = np.full((1 << n, n), -1, dtype=np.int8)
    ok = _transition_table(compiled)
    groups = [
        (group, np.array([t for t in range(n) if group >> t & 1], dtype=np.int64))
        for group in compiled.groups
    ]
    start = np.array([initial])
    for task in range(n):
        targets, _ = _steps(compiled, layers, 0, task)
        if targets.size and compiled.required_prev[task] < 0:
            value[targets, task] = combine(start, colsum[0:1, task], task)
    for position in range(1, n):
        for task in range(n):
            targets, previous = _steps(compiled, layers, position, task)
            if targets.size == 0:
                continue
            scores = value[previous]
            if adjacency is not None:
                scores = scores + adjacency[:, task]
            scores[:, ~ok[:, task]] = -np.inf
            for group, members in groups:
                if not group >> task & 1:
                    incomplete = (previous & group) != group
                    scores[np.ix_(incomplete, members)] = -np.inf
            best_last = scores.argmax(axis=1)
            best = scores[np.arange(len(previous)), best_last]
            value[targets, task] = combine(best, colsum[previous, task], task)
            parent[targets, task] = best_last
    full = (1 << n) - 1
    last = int(value[full].argmax())
    if value[full, last] == -np.inf:
        raise InfeasibleError("no order satisfies the constraints")
    total = float(value[full, last])
    order: list[int] = []
    state = full
    while state:
        order.append(last)
        previous_last = int(parent[state, last])
        state ^= 1 << last
        last = previous_last
    return tuple(reversed(order)), total
