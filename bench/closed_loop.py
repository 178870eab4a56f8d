"""Closed-loop benchmark over the world suite: Ordo learning the order from its runs' reports.

Run ``python -m bench.closed_loop [--families ...] [--n 6 8] [--seeds 10] [--runs 8]
[--repeats 8] [--transport http|in-process] [--jobs 2] [--json PATH] [--methods ordo]
[--ordo-config NAME=VALUE ...]``.

For every family of :mod:`bench.worlds` (default all), every ``n`` and every seed, the world
``draw_world(family, n, seed)`` and its exhaustive oracle (:func:`bench.worlds.oracle.oracle`):

- **Ordo**: ``--runs`` successive runs of a simulated trainer (baseline report, then ask the next
  task, train it, report every task's evaluation, until done; complete). After each run ``r``
  Ordo's recommendation (order, predicted objective mean and 90 % interval) is scored: regret of
  its true final mean utility, regret of the best run so far (best *reported* final mean),
  stages spent, and whether the true value lies in the interval (coverage).
- **Baselines** (:mod:`bench.baselines`): random order, best of ``R`` random (averaged over
  ``--repeats`` seeds), structured-first, the paper's protocol (sorted, and its LOP), the naive
  in-run pairwise estimator, joint training where the world defines it, the GP over orders.

``--methods ordo`` runs Ordo alone (no baselines: the tables then show Ordo only and the
targets that need a baseline are left out), e.g. to compare two versions of Ordo on the same
worlds with :mod:`bench.paired`; ``--ordo-config NAME=VALUE`` overrides a field of
:class:`solver.recommend.RecommendConfig` in process (``VALUE`` a Python literal).

Output: per family and ``n`` the mean regret over seeds of every method after ``R = 1, 2, ...``
runs (recommendation, then best run so far), the stages used at ``R = 4, 8``, the fixed
heuristics and Ordo's coverage; the mean over families per ``n``; the targets (PASS/FAIL: Ordo
below best-of-R random at every ``R >= 2``, below half of it and below the GP at ``R = 4, 8``;
suite-wide, the recommendation within one reported-final noise sd of the best run so far in
every (world, R) case, coverage of the 90 % interval within 85-95 %); wall time per family and
the median time of the in-process planning calls.

Objective: final *mean* utility over tasks (utility units); regret in % of the oracle's best
(:func:`bench.baselines.regret_percent`). Ordo is reached through :class:`OrdoTransport`:
:class:`InProcessOrdo` calls :func:`solver.recommend.explore_order` and
:func:`solver.recommend.recommend` directly, :class:`HttpOrdo` drives a live server (one
project per world, the service's defaults). Every seed is derived from ``(family, n, seed,
run)``, so the figures are deterministic for the arguments.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import multiprocessing
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from hashlib import sha256
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import numpy as np

from bench.baselines import (
    Trace,
    best_of_random,
    gp_over_orders,
    joint_value,
    naive_pairwise,
    paper_protocol,
    random_value,
    regret_percent,
    structured_first_value,
)
from bench.worlds import draw_world, family_names
from bench.worlds.base import Evaluation, World
from bench.worlds.oracle import OracleResult, oracle
from ordo_server.app.server_process import ServerProcess, serve_subprocess
from ordo_server.solver.estimation import TaskKind
from ordo_server.solver.learning import RunRecord
from ordo_server.solver.recommend import RecommendConfig, explore_order, plan_seed, recommend
from ordo_server.solver.types import Order

Transport = Literal["http", "in-process"]
_KEY_UNSAFE = re.compile(r"[^\w.-]")

Z_90 = 1.6448536269514722
"""Standard normal quantile of a two-sided 90 % interval."""
CHECKPOINTS = (4, 8)
"""Runs at which stages are shown and the 0.5 x best-of-R and GP targets are checked."""
COVERAGE_TARGET = (0.85, 0.95)
SEED_MODULUS = 2**31
"""Job and baseline seeds are reduced below this (every world accepts them)."""
ORDO = "Ordo"
BEST_OF_RANDOM = "best of R random"
NAIVE = "naive pairwise"
GP = "GP over orders (BOPS)"
SEQUENTIAL = (ORDO, BEST_OF_RANDOM, NAIVE, GP)
FIXED = (
    "random order",
    "structured-first",
    "paper protocol (sort)",
    "paper protocol + LOP",
    "joint training",
)


# --- transport -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prediction:
    """Ordo's recommendation: an order and its predicted final mean utility (utility units)."""

    order: Order
    mean: float
    lower: float
    upper: float
    """``lower``, ``upper``: the 90 % interval."""


class OrdoTransport(Protocol):
    """What a trainer and the benchmark need from Ordo (same calls in process and over HTTP)."""

    def create_run(self, client_id: str) -> str:
        """Start an adaptive run with the service's defaults; returns its id."""

    def next_stage(self, run_id: str) -> int | None:
        """The task to train next (index), ``None`` when the run has trained every task."""

    def report(self, run_id: str, stage: int, evaluation: Evaluation) -> None:
        """Stage ``stage``'s evaluations (``0``: the baseline before training)."""

    def complete(self, run_id: str) -> None:
        """End the run."""

    def recommendation(self) -> Prediction:
        """The recommended order from every run so far."""


