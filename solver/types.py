"""Domain types of the ordering solver.

Index convention everywhere in this package: tasks are ``0..n-1``; a matrix entry ``M[i, j]``
is "the effect of training task ``i`` on task ``j``". An *order* is a tuple holding a
permutation of ``0..n-1``; stage ``k`` (0-based here) trains ``order[k]``.

All types are frozen; arrays are never mutated after construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

FloatMatrix: TypeAlias = npt.NDArray[np.float64]
"""A float64 array; shape is stated where it is used: ``(n, n)`` matrices or ``(n,)`` vectors."""

Order: TypeAlias = tuple[int, ...]


class Objective(StrEnum):
    """What the solver maximizes.

    ``expected``: the weighted sum of predicted final utilities (a Linear Ordering Problem).
    ``maximin``: the smallest predicted final utility over tasks (weights ignored).
    ``mean_variance``: ``expected`` minus ``kappa`` times the variance of the objective.
    """

    EXPECTED = "expected"
    MAXIMIN = "maximin"
    MEAN_VARIANCE = "mean_variance"


@dataclass(frozen=True, slots=True)
class EffectModel:
    """Posterior means and variances of the pairwise effects (docs/design.md §2).

    Attributes
    ----------
    level_mean, level_var : FloatMatrix, shape (n,)
        ``L[j]``: utility of task j right after j is trained (utility units, variance in squared
        utility units).
    forward_mean, forward_var : FloatMatrix, shape (n, n)
        ``F[i, j]``: change of j's utility when i is trained and j has not been trained yet.
    backward_mean, backward_var : FloatMatrix, shape (n, n)
        ``B[i, j]``: change of j's utility when i is trained after j (negative = forgetting).
    weights : FloatMatrix, shape (n,)
        Non-negative task weights ``w``.
    adjacency_mean, adjacency_var : FloatMatrix, shape (n, n), optional
        ``A[i, j]``: extra effect on the *objective* (weighted utility units) when j is trained
        immediately after i. ``None`` means no adjacency term.
    """

    level_mean: FloatMatrix
    level_var: FloatMatrix
    forward_mean: FloatMatrix
    forward_var: FloatMatrix
    backward_mean: FloatMatrix
    backward_var: FloatMatrix
    weights: FloatMatrix
    adjacency_mean: FloatMatrix | None = None
    adjacency_var: FloatMatrix | None = None

    @property
    def n(self) -> int:
        """Number of tasks."""
        return int(self.level_mean.shape[0])

    def restricted(self, tasks: Sequence[int]) -> EffectModel:
        """The model of the tasks at indexes ``tasks`` only, renumbered ``0..len(tasks)-1``.

        Every ``(n,)`` vector becomes ``(k,)`` and every ``(n, n)`` matrix ``(k, k)``, in the
        order of ``tasks``; the effects of the tasks left out are dropped, not folded in.
        """
        keep = np.asarray(tasks, dtype=np.int64)
        grid = np.ix_(keep, keep)

        def pair(matrix: FloatMatrix | None) -> FloatMatrix | None:
            return None if matrix is None else matrix[grid]

        return EffectModel(
            level_mean=self.level_mean[keep],
            level_var=self.level_var[keep],
            forward_mean=self.forward_mean[grid],
            forward_var=self.forward_var[grid],
            backward_mean=self.backward_mean[grid],
            backward_var=self.backward_var[grid],
            weights=self.weights[keep],
            adjacency_mean=pair(self.adjacency_mean),
            adjacency_var=pair(self.adjacency_var),
        )


# --- constraints -------------------------------------------------------------------------------
# Positions are 0-based stage indices in these types; the API speaks task keys and 1-based stages.


@dataclass(frozen=True, slots=True)
class Precedence:
    """Task ``before`` is trained at some stage before task ``after``."""

    before: int
    after: int
    kind: Literal["precedence"] = "precedence"


@dataclass(frozen=True, slots=True)
class PinnedPosition:
    """Task ``task`` is trained at stage ``position`` (0-based; ``-1`` means the last stage)."""

    task: int
    position: int
    kind: Literal["pinned"] = "pinned"


@dataclass(frozen=True, slots=True)
class PositionWindow:
    """Task ``task`` is trained at a stage in ``[earliest, latest]`` (0-based, inclusive)."""

    task: int
    earliest: int
    latest: int
    kind: Literal["window"] = "window"


@dataclass(frozen=True, slots=True)
class ForbiddenAdjacency:
    """Task ``second`` is never trained immediately after task ``first``."""

    first: int
    second: int
    kind: Literal["forbidden_adjacency"] = "forbidden_adjacency"


@dataclass(frozen=True, slots=True)
class RequiredAdjacency:
    """Task ``second`` is trained immediately after task ``first``."""

    first: int
    second: int
    kind: Literal["required_adjacency"] = "required_adjacency"


@dataclass(frozen=True, slots=True)
class KindOrder:
    """Every task in ``earlier`` is trained before every task in ``later``."""

    earlier: frozenset[int]
    later: frozenset[int]
    kind: Literal["kind_order"] = "kind_order"


@dataclass(frozen=True, slots=True)
class ContiguousGroup:
    """The tasks in ``tasks`` are trained in consecutive stages (in any order among them)."""

    tasks: frozenset[int]
    kind: Literal["contiguous"] = "contiguous"


Constraint: TypeAlias = (
    Precedence
    | PinnedPosition
    | PositionWindow
    | ForbiddenAdjacency
    | RequiredAdjacency
    | KindOrder
    | ContiguousGroup
)


@dataclass(frozen=True, slots=True)
class OrderingProblem:
    """A constrained task-ordering problem.

    Attributes
    ----------
    model : EffectModel
        Effect estimates for ``n`` tasks.
    objective : Objective
        What to maximize.
    rho : float
        Forward-transfer retention in ``[0, 1]`` (``0``: training j resets it, the paper's
        assumption).
    kappa : float
        Risk aversion for ``mean_variance`` (per unit of variance, ``>= 0``).
    constraints : tuple of Constraint
        All must hold.
    prefix : Order
        Tasks already trained, in order: the solution starts with exactly this prefix
        (re-planning).
    """

    model: EffectModel
    objective: Objective = Objective.EXPECTED
    rho: float = 0.0
    kappa: float = 0.0
    constraints: tuple[Constraint, ...] = ()
    prefix: Order = ()

    @property
    def n(self) -> int:
        """Number of tasks."""
        return self.model.n


@dataclass(frozen=True, slots=True)
class SolveParams:
    """Limits and seeds of one solve. The solver reads no clock or environment beyond these."""

    time_limit_s: float = 10.0
    # One worker: on n = 30 with five mixed constraints CP-SAT proved optimality in a median of
    # 494 ms with one worker against 772 ms with two (bench/solver_shapes.py setup, 12 seeds, on a
    # 2-core machine under load ~6): the second worker competes for the same cores, and one
    # worker is also what makes a solve reproducible for a seed.
    num_workers: int = 1
    seed: int = 0


SolveStatus: TypeAlias = Literal["optimal", "feasible"]


@dataclass(frozen=True, slots=True)
class OrderingResult:
    """The best order found.

    ``objective`` is recomputed by ``solver.scoring`` in original units; ``bound`` is a proven
    upper bound on the optimum (same units, ``bound >= objective``); ``gap`` is
    ``(bound - objective) / max(1, |bound|)``; ``status`` is ``optimal`` when the gap is closed.
    """

    order: Order
    objective: float
    bound: float
    gap: float
    status: SolveStatus
    wall_time_s: float
    method: str
    stats: dict[str, float] = field(default_factory=dict)
