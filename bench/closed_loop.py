"""Closed-loop benchmark: Ordo learning task order from the reports of simulated training runs.

Run ``python -m bench.closed_loop [--n 6 8] [--seeds 10] [--runs 8]``. For every world (see
``bench/simulator.py``; hidden truth not additive) it prints the regret — the oracle's final mean
utility minus the achieved one, also in % of the oracle's — of:

- Ordo after 1, 2, 4 and 8 runs (each run: baseline evaluation, ``n`` stages each followed by an
  evaluation of every task, estimates updated from every report, re-planned after each stage
  with the trained prefix fixed), for several outcome models and strategies;
- a random order (exact expectation over all ``n!`` orders);
- structured-first (exact expectation over the orders that train every structured task first);
- the paper's protocol (``n`` single-task runs, ``n(n-1)`` two-stage runs, sort by
  forgettability), and the same measurements handed to an exact LOP solver;
- the best least-squares pairwise (LOP) fit to all ``n!`` noise-free outcomes: how far a
  purely pairwise model falls short even with perfect knowledge of the average effects.

Ordo is reached through :class:`OrdoTransport`; :class:`InProcessOrdo` calls the estimation and
the solver directly. An HTTP transport (runs and reports endpoints) can replace it without
touching the trainer loop (:func:`train_one_run`).
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import numpy as np
import numpy.typing as npt

from app.server_process import ServerProcess, serve_subprocess
from bench.simulator import (
    Evaluation,
    OracleResult,
    Simulator,
    WorldParams,
    draw_world,
    final_scores,
    oracle,
)
from solver.estimation import (
    EffectEstimates,
    Observation,
    StatsTable,
    TaskKind,
    estimate_effects,
    increments,
    stage_observations,
)
from solver.learning import (
    RunRecord,
    exploration_order,
    fit_run_model,
    refine_order,
    run_model_effects,
)
from solver.planning import LevelModelName, ordering_problem, sample_estimates
from solver.solve import solve_ordering
from solver.types import Order, OrderingProblem, SolveParams

Strategy = Literal["exploit", "thompson"]
Planner = Literal["effects", "run-model"]
CHECKPOINTS = (1, 2, 4, 8)


# --- the solver and the outcome tensor of small n ---


@cache
def _before_tensor(n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """All orders of ``n`` tasks and their "a before b" indicators, shape (n!, n * n)."""
    orders = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    position = np.argsort(orders, axis=1)
    before = position[:, :, None] < position[:, None, :]
    return orders, before.reshape(len(orders), n * n).astype(np.float64)


def solve(problem: OrderingProblem) -> Order:
    """The service's solver: ``solver.solve_ordering`` (exact subset DP at these sizes)."""
    result = solve_ordering(problem, SolveParams(time_limit_s=5.0, num_workers=1))
    return tuple(int(t) for t in result.order)


# --- transport ---


class OrdoTransport(Protocol):
    """What a trainer needs from Ordo; in-process now, HTTP later (same calls, same meaning)."""

    def create_run(self, *, adaptive: bool, strategy: Strategy) -> str:
        """Start a run; returns its id."""

    def next_stage(self, run_id: str) -> int | None:
        """The task to train at the next stage, ``None`` when the run has trained every task."""

    def report(self, run_id: str, stage: int, evaluation: Evaluation) -> None:
        """Stage ``stage``'s evaluations (``0``: the baseline before training)."""

    def complete(self, run_id: str) -> None:
        """End the run."""


@dataclass
class _Run:
    """Server-side state of one run."""

    adaptive: bool
    strategy: Strategy
    seed: int
    plan: Order
    trained: list[int] = field(default_factory=list)
    utilities: list[dict[int, float]] = field(default_factory=list)
    entropies: list[dict[int, float]] = field(default_factory=list)
    done: bool = False

    def record(self) -> RunRecord:
        """What the run has reported so far."""
        return RunRecord(tuple(self.trained), self.utilities, self.entropies)