@dataclass
class _Run:
    """In-process state of one run: its plan and what it reported."""

    seed: int
    plan: Order
    trained: list[int] = field(default_factory=list)
    utilities: list[dict[int, float]] = field(default_factory=list)
    entropies: list[dict[int, float]] = field(default_factory=list)
    done: bool = False

    def record(self) -> RunRecord:
        """What the run has reported so far."""
        return RunRecord(tuple(self.trained), list(self.utilities), list(self.entropies))


class InProcessOrdo:
    """Ordo's learning loop without HTTP: :mod:`solver.recommend` called directly.

    A new run follows ``explore_order`` over every run so far, seeded by
    ``plan_seed(project, client_id)`` as the service seeds it; after each stage report it is
    re-planned with ``current`` = its record so far (its trained prefix stays fixed, same seed).
    The recommendation is ``recommend`` over every run. Weights ``1/n``: the objective is the
    final mean utility. ``timings`` collects the seconds of every planning call by function.
    """

    def __init__(
        self,
        project: str,
        kinds: Sequence[TaskKind | None],
        config: RecommendConfig | None = None,
    ) -> None:
        self.project = project
        self.kinds = tuple(kinds)
        self.config = config
        self.weights = np.full(len(kinds), 1.0 / len(kinds))
        self.runs: dict[str, _Run] = {}
        self.timings: dict[str, list[float]] = {"explore_order": [], "recommend": []}

    def _records(self, exclude: _Run | None = None) -> list[RunRecord]:
        return [run.record() for run in self.runs.values() if run is not exclude]

    def _explore(self, run: _Run, current: RunRecord | None) -> Order:
        history = self._records(exclude=run)
        if current is not None:
            history.append(current)
        started = time.perf_counter()
        order = explore_order(
            history,
            kinds=self.kinds,
            weights=self.weights,
            seed=run.seed,
            current=current,
            config=self.config,
        )
        self.timings["explore_order"].append(time.perf_counter() - started)
        return order

    def create_run(self, client_id: str) -> str:
        """Start a run planned by ``explore_order`` over every run so far."""
        if client_id in self.runs:
            raise ValueError(f"run {client_id!r} exists")
        run = _Run(seed=plan_seed(self.project, client_id), plan=())
        run.plan = self._explore(run, None)
        self.runs[client_id] = run
        return client_id

    def next_stage(self, run_id: str) -> int | None:
        """The next task of the run's current plan."""
        run = self.runs[run_id]
        if run.done or not run.utilities or len(run.trained) == len(run.plan):
            return None
        task = run.plan[len(run.trained)]
        run.trained.append(task)
        return task

    def report(self, run_id: str, stage: int, evaluation: Evaluation) -> None:
        """Store a stage's evaluations; re-plan the remaining stages when two or more remain."""
        run = self.runs[run_id]
        if stage != len(run.utilities) or stage != len(run.trained):
            raise ValueError(f"expected stage {len(run.utilities)}, got {stage}")
        run.utilities.append(dict(evaluation.values))
        run.entropies.append(dict(evaluation.entropies))
        if stage >= 1 and len(run.plan) - stage >= 2:
            plan = self._explore(run, run.record())
            if plan[:stage] != tuple(run.trained):
                raise RuntimeError(f"re-plan {plan} does not keep the prefix {run.trained}")
            run.plan = plan

    def complete(self, run_id: str) -> None:
        """End the run."""
        self.runs[run_id].done = True

    def recommendation(self) -> Prediction:
        """``recommend`` over every run: its order, mean and 90 % interval."""
        started = time.perf_counter()
        result = recommend(
            self._records(), kinds=self.kinds, weights=self.weights, config=self.config
        )
        self.timings["recommend"].append(time.perf_counter() - started)
        lower, upper = result.interval
        return Prediction(result.order, result.mean, lower, upper)


SERVER_START_TIMEOUT_S = 60.0


@contextmanager
def live_server() -> Iterator[ServerProcess]:
    """``ordo db upgrade`` then the server on a temporary SQLite database, until exit."""
    with (
        tempfile.TemporaryDirectory(prefix="ordo-bench-") as folder,
        serve_subprocess(
            f"sqlite:///{Path(folder) / 'ordo.db'}",
            admin_token="bench-admin-" + os.urandom(12).hex(),
            # Every simulated trainer shares one address: no rate limits in the benchmark.
            env={"ORDO_LOG_LEVEL": "warning", "ORDO_RATE_LIMIT_ENABLED": "false"},
            start_timeout_s=SERVER_START_TIMEOUT_S,
        ) as server,
    ):
        yield server


