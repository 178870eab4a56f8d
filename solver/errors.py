"""Exceptions raised by the solver package.

Tree::

    SolverError(Exception)
    ├── InvalidProblemError(SolverError, ValueError)   malformed input: shapes, NaN, bad indices
    ├── InfeasibleError(SolverError)                   the constraints admit no order
    └── NoSolutionError(SolverError)                   no order found within the time limit
"""

from __future__ import annotations

from collections.abc import Sequence

from ordo_server.solver.types import Constraint


class SolverError(Exception):
    """Base class of every solver error."""


class InvalidProblemError(SolverError, ValueError):
    """The problem is malformed; ``field`` names the offending input."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InfeasibleError(SolverError):
    """The constraints admit no order.

    ``conflict`` holds the constraints that together cannot hold; ``cycle`` the tasks of a
    precedence cycle in order (first task repeated at the end) when that is the cause.
    """

    def __init__(
        self,
        message: str,
        *,
        conflict: Sequence[Constraint] = (),
        cycle: Sequence[int] = (),
    ) -> None:
        super().__init__(message)
        self.conflict = tuple(conflict)
        self.cycle = tuple(cycle)


class NoSolutionError(SolverError):
    """No feasible order was found within the time limit (feasibility not decided)."""
