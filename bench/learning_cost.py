"""Cost of Ordo's learning loop: fitting the order posterior and planning on it (prints a table).

Usage::

    python -m bench.learning_cost [--sizes 6 8 12 20 30 40] [--runs 8] [--repeats 7]
                                  [--legacy-sizes 20 30 40] [--seed 0]

Every size ``n`` runs in a fresh subprocess with one BLAS thread (``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` = 1 set before numpy is imported there), so one size's
allocations and caches do not contaminate the next. The subprocess builds a synthetic history of
``--runs`` complete runs in random orders (baseline plus one evaluation of every task, utility and
entropy, after each stage) in a random non-additive world (:func:`make_world`: saturating gains,
forgetting proportional to what there is to forget, pairwise interference between a task and the
tasks trained before it, per-task entropy maps; evaluation noise sd 0.02), plus one running run
half-trained. It then times, ``--repeats`` times each (wall ms, ``time.perf_counter``):

* ``fit``: :func:`solver.recommend.fit_order_posterior` alone;
* ``recommend``: :func:`solver.recommend.recommend` (fit + search);
* ``thompson``: :func:`solver.recommend.thompson_order` (fit + draw + search);
* ``explore``: :func:`solver.recommend.explore_order` (what an adaptive run follows: fit +
  expected-improvement search);
* ``replan``: ``explore_order`` with ``current=`` the half-trained run (a re-plan mid-run);
* ``legacy``: the old :func:`solver.learning.fit_run_model` (sizes in ``--legacy-sizes``, at
  most 40; off the request path above ``RecommendConfig.run_model_max_tasks`` = 12), at most 3
  repeats (it takes seconds at ``n = 40``).

Memory: ``peak MB`` is the largest ``tracemalloc`` peak of one extra (untimed) call of each kind
(numpy buffers included); ``rss MB`` is the growth of the subprocess's maximum resident set size
(``ru_maxrss``) from after the history was built to the end.

Targets (issue): fitting and planning (``recommend``, ``thompson``, ``explore``) median <= 100 ms at
``n = 8`` with 8 runs of history and <= 2 s at ``n = 30``: one PASS/FAIL line per target and
call, for the sizes that were run.
"""

from __future__ import annotations

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from ordo_server.solver.estimation import TaskKind  # noqa: E402
from ordo_server.solver.learning import RunRecord, fit_run_model  # noqa: E402
from ordo_server.solver.recommend import (  # noqa: E402
    Recommendation,
    explore_order,
    fit_order_posterior,
    plan_seed,
    recommend,
    thompson_order,
)

FloatArray = npt.NDArray[np.float64]

NOISE_SD = 0.02
"""Evaluation noise of one task's utility (utility units)."""

LEGACY_MAX_TASKS = 40
"""``fit_run_model`` is not timed above this many tasks (dense ``~3 n^2`` inverse)."""

TARGETS_MS = {8: 100.0, 30: 2000.0}
"""Median wall ms allowed for the plan calls (:data:`PLAN_CALLS`) at each ``n``."""

PLAN_CALLS = ("recommend", "thompson", "explore")
CALLS = ("fit", "recommend", "thompson", "explore", "replan")


# --- the synthetic world -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyntheticWorld:
    """A random non-additive world of ``n`` tasks (utility units unless stated).

    Attributes
    ----------
    base : FloatArray, shape (n,)
        Utility of every task before training.
    gain : FloatArray, shape (n, n)
        ``gain[t, j]``: training ``t`` moves ``j`` by ``gain * (1 - u_j)`` when positive
        (saturating), by ``gain * u_j`` when negative (forgetting what there is to forget).
    interference : FloatArray, shape (n, n)
        ``interference[i, t]``: added to ``gain[t, t]`` when ``i`` was trained before ``t``.
    entropy_slope, entropy_offset : FloatArray, shape (n,)
        Entropy map of a stage training ``t``: ``H' = slope_t H + offset_t`` (entropy units).
    entropy_gain : FloatArray, shape (n,)
        Extra self-gain of ``t`` per unit of entropy above 1 when it is trained.
    kinds : tuple of TaskKind
        Alternating structured / open-ended.
    """

    base: FloatArray
    gain: FloatArray
    interference: FloatArray
    entropy_slope: FloatArray
    entropy_offset: FloatArray
    entropy_gain: FloatArray
    kinds: tuple[TaskKind, ...]

    @property
    def n(self) -> int:
        """Number of tasks."""
        return len(self.base)