class HttpOrdo:
    """The same calls over HTTP against a live server: one project per world.

    The service plans with its defaults; this class translates task indices <-> keys and
    evaluations -> report bodies (negative entropies clipped to 0, which the API refuses). The
    service's task weights are 1, so its objective is the sum of final utilities: the
    prediction is divided by ``n`` to read as a mean.
    """

    def __init__(self, server: ServerProcess, world: World, *, project: str) -> None:
        self._http = httpx.Client(
            base_url=server.base_url, headers=server.admin_headers, timeout=120.0
        )
        self.n = world.n
        # Task keys allow letters, digits, "_", "." and "-" ("split 8v9" -> "t0-split-8v9").
        self.keys = [f"t{j}-" + _KEY_UNSAFE.sub("-", name) for j, name in enumerate(world.names)]
        self._index = {key: j for j, key in enumerate(self.keys)}
        created = self._call("POST", "/v1/projects", {"name": project})
        self._prefix = f"/v1/projects/{created['id']}"
        tasks = [
            {"key": key, "kind": kind.value, "goal": "maximize"}
            for key, kind in zip(self.keys, world.kinds, strict=True)
        ]
        self._call("POST", f"{self._prefix}/tasks", {"tasks": tasks})
        # Each run's lease token, sent with every write on it (fencing).
        self._lease_tokens: dict[str, int] = {}

    def _call(
        self, method: str, path: str, body: object | None = None, *, run_id: str | None = None
    ) -> Any:
        headers = None
        if run_id is not None:
            headers = {"Ordo-Lease-Token": str(self._lease_tokens[run_id])}
        response = self._http.request(method, path, json=body, headers=headers)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def create_run(self, client_id: str) -> str:
        """POST .../runs with the service's defaults (adaptive)."""
        body = {"client_id": client_id, "adaptive": True}
        run = self._call("POST", f"{self._prefix}/runs", body)
        self._lease_tokens[run["id"]] = int(run["lease"]["token"])
        return str(run["id"])

    def next_stage(self, run_id: str) -> int | None:
        """GET .../runs/{run}/next: the task's index, ``None`` when done.

        Asked again while a plan is pending (the server waits on each call), so every stage
        follows the plan made from every report before it, as in process.
        """
        assignment = self._call("GET", f"{self._prefix}/runs/{run_id}/next")
        while assignment.get("plan_pending") and not assignment["done"]:
            assignment = self._call("GET", f"{self._prefix}/runs/{run_id}/next")
        if assignment["done"] or assignment["task"] is None:
            return None
        return self._index[assignment["task"]]

    def report(self, run_id: str, stage: int, evaluation: Evaluation) -> None:
        """PUT .../runs/{run}/reports/{stage} (raw values: the tasks' scale is 1)."""
        evaluations = []
        for j, value in sorted(evaluation.values.items()):
            entropy = evaluation.entropies.get(j)
            evaluations.append(
                {
                    "task": self.keys[j],
                    "value": value,
                    "entropy": None if entropy is None else max(entropy, 0.0),
                }
            )
        path = f"{self._prefix}/runs/{run_id}/reports/{stage}"
        self._call("PUT", path, {"evaluations": evaluations}, run_id=run_id)

    def complete(self, run_id: str) -> None:
        """POST .../runs/{run}/complete."""
        self._call("POST", f"{self._prefix}/runs/{run_id}/complete", run_id=run_id)

    def recommendation(self) -> Prediction:
        """POST .../schedules with the project's defaults; its predicted objective over ``n``."""
        schedule = self._call("POST", f"{self._prefix}/schedules", {})
        order = tuple(self._index[key] for key in schedule["order"])
        objective = schedule["predicted"]["objective"]
        mean, std = float(objective["mean"]) / self.n, float(objective["std"]) / self.n
        return Prediction(order, mean, mean - Z_90 * std, mean + Z_90 * std)


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """One trainer run: the order it trained and its reported final mean utility."""

    order: Order
    reported: float


def train_one_run(
    ordo: OrdoTransport, world: World, *, client_id: str, job_seed: int
) -> RunOutcome:
    """A simulated trainer: follows Ordo's stages and reports every evaluation."""
    job = world.start(job_seed)
    run_id = ordo.create_run(client_id)
    ordo.report(run_id, 0, job.evaluate())
    stage = 0
    evaluation = None
    while (task := ordo.next_stage(run_id)) is not None:
        job.train(task)
        stage += 1
        evaluation = job.evaluate()
        ordo.report(run_id, stage, evaluation)
    ordo.complete(run_id)
    if evaluation is None or stage != world.n:
        raise RuntimeError(f"run {client_id} stopped after {stage} of {world.n} stages")
    return RunOutcome(tuple(job.trained), float(np.mean(list(evaluation.values.values()))))


