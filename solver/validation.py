"""Validation of an :class:`~solver.types.OrderingProblem` at the public boundary.

Everything behind :func:`validate_problem` may assume well-formed input: arrays of the right shape
and dtype, finite numbers, indices in range. ``NaN`` and ``±inf`` are rejected everywhere (an
infinite effect has no meaning in utility units and would poison the LOP weights).

Whether the constraints can hold together is *not* decided here (that is
:mod:`solver.constraints`); only whether each one is well formed: task indices in ``0..n-1``,
positions ``>= 0`` (``-1`` allowed for a pinned position: the last stage), windows with
``earliest <= latest``, distinct tasks where two are named.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ordo_server.solver.errors import InvalidProblemError
from ordo_server.solver.types import (
    Constraint,
    ContiguousGroup,
    EffectModel,
    ForbiddenAdjacency,
    KindOrder,
    Objective,
    OrderingProblem,
    PinnedPosition,
    PositionWindow,
    Precedence,
    RequiredAdjacency,
    SolveParams,
)

__all__ = ["validate_model", "validate_order", "validate_params", "validate_problem"]


def validate_problem(problem: OrderingProblem) -> None:
    """Raise :class:`InvalidProblemError` unless ``problem`` is well formed.

    Checks the effect model (shapes, dtype, finiteness, signs), ``rho``, ``kappa``, the objective,
    every constraint's indices and the prefix. Cost ``O(n^2 + len(constraints))``.
    """
    if not isinstance(problem.objective, Objective):
        raise InvalidProblemError(
            f"objective must be one of {[o.value for o in Objective]}, got {problem.objective!r}",
            field="objective",
        )
    validate_model(problem.model)
    _check_unit_interval(problem.rho, "rho")
    _check_non_negative_scalar(problem.kappa, "kappa")
    n = problem.n
    for index, constraint in enumerate(problem.constraints):
        _validate_constraint(constraint, n, f"constraints[{index}]")
    _validate_prefix(problem.prefix, n)


def validate_model(model: EffectModel) -> None:
    """Raise :class:`InvalidProblemError` unless the effect arrays are well formed.

    Shapes ``(n,)`` for ``level_*`` and ``weights``, ``(n, n)`` for the matrices, dtype float64,
    all entries finite, variances and weights ``>= 0``, ``n >= 1``. The diagonals of the matrices
    are ignored by the solver but must still be finite.
    """
    if not isinstance(model.level_mean, np.ndarray) or model.level_mean.ndim != 1:
        raise InvalidProblemError("level_mean must be a 1-d float64 array", field="level_mean")
    n = int(model.level_mean.shape[0])
    if n < 1:
        raise InvalidProblemError(
            "the problem needs at least one task (n >= 1)", field="level_mean"
        )
    vectors: dict[str, object] = {
        "level_mean": model.level_mean,
        "level_var": model.level_var,
        "weights": model.weights,
    }
    matrices: dict[str, object] = {
        "forward_mean": model.forward_mean,
        "forward_var": model.forward_var,
        "backward_mean": model.backward_mean,
        "backward_var": model.backward_var,
    }
    if model.adjacency_mean is not None:
        matrices["adjacency_mean"] = model.adjacency_mean
    if model.adjacency_var is not None:
        if model.adjacency_mean is None:
            raise InvalidProblemError(
                "adjacency_var is given without adjacency_mean", field="adjacency_var"
            )
        matrices["adjacency_var"] = model.adjacency_var
    for name, vector in vectors.items():
        _check_array(vector, name, (n,))
    for name, matrix in matrices.items():
        _check_array(matrix, name, (n, n))
    for name in ("level_var", "forward_var", "backward_var", "adjacency_var", "weights"):
        array = getattr(model, name)
        if array is not None:
            _check_non_negative_array(array, name)


def validate_params(params: SolveParams) -> None:
    """Raise :class:`InvalidProblemError` unless the limits are usable.

    ``time_limit_s`` finite and ``> 0`` (seconds), ``num_workers >= 1``, ``seed >= 0``.
    """
    limit = params.time_limit_s
    if not isinstance(limit, int | float) or not math.isfinite(limit) or limit <= 0:
        raise InvalidProblemError(
            f"time_limit_s must be a finite number > 0, got {limit!r}", field="time_limit_s"
        )
    if not isinstance(params.num_workers, int) or params.num_workers < 1:
        raise InvalidProblemError(
            f"num_workers must be an integer >= 1, got {params.num_workers!r}", field="num_workers"
        )
    if not isinstance(params.seed, int) or params.seed < 0:
        raise InvalidProblemError(
            f"seed must be an integer >= 0, got {params.seed!r}", field="seed"
        )


def validate_order(order: Iterable[int], n: int, name: str = "order") -> tuple[int, ...]:
    """Return ``order`` as a tuple after checking it is a permutation of ``0..n-1``."""
    result = tuple(int(task) for task in order)
    if sorted(result) != list(range(n)):
        raise InvalidProblemError(f"{name} is not a permutation of 0..{n - 1}", field=name)
    return result


def _check_array(array: object, name: str, shape: tuple[int, ...]) -> None:
    if not isinstance(array, np.ndarray):
        raise InvalidProblemError(
            f"{name} must be a numpy float64 array, got {type(array).__name__}", field=name
        )
    if array.shape != shape:
        raise InvalidProblemError(f"{name} has shape {array.shape}, expected {shape}", field=name)
    if array.dtype != np.float64:
        raise InvalidProblemError(f"{name} has dtype {array.dtype}, expected float64", field=name)
    bad = ~np.isfinite(array)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        value = float(array[index])
        what = "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        raise InvalidProblemError(f"{name}{_format_index(index)} is {what}", field=name)


def _check_non_negative_array(array: np.ndarray, name: str) -> None:
    negative = array < 0
    if negative.any():
        index = tuple(int(i) for i in np.argwhere(negative)[0])
        raise InvalidProblemError(
            f"{name}{_format_index(index)} is negative ({float(array[index])!r}); it must be >= 0",
            field=name,
        )


def _format_index(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]"


def _check_unit_interval(value: float, name: str) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise InvalidProblemError(f"{name} must be a number in [0, 1], got {value!r}", field=name)


def _check_non_negative_scalar(value: float, name: str) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidProblemError(f"{name} must be a finite number >= 0, got {value!r}", field=name)


def _check_task(task: object, n: int, field: str) -> None:
    if not isinstance(task, int | np.integer) or isinstance(task, bool) or not 0 <= task < n:
        raise InvalidProblemError(
            f"{field} is {task!r}, expected a task index in 0..{n - 1}", field=field
        )


def _check_position(position: object, field: str, *, allow_last: bool) -> None:
    lowest = -1 if allow_last else 0
    if not isinstance(position, int | np.integer) or isinstance(position, bool):
        raise InvalidProblemError(f"{field} must be an integer, got {position!r}", field=field)
    if position < lowest:
        hint = " (-1 means the last stage)" if allow_last else ""
        raise InvalidProblemError(
            f"{field} is {position}, expected a stage index >= {lowest}{hint}", field=field
        )


def _validate_constraint(constraint: Constraint, n: int, field: str) -> None:
    match constraint:
        case Precedence(before=before, after=after):
            _check_task(before, n, f"{field}.before")
            _check_task(after, n, f"{field}.after")
            if before == after:
                raise InvalidProblemError(
                    f"{field}: task {before} cannot precede itself", field=field
                )
        case PinnedPosition(task=task, position=position):
            _check_task(task, n, f"{field}.task")
            _check_position(position, f"{field}.position", allow_last=True)
        case PositionWindow(task=task, earliest=earliest, latest=latest):
            _check_task(task, n, f"{field}.task")
            _check_position(earliest, f"{field}.earliest", allow_last=False)
            _check_position(latest, f"{field}.latest", allow_last=False)
            if earliest > latest:
                raise InvalidProblemError(
                    f"{field}: earliest ({earliest}) is after latest ({latest})", field=field
                )
        case (
            ForbiddenAdjacency(first=first, second=second)
            | RequiredAdjacency(first=first, second=second)
        ):
            _check_task(first, n, f"{field}.first")
            _check_task(second, n, f"{field}.second")
            if first == second:
                raise InvalidProblemError(
                    f"{field}: an adjacency needs two distinct tasks, got {first} twice",
                    field=field,
                )
        case KindOrder(earlier=earlier, later=later):
            for task in sorted(earlier):
                _check_task(task, n, f"{field}.earlier")
            for task in sorted(later):
                _check_task(task, n, f"{field}.later")
            overlap = sorted(earlier & later)
            if overlap:
                raise InvalidProblemError(
                    f"{field}: task {overlap[0]} is in both earlier and later", field=field
                )
        case ContiguousGroup(tasks=tasks):
            for task in sorted(tasks):
                _check_task(task, n, f"{field}.tasks")
        case _:
            raise InvalidProblemError(
                f"{field} is not a known constraint type: {type(constraint).__name__}",
                field=field,
            )


def _validate_prefix(prefix: tuple[int, ...], n: int) -> None:
    seen: set[int] = set()
    for index, task in enumerate(prefix):
        _check_task(task, n, f"prefix[{index}]")
        if task in seen:
            raise InvalidProblemError(
                f"prefix[{index}]: task {task} appears twice in the prefix", field="prefix"
            )
        seen.add(int(task))
