"""Use cases of schedules: solve over the current estimates, store, read the history.

:func:`solve_schedule` solves and :func:`store_schedule` stores, in separate transactions: every
solve runs in a job (``app/services/planning.py``), which holds no lock and no write slot while
solving. A re-plan passes the run, the parent schedule and the trained prefix, and gets a new
immutable schedule.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from ordo_server.app.errors import (
    ConstraintConflictError,
    FieldIssue,
    InvalidInputError,
    NotFoundError,
)
from ordo_server.app.metrics import solve_kind, timed_solve
from ordo_server.app.repositories import projects as project_repo
from ordo_server.app.repositories import schedules as schedule_repo
from ordo_server.app.repositories import tasks as task_repo
from ordo_server.app.schemas.project import ProjectSettings
from ordo_server.app.schemas.schedule import (
    ConstraintSpec,
    ContiguousSpec,
    ForbiddenAdjacencySpec,
    KindOrderSpec,
    ObjectivePrediction,
    PinnedSpec,
    PrecedenceSpec,
    RequiredAdjacencySpec,
    ScheduleCreate,
    ScheduleList,
    ScheduleObjective,
    SchedulePrediction,
    ScheduleRead,
    TaskPrediction,
    WindowSpec,
)
from ordo_server.app.services import estimates as estimate_service
from ordo_server.app.services.auth import ProjectContext
from ordo_server.app.services.estimates import ProjectEstimates
from ordo_server.app.settings import Settings, get_settings
from ordo_server.models import Schedule
from ordo_server.models.base import new_id
from ordo_server.solver import solve_ordering
from ordo_server.solver.errors import InfeasibleError
from ordo_server.solver.estimation import EffectEstimates
from ordo_server.solver.planning import effect_model, sample_estimates
from ordo_server.solver.predict import Prediction, predict_order
from ordo_server.solver.types import (
    Constraint,
    ContiguousGroup,
    EffectModel,
    FloatMatrix,
    ForbiddenAdjacency,
    KindOrder,
    Objective,
    OrderingProblem,
    OrderingResult,
    PinnedPosition,
    PositionWindow,
    Precedence,
    RequiredAdjacency,
    SolveParams,
)

Z_95 = 1.959963984540054  # two-sided 95 % quantile of the standard normal
_PAGE_TOKEN = re.compile(r"^v([1-9][0-9]{0,17})$")


# --- the effect model of the scheduled tasks ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanningInputs:
    """The scheduled tasks and their effect model (index ``i`` is task ``keys[i]``).

    ``model`` holds the posterior means and variances; ``estimates`` the posteriors it came
    from (``None`` when the caller supplied the model), restricted to ``indexes`` on use.
    """

    keys: tuple[str, ...]
    kinds: tuple[str, ...]
    indexes: tuple[int, ...]
    model: EffectModel
    estimates: EffectEstimates | None
    weights: FloatMatrix
    estimates_version: int
    project_keys: frozenset[str]


def _selected_indexes(
    all_keys: Sequence[str], selection: Sequence[str] | None, *, field: str
) -> list[int]:
    """Indexes of the selected task keys (all by default); 422 on unknown or repeated keys."""
    if not all_keys:
        raise InvalidInputError(
            "The project has no tasks to schedule.",
            errors=[FieldIssue(field, "The project has no tasks")],
        )
    if selection is None:
        return list(range(len(all_keys)))
    position = {key: i for i, key in enumerate(all_keys)}
    issues = _key_issues(selection, position, field=field, unknown="Unknown task key {key!r}")
    if issues:
        raise InvalidInputError(f"Invalid `{field}`; see `errors`.", errors=issues)
    return [position[key] for key in selection]


def load_planning_inputs(
    session: Session,
    context: ProjectContext,
    selection: Sequence[str] | None,
    *,
    field: str = "tasks",
    model_override: EffectModel | None = None,
    estimates: ProjectEstimates | None = None,
) -> PlanningInputs:
    """The selected tasks (all by default) with the current posterior means and variances.

    The model is the estimates service's posteriors through ``solver.planning.effect_model``
    (constant levels). ``model_override`` replaces it; it must cover every task of the project
    in index order. The estimates version is the project's current one either way.
    ``estimates``: the project's estimates read on this session's snapshot (default: read here).
    """
    current = (
        estimate_service.project_estimates(session, context) if estimates is None else estimates
    )
    indexes = _selected_indexes(current.keys, selection, field=field)
    if model_override is None:
        model = effect_model(current.estimates, current.weights)
    elif model_override.n != len(current.keys):
        raise ValueError(f"model_override covers {model_override.n} tasks, not {len(current.keys)}")
    else:
        model = model_override
    return PlanningInputs(
        keys=tuple(current.keys[i] for i in indexes),
        kinds=tuple(current.kinds[i] for i in indexes),
        indexes=tuple(indexes),
        model=model.restricted(indexes),
        estimates=None if model_override is not None else current.estimates,
        weights=current.weights,
        estimates_version=current.version,
        project_keys=frozenset(current.keys),
    )


def thompson_model(inputs: PlanningInputs, *, seed: int) -> EffectModel:
    """The model of one posterior sample (``solver.planning.sample_estimates``), deterministic.

    The whole project is sampled and then restricted, so a task subset sees the same draw of
    its effects as the full project would with the same seed.
    """
    if inputs.estimates is None:
        raise ValueError("thompson needs the estimates; pass a sampled model_override instead")
    sample = sample_estimates(inputs.estimates, seed=seed)
    return effect_model(sample, inputs.weights).restricted(inputs.indexes)


# --- constraints by key -> solver constraints ---------------------------------------------------


@dataclass(slots=True)
class _ConstraintConverter:
    """Converts request constraints (task keys, 1-based stages) to solver constraints."""

    index: dict[str, int]
    project_keys: frozenset[str]
    kinds: tuple[str, ...]
    issues: list[FieldIssue]

    @property
    def n(self) -> int:
        return len(self.index)

    def task(self, key: str, field: str) -> int:
        """The scheduled index of ``key``, or ``-1`` after recording why it has none."""
        found = self.index.get(key)
        if found is not None:
            return found
        if key in self.project_keys:
            self.issues.append(FieldIssue(field, f"Task {key!r} is not among the scheduled tasks"))
        else:
            self.issues.append(FieldIssue(field, f"Unknown task key {key!r}"))
        return -1

    def distinct(self, a: int, b: int, field: str) -> bool:
        if a >= 0 and a == b:
            self.issues.append(FieldIssue(field, "Must name a different task"))
            return False
        return a >= 0 and b >= 0

    def stage(self, stage: int, field: str) -> int:
        if stage > self.n:
            self.issues.append(
                FieldIssue(field, f"Stage {stage} does not exist: {self.n} tasks are scheduled")
            )
            return -1
        return stage - 1

    def convert(self, spec: ConstraintSpec, at: str) -> Constraint | None:
        """The solver constraint of ``spec`` (``None``: invalid, recorded, or vacuous)."""
        match spec:
            case PrecedenceSpec(before=before, after=after):
                a, b = self.task(before, f"{at}.before"), self.task(after, f"{at}.after")
                return Precedence(a, b) if self.distinct(a, b, f"{at}.after") else None
            case ForbiddenAdjacencySpec(first=first, second=second):
                a, b = self.task(first, f"{at}.first"), self.task(second, f"{at}.second")
                return ForbiddenAdjacency(a, b) if self.distinct(a, b, f"{at}.second") else None
            case RequiredAdjacencySpec(first=first, second=second):
                a, b = self.task(first, f"{at}.first"), self.task(second, f"{at}.second")
                return RequiredAdjacency(a, b) if self.distinct(a, b, f"{at}.second") else None
            case PinnedSpec():
                return self._pinned(spec, at)
            case WindowSpec():
                return self._window(spec, at)
            case KindOrderSpec():
                return self._kind_order(spec, at)
            case ContiguousSpec():
                return self._contiguous(spec, at)
        raise TypeError(f"unknown constraint {spec!r}")

    def _pinned(self, spec: PinnedSpec, at: str) -> Constraint | None:
        task = self.task(spec.task, f"{at}.task")
        if spec.position == "first":
            position = 0
        elif spec.position == "last":
            position = -1
        else:
            position = self.stage(spec.position, f"{at}.position")
            if position < 0:
                return None
        return PinnedPosition(task, position) if task >= 0 else None

    def _window(self, spec: WindowSpec, at: str) -> Constraint | None:
        task = self.task(spec.task, f"{at}.task")
        if spec.earliest > spec.latest:
            self.issues.append(FieldIssue(f"{at}.latest", "Must be at least `earliest`"))
            return None
        earliest = self.stage(spec.earliest, f"{at}.earliest")
        # A window reaching past the last stage is the window up to the last stage.
        latest = min(spec.latest, self.n) - 1
        if task < 0 or earliest < 0:
            return None
        return PositionWindow(task, earliest, latest)

    def _kind_order(self, spec: KindOrderSpec, at: str) -> Constraint | None:
        if spec.earlier == spec.later:
            self.issues.append(FieldIssue(f"{at}.later", "Must differ from `earlier`"))
            return None
        earlier = frozenset(i for i, kind in enumerate(self.kinds) if kind == spec.earlier.value)
        later = frozenset(i for i, kind in enumerate(self.kinds) if kind == spec.later.value)
        # No scheduled task of one of the kinds: the constraint holds for every order.
        if not earlier or not later:
            return None
        return KindOrder(earlier, later)

    def _contiguous(self, spec: ContiguousSpec, at: str) -> Constraint | None:
        tasks = [self.task(key, f"{at}.tasks[{i}]") for i, key in enumerate(spec.tasks)]
        seen: set[int] = set()
        for i, task in enumerate(tasks):
            if task >= 0 and task in seen:
                self.issues.append(FieldIssue(f"{at}.tasks[{i}]", "Duplicate task"))
            seen.add(task)
        if min(tasks) < 0 or len(seen) != len(tasks):
            return None
        return ContiguousGroup(frozenset(tasks))


@dataclass(frozen=True, slots=True)
class _ConvertedConstraints:
    """Solver constraints with, for each, the index of the request constraint it came from."""

    constraints: tuple[Constraint, ...]
    sources: tuple[int, ...]


def _convert_constraints(
    specs: Sequence[ConstraintSpec], inputs: PlanningInputs
) -> _ConvertedConstraints:
    converter = _ConstraintConverter(
        index={key: i for i, key in enumerate(inputs.keys)},
        project_keys=inputs.project_keys,
        kinds=inputs.kinds,
        issues=[],
    )
    constraints: list[Constraint] = []
    sources: list[int] = []
    for i, spec in enumerate(specs):
        converted = converter.convert(spec, f"constraints[{i}]")
        if converted is not None:
            constraints.append(converted)
            sources.append(i)
    if converter.issues:
        raise InvalidInputError(
            "The constraints are invalid; see `errors`.", errors=converter.issues
        )
    return _ConvertedConstraints(tuple(constraints), tuple(sources))


def validate_request(
    session: Session,
    context: ProjectContext,
    request: ScheduleCreate,
    *,
    settings: Settings,
    field_prefix: str = "",
) -> None:
    """422 for what a solve of ``request`` would reject before solving, without solving.

    Unknown or repeated task keys, invalid constraints, a time limit over the cap: checked when
    a run is created, so that its plan (a job, solved later) fails only if the constraints admit
    no order.
    """
    _time_limit_s(request, settings, context.settings)
    tasks = task_repo.list_tasks(session, context.id)
    keys = [task.key for task in tasks]
    indexes = _selected_indexes(keys, request.tasks, field=f"{field_prefix}tasks")
    converter = _ConstraintConverter(
        index={keys[i]: position for position, i in enumerate(indexes)},
        project_keys=frozenset(keys),
        kinds=tuple(tasks[i].kind for i in indexes),
        issues=[],
    )
    for i, spec in enumerate(request.constraints):
        converter.convert(spec, f"{field_prefix}constraints[{i}]")
    if converter.issues:
        raise InvalidInputError(
            "The constraints are invalid; see `errors`.", errors=converter.issues
        )


def _prefix_indexes(prefix: Sequence[str], inputs: PlanningInputs) -> tuple[int, ...]:
    index = {key: i for i, key in enumerate(inputs.keys)}
    issues = _key_issues(prefix, index, field="prefix", unknown="Task {key!r} is not scheduled")
    if issues:
        raise InvalidInputError("The trained prefix is invalid; see `errors`.", errors=issues)
    return tuple(index[key] for key in prefix)


def _key_issues(
    keys: Sequence[str], known: Container[str], *, field: str, unknown: str
) -> list[FieldIssue]:
    """Issues at ``field[i]``: keys not in ``known`` (``unknown.format(key=key)``), repeats."""
    issues: list[FieldIssue] = []
    seen: set[str] = set()
    for i, key in enumerate(keys):
        if key not in known:
            issues.append(FieldIssue(f"{field}[{i}]", unknown.format(key=key)))
        elif key in seen:
            issues.append(FieldIssue(f"{field}[{i}]", f"Duplicate key {key!r}"))
        seen.add(key)
    return issues


# --- describing conflicts -----------------------------------------------------------------------


def describe_spec(spec: ConstraintSpec) -> str:
    """One line naming a request constraint as the client wrote it (1-based stages)."""
    match spec:
        case PrecedenceSpec(before=before, after=after):
            return f"precedence: {before} before {after}"
        case PinnedSpec(task=task, position=position):
            where = f"stage {position}" if isinstance(position, int) else f"the {position} stage"
            return f"pinned: {task} at {where}"
        case WindowSpec(task=task, earliest=earliest, latest=latest):
            return f"window: {task} at stages {earliest}..{latest}"
        case ForbiddenAdjacencySpec(first=first, second=second):
            return f"forbidden adjacency: {second} right after {first}"
        case RequiredAdjacencySpec(first=first, second=second):
            return f"required adjacency: {second} right after {first}"
        case KindOrderSpec(earlier=earlier, later=later):
            return f"kind order: every {earlier.value} task before every {later.value} task"
        case ContiguousSpec(tasks=tasks):
            return f"contiguous: {', '.join(tasks)}"
    raise TypeError(f"unknown constraint {spec!r}")


def _conflict_error(
    error: InfeasibleError,
    specs: Sequence[ConstraintSpec],
    converted: _ConvertedConstraints,
    inputs: PlanningInputs,
) -> ConstraintConflictError:
    """The 422 naming the conflict: request constraints by index and content, or the cycle."""
    issues: list[FieldIssue] = []
    named: set[int] = set()
    for constraint in error.conflict:
        for source, candidate in zip(converted.sources, converted.constraints, strict=True):
            if candidate == constraint and source not in named:
                named.add(source)
                issues.append(FieldIssue(f"constraints[{source}]", describe_spec(specs[source])))
    if error.cycle:
        path = " -> ".join(inputs.keys[task] for task in error.cycle)
        detail = f"The constraints form a precedence cycle: {path}."
    else:
        listed = "; ".join(f"{issue.field}: {issue.reason}" for issue in issues)
        detail = f"The constraints cannot all hold ({listed or error}); see `errors`."
    if not issues:
        # Only the trained prefix is involved (re-planning): say so rather than nothing.
        issues.append(FieldIssue("prefix", str(error)))
    return ConstraintConflictError(detail, errors=issues)


# --- solving ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefinedOrder:
    """An order a planner made from the solver's (e.g. ``solver.learning.refine_order``).

    ``order`` indexes the scheduled tasks like the problem; ``objective`` is the planner's own
    prediction (weighted utility units), which the solver's bound does not cover. ``method``
    names the path in at most 32 characters (the stored column's width). ``prediction``, when
    given, replaces the solved model's prediction of the order (the planner's own posterior).
    """

    order: tuple[int, ...]
    objective: float
    method: str
    prediction: Prediction | None = None


OrderRefiner = Callable[
    [OrderingProblem, Callable[[], OrderingResult], tuple[int, ...]], RefinedOrder
]
"""A planner over the solver: the problem, the solver's answer *on demand* (solved on the first
call, once; a planner that does not need the solver's order as a start never pays for it, and
a conflict between the constraints surfaces only if it asks), the scheduled tasks' indexes."""
"""``(problem, solver result, project indexes of the scheduled tasks) -> refined order``."""