class InProcessOrdo:
    """Ordo's closed loop without HTTP: estimation and solver called directly.

    Parameters
    ----------
    kinds : sequence of TaskKind or None
        Declared task kinds.
    level_model : {"constant", "entropy", "state"}
        The outcome model solved (``solver.planning``); ``constant`` is purely pairwise.
    rho : float
        Forward-transfer retention of the model.
    planner : {"effects", "run-model"}
        ``effects``: the pairwise posteriors of ``solver.estimation`` (``level_model``,
        ``rho``); ``run-model``: the whole-run regression with entropy state of
        ``solver.learning`` (LOP part solved, then refined with the entropy term).
    design_runs : int
        Runs whose order ``solver.learning.exploration_order`` designs (the first is planned;
        ``1``: no designed run). A designed run is not re-planned.
    """

    def __init__(
        self,
        kinds: Sequence[TaskKind | None],
        *,
        level_model: LevelModelName = "constant",
        rho: float = 0.0,
        planner: Planner = "effects",
        design_runs: int = 1,
    ) -> None:
        self.kinds = tuple(kinds)
        self.weights = np.full(len(kinds), 1.0 / len(kinds))
        self.level_model = level_model
        self.rho = rho
        self.planner = planner
        self.design_runs = design_runs
        self.stats = StatsTable()
        self.observations: list[Observation] = []
        self.runs: dict[str, _Run] = {}

    def estimates(self) -> EffectEstimates:
        """Current posteriors."""
        return estimate_effects(self.stats, kinds=self.kinds)

    def _plan(self, run: _Run) -> Order:
        if self.planner == "run-model":
            return self._plan_run_model(run)
        estimates = self.estimates()
        if run.strategy == "thompson":
            estimates = sample_estimates(estimates, seed=run.seed * 1000 + len(run.trained))
        problem = ordering_problem(
            estimates,
            self.weights,
            rho=self.rho,
            level_model=self.level_model,
            prefix=tuple(run.trained),
        )
        return solve(problem)

    def _plan_run_model(self, run: _Run) -> Order:
        records = [r.record() for r in self.runs.values() if r is not run]
        if len(run.utilities) > 1:
            records.append(run.record())
        model = fit_run_model(records, kinds=self.kinds)
        prefix = tuple(run.trained)
        problem = OrderingProblem(
            model=run_model_effects(model, self.weights), rho=1.0, prefix=prefix
        )
        entropy_now = None
        if prefix and len(run.entropies) > len(prefix) and run.entropies[len(prefix)]:
            entropy_now = float(np.mean(list(run.entropies[len(prefix)].values())))
        return refine_order(
            model,
            self.weights,
            solve(problem),
            prefix_length=len(prefix),
            entropy_now=entropy_now,
        )

    def create_run(self, *, adaptive: bool, strategy: Strategy) -> str:
        """Start a run: a designed exploration order, else planned from the current estimates."""
        run_id = f"run-{len(self.runs) + 1}"
        run = _Run(adaptive=adaptive, strategy=strategy, seed=len(self.runs) + 1, plan=())
        previous = [tuple(r.trained) for r in self.runs.values() if r.done]
        designed = exploration_order(previous, len(self.kinds), design_runs=self.design_runs)
        if designed is not None:
            run.plan, run.adaptive = designed, False
        else:
            run.plan = self._plan(run)
        self.runs[run_id] = run
        return run_id

    def next_stage(self, run_id: str) -> int | None:
        """The next task of the run's current plan."""
        run = self.runs[run_id]
        if run.done or len(run.utilities) == 0 or len(run.trained) == len(run.plan):
            return None
        task = run.plan[len(run.trained)]
        run.trained.append(task)
        return task

    def report(self, run_id: str, stage: int, evaluation: Evaluation) -> None:
        """Store a stage's evaluations, update the statistics, re-plan if adaptive."""
        run = self.runs[run_id]
        if stage != len(run.utilities) or stage != len(run.trained):
            raise ValueError(f"expected stage {len(run.utilities)}, got {stage}")
        run.utilities.append(dict(evaluation.values))
        run.entropies.append(dict(evaluation.entropies))
        if stage == 0:
            return
        report = stage_observations(
            stage=stage,
            trained=run.trained,
            before=run.utilities[stage - 1],
            after=run.utilities[stage],
            baseline=run.utilities[0],
            entropy_before=run.entropies[stage - 1],
            entropy_after=run.entropies[stage],
            entropy_baseline=run.entropies[0],
        )
        self.observations += report
        self.stats = self.stats + increments(report)
        if run.adaptive and stage < len(run.plan):
            run.plan = self._plan(run)

    def complete(self, run_id: str) -> None:
        """End the run."""
        self.runs[run_id].done = True


# --- HTTP transport: a live server ---

SERVER_START_TIMEOUT_S = 60.0
LiveServer = ServerProcess