def make_world(n: int, rng: np.random.Generator) -> SyntheticWorld:
    """A random world of ``n`` tasks (:class:`SyntheticWorld`)."""
    kinds = tuple(TaskKind.STRUCTURED if j % 2 == 0 else TaskKind.OPEN_ENDED for j in range(n))
    structured = np.array([k is TaskKind.STRUCTURED for k in kinds])
    gain = rng.normal(0.0, 0.04, size=(n, n))
    np.fill_diagonal(gain, rng.uniform(0.25, 0.5, size=n))
    return SyntheticWorld(
        base=rng.uniform(0.2, 0.5, size=n),
        gain=gain,
        interference=rng.normal(0.0, 0.03, size=(n, n)) * (1.0 - np.eye(n)),
        entropy_slope=rng.uniform(0.85, 1.0, size=n),
        entropy_offset=np.where(structured, -0.05, 0.08) + rng.normal(0.0, 0.02, size=n),
        entropy_gain=rng.normal(0.0, 0.1, size=n),
        kinds=kinds,
    )


def _stage(
    world: SyntheticWorld, utilities: FloatArray, entropy: float, trained: list[int], task: int
) -> tuple[FloatArray, float]:
    """Noise-free state after training ``task``: utilities (n,) and mean entropy."""
    gain = world.gain[task].copy()
    gain[task] += world.interference[trained, task].sum() + world.entropy_gain[task] * (
        entropy - 1.0
    )
    step = np.where(gain > 0, gain * (1.0 - utilities), gain * utilities)
    after = np.clip(utilities + step, 0.0, 1.0)
    return after, float(world.entropy_slope[task] * entropy + world.entropy_offset[task])


def simulate_run(
    world: SyntheticWorld, order: Sequence[int], rng: np.random.Generator
) -> RunRecord:
    """The reports of a run training ``order`` (a prefix or a full order): baseline and one
    evaluation of every task (utility, noise sd :data:`NOISE_SD`; entropy, noise sd 0.01) after
    every stage."""
    utilities, entropy = world.base.copy(), 1.0
    trained: list[int] = []
    reported: list[dict[int, float]] = []
    entropies: list[dict[int, float]] = []
    for stage in range(len(order) + 1):
        if stage > 0:
            utilities, entropy = _stage(world, utilities, entropy, trained, order[stage - 1])
            trained.append(order[stage - 1])
        noisy = np.clip(utilities + rng.normal(0.0, NOISE_SD, size=world.n), 0.0, 1.0)
        reported.append({j: float(noisy[j]) for j in range(world.n)})
        noisy_h = entropy + rng.normal(0.0, 0.01, size=world.n)
        entropies.append({j: float(noisy_h[j]) for j in range(world.n)})
    return RunRecord(trained=tuple(int(t) for t in order), utilities=reported, entropies=entropies)


@dataclass(frozen=True, slots=True)
class History:
    """``runs`` complete runs in random orders, ``current`` a run half-trained (not in ``runs``)."""

    runs: list[RunRecord]
    current: RunRecord
    kinds: tuple[TaskKind, ...]
    weights: FloatArray


def make_history(n: int, runs: int, seed: int) -> History:
    """A world of ``n`` tasks and its history (:class:`History`), deterministic for the seed."""
    rng = np.random.default_rng([seed, n, runs])
    world = make_world(n, rng)
    complete = [simulate_run(world, [int(t) for t in rng.permutation(n)], rng) for _ in range(runs)]
    half = [int(t) for t in rng.permutation(n)][: n // 2]
    return History(complete, simulate_run(world, half, rng), world.kinds, np.ones(n))


# --- timing ---------------------------------------------------------------------------------


@dataclass(slots=True)
class SizeResult:
    """Timings of one size: wall ms of every repeat per call, peaks in MB.

    ``plan`` is the order ``recommend`` returned (a permutation of ``0..n-1``).
    """

    n: int
    runs: int
    times_ms: dict[str, list[float]] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)
    rss_mb: float = 0.0
    plan: list[int] = field(default_factory=list)
    replan: list[int] = field(default_factory=list)


def _calls(history: History, repeat: int) -> dict[str, Callable[[], object]]:
    """The timed calls on ``history`` (the running run is part of the data when re-planning)."""
    kinds, w, runs = history.kinds, history.weights, history.runs
    seed = plan_seed("bench.learning_cost", len(kinds), repeat)
    with_current = [*runs, history.current]
    return {
        "fit": lambda: fit_order_posterior(runs, kinds=kinds, weights=w),
        "recommend": lambda: recommend(runs, kinds=kinds, weights=w),
        "thompson": lambda: thompson_order(runs, kinds=kinds, weights=w, seed=seed),
        "explore": lambda: explore_order(runs, kinds=kinds, weights=w, seed=seed),
        "replan": lambda: explore_order(
            with_current, kinds=kinds, weights=w, seed=seed, current=history.current
        ),
        "legacy": lambda: fit_run_model(runs, kinds=kinds),
    }