def _time_limit_s(request: ScheduleCreate, settings: Settings, policy: ProjectSettings) -> float:
    """The request's time limit (default: the lower of the server's and the policy's cap)."""
    cap = settings.solver_time_limit_s
    if request.time_limit_s is None:
        return min(cap, policy.max_time_limit_s)
    if request.time_limit_s > cap:
        issue = FieldIssue("time_limit_s", f"At most {cap:g} seconds on this server")
        raise InvalidInputError("The time limit is over the server's cap.", errors=[issue])
    return request.time_limit_s


def check_policy(
    session: Session, context: ProjectContext, request: ScheduleCreate, *, field_prefix: str = ""
) -> None:
    """Refuse a request past the project's solve policy (``ProjectSettings.max_*``), before any
    estimate is read or model built: 422 naming each field and its bound. Called by
    ``POST .../schedules`` and ``POST .../runs``, not by re-plans.

    ``field_prefix`` is put before the field names (``"schedule."`` for a run's request). The
    task count is the request's ``tasks``, or the project's tasks when it names none.
    """
    policy = context.settings
    issues: list[FieldIssue] = []
    if request.time_limit_s is not None and request.time_limit_s > policy.max_time_limit_s:
        issues.append(
            FieldIssue(
                f"{field_prefix}time_limit_s",
                f"At most {policy.max_time_limit_s:g} seconds by the project's policy "
                "(settings.max_time_limit_s)",
            )
        )
    if len(request.constraints) > policy.max_constraints:
        issues.append(
            FieldIssue(
                f"{field_prefix}constraints",
                f"At most {policy.max_constraints} constraints by the project's policy "
                f"(settings.max_constraints), got {len(request.constraints)}",
            )
        )
    tasks = (
        len(request.tasks)
        if request.tasks is not None
        else task_repo.count_tasks(session, context.id)
    )
    if tasks > policy.max_tasks:
        issues.append(
            FieldIssue(
                f"{field_prefix}tasks",
                f"At most {policy.max_tasks} tasks per schedule by the project's policy "
                f"(settings.max_tasks), got {tasks}",
            )
        )
    if issues:
        raise InvalidInputError("The request is over the project's solve policy.", errors=issues)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def task_predictions(keys: Sequence[str], prediction: Prediction) -> list[TaskPrediction]:
    """Per-task mean, std and 95 % interval, for ``keys`` in model index order."""
    result = []
    for i, key in enumerate(keys):
        mean, std = float(prediction.mean[i]), float(prediction.std[i])
        result.append(
            TaskPrediction(
                task=key, mean=mean, std=std, lower=mean - Z_95 * std, upper=mean + Z_95 * std
            )
        )
    return result


