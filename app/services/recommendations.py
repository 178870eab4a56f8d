"""Use case of the recommendation: plans on the posterior over orders' outcomes.

What ``POST /schedules`` answers with the project defaults, what an ``exploit`` run follows and
what an adaptive ``thompson`` run explores with (by expected improvement,
``solver.recommend.explore_order``), under the ``run_model`` level model: the ensemble of
``solver.recommend`` fitted to every run of the project (:func:`load_history`, nothing
cached), once :data:`RECOMMEND_MIN_RUNS` runs have completed (the recommendation); exploration
and posterior draws from the first run (:data:`ENSEMBLE_MIN_RUNS`), or from
:data:`IMPORTED_PRIORS_MIN_RUNS` in a project that imported priors. The solver first solves the
project's pairwise estimates under the request's constraints (a feasible start, and the only
model before that and above :data:`ENSEMBLE_MAX_TASKS` tasks); the ensemble then picks the
order, keeping the constraints and a run's trained prefix.

Seeds are stable names, never random ids: the project's name and the run's ``client_id`` (or
its sequence number in the project), so the same reports give the same plans on any server.

The models are fitted to the project's history, never to the run being planned
(:class:`ProjectFits`): the plans made on one snapshot (a worker's batch of re-plans) share one
fit, each conditioned on its own run's trained prefix (``OrderPosterior.given``). A plan made
in a batch is the plan made alone on the same snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ordo_server.app.repositories import reports as report_repo
from ordo_server.app.repositories import tasks as task_repo
from ordo_server.app.schemas.run import RunStatus
from ordo_server.app.schemas.schedule import ScheduleCreate, ScheduleModel, ScheduleObjective
from ordo_server.app.services import estimates as estimate_service
from ordo_server.app.services.auth import ProjectContext
from ordo_server.app.services.estimates import ProjectEstimates
from ordo_server.app.services.schedules import (
    OrderRefiner,
    RefinedOrder,
    SolvedSchedule,
    solve_schedule,
)
from ordo_server.app.settings import Settings
from ordo_server.models import Run, Task
from ordo_server.solver.constraints import check_order
from ordo_server.solver.estimation import TaskKind
from ordo_server.solver.learning import RunModel, RunRecord, fit_run_model
from ordo_server.solver.predict import Prediction
from ordo_server.solver.recommend import (
    OrderPosterior,
    RecommendConfig,
    explore_order,
    fit_order_posterior,
    plan_seed,
    recommend,
    thompson_order,
)
from ordo_server.solver.types import FloatMatrix, OrderingProblem, OrderingResult

ENSEMBLE_MIN_RUNS = 0
"""Completed runs over every task before the ensemble explores (adaptive ``thompson`` runs,
objective ``thompson``): none. Before any run has completed, a plan is one draw from the
ensemble fitted to the runs in progress (the planned run's own reports included), with its
members weighed by their priors until a held-out run can weigh them: what
``solver.recommend.explore_order`` does, so that the service runs the loop ``bench.closed_loop``
measures in process. Until December 2026 the first two runs followed the pairwise estimates
instead; over HTTP on the tuning worlds (n = 6, seeds 100-109, every family) that made the
first run's regret 9.77 % against 8.21 % (bench/README.md)."""

IMPORTED_PRIORS_MIN_RUNS = 2
""":data:`ENSEMBLE_MIN_RUNS` of a project that imported priors (``POST .../priors``): the
pairwise estimates plan its exploration until two runs have completed, since the ensemble's
models do not read what was imported (measured transfers, the paper's protocol)."""

RECOMMEND_MIN_RUNS = 1
"""Completed runs over every task before the ensemble recommends (``exploit``: ``POST
.../schedules`` with the defaults, exploit runs): one. The recommendation holds on to the best
run so far unless another order beats it with posterior probability 0.9, which needs no
held-out run. When the pairwise estimates recommended until two runs had completed, the
recommendation after the first run was worse than that run by more than the noise in 6 of 12
worlds (``bench.closed_loop --transport http``, 3 seeds of 4 families)."""

RUN_MODEL_MAX_TASKS = RecommendConfig().run_model_max_tasks
"""Above this many project tasks no plan fits the whole-run model (its dense design has side
~3n^2: a 40-task fit took 7 s and 0.9 GB); the ensemble leaves it out and the plans of task
subsets use the pairwise estimates."""

ENSEMBLE_MAX_TASKS = 40
"""Above this many tasks plans use the pairwise estimates only (the ensemble's search grows as
``n^4`` per move round); ``solver.recommend`` drops the run model above 12 tasks itself."""

_KINDS = {"structured": TaskKind.STRUCTURED, "open_ended": TaskKind.OPEN_ENDED}


class PlanMode(StrEnum):
    """``exploit``: the recommendation (``solver.recommend.recommend``); ``thompson``: one
    posterior draw (what ``POST /schedules`` answers for objective ``thompson``); ``explore``:
    what an adaptive ``thompson`` run follows, :func:`solver.recommend.explore_order`
    (expected improvement over the best observed order; one posterior draw before any run has
    completed)."""

    EXPLOIT = "exploit"
    THOMPSON = "thompson"
    EXPLORE = "explore"


@dataclass(frozen=True, slots=True)
class ProjectHistory:
    """Every run of the project as the models' data, task indexes in project order.

    ``records`` maps a run id to what it trained and reported; ``completed`` lists the trained
    orders of the completed runs, oldest first.
    """

    tasks: Sequence[Task]
    records: Mapping[str, RunRecord]
    completed: list[tuple[int, ...]]

    @property
    def kinds(self) -> list[TaskKind | None]:
        """Declared kinds (``other`` is a kind group of its own)."""
        return [_KINDS.get(task.kind) for task in self.tasks]

    @property
    def weights(self) -> FloatMatrix:
        """Task weights, shape (n,)."""
        return np.array([task.weight for task in self.tasks], dtype=np.float64)

    def last_entropy(self, run_id: str) -> float | None:
        """Mean entropy of the run's last report (``None``: none reported)."""
        record = self.records.get(run_id)
        if record is None or not record.entropies or not record.entropies[-1]:
            return None
        return float(np.mean(list(record.entropies[-1].values())))

    def fit_records(self) -> list[RunRecord]:
        """Every run with at least its baseline reported (runs without reports carry nothing)."""
        return [record for record in self.records.values() if record.utilities]


def load_history(session: Session, project_id: str) -> ProjectHistory:
    """The project's runs from the stored reports (recomputed on every plan: nothing cached)."""
    tasks = task_repo.list_tasks(session, project_id)
    index = {task.id: position for position, task in enumerate(tasks)}
    trained: dict[str, list[int]] = {}
    status: dict[str, str] = {}
    stages: dict[str, int] = {}
    reported = report_repo.project_stages(session, project_id)
    for row in reported:
        status[row.run_id] = row.run_status
        stages[row.run_id] = row.stage
        if row.trained_task_id is not None:
            trained.setdefault(row.run_id, []).append(index[row.trained_task_id])
    utilities: dict[str, list[dict[int, float]]] = {
        run_id: [{} for _ in range(last + 1)] for run_id, last in stages.items()
    }
    entropies: dict[str, list[dict[int, float]]] = {
        run_id: [{} for _ in range(last + 1)] for run_id, last in stages.items()
    }
    for evaluation in report_repo.project_evaluations(session, project_id, reported):
        if evaluation.run_id not in utilities or evaluation.stage > stages[evaluation.run_id]:
            continue  # a report stored after the stages were read: not in this history
        task = index[evaluation.task_id]
        utilities[evaluation.run_id][evaluation.stage][task] = evaluation.utility
        if evaluation.entropy is not None:
            entropies[evaluation.run_id][evaluation.stage][task] = evaluation.entropy
    records = {
        run_id: RunRecord(tuple(trained.get(run_id, ())), utilities[run_id], entropies[run_id])
        for run_id in stages
    }
    completed = [
        records[run_id].trained
        for run_id in stages
        if status[run_id] == RunStatus.COMPLETED.value
        and len(records[run_id].trained) == len(tasks)
    ]
    return ProjectHistory(tasks, records, completed)


class ProjectFits:
    """What every plan made on one snapshot of a project shares: its history, the models fitted
    to it and its pairwise estimates, each read or fitted on first use, then kept.

    A worker's batch of re-plans reads the history and the estimates once and fits once. Lives
    as long as the read session it reads with; nothing is cached across snapshots. Nothing in
    it depends on the run being planned, so a plan made with a shared instance equals one made
    with a fresh one.
    """

    __slots__ = ("_estimates", "_history", "_order_posterior", "_run_model", "context", "session")

    def __init__(self, session: Session, context: ProjectContext) -> None:
        self.session = session
        self.context = context
        self._history: ProjectHistory | None = None
        self._estimates: ProjectEstimates | None = None
        self._order_posterior: OrderPosterior | None = None
        self._run_model: RunModel | None = None

    @property
    def history(self) -> ProjectHistory:
        """Every run of the project (:func:`load_history`)."""
        if self._history is None:
            self._history = load_history(self.session, self.context.id)
        return self._history

    def estimates(self) -> ProjectEstimates:
        """The pairwise estimates (``estimates.project_estimates``)."""
        if self._estimates is None:
            self._estimates = estimate_service.project_estimates(self.session, self.context)
        return self._estimates

    def order_posterior(self, current: RunRecord | None) -> OrderPosterior:
        """The ensemble posterior (``solver.recommend``) conditioned on the run being re-planned
        (``current``: its trained prefix and state; ``None`` for a plan from the start)."""
        if self._order_posterior is None:
            history = self.history
            self._order_posterior = fit_order_posterior(
                history.fit_records(), kinds=history.kinds, weights=history.weights
            )
        return self._order_posterior.given(current)

    def run_model(self) -> RunModel:
        """The whole-run model (``solver.learning.fit_run_model``) of every reported run."""
        if self._run_model is None:
            self._run_model = fit_run_model(self.history.fit_records(), kinds=self.history.kinds)
        return self._run_model


def run_seed(session: Session, context: ProjectContext, run: Run) -> int:
    """The run's sampling seed: project name and ``client_id`` (else its sequence number)."""
    name = context.name
    if run.client_id is not None:
        return plan_seed(name, run.client_id)
    earlier = session.scalar(
        select(func.count())
        .select_from(Run)
        .where(Run.project_id == context.id, Run.created_at < run.created_at)
    )
    return plan_seed(name, f"#{int(earlier or 0) + 1}")


def every_task(request: ScheduleCreate, history: ProjectHistory) -> bool:
    """Whether the request schedules every task of the project."""
    keys = [task.key for task in history.tasks]
    return request.tasks is None or sorted(request.tasks) == sorted(keys)


def uses_ensemble(request: ScheduleCreate, fits: ProjectFits, mode: PlanMode) -> bool:
    """Whether the ensemble plans this request in ``mode``: every task scheduled, size within
    limits, and enough completed runs (:data:`RECOMMEND_MIN_RUNS` to recommend,
    :data:`ENSEMBLE_MIN_RUNS` to explore or draw, :data:`IMPORTED_PRIORS_MIN_RUNS` where the
    project imported priors)."""
    history = fits.history
    sized = 2 <= len(history.tasks) <= ENSEMBLE_MAX_TASKS
    if not (every_task(request, history) and sized):
        return False
    completed = len(history.completed)
    if mode is PlanMode.EXPLOIT:
        return completed >= RECOMMEND_MIN_RUNS
    if completed < ENSEMBLE_MIN_RUNS:
        return False
    # The estimates are read only where the count leaves it open (a plan reads them anyway).
    return completed >= IMPORTED_PRIORS_MIN_RUNS or not fits.estimates().imported


def _prediction(posterior: OrderPosterior, order: tuple[int, ...]) -> Prediction:
    array = np.array([order], dtype=np.int64)
    mean, std = posterior.moments(array)
    utilities, utility_std = posterior.utility_moments(array)
    return Prediction(
        mean=utilities[0],
        std=utility_std[0],
        objective_mean=float(mean[0]),
        objective_std=float(std[0]),
    )


def ensemble_refiner(
    fits: ProjectFits, *, mode: PlanMode, seed: int, current: RunRecord | None
) -> OrderRefiner:
    """The ensemble as the schedules service's refine hook (the solver's order is one start of
    a recommendation's search, and of a run's where the problem has constraints)."""
    history = fits.history

    def refine(
        problem: OrderingProblem, solved: Callable[[], OrderingResult], indexes: tuple[int, ...]
    ) -> RefinedOrder:
        assert list(indexes) == list(range(len(history.tasks))), "the ensemble plans every task"
        runs = history.fit_records()
        posterior = fits.order_posterior(current)

        def feasible(order: tuple[int, ...]) -> bool:
            return not check_order(problem, order)

        # Without constraints every order is feasible: no check per candidate.
        is_feasible = feasible if problem.constraints else None

        def start() -> list[tuple[int, ...]]:
            # Solved only when a search needs it: not where exploration scores every completion.
            return [tuple(int(t) for t in solved().order)]

        if mode in (PlanMode.THOMPSON, PlanMode.EXPLORE):
            plan = thompson_order if mode is PlanMode.THOMPSON else explore_order
            order = plan(
                runs,
                kinds=history.kinds,
                weights=history.weights,
                seed=seed,
                current=current,
                is_feasible=is_feasible,
                # A run's searches start from the constrained solver's order only where there
                # are constraints (a feasible start); otherwise they start where the measured
                # loop's do (bench/closed_loop.py): the observed orders and the run model's.
                starts=start if problem.constraints else (),
                posterior=posterior,
            )
        else:
            order = recommend(
                runs,
                kinds=history.kinds,
                weights=history.weights,
                current=current,
                is_feasible=is_feasible,
                starts=start,
                posterior=posterior,
            ).order
        prediction = _prediction(posterior, order)
        return RefinedOrder(
            order=order,
            objective=prediction.objective_mean,
            method=f"ensemble:{mode.value}",
            prediction=prediction,
        )

    return refine


def solve_ensemble(
    session: Session,
    context: ProjectContext,
    request: ScheduleCreate,
    fits: ProjectFits,
    *,
    mode: PlanMode,
    seed: int,
    settings: Settings,
    run_id: str | None = None,
    parent_id: str | None = None,
    prefix: Sequence[str] = (),
) -> SolvedSchedule:
    """Solve the pairwise estimates for a feasible start, then plan on the ensemble (unstored)."""
    current = fits.history.records.get(run_id) if run_id is not None and prefix else None
    refine = ensemble_refiner(fits, mode=mode, seed=seed, current=current)
    return solve_schedule(
        session,
        context,
        request.model_copy(update={"tasks": None}),
        run_id=run_id,
        parent_id=parent_id,
        prefix=prefix,
        refine=refine,
        settings=settings,
        estimates=fits.estimates(),
    )


def solve_requested(
    session: Session, context: ProjectContext, request: ScheduleCreate, *, settings: Settings
) -> SolvedSchedule:
    """What ``POST /schedules`` solves (nothing is stored): the ensemble for ``expected`` and
    ``thompson`` over every task (the recommendation and one posterior draw), the pairwise
    estimates otherwise."""
    ensemble_objective = request.objective in (
        ScheduleObjective.EXPECTED,
        ScheduleObjective.THOMPSON,
    )
    if request.model is ScheduleModel.ENSEMBLE and ensemble_objective:
        fits = ProjectFits(session, context)
        mode = (
            PlanMode.THOMPSON
            if request.objective is ScheduleObjective.THOMPSON
            else PlanMode.EXPLOIT
        )
        if uses_ensemble(request, fits, mode):
            return solve_ensemble(
                session, context, request, fits, mode=mode, seed=request.seed, settings=settings
            )
        # The estimates uses_ensemble may have read (imported priors): read once a request.
        estimates = fits.estimates()
        return solve_schedule(session, context, request, settings=settings, estimates=estimates)
    return solve_schedule(session, context, request, settings=settings)
