"""Re-planning: reduce a problem with a trained prefix to a problem over the remaining tasks.

With the prefix ``P`` fixed, every prefix task's utility is a constant (all other tasks come
after it), and a remaining task j only sees the prefix through ``rho * sum_{i in P} F[i, j]``,
which moves into its level. So the reduced problem is the same kind of problem over the
remaining tasks, and::

    objective(prefix + order) = objective_reduced(order) + offset     (expected, mean_variance)
    objective(prefix + order) = min(floor, objective_reduced(order))  (maximin)

When the last prefix task (the *anchor*) still matters, because of an adjacency term or an
adjacency or contiguity constraint that links it to a remaining task, it stays in the reduced
problem pinned at position 0. Constraints already decided by the prefix are dropped; those it
violates raise :class:`InfeasibleError` naming them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ordo_server.solver.constraints import describe_constraint, normalized_position
from ordo_server.solver.errors import InfeasibleError
from ordo_server.solver.scoring import adjacency_sum, predicted_utilities, predicted_variances
from ordo_server.solver.types import (
    Constraint,
    ContiguousGroup,
    EffectModel,
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

__all__ = ["PrefixReduction", "reduce_prefix"]


@dataclass(frozen=True, slots=True)
class PrefixReduction:
    """A problem over the remaining tasks and how its orders and values map back.

    Attributes
    ----------
    problem : OrderingProblem
        Reduced problem (no prefix); task ``k`` of it is original task ``tasks[k]``.
    tasks : tuple of int
        Original index of each reduced task (the anchor first when kept).
    dropped : Order
        The prefix tasks not in the reduced problem, in prefix order.
    offset : float
        Added to reduced ``expected``/``mean_variance`` values (original units).
    floor : float
        Minimum utility of the dropped prefix tasks (``maximin``; ``inf`` when none).
    labels : tuple of (Constraint or None)
        For each reduced constraint, the original one it stands for (``None``: the prefix).
    """

    problem: OrderingProblem
    tasks: tuple[int, ...]
    dropped: Order
    offset: float
    floor: float
    labels: tuple[Constraint | None, ...]

    def expand(self, order: Sequence[int]) -> Order:
        """The full order (original indices) of a reduced ``order``."""
        return (*self.dropped, *(self.tasks[k] for k in order))

    def lift(self, value: float) -> float:
        """The original objective value (or bound) from a reduced one."""
        if self.problem.objective is Objective.MAXIMIN:
            return min(self.floor, value)
        return value + self.offset


def reduce_prefix(
    problem: OrderingProblem, task_names: Sequence[str] | None = None
) -> PrefixReduction:
    """Reduce ``problem`` to its remaining tasks (identity when there is no prefix).

    Requires ``len(problem.prefix) < problem.n``. Cost ``O(n^2 + constraints)``.

    Raises
    ------
    InfeasibleError
        The prefix itself violates a constraint, or leaves it no way to hold.
    """
    n, prefix = problem.n, problem.prefix
    if not prefix:
        return PrefixReduction(
            problem=problem,
            tasks=tuple(range(n)),
            dropped=(),
            offset=0.0,
            floor=math.inf,
            labels=tuple(problem.constraints),
        )
    if len(prefix) >= n:
        raise ValueError("reduce_prefix needs at least one task outside the prefix")
    in_prefix = set(prefix)
    rest = [t for t in range(n) if t not in in_prefix]
    anchor = prefix[-1]
    keep_anchor = _anchor_matters(problem, anchor, in_prefix)
    tasks = ((anchor,) if keep_anchor else ()) + tuple(rest)
    dropped = prefix[:-1] if keep_anchor else prefix
    mapper = _ConstraintMapper(problem, tasks, keep_anchor, task_names)
    constraints: list[Constraint] = []
    labels: list[Constraint | None] = []
    if keep_anchor:
        constraints.append(PinnedPosition(0, 0))
        labels.append(None)
    for constraint in problem.constraints:
        mapped = mapper.map(constraint)
        if mapped is not None:
            constraints.append(mapped)
            labels.append(constraint)
    model = _reduced_model(problem, tasks, dropped)
    offset, floor = _prefix_value(problem, dropped, rest)
    reduced = OrderingProblem(
        model=model,
        objective=problem.objective,
        rho=problem.rho,
        kappa=problem.kappa,
        constraints=tuple(constraints),
    )
    return PrefixReduction(reduced, tasks, dropped, offset, floor, tuple(labels))


def _anchor_matters(problem: OrderingProblem, anchor: int, in_prefix: set[int]) -> bool:
    if problem.model.adjacency_mean is not None:
        return True
    for constraint in problem.constraints:
        match constraint:
            case ForbiddenAdjacency(first=first) | RequiredAdjacency(first=first):
                if first == anchor:
                    return True
            case ContiguousGroup(tasks=tasks):
                if anchor in tasks and not tasks <= in_prefix:
                    return True
    return False


def _reduced_model(problem: OrderingProblem, tasks: Order, dropped: Order) -> EffectModel:
    """The remaining tasks' model; forward transfer from the dropped prefix joins their levels."""
    model, rho = problem.model, problem.rho
    keep = np.asarray(tasks, dtype=np.int64)
    gone = np.asarray(dropped, dtype=np.int64)
    level_mean = model.level_mean[keep] + rho * model.forward_mean[gone][:, keep].sum(axis=0)
    level_var = model.level_var[keep] + rho**2 * model.forward_var[gone][:, keep].sum(axis=0)
    return replace(model.restricted(tasks), level_mean=level_mean, level_var=level_var)