def _schedule_prediction(
    inputs: PlanningInputs, order: Sequence[int], prediction: Prediction
) -> SchedulePrediction:
    by_index = task_predictions(inputs.keys, prediction)
    return SchedulePrediction(
        tasks=[by_index[i] for i in order],
        objective=ObjectivePrediction(
            mean=float(prediction.objective_mean), std=float(prediction.objective_std)
        ),
    )


def _solve(
    problem: OrderingProblem,
    params: SolveParams,
    specs: Sequence[ConstraintSpec],
    converted: _ConvertedConstraints,
    inputs: PlanningInputs,
) -> OrderingResult:
    try:
        return solve_ordering(problem, params, task_names=inputs.keys)
    except InfeasibleError as error:
        raise _conflict_error(error, specs, converted, inputs) from error


def solve_schedule(
    session: Session,
    project: ProjectContext,
    request: ScheduleCreate,
    *,
    run_id: str | None = None,
    parent_id: str | None = None,
    prefix: Sequence[str] = (),
    model_override: EffectModel | None = None,
    refine: OrderRefiner | None = None,
    settings: Settings | None = None,
    estimates: ProjectEstimates | None = None,
) -> SolvedSchedule:
    """Solve ``request`` over the project's current estimates (nothing is written).

    Parameters
    ----------
    session, project
        The unit of work (only flushed here) and the authorized project.
    request
        Objective, ``rho`` (default: the project's), ``kappa``, constraints by task key, the
        tasks to schedule (default all), time limit (default and cap: ``settings`` and the
        project's policy), seed, label.
    run_id, parent_id
        The run asking and the schedule this one re-plans; stored as given.
    prefix
        Task keys already trained, in order: the order starts with exactly these (re-planning).
    model_override
        An effect model over every project task in index order, used instead of the estimates
        (e.g. a state-aware model); the stored estimates version is still the project's current.
    refine
        Replaces the solver's order with the planner's (:data:`OrderRefiner`: it asks for the
        solve only if it needs it); stored as ``feasible`` with no bound or gap (the bound holds
        for the solved model only), the planner's objective and method, and the time of the
        solve and the planner together.
    settings
        Server settings for the solver's time limit cap and workers; default the process's.
    estimates
        The project's estimates already read on this session's snapshot (plans made on one
        snapshot share them); default: read here.

    Returns
    -------
    SolvedSchedule
        The schedule's column values, to store with :func:`store_schedule`.

    Raises
    ------
    InvalidInputError
        422: unknown task keys (with the field path), invalid stages, a time limit over the cap.
        The project's solve policy is checked by the entry points (:func:`check_policy`), so
        that a policy changed mid-run does not fail the run's re-plans.
    ConstraintConflictError
        422: the constraints admit no order; the conflicting ones are named.
    solver.errors.NoSolutionError
        No order found within the time limit (the app renders it 503 with ``Retry-After``).
    """
    settings = settings or get_settings()
    time_limit_s = _time_limit_s(request, settings, project.settings)
    inputs = load_planning_inputs(
        session, project, request.tasks, model_override=model_override, estimates=estimates
    )
    converted = _convert_constraints(request.constraints, inputs)
    rho = project.settings.rho if request.rho is None else request.rho
    problem = OrderingProblem(
        model=inputs.model,
        objective=_solver_objective(request.objective),
        rho=rho,
        kappa=request.kappa,
        constraints=converted.constraints,
        prefix=_prefix_indexes(prefix, inputs),
    )
    if request.objective is ScheduleObjective.THOMPSON:
        problem = replace(problem, model=thompson_model(inputs, seed=request.seed))
    params = SolveParams(
        time_limit_s=time_limit_s, num_workers=settings.solver_workers, seed=request.seed
    )
    planned: Prediction | None = None
    with timed_solve(kind=solve_kind(run_id=run_id, parent_id=parent_id)) as solved_by:
        started = time.perf_counter()
        solve_once = functools.cache(
            lambda: _solve(problem, params, request.constraints, converted, inputs)
        )
        if refine is None:
            result = solve_once()
        else:
            refined = refine(problem, solve_once, inputs.indexes)
            planned = refined.prediction
            # The planner's order: its bound is unknown (the solver's holds for the solved
            # model only), its time the solve's (if it asked for one) and its own.
            result = OrderingResult(
                order=refined.order,
                objective=refined.objective,
                bound=math.inf,
                gap=math.inf,
                status="feasible",
                wall_time_s=time.perf_counter() - started,
                method=refined.method,
            )
        solved_by(result.method)
    prediction = planned or predict_order(inputs.model, result.order, rho=rho)
    solved = request.model_dump(mode="json")
    solved.update(rho=rho, time_limit_s=time_limit_s, prefix=list(prefix))
    return SolvedSchedule(
        project_id=project.id,
        values={
            "parent_id": parent_id,
            "run_id": run_id,
            "estimates_version": inputs.estimates_version,
            "request": solved,
            "order": [inputs.keys[i] for i in result.order],
            "objective": result.objective,
            "bound": _finite_or_none(result.bound),
            "gap": _finite_or_none(result.gap),
            "status": result.status,
            "method": result.method,
            "wall_time_s": result.wall_time_s,
            "predicted": _schedule_prediction(inputs, result.order, prediction).model_dump(
                mode="json"
            ),
        },
    )


