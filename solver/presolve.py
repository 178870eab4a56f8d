"""Presolve of the constrained ordering problem: pair orders every feasible order shares.

Many constraints decide the relative order of pairs of tasks outright: a precedence, a kind order
(``|earlier| * |later|`` pairs at once), a required adjacency ``a -> b``, and two tasks whose
position ranges (pins, windows) do not overlap. Closing those relations transitively fixes
further pairs (a kind order over 30 tasks split in halves fixes 225 of the 435 pairs; with a pin
and a precedence, more), and every fixed pair is a variable the search never branches on and a
set of 3-cycle constraints it never sees.

Rules, applied until nothing changes (each is implied by the constraints, so every feasible order
satisfies what they derive):

* transitivity: ``a < b`` and ``b < c`` give ``a < c``;
* contiguity: the members of a contiguous group (and the two tasks of a required adjacency) are
  consecutive, so a task outside the group that precedes one member precedes all of them (and
  likewise after);
* counting: a task with ``p`` known predecessors and ``s`` known successors lies in
  ``[p, n - 1 - s]``, and after every predecessor's earliest position;
* ranges: ``latest[a] < earliest[b]`` gives ``a < b``.

When the rules meet a contradiction (a cycle, an empty range) the presolve gives up and fixes
nothing: the search then proves infeasibility and :func:`solver.cpsat.explain_infeasibility`
names the conflict from the original constraints.

Cost: ``O(n^3)`` per round (boolean matrix products), a handful of rounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ordo_server.solver.constraints import compile_constraints, implied_precedences
from ordo_server.solver.types import ContiguousGroup, OrderingProblem, RequiredAdjacency

__all__ = ["PairFixing", "fix_pairs"]

BoolMatrix = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

_MAX_ROUNDS = 64  # each round fixes at least one more pair; in practice 2-4 rounds suffice


@dataclass(frozen=True, slots=True)
class PairFixing:
    """Pair orders and position ranges shared by every feasible order.

    Attributes
    ----------
    before : BoolMatrix, shape (n, n)
        ``before[a, b]``: task ``a`` precedes task ``b`` in every feasible order; transitively
        closed, irreflexive (all false when the presolve gave up).
    earliest, latest : IntArray, shape (n,)
        0-based position range of each task (inclusive), at least as tight as pins and windows.
    """

    before: BoolMatrix
    earliest: IntArray
    latest: IntArray

    @property
    def n(self) -> int:
        """Number of tasks."""
        return int(self.before.shape[0])

    @property
    def fixed_pairs(self) -> int:
        """Number of unordered pairs whose order is fixed."""
        return int(self.before.sum())

    def fixed(self, a: int, b: int) -> bool | None:
        """``True`` when ``a`` always precedes ``b``, ``False`` when ``b`` always precedes ``a``,
        ``None`` when both orders remain possible."""
        if self.before[a, b]:
            return True
        if self.before[b, a]:
            return False
        return None


def fix_pairs(problem: OrderingProblem) -> PairFixing:
    """The :class:`PairFixing` of ``problem``'s constraints (the prefix is not considered).

    See the module docstring for the rules; ``O(n^3)`` per round.
    """
    n = problem.n
    compiled = compile_constraints(problem)
    earliest = compiled.earliest.copy()
    latest = compiled.latest.copy()
    before = np.zeros((n, n), dtype=np.bool_)
    for first, second, _ in implied_precedences(problem.constraints):
        before[first, second] = True
    groups = _group_masks(problem)
    for _ in range(_MAX_ROUNDS):
        previous = before.copy()
        before = _transitive_closure(before)
        before = _spread_over_groups(before, groups)
        if before.diagonal().any():
            return _nothing_fixed(problem)
        earliest, latest = _tighten_ranges(before, earliest, latest)
        if (earliest > latest).any():
            return _nothing_fixed(problem)
        before |= latest[:, None] < earliest[None, :]
        if np.array_equal(before, previous):
            break
    return PairFixing(before=before, earliest=earliest, latest=latest)


def _group_masks(problem: OrderingProblem) -> list[npt.NDArray[np.bool_]]:
    """Membership masks of the sets that must be consecutive (groups, required adjacencies)."""
    n = problem.n
    masks: list[npt.NDArray[np.bool_]] = []
    for constraint in problem.constraints:
        if isinstance(constraint, ContiguousGroup):
            members = sorted(constraint.tasks)
        elif isinstance(constraint, RequiredAdjacency):
            members = [constraint.first, constraint.second]
        else:
            continue
        if 2 <= len(members) < n:
            mask = np.zeros(n, dtype=np.bool_)
            mask[members] = True
            masks.append(mask)
    return masks


def _transitive_closure(before: BoolMatrix) -> BoolMatrix:
    """Transitive closure by repeated squaring (``O(n^3 log n)``)."""
    closed = before.copy()
    while True:
        as_int = closed.astype(np.int64)
        grown = closed | ((as_int @ as_int) > 0)
        if np.array_equal(grown, closed):
            return closed
        closed = grown


def _spread_over_groups(before: BoolMatrix, groups: list[npt.NDArray[np.bool_]]) -> BoolMatrix:
    """An outsider before (after) one member of a consecutive set is before (after) all."""
    spread = before.copy()
    for members in groups:
        outside = ~members
        precedes_some = spread[:, members].any(axis=1) & outside
        follows_some = spread[members, :].any(axis=0) & outside
        spread[np.ix_(precedes_some, members)] = True
        spread[np.ix_(members, follows_some)] = True
    return spread


def _tighten_ranges(
    before: BoolMatrix, earliest: IntArray, latest: IntArray
) -> tuple[IntArray, IntArray]:
    """Position ranges implied by the known predecessors and successors of each task."""
    n = before.shape[0]
    low = np.maximum(earliest, before.sum(axis=0))
    high = np.minimum(latest, n - 1 - before.sum(axis=1))
    # a task comes after each predecessor's earliest position, before each successor's latest
    for _ in range(n):
        shifted_low = np.where(before, low[:, None] + 1, 0).max(axis=0)
        shifted_high = np.where(before, high[None, :] - 1, n - 1).min(axis=1)
        new_low, new_high = np.maximum(low, shifted_low), np.minimum(high, shifted_high)
        if np.array_equal(new_low, low) and np.array_equal(new_high, high):
            break
        low, high = new_low, new_high
    return low.astype(np.int64), high.astype(np.int64)


def _nothing_fixed(problem: OrderingProblem) -> PairFixing:
    n = problem.n
    compiled = compile_constraints(problem)
    return PairFixing(
        before=np.zeros((n, n), dtype=np.bool_),
        earliest=compiled.earliest.copy(),
        latest=compiled.latest.copy(),
    )