def _wall_ms(call: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = call()
    return 1000.0 * (time.perf_counter() - start), value


def _traced_peak_mb(call: Callable[[], object]) -> float:
    """``tracemalloc`` peak of one call, MB (10^6 bytes)."""
    tracemalloc.start()
    try:
        call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 1e6


def _maxrss_mb() -> float:
    """Maximum resident set size of this process so far, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def time_size(
    n: int, runs: int, repeats: int, *, legacy: bool = False, seed: int = 0
) -> SizeResult:
    """Time every call of :data:`CALLS` (and ``legacy`` when asked) ``repeats`` times at ``n``."""
    history = make_history(n, runs, seed)
    rss_before = _maxrss_mb()
    result = SizeResult(n=n, runs=runs)
    names = [*CALLS, "legacy"] if legacy else list(CALLS)
    for name in names:
        count = min(repeats, 3) if name == "legacy" else repeats
        times = []
        for repeat in range(count):
            elapsed, value = _wall_ms(_calls(history, repeat)[name])
            times.append(elapsed)
            if isinstance(value, Recommendation) and repeat == 0:
                result.plan = [int(t) for t in value.order]
            if name == "replan" and isinstance(value, tuple) and repeat == 0:
                result.replan = [int(t) for t in value]
        result.times_ms[name] = times
        result.peak_mb[name] = _traced_peak_mb(_calls(history, 0)[name])
    result.rss_mb = _maxrss_mb() - rss_before
    return result


# --- the driver -----------------------------------------------------------------------------


def _run_worker(n: int, args: argparse.Namespace) -> SizeResult:
    """:func:`time_size` in a fresh subprocess with one BLAS thread; its JSON result."""
    command = [sys.executable, "-m", "bench.learning_cost", "--worker", str(n)]
    command += ["--runs", str(args.runs), "--repeats", str(args.repeats), "--seed", str(args.seed)]
    if n in args.legacy_sizes and n <= LEGACY_MAX_TASKS:
        command.append("--legacy")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return SizeResult(**json.loads(output.strip().splitlines()[-1]))


def _load_average() -> str:
    """The 1, 5 and 15 minute load averages of this machine (``"unknown"`` off Linux)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _cell(times: list[float] | None) -> str:
    if not times:
        return f"{'-':>17}"
    return f"{statistics.median(times):>8.1f} {max(times):>8.1f}"


HEADER = (
    f"{'n':>3} {'runs':>4} | {'fit med/max':>17} | {'recommend':>17} | {'thompson':>17} | "
    f"{'explore':>17} | {'replan':>17} | {'legacy fit':>17} | {'peak MB':>8} {'rss MB':>7}"
)


def format_row(result: SizeResult) -> str:
    """One table line: median and max wall ms per call, the largest traced peak, the rss growth."""
    cells = " | ".join(_cell(result.times_ms.get(name)) for name in [*CALLS, "legacy"])
    peak = max(result.peak_mb.values(), default=0.0)
    return f"{result.n:>3} {result.runs:>4} | {cells} | {peak:>8.1f} {result.rss_mb:>7.1f}"


def target_lines(results: Sequence[SizeResult]) -> list[str]:
    """PASS/FAIL of every target of :data:`TARGETS_MS` whose size was run."""
    lines = []
    for result in results:
        limit = TARGETS_MS.get(result.n)
        if limit is None:
            continue
        for name in PLAN_CALLS:
            median = statistics.median(result.times_ms[name])
            verdict = "PASS" if median <= limit else "FAIL"
            lines.append(
                f"{verdict}: n = {result.n}, {result.runs} runs, {name} median "
                f"{median:.1f} ms <= {limit:.0f} ms"
            )
    return lines


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[6, 8, 12, 20, 30, 40])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--legacy-sizes", type=int, nargs="*", default=[20, 30, 40])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--legacy", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table (one subprocess per size) and the target lines."""
    args = _parse(argv)
    if args.worker is not None:
        result = time_size(args.worker, args.runs, args.repeats, legacy=args.legacy, seed=args.seed)
        print(json.dumps(asdict(result)))
        return
    print(f"load average (1, 5, 15 min): {_load_average()}")
    print(
        "wall ms, median and max of", args.repeats, "repeats (legacy: at most 3); one BLAS thread"
    )
    print(HEADER)
    results = []
    for n in args.sizes:
        result = _run_worker(n, args)
        results.append(result)
        print(format_row(result), flush=True)
    for line in target_lines(results):
        print(line)


if __name__ == "__main__":
    main()