@dataclass(frozen=True, slots=True)
class SolvedSchedule:
    """A solve's answer not stored yet: the project and the schedule's column values."""

    project_id: str
    values: dict[str, Any]

    @property
    def order(self) -> list[str]:
        """Task keys in the solved order."""
        return list(self.values["order"])


def store_schedule(session: Session, solved: SolvedSchedule) -> ScheduleRead:
    """Store ``solved`` as the project's next version (a run's plans: :func:`new_plans`).

    The version is allocated under the project row lock, so concurrent stores get contiguous,
    distinct versions; the lock is held only from here to the commit, never while solving.
    """
    project_repo.lock_project(session, solved.project_id)
    values = dict(solved.values, version=schedule_repo.next_version(session, solved.project_id))
    schedule = schedule_repo.add_schedule(session, solved.project_id, values)
    return _read(schedule)


@dataclass(frozen=True, slots=True)
class NewPlans:
    """Runs' plans as the project's next versions (:func:`new_plans`): each plan's schedule id
    (``None`` where its (run, stage) has a plan already) and the rows to insert."""

    ids: list[str | None]
    rows: list[dict[str, Any]]


def new_plans(
    session: Session,
    project_id: str,
    plans: Sequence[tuple[SolvedSchedule, int]],
    *,
    at: datetime,
) -> NewPlans:
    """Runs' plans (each: the solve and the run's plan stage) as the project's next versions,
    in the given order, made at ``at``: the caller inserts the rows (``bulk.write_together``,
    ``schedules.schedule_insertion``) in this transaction.

    Lock the runs' rows first (``runs.lock_runs``): no other writer then stores a plan for them
    before this commits, so the look-up of the plans they have is not a race. The project row
    is locked here, until the commit (versions are allocated under it).
    """
    project_repo.lock_project(session, project_id)
    run_ids = {str(solved.values["run_id"]) for solved, _ in plans}
    taken, version = schedule_repo.plan_slots(session, project_id, run_ids)
    made = NewPlans(ids=[], rows=[])
    for solved, stage in plans:
        key = (str(solved.values["run_id"]), stage)
        if key in taken:
            made.ids.append(None)
            continue
        taken.add(key)
        row = {
            **solved.values,
            "id": new_id(),
            "project_id": project_id,
            "version": version,
            "run_stage": stage,
            "created_at": at,
        }
        made.rows.append(row)
        made.ids.append(row["id"])
        version += 1
    return made