def _prefix_value(problem: OrderingProblem, dropped: Order, rest: list[int]) -> tuple[float, float]:
    """``(offset, floor)``: the dropped tasks' part of the objective, fixed by the prefix."""
    model = problem.model
    # the dropped tasks' utilities do not depend on how the rest is ordered
    order = (*problem.prefix, *rest)
    utilities = predicted_utilities(model, order, problem.rho)
    gone = np.asarray(dropped, dtype=np.int64)
    floor = float(utilities[gone].min()) if len(dropped) else math.inf
    if problem.objective is Objective.MAXIMIN:
        return 0.0, floor
    expected = float(model.weights[gone] @ utilities[gone])
    # with an adjacency term the anchor is kept, so these pairs lie inside the prefix
    expected += adjacency_sum(model.adjacency_mean, problem.prefix)
    if problem.objective is Objective.EXPECTED:
        return expected, floor
    variances = predicted_variances(model, order, problem.rho)
    variance = float(model.weights[gone] ** 2 @ variances[gone])
    variance += adjacency_sum(model.adjacency_var, problem.prefix)
    return expected - problem.kappa * variance, floor


class _ConstraintMapper:
    """Maps an original constraint to the reduced problem: ``None`` when the prefix settles it,
    an :class:`InfeasibleError` when the prefix breaks it."""

    def __init__(
        self,
        problem: OrderingProblem,
        tasks: Order,
        keep_anchor: bool,
        task_names: Sequence[str] | None,
    ) -> None:
        self.n = problem.n
        self.size = len(problem.prefix)
        self.spot = {task: k for k, task in enumerate(problem.prefix)}
        self.new = {task: k for k, task in enumerate(tasks)}
        # reduced position = original position - shift
        self.shift = self.size - (1 if keep_anchor else 0)
        self.task_names = task_names

    def broken(self, constraint: Constraint) -> InfeasibleError:
        text = describe_constraint(constraint, self.task_names)
        return InfeasibleError(f"the trained prefix violates {text}", conflict=[constraint])

    def settled(self, constraint: Constraint, holds: bool) -> None:
        if not holds:
            raise self.broken(constraint)

    def map(self, constraint: Constraint) -> Constraint | None:
        spot, new = self.spot, self.new
        match constraint:
            case Precedence(before=before, after=after):
                if after in spot:
                    self.settled(constraint, before in spot and spot[before] < spot[after])
                    return None
                if before in spot:
                    return None
                return Precedence(new[before], new[after])
            case PinnedPosition(task=task, position=position):
                target = normalized_position(position, self.n)
                if task in spot:
                    self.settled(constraint, spot[task] == target)
                    return None
                self.settled(constraint, target >= self.size)
                return PinnedPosition(new[task], target - self.shift)
            case PositionWindow(task=task, earliest=earliest, latest=latest):
                if task in spot:
                    self.settled(constraint, earliest <= spot[task] <= latest)
                    return None
                self.settled(constraint, latest >= self.size)
                low = max(earliest, self.size) - self.shift
                return PositionWindow(new[task], low, latest - self.shift)
            case ForbiddenAdjacency(first=first, second=second):
                return self._adjacency(constraint, first, second, required=False)
            case RequiredAdjacency(first=first, second=second):
                return self._adjacency(constraint, first, second, required=True)
            case KindOrder(earlier=earlier, later=later):
                return self._kind_order(constraint, earlier, later)
            case ContiguousGroup(tasks=tasks):
                return self._contiguous(constraint, tasks)
        raise TypeError(f"unknown constraint {constraint!r}")

    def _adjacency(
        self, constraint: Constraint, first: int, second: int, *, required: bool
    ) -> Constraint | None:
        spot, new = self.spot, self.new
        kind = RequiredAdjacency if required else ForbiddenAdjacency
        if first in spot and second in spot:
            self.settled(constraint, (spot[second] == spot[first] + 1) == required)
            return None
        if second in spot:  # first comes later: never adjacent in that direction
            self.settled(constraint, not required)
            return None
        if first in spot:
            if spot[first] == self.size - 1:  # the anchor, kept in the reduced problem
                return kind(new[first], new[second])
            self.settled(constraint, not required)
            return None
        return kind(new[first], new[second])

    def _kind_order(
        self, constraint: Constraint, earlier: frozenset[int], later: frozenset[int]
    ) -> Constraint | None:
        spot, new = self.spot, self.new
        early_done = [spot[t] for t in earlier if t in spot]
        late_done = [spot[t] for t in later if t in spot]
        early_open = [new[t] for t in earlier if t not in spot]
        late_open = [new[t] for t in later if t not in spot]
        if late_done and early_open:
            raise self.broken(constraint)
        if early_done and late_done and max(early_done) > min(late_done):
            raise self.broken(constraint)
        if early_open and late_open:
            return KindOrder(frozenset(early_open), frozenset(late_open))
        return None

    def _contiguous(self, constraint: Constraint, tasks: frozenset[int]) -> Constraint | None:
        spot, new = self.spot, self.new
        done = sorted(spot[t] for t in tasks if t in spot)
        open_tasks = [new[t] for t in tasks if t not in spot]
        if not done:
            return ContiguousGroup(frozenset(open_tasks))
        self.settled(constraint, done[-1] - done[0] == len(done) - 1)
        if not open_tasks:
            return None
        self.settled(constraint, done[-1] == self.size - 1)
        return ContiguousGroup(frozenset([0, *open_tasks]))