@contextmanager
def live_server() -> Iterator[LiveServer]:
    """``ordo db upgrade`` then the server on a temporary SQLite database, until exit."""
    with (
        tempfile.TemporaryDirectory(prefix="ordo-bench-") as folder,
        serve_subprocess(
            f"sqlite:///{Path(folder) / 'ordo.db'}",
            admin_token="bench-admin-" + os.urandom(12).hex(),
            env={"ORDO_LOG_LEVEL": "warning"},
            start_timeout_s=SERVER_START_TIMEOUT_S,
        ) as server,
    ):
        yield server


class HttpOrdo:
    """The same calls over HTTP against a live server: one project per world.

    The service plans (its estimation, solver and adaptive re-planning); this class only
    translates: task indices <-> keys, evaluations -> report bodies.
    """

    def __init__(
        self,
        server: LiveServer,
        world: WorldParams,
        *,
        project_name: str,
        level_model: str | None = None,
    ) -> None:
        self._level_model = level_model
        self._http = httpx.Client(
            base_url=server.base_url,
            headers={"Authorization": f"Bearer {server.admin_token}"},
            timeout=60.0,
        )
        self.keys = [f"t{j}-{name}" for j, name in enumerate(world.names)]
        self._index = {key: j for j, key in enumerate(self.keys)}
        project = self._call("POST", "/v1/projects", {"name": project_name})
        self._prefix = f"/v1/projects/{project['id']}"
        tasks = [
            {"key": key, "kind": kind.value, "goal": "maximize"}
            for key, kind in zip(self.keys, world.kinds, strict=True)
        ]
        self._call("POST", f"{self._prefix}/tasks", {"tasks": tasks})

    def _call(self, method: str, path: str, body: object | None = None) -> Any:
        response = self._http.request(method, path, json=body)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def create_run(self, *, adaptive: bool, strategy: Strategy) -> str:
        """POST .../runs."""
        body: dict[str, object] = {"adaptive": adaptive, "strategy": strategy}
        if self._level_model is not None:
            body["level_model"] = self._level_model
        return str(self._call("POST", f"{self._prefix}/runs", body)["id"])

    def next_stage(self, run_id: str) -> int | None:
        """GET .../runs/{run}/next: the task's index, ``None`` when done."""
        assignment = self._call("GET", f"{self._prefix}/runs/{run_id}/next")
        if assignment["done"]:
            return None
        return self._index[assignment["task"]]

    def report(self, run_id: str, stage: int, evaluation: Evaluation) -> None:
        """PUT .../runs/{run}/reports/{stage} (utilities are the raw values: scale 1)."""
        evaluations = [
            {"task": self.keys[j], "value": value, "entropy": evaluation.entropies.get(j)}
            for j, value in sorted(evaluation.values.items())
        ]
        path = f"{self._prefix}/runs/{run_id}/reports/{stage}"
        self._call("PUT", path, {"evaluations": evaluations})

    def complete(self, run_id: str) -> None:
        """POST .../runs/{run}/complete."""
        self._call("POST", f"{self._prefix}/runs/{run_id}/complete")


def train_one_run(
    ordo: OrdoTransport, world: WorldParams, *, seed: int, adaptive: bool, strategy: Strategy
) -> tuple[int, ...]:
    """A simulated trainer: follows Ordo's stages, reports every evaluation; the trained order."""
    simulator = Simulator(world, seed=seed)
    run_id = ordo.create_run(adaptive=adaptive, strategy=strategy)
    ordo.report(run_id, 0, simulator.evaluate())
    stage = 0
    while (task := ordo.next_stage(run_id)) is not None:
        simulator.train(task)
        stage += 1
        ordo.report(run_id, stage, simulator.evaluate())
    ordo.complete(run_id)
    return tuple(simulator.trained)


# --- baselines ---


def true_mean_utility(world: WorldParams, order: Sequence[int]) -> float:
    """Noise-free final mean utility of one order."""
    return float(final_scores(world, np.array([order], dtype=np.int64)).mean())