# --- one world --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SequentialResult:
    """A sequential method on one world; index ``r - 1``: after ``r`` runs (regret in %)."""

    recommended_regret: list[float]
    best_run_regret: list[float]
    stages: list[int]
    recommended: list[list[int]] = field(default_factory=list)
    best_run: list[list[int]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FixedResult:
    """A fixed heuristic: its regret (%; ``None`` where undefined) and the stages it used."""

    regret: float | None
    stages: int


@dataclass(frozen=True, slots=True)
class OrdoDetail:
    """Ordo after each run: prediction, the true values and the runs (utility units)."""

    predicted_mean: list[float]
    lower: list[float]
    upper: list[float]
    true_value: list[float]
    best_run_value: list[float]
    covered: list[bool]
    runs: list[list[int]]
    reported: list[float]


@dataclass(frozen=True, slots=True)
class WorldResult:
    """Every method on one world (deterministic for its arguments)."""

    family: str
    n: int
    seed: int
    best_value: float
    final_noise_sd: float
    """Noise of one reported final mean: ``world.noise_sd / sqrt(n)`` (utility units)."""
    sequential: dict[str, SequentialResult]
    fixed: dict[str, FixedResult]
    ordo: OrdoDetail


@dataclass(frozen=True, slots=True)
class WorldOutcome:
    """A world's result and what it cost: seconds of each planning call, wall seconds."""

    result: WorldResult
    timings: dict[str, list[float]]
    wall_s: float


@dataclass(frozen=True, slots=True)
class WorldSpec:
    """Which world and how much of each method."""

    family: str
    n: int
    seed: int
    runs: int
    repeats: int
    baselines: bool = True
    """Whether the baselines run too (``False``: Ordo alone)."""
    ordo_config: tuple[tuple[str, Any], ...] = ()
    """``RecommendConfig`` fields overridden in process, ``(name, value)`` pairs."""

    @property
    def project(self) -> str:
        """The Ordo project name of the world (also the root of every seed)."""
        return f"{self.family}-n{self.n}-s{self.seed}"

    def seed_of(self, *parts: str | int) -> int:
        """A job or baseline seed derived from the world and ``parts``: ``sha256`` of the parts
        joined by ``:``, first 8 bytes big-endian, mod :data:`SEED_MODULUS` (fixed here, so the
        worlds' noise does not move when the service changes how it seeds its plans)."""
        text = ":".join(str(p) for p in (self.project, *parts))
        return int.from_bytes(sha256(text.encode()).digest()[:8], "big") % SEED_MODULUS


class OrderValues:
    """True final mean utility of any order, looked up in the oracle (lexicographic index)."""

    def __init__(self, truth: OracleResult) -> None:
        self.truth = truth
        n = truth.orders.shape[1]
        self._factorials = [math.factorial(n - 1 - k) for k in range(n)]

    def value(self, order: Sequence[int]) -> float:
        """``truth.utilities`` at ``order``'s index among all orders (Lehmer code)."""
        remaining = sorted(range(len(order)))
        index = 0
        for k, task in enumerate(order):
            position = remaining.index(int(task))
            index += position * self._factorials[k]
            remaining.pop(position)
        return float(self.truth.utilities[index])

    def regret(self, order: Sequence[int]) -> float:
        """Regret (%) of ``order``."""
        return regret_percent(self.value(order), self.truth)


def run_ordo(
    ordo: OrdoTransport, world: World, spec: WorldSpec, values: OrderValues
) -> tuple[SequentialResult, OrdoDetail]:
    """``spec.runs`` trainer runs against ``ordo``, its recommendation scored after each."""
    runs: list[RunOutcome] = []
    predictions: list[Prediction] = []
    best_runs: list[Order] = []
    for r in range(1, spec.runs + 1):
        outcome = train_one_run(
            ordo, world, client_id=f"run-{r}", job_seed=spec.seed_of("ordo-job", r)
        )
        runs.append(outcome)
        best_runs.append(max(runs, key=lambda run: run.reported).order)
        predictions.append(ordo.recommendation())
    true_value = [values.value(p.order) for p in predictions]
    sequential = SequentialResult(
        recommended_regret=[values.regret(p.order) for p in predictions],
        best_run_regret=[values.regret(order) for order in best_runs],
        stages=[world.n * r for r in range(1, spec.runs + 1)],
        recommended=[list(p.order) for p in predictions],
        best_run=[list(order) for order in best_runs],
    )
    detail = OrdoDetail(
        predicted_mean=[p.mean for p in predictions],
        lower=[p.lower for p in predictions],
        upper=[p.upper for p in predictions],
        true_value=true_value,
        best_run_value=[values.value(order) for order in best_runs],
        covered=[p.lower <= v <= p.upper for p, v in zip(predictions, true_value, strict=True)],
        runs=[list(run.order) for run in runs],
        reported=[run.reported for run in runs],
    )
    return sequential, detail


def _from_trace(trace: Trace, values: OrderValues) -> SequentialResult:
    return SequentialResult(
        recommended_regret=[values.regret(order) for order in trace.recommended],
        best_run_regret=[values.regret(order) for order in trace.best_run],
        stages=list(trace.stages),
        recommended=[list(order) for order in trace.recommended],
        best_run=[list(order) for order in trace.best_run],
    )


def _averaged(results: Sequence[SequentialResult]) -> SequentialResult:
    """Mean regrets over repeats (orders left out: they differ per repeat)."""
    return SequentialResult(
        recommended_regret=[float(v) for v in np.mean([r.recommended_regret for r in results], 0)],
        best_run_regret=[float(v) for v in np.mean([r.best_run_regret for r in results], 0)],
        stages=list(results[0].stages),
    )


def run_baselines(
    world: World, spec: WorldSpec, values: OrderValues
) -> tuple[dict[str, SequentialResult], dict[str, FixedResult]]:
    """Every baseline on ``world``: sequential traces and fixed heuristics."""
    n, truth = world.n, values.truth
    repeats = [
        _from_trace(best_of_random(world, spec.runs, seed=spec.seed_of("random", k)), values)
        for k in range(spec.repeats)
    ]
    sequential = {
        BEST_OF_RANDOM: _averaged(repeats),
        NAIVE: _from_trace(naive_pairwise(world, spec.runs, seed=spec.seed_of("naive")), values),
        GP: _from_trace(gp_over_orders(world, spec.runs, seed=spec.seed_of("gp")), values),
    }
    sorted_order, lop_order, protocol_stages = paper_protocol(world, seed=spec.seed_of("paper"))
    joint = joint_value(world)
    fixed = {
        "random order": FixedResult(regret_percent(random_value(truth), truth), n),
        "structured-first": FixedResult(
            regret_percent(structured_first_value(world, truth), truth), n
        ),
        "paper protocol (sort)": FixedResult(values.regret(sorted_order), protocol_stages + n),
        "paper protocol + LOP": FixedResult(values.regret(lop_order), protocol_stages + n),
        "joint training": FixedResult(None if joint is None else regret_percent(joint, truth), n),
    }
    return sequential, fixed


def evaluate_world(spec: WorldSpec, server: ServerProcess | None = None) -> WorldOutcome:
    """Ordo (over HTTP when ``server`` is given, else in process) and every baseline."""
    started = time.perf_counter()
    world = draw_world(spec.family, spec.n, spec.seed)
    values = OrderValues(oracle(world))
    timings: dict[str, list[float]] = {}
    if server is None:
        config = recommend_config(spec.ordo_config)
        in_process = InProcessOrdo(spec.project, world.kinds, config)
        ordo, ordo_detail = run_ordo(in_process, world, spec, values)
        timings = in_process.timings
    else:
        http = HttpOrdo(server, world, project=spec.project)
        try:
            ordo, ordo_detail = run_ordo(http, world, spec, values)
        finally:
            http.close()
    sequential: dict[str, SequentialResult] = {}
    fixed: dict[str, FixedResult] = {}
    if spec.baselines:
        sequential, fixed = run_baselines(world, spec, values)
    result = WorldResult(
        family=spec.family,
        n=spec.n,
        seed=spec.seed,
        best_value=values.truth.best_value,
        final_noise_sd=world.noise_sd / math.sqrt(world.n),
        sequential={ORDO: ordo, **sequential},
        fixed=fixed,
        ordo=ordo_detail,
    )
    return WorldOutcome(result, timings, time.perf_counter() - started)


def _evaluate_in_process(spec: WorldSpec) -> WorldOutcome:
    """Pool worker: one world in process."""
    return evaluate_world(spec)


# --- tables -----------------------------------------------------------------------------------


def _fmt(value: float | None, width: int = 7, digits: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return f"{'-':>{width}}"
    return f"{value:{width}.{digits}f}"


def _mean_curve(results: Sequence[WorldResult], method: str, key: str) -> list[float]:
    """Mean over worlds of a sequential method's regret list ``key`` (per R)."""
    curves = [getattr(r.sequential[method], key) for r in results]
    return [float(v) for v in np.mean(curves, axis=0)]


def _fixed_mean(results: Sequence[WorldResult], method: str) -> float | None:
    regrets = [r.fixed[method].regret for r in results]
    known = [v for v in regrets if v is not None]
    return float(np.mean(known)) if len(known) == len(regrets) else None


def _margin(results: Sequence[WorldResult], baseline: str, r: int, factor: float = 1.0) -> str:
    """Ordo's regret after ``r`` runs minus ``factor`` times ``baseline``'s, paired per world:
    ``mean +- standard error`` (points of regret; negative: Ordo ahead)."""
    differences = [
        world.sequential[ORDO].recommended_regret[r - 1]
        - factor * world.sequential[baseline].recommended_regret[r - 1]
        for world in results
    ]
    count = len(differences)
    spread = float(np.std(differences, ddof=1)) / math.sqrt(count) if count > 1 else math.nan
    return f"{float(np.mean(differences)):+.2f} +- {spread:.2f}"


def _checkpoints(runs: int) -> list[int]:
    return [r for r in CHECKPOINTS if r <= runs]


def _curve_block(
    title: str, curves: dict[str, list[float]], stages: dict[str, list[int]], runs: int
) -> list[str]:
    width = 24
    marks = _checkpoints(runs)
    header = f"  {title:<{width}}" + "".join(f"{'R=' + str(r):>7}" for r in range(1, runs + 1))
    header += "".join(f"{'st@' + str(r):>7}" for r in marks)
    lines = [header]
    for method, curve in curves.items():
        row = f"  {method:<{width}}" + "".join(_fmt(v) for v in curve)
        row += "".join(f"{stages[method][r - 1]:>7d}" for r in marks)
        lines.append(row)
    return lines


def _coverage(results: Sequence[WorldResult]) -> float:
    covered = [c for r in results for c in r.ordo.covered]
    return float(np.mean(covered)) if covered else math.nan


def _sequential_methods(results: Sequence[WorldResult]) -> list[str]:
    """The sequential methods every one of ``results`` ran (Ordo alone with ``--methods
    ordo``), in :data:`SEQUENTIAL` order."""
    return [m for m in SEQUENTIAL if all(m in r.sequential for r in results)]


def _fixed_methods(results: Sequence[WorldResult]) -> list[str]:
    """The fixed heuristics every one of ``results`` ran, in :data:`FIXED` order."""
    return [m for m in FIXED if all(m in r.fixed for r in results)]


def group_table(results: Sequence[WorldResult], runs: int) -> list[str]:
    """The table of one (family, n): regret % mean over seeds per method and R."""
    methods = _sequential_methods(results)
    stages = {m: list(results[0].sequential[m].stages) for m in methods}
    lines = ["  regret %, mean over seeds: recommendation after R runs (st@R: stages used)"]
    curves = {m: _mean_curve(results, m, "recommended_regret") for m in methods}
    lines += _curve_block("recommendation", curves, stages, runs)
    curves = {m: _mean_curve(results, m, "best_run_regret") for m in methods}
    lines += _curve_block("best run so far", curves, stages, runs)
    fixed = _fixed_methods(results)
    if fixed:
        lines.append(f"  {'fixed heuristics':<24}{'regret':>7}{'stages':>7}")
    for method in fixed:
        lines.append(
            f"  {method:<24}{_fmt(_fixed_mean(results, method))}"
            f"{results[0].fixed[method].stages:>7d}"
        )
    per_r = np.mean([r.ordo.covered for r in results], axis=0)
    lines.append(
        f"  Ordo 90 % coverage {100 * _coverage(results):5.1f} % (per R: "
        + " ".join(f"{100 * c:.0f}" for c in per_r)
        + ")"
    )
    return lines


def overall_table(
    grouped: dict[tuple[str, int], list[WorldResult]], n: int, runs: int
) -> list[str]:
    """Mean over families (each family's mean over seeds) at ``n``."""
    groups = [g for (_, size), g in grouped.items() if size == n]
    every = [r for g in groups for r in g]
    methods = _sequential_methods(every)
    stages = {m: list(groups[0][0].sequential[m].stages) for m in methods}
    lines = [f"overall, n = {n}: mean over {len(groups)} families of the mean over seeds"]
    for key, title in (
        ("recommended_regret", "recommendation"),
        ("best_run_regret", "best run so far"),
    ):
        curves = {
            m: [float(v) for v in np.mean([_mean_curve(g, m, key) for g in groups], axis=0)]
            for m in methods
        }
        lines += _curve_block(title, curves, stages, runs)
    for method in _fixed_methods(every):
        means = [_fixed_mean(g, method) for g in groups]
        known = [v for v in means if v is not None]
        value = float(np.mean(known)) if known else None
        lines.append(f"  {method:<24}{_fmt(value)}  ({len(known)} of {len(groups)} families)")
    coverage = float(np.mean([_coverage(g) for g in groups]))
    lines.append(f"  Ordo 90 % coverage {100 * coverage:5.1f} %")
    return lines


@dataclass(frozen=True, slots=True)
class Target:
    """One checked target: a label, whether it held, and the figures behind it."""

    label: str
    passed: bool
    detail: str

    def line(self) -> str:
        """``PASS``/``FAIL``, label, detail."""
        return f"  {'PASS' if self.passed else 'FAIL'}  {self.label}: {self.detail}"


def group_targets(family: str, n: int, results: Sequence[WorldResult], runs: int) -> list[Target]:
    """The per-(family, n) targets on the means over seeds (none without the baselines)."""
    if not {BEST_OF_RANDOM, GP} <= set(_sequential_methods(results)):
        return []
    ordo = _mean_curve(results, ORDO, "recommended_regret")
    random = _mean_curve(results, BEST_OF_RANDOM, "recommended_regret")
    gp = _mean_curve(results, GP, "recommended_regret")
    where = f"{family} n={n}"
    later = range(2, runs + 1)
    marks = _checkpoints(runs)
    # Each failing R also shows the paired margin over the seeds (mean +- standard error), so
    # that a miss within the seeds' spread reads differently from one beyond it.
    missed = [r for r in later if ordo[r - 1] > random[r - 1]]
    targets = [
        Target(
            f"{where} Ordo <= best-of-R random at every R >= 2",
            not missed,
            " ".join(f"R{r} {ordo[r - 1]:.2f}/{random[r - 1]:.2f}" for r in later)
            + "".join(f"; R{r} margin {_margin(results, BEST_OF_RANDOM, r)}" for r in missed),
        ),
    ]
    if not marks:
        return targets
    return [
        *targets,
        Target(
            f"{where} Ordo <= 0.5 x best-of-R random at R = 4, 8",
            all(ordo[r - 1] <= 0.5 * random[r - 1] for r in marks),
            " ".join(
                f"R{r} {ordo[r - 1]:.2f}/{0.5 * random[r - 1]:.2f}"
                f" ({_margin(results, BEST_OF_RANDOM, r, 0.5)})"
                for r in marks
            ),
        ),
        Target(
            f"{where} Ordo <= GP over orders at R = 4, 8",
            all(ordo[r - 1] <= gp[r - 1] for r in marks),
            " ".join(
                f"R{r} {ordo[r - 1]:.2f}/{gp[r - 1]:.2f} ({_margin(results, GP, r)})" for r in marks
            ),
        ),
    ]


def suite_targets(results: Sequence[WorldResult]) -> list[Target]:
    """Recommendation against the best run so far, and the interval's coverage, suite-wide."""
    held, shortfalls = [], []
    for result in results:
        detail = result.ordo
        for rec, best in zip(detail.true_value, detail.best_run_value, strict=True):
            shortfall = best - rec - result.final_noise_sd
            held.append(shortfall <= 0.0)
            shortfalls.append(max(shortfall, 0.0) / result.best_value * 100.0)
    fraction = float(np.mean(held)) if held else math.nan
    failed = [s for s, ok in zip(shortfalls, held, strict=True) if not ok]
    excess = float(np.mean(failed)) if failed else 0.0
    coverage = _coverage(results)
    low, high = COVERAGE_TARGET
    return [
        Target(
            "recommendation never worse than the best run so far by more than the noise",
            fraction == 1.0,
            f"held in {100 * fraction:.1f} % of {len(held)} (world, R) cases; mean excess "
            f"{excess:.2f} % of the best value where it failed ({len(failed)} cases), "
            f"{float(np.mean(shortfalls)):.3f} % over all",
        ),
        Target(
            f"Ordo 90 % coverage within {100 * low:.0f}-{100 * high:.0f} %",
            low <= coverage <= high,
            f"{100 * coverage:.1f} % of {sum(len(r.ordo.covered) for r in results)} cases",
        ),
    ]


# --- the benchmark ----------------------------------------------------------------------------


@dataclass
class Benchmark:
    """Every world's outcome, with the wall time of each family (seconds)."""

    specs: list[WorldSpec]
    outcomes: list[WorldOutcome] = field(default_factory=list)
    family_wall_s: dict[str, float] = field(default_factory=dict)

    def grouped(self) -> dict[tuple[str, int], list[WorldResult]]:
        """Results by (family, n), in the order run."""
        groups: dict[tuple[str, int], list[WorldResult]] = {}
        for outcome in self.outcomes:
            r = outcome.result
            groups.setdefault((r.family, r.n), []).append(r)
        return groups


def world_specs(
    families: Sequence[str],
    sizes: Sequence[int],
    seeds: int,
    runs: int,
    repeats: int,
    first_seed: int = 0,
    *,
    baselines: bool = True,
    ordo_config: Sequence[tuple[str, Any]] = (),
) -> list[WorldSpec]:
    """Every world of the benchmark, family by family: seeds ``first_seed ..
    first_seed + seeds - 1`` (0-9 are the evaluation worlds; tune on others)."""
    return [
        WorldSpec(family, n, seed, runs, repeats, baselines, tuple(ordo_config))
        for family in families
        for n in sizes
        for seed in range(first_seed, first_seed + seeds)
    ]


def _single_thread_env() -> None:
    """One BLAS thread per process: spawned workers inherit this before importing numpy."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")


def run_benchmark(
    specs: Sequence[WorldSpec],
    *,
    transport: Transport,
    jobs: int = 1,
    progress: Callable[[WorldOutcome], None] | None = None,
) -> Benchmark:
    """Evaluate every world, family by family (in process: ``jobs`` worker processes)."""
    bench = Benchmark(list(specs))
    families = list(dict.fromkeys(s.family for s in specs))
    server_context: AbstractContextManager[ServerProcess | None] = (
        live_server() if transport == "http" else nullcontext(None)
    )
    with server_context as server:
        pool = None
        if server is None and jobs > 1:
            _single_thread_env()
            pool = multiprocessing.get_context("spawn").Pool(jobs)
        try:
            for family in families:
                started = time.perf_counter()
                chunk = [s for s in specs if s.family == family]
                if pool is not None:
                    outcomes: Iterator[WorldOutcome] = pool.imap(_evaluate_in_process, chunk)
                else:
                    outcomes = (evaluate_world(s, server) for s in chunk)
                for outcome in outcomes:
                    bench.outcomes.append(outcome)
                    if progress is not None:
                        progress(outcome)
                bench.family_wall_s[family] = time.perf_counter() - started
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    return bench


def report_lines(bench: Benchmark, *, runs: int, transport: Transport) -> list[str]:
    """Every table: per (family, n), overall per n, the targets, the timings."""
    grouped = bench.grouped()
    lines = [
        f"Ordo {transport}: regret = 100 (best - true value) / best, % of the oracle's best "
        "final mean utility; means over seeds."
    ]
    for (family, n), results in grouped.items():
        lines += ["", f"{family}, n = {n}: {len(results)} worlds"]
        lines += group_table(results, runs)
    sizes = sorted({n for _, n in grouped})
    for n in sizes:
        lines += ["", *overall_table(grouped, n, runs)]
    targets = [t for (f, n), g in grouped.items() for t in group_targets(f, n, g, runs)]
    targets += suite_targets([o.result for o in bench.outcomes])
    passed = sum(t.passed for t in targets)
    lines += ["", f"targets: {passed} of {len(targets)} pass"]
    lines += [t.line() for t in targets]
    lines += ["", "wall time per family (s): "]
    lines += [f"  {family:<16}{seconds:8.1f}" for family, seconds in bench.family_wall_s.items()]
    for name in ("recommend", "explore_order"):
        times = [t for o in bench.outcomes for t in o.timings.get(name, [])]
        if times:
            lines.append(
                f"  median {name} call (in process): {1000 * statistics.median(times):.1f} ms "
                f"over {len(times)} calls"
            )
    return lines


def results_json(bench: Benchmark, *, transport: Transport) -> dict[str, Any]:
    """What was run and every world's raw result (regrets in %, values in utility units).

    No timings, so that the file is deterministic for the arguments.
    """
    return {
        "transport": transport,
        "specs": [asdict(spec) for spec in bench.specs],
        "worlds": [asdict(o.result) for o in bench.outcomes],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description="Closed-loop benchmark over the world suite.")
    parser.add_argument("--families", nargs="+", default=None, help="default: every family")
    parser.add_argument("--n", type=int, nargs="+", default=[6, 8], help="task counts (<= 8)")
    parser.add_argument("--seeds", type=int, default=10, help="worlds per family and n")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="first world seed (0-9: the evaluation worlds; tune on 100 and up)",
    )
    parser.add_argument("--runs", type=int, default=8, help="successive runs per method")
    parser.add_argument("--repeats", type=int, default=8, help="seeds of best-of-R random")
    parser.add_argument("--transport", choices=["http", "in-process"], default="http")
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="worker processes (in process; over HTTP one world at a time)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write raw results here")
    parser.add_argument("--quiet", action="store_true", help="no per-world progress lines")
    parser.add_argument(
        "--methods",
        choices=["all", "ordo"],
        default="all",
        help="ordo: Ordo alone, no baselines (to pair two versions with bench.paired)",
    )
    parser.add_argument(
        "--ordo-config",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="RecommendConfig fields for Ordo in process (VALUE: a Python literal)",
    )
    return parser.parse_args(argv)


def _config_names() -> list[str]:
    """The fields of :class:`RecommendConfig`, and ``outer.inner`` for those of its nested
    settings (``transition.cell_prior_std``, ``run_model.noise_sd``, ...)."""
    default = RecommendConfig()
    names = []
    for outer in fields(RecommendConfig):
        names.append(outer.name)
        nested = getattr(default, outer.name)
        if is_dataclass(nested):
            names += [f"{outer.name}.{inner.name}" for inner in fields(nested)]
    return names


def parse_ordo_config(items: Sequence[str]) -> list[tuple[str, Any]]:
    """``NAME=VALUE`` overrides of :class:`RecommendConfig` (``VALUE`` a Python literal, e.g.
    ``beat_probability=None``, ``residual_scales=(0.01,)``, ``transition.noise_sd=0.03``);
    unknown names are an error."""
    known = _config_names()
    out: list[tuple[str, Any]] = []
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or name not in known:
            raise SystemExit(
                f"--ordo-config {item!r}: expected NAME=VALUE, NAME one of {sorted(known)}"
            )
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError) as error:
            raise SystemExit(f"--ordo-config {item!r}: {text!r} is not a Python literal") from error
        out.append((name, value))
    return out


def recommend_config(overrides: Sequence[tuple[str, Any]]) -> RecommendConfig:
    """The default :class:`RecommendConfig` with ``overrides`` (:func:`parse_ordo_config`)
    applied in turn; ``outer.inner`` replaces one field of a nested setting."""
    config = RecommendConfig()
    for name, value in overrides:
        outer, _, inner = name.partition(".")
        if inner:
            value = replace(getattr(config, outer), **{inner: value})
        config = replace(config, **{outer: value})
    return config


def main(argv: Sequence[str] | None = None) -> Benchmark:
    """Run the benchmark, print its tables, write ``--json``."""
    args = parse_args(argv)
    families = args.families or list(family_names())
    unknown = sorted(set(families) - set(family_names()))
    if unknown:
        raise SystemExit(f"unknown families {unknown} (known: {', '.join(family_names())})")
    if args.ordo_config and args.transport != "in-process":
        raise SystemExit("--ordo-config needs --transport in-process")
    specs = world_specs(
        families,
        args.n,
        args.seeds,
        args.runs,
        args.repeats,
        first_seed=args.first_seed,
        baselines=args.methods == "all",
        ordo_config=parse_ordo_config(args.ordo_config),
    )

    def progress(outcome: WorldOutcome) -> None:
        if not args.quiet:
            r = outcome.result
            print(f"  {r.family} n={r.n} seed={r.seed}: {outcome.wall_s:.1f} s", flush=True)

    bench = run_benchmark(specs, transport=args.transport, jobs=args.jobs, progress=progress)
    print("\n".join(report_lines(bench, runs=args.runs, transport=args.transport)), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results_json(bench, transport=args.transport), indent=1))
    return bench


if __name__ == "__main__":
    # Through the importable module, so that spawned workers find the same functions and types.
    from bench import closed_loop

    closed_loop.main()