def _solver_objective(objective: ScheduleObjective) -> Objective:
    if objective is ScheduleObjective.THOMPSON:
        return Objective.EXPECTED
    return Objective(objective.value)


# --- reading ------------------------------------------------------------------------------------


def _read(schedule: Schedule) -> ScheduleRead:
    return ScheduleRead(
        id=schedule.id,
        version=schedule.version,
        parent_id=schedule.parent_id,
        run_id=schedule.run_id,
        estimates_version=schedule.estimates_version,
        label=str(schedule.request.get("label", "")),
        request=schedule.request,
        order=schedule.order,
        objective=schedule.objective,
        bound=schedule.bound,
        gap=schedule.gap,
        status=schedule.status,
        method=schedule.method,
        wall_time_s=schedule.wall_time_s,
        predicted=SchedulePrediction.model_validate(schedule.predicted),
        created_at=schedule.created_at,
    )


def get_schedule(session: Session, context: ProjectContext, schedule_id: str) -> ScheduleRead:
    """One schedule of the project (another project's id is 404 like a missing one)."""
    schedule = schedule_repo.get_schedule(session, context.id, schedule_id)
    if schedule is None:
        raise NotFoundError("Schedule not found.")
    return _read(schedule)


def encode_page_token(version: int) -> str:
    """An opaque cursor: the history continues below this version."""
    return base64.urlsafe_b64encode(f"v{version}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    """The version a page token continues below; 422 for anything this API did not issue."""
    invalid = InvalidInputError(
        "Invalid page token.",
        errors=[FieldIssue("query.page_token", "Not a page token issued by this API")],
    )
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid from None
    match = _PAGE_TOKEN.match(raw)
    if match is None or encode_page_token(int(match.group(1))) != token:
        raise invalid
    return int(match.group(1))


def list_schedules(
    session: Session,
    context: ProjectContext,
    *,
    page_size: int,
    page_token: str | None = None,
    run_id: str | None = None,
) -> ScheduleList:
    """A page of the history, newest first; the cursor is a version, so pages never shift."""
    before = decode_page_token(page_token) if page_token is not None else None
    rows = schedule_repo.list_schedules(
        session, context.id, limit=page_size + 1, before_version=before, run_id=run_id
    )
    items = [_read(row) for row in rows[:page_size]]
    more = len(rows) > page_size
    return ScheduleList(
        items=items, next_page_token=encode_page_token(items[-1].version) if more else None
    )