def paper_protocol(world: WorldParams, *, seed: int) -> tuple[Order, Order, int]:
    """Omni-Thinker's measurement protocol (paper.md §1.3-1.5) on noisy evaluations.

    ``n`` single-task runs give ``a*_i``; ``n(n-1)`` two-stage runs ``(i, j)`` give
    ``Delta_{j->i} = acc_i(after i, j) - acc_i(after i)`` (both evaluations from the same run).

    Returns
    -------
    sorted_order, lop_order, stages
        Tasks sorted from least to most forgettable (mean ``Delta`` received, descending); the
        exact LOP optimum of the predictor ``sum_i a*_i + sum_{i before j} Delta_{j->i}`` on the
        same data; the number of training stages the measurements used.
    """
    n = world.n
    rng = np.random.default_rng(seed)
    stages = 0
    level = np.zeros(n)
    for i in range(n):
        simulator = Simulator(world, seed=int(rng.integers(2**31)))
        simulator.train(i)
        stages += 1
        level[i] = simulator.evaluate().values[i]
    delta = np.zeros((n, n))  # delta[j, i]: effect of training j after i on task i
    for i, j in itertools.permutations(range(n), 2):
        simulator = Simulator(world, seed=int(rng.integers(2**31)))
        simulator.train(i)
        after_i = simulator.evaluate().values[i]
        simulator.train(j)
        stages += 2
        delta[j, i] = simulator.evaluate().values[i] - after_i
    forgettability = delta.sum(axis=0) / (n - 1)
    sorted_order = tuple(int(t) for t in np.argsort(-forgettability, kind="stable"))
    orders, before = _before_tensor(n)
    lop_scores = before @ delta.T.ravel()
    lop_order = tuple(int(t) for t in orders[int(np.argmax(lop_scores))])
    return sorted_order, lop_order, stages


def pairwise_ceiling(world: WorldParams, truth: OracleResult) -> Order:
    """Argmax of the least-squares LOP fit to every order's noise-free outcome."""
    _, before = _before_tensor(world.n)
    design = np.hstack([before, np.ones((len(before), 1))])
    coef, *_ = np.linalg.lstsq(design, truth.utilities, rcond=None)
    best = int(np.argmax(design @ coef))
    return tuple(int(t) for t in truth.orders[best])


def structured_first_mean(world: WorldParams, truth: OracleResult) -> float:
    """Exact expected utility of a random order that trains every structured task first."""
    structured = ~world.open_ended
    n_structured = int(structured.sum())
    first = structured[truth.orders[:, :n_structured]].all(axis=1)
    return float(truth.utilities[first].mean())


# --- the benchmark ---


@dataclass(frozen=True, slots=True)
class Variant:
    """One configuration of Ordo."""

    name: str
    level_model: LevelModelName
    strategy: Strategy
    rho: float = 0.0
    planner: Planner = "effects"
    design_runs: int = 1
    http_level_model: str | None = None


SERVICE = Variant("service", "constant", "exploit")
"""What ``--transport http`` runs: the service's own planner, strategy ``exploit``."""

HTTP_VARIANTS = (
    SERVICE,
    Variant("service, constant", "constant", "exploit", http_level_model="constant"),
)
"""``--transport http``: the service's defaults, and its pairwise plans asked for by name."""

VARIANTS = (
    Variant("run-model", "constant", "exploit", planner="run-model", design_runs=2),
    Variant("run-model, no design", "constant", "exploit", planner="run-model"),
    Variant("pairwise + design", "constant", "exploit", design_runs=2),
    Variant("pairwise", "constant", "exploit"),
    Variant("pairwise-thompson", "constant", "thompson"),
    Variant("entropy", "entropy", "exploit"),
    Variant("state", "state", "exploit"),
    Variant("state-thompson", "state", "thompson"),
)


def ordo_utilities(
    world: WorldParams,
    variant: Variant,
    *,
    runs: int,
    seed: int,
    server: LiveServer | None = None,
) -> list[float]:
    """Noise-free final mean utility of each of ``runs`` successive adaptive Ordo runs.

    With a ``server`` the trainer talks to it over HTTP (one new project per world and
    variant) and the service plans; the variant's planner options then do not apply.
    """
    ordo: OrdoTransport
    if server is not None:
        http = HttpOrdo(
            server,
            world,
            project_name=f"n{world.n}-seed{seed}-{variant.name.replace(',', '')}",
            level_model=variant.http_level_model,
        )
        ordo = http
    else:
        ordo = InProcessOrdo(
            world.kinds,
            level_model=variant.level_model,
            rho=variant.rho,
            planner=variant.planner,
            design_runs=variant.design_runs,
        )
    achieved = []
    for r in range(runs):
        order = train_one_run(
            ordo, world, seed=seed * 7919 + r, adaptive=True, strategy=variant.strategy
        )
        achieved.append(true_mean_utility(world, order))
    if server is not None:
        http.close()
    return achieved


@dataclass
class WorldResult:
    """Regrets (utility units) of everything on one world."""

    oracle_utility: float
    regret: dict[str, float]
    ordo_regret: dict[str, list[float]]
    protocol_stages: int


