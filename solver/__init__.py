"""Ordo's ordering solver: pure numpy/scipy/networkx/ortools, no HTTP, database or settings.

Entry points: :func:`solve_ordering` (best order with objective, bound, gap and status),
:func:`score_order` (the oracle), :func:`check_order` (violated constraints),
:func:`predict_order` / :func:`predict_random_order` (predicted utilities with std).
"""

from ordo_server.solver.constraints import check_order, describe_constraint
from ordo_server.solver.cpsat import OrderingModel, build_ordering_model
from ordo_server.solver.errors import (
    InfeasibleError,
    InvalidProblemError,
    NoSolutionError,
    SolverError,
)
from ordo_server.solver.predict import Prediction, predict_order, predict_random_order
from ordo_server.solver.scoring import (
    lop_weights,
    predicted_utilities,
    score_order,
    variance_weights,
)
from ordo_server.solver.solve import solve_ordering
from ordo_server.solver.types import (
    Constraint,
    ContiguousGroup,
    EffectModel,
    FloatMatrix,
    ForbiddenAdjacency,
    KindOrder,
    Objective,
    Order,
    OrderingProblem,
    OrderingResult,
    PinnedPosition,
    PositionWindow,
    Precedence,
    RequiredAdjacency,
    SolveParams,
    SolveStatus,
)
from ordo_server.solver.validation import validate_problem

__all__ = [
    "Constraint",
    "ContiguousGroup",
    "EffectModel",
    "FloatMatrix",
    "ForbiddenAdjacency",
    "InfeasibleError",
    "InvalidProblemError",
    "KindOrder",
    "NoSolutionError",
    "Objective",
    "Order",
    "OrderingModel",
    "OrderingProblem",
    "OrderingResult",
    "PinnedPosition",
    "PositionWindow",
    "Precedence",
    "Prediction",
    "RequiredAdjacency",
    "SolveParams",
    "SolveStatus",
    "SolverError",
    "build_ordering_model",
    "check_order",
    "describe_constraint",
    "lop_weights",
    "predict_order",
    "predict_random_order",
    "predicted_utilities",
    "score_order",
    "solve_ordering",
    "validate_problem",
    "variance_weights",
]