def evaluate_world(
    n: int,
    seed: int,
    *,
    runs: int,
    variants: Sequence[Variant],
    server: LiveServer | None = None,
) -> WorldResult:
    """Every method on the world of ``(n, seed)``; Ordo over HTTP when ``server`` is given."""
    world = draw_world(n, seed)
    truth = oracle(world)
    best = truth.best_utility
    sorted_order, lop_order, stages = paper_protocol(world, seed=seed)
    regret = {
        "random order": best - float(truth.utilities.mean()),
        "structured-first": best - structured_first_mean(world, truth),
        "paper protocol (sort)": best - true_mean_utility(world, sorted_order),
        "paper protocol + exact LOP": best - true_mean_utility(world, lop_order),
        "pairwise ceiling (LS fit)": best
        - true_mean_utility(world, pairwise_ceiling(world, truth)),
    }
    ordo_regret = {
        v.name: [best - u for u in ordo_utilities(world, v, runs=runs, seed=seed, server=server)]
        for v in variants
    }
    return WorldResult(best, regret, ordo_regret, stages)


def _row(label: str, regrets: npt.NDArray[np.float64], relative: npt.NDArray[np.float64]) -> str:
    return (
        f"  {label:<40} {regrets.mean():8.4f} {np.median(regrets):8.4f} "
        f"{100 * relative.mean():7.2f}% {100 * np.median(relative):7.2f}% "
        f"{100 * np.mean(relative <= 0.01):6.0f}%"
    )


def report(n: int, results: Sequence[WorldResult], runs: int) -> None:
    """Print the figures of one ``n``."""
    best = np.array([r.oracle_utility for r in results])
    print(f"\nn = {n}: {len(results)} worlds, oracle mean utility {best.mean():.4f}")
    print(
        f"  {'method (stages)':<40} {'mean':>8} {'median':>8} {'mean %':>8} {'med %':>8} "
        f"{'<=1%':>7}"
    )
    stages = results[0].protocol_stages
    labels = {
        "random order": f"random order ({n})",
        "structured-first": f"structured-first ({n})",
        "paper protocol (sort)": f"paper protocol, sort ({stages}+{n})",
        "paper protocol + exact LOP": f"paper protocol + LOP ({stages}+{n})",
        "pairwise ceiling (LS fit)": "pairwise ceiling (knows all n!)",
    }
    for key, label in labels.items():
        regrets = np.array([r.regret[key] for r in results])
        print(_row(label, regrets, regrets / best))
    for name in results[0].ordo_regret:
        for r in (c for c in CHECKPOINTS if c <= runs):
            regrets = np.array([res.ordo_regret[name][r - 1] for res in results])
            print(_row(f"Ordo {name}, run {r} ({r * n})", regrets, regrets / best))


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, nargs="+", default=[6, 8], help="task counts (<= 8)")
    parser.add_argument("--seeds", type=int, default=10, help="worlds per task count")
    parser.add_argument("--runs", type=int, default=8, help="successive Ordo runs per world")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="Ordo variants (default: all of the transport's)",
    )
    parser.add_argument(
        "--transport",
        choices=["http", "in-process"],
        default="http",
        help="http: simulated trainers drive a live `ordo serve` (the service plans; variants "
        "'service': its defaults, 'service, constant': its pairwise plans); in-process: the "
        "variants' planners called directly",
    )
    args = parser.parse_args(argv)
    if args.transport == "http":
        with live_server() as server:
            run_benchmark(args, _chosen(HTTP_VARIANTS, args.variants), server)
    else:
        run_benchmark(args, _chosen(VARIANTS, args.variants), None)


def _chosen(variants: Sequence[Variant], names: Sequence[str] | None) -> list[Variant]:
    return [v for v in variants if names is None or v.name in names]


def run_benchmark(
    args: argparse.Namespace, variants: Sequence[Variant], server: LiveServer | None
) -> None:
    """Print the figures of every ``n`` of ``args``."""
    where = f"over HTTP ({server.base_url})" if server else "in process"
    print(f"Ordo {where}: variants {', '.join(v.name for v in variants)}")
    print("Regret = oracle's final mean utility - achieved (noise-free), utility units and % of")
    print("the oracle's; '<=1%' = share of worlds within 1 % of the oracle. Stages in brackets:")
    print("training stages used up to that point (protocol: measurements + the final run).")
    for n in args.n:
        started = time.perf_counter()
        results = [
            evaluate_world(n, seed, runs=args.runs, variants=variants, server=server)
            for seed in range(args.seeds)
        ]
        report(n, results, args.runs)
        print(f"  ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
