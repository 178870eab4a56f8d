"""The exhaustive oracle of a world, cached on disk, and a generic job over batched dynamics.

:func:`oracle` evaluates :meth:`World.final_utilities` on every one of the ``n!`` orders
(``n <= 8``), in chunks so that memory stays bounded, and caches the result as ``.npz`` keyed by
``(family, n, seed, VERSION)``, where ``VERSION`` is a string that the world's module exposes
and bumps whenever its worlds change. The cache lives under ``$ORDO_BENCH_CACHE`` or, if unset,
``$XDG_CACHE_HOME/ordo-bench`` (``~/.cache/ordo-bench``); writes are atomic (a temporary file
renamed over the target), so concurrent benchmark processes never read half a file.

:class:`Dynamics` is what a synthetic world needs to define (an initial state, a batched
training step, utilities and entropy of a state); :class:`StepJob` turns it into a noisy
:class:`~bench.worlds.base.Job` and :func:`rollout` into noise-free final utilities, so that
the job and the oracle share one definition of the training dynamics. :class:`StepWorld` is
the common base of the worlds built on one :class:`Dynamics`.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import numpy as np

from bench.worlds.base import Evaluation, FloatArray, IntArray, World
from ordo_server.solver.estimation import TaskKind

__all__ = [
    "ORACLE_MAX_TASKS",
    "Dynamics",
    "OracleResult",
    "StepJob",
    "StepWorld",
    "all_orders",
    "cache_dir",
    "oracle",
    "rollout",
    "true_mean_utility",
    "world_version",
]

ORACLE_MAX_TASKS = 8
_CHUNK_ORDERS = 4096
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


# --- a generic job over batched dynamics --------------------------------------------------------


class Dynamics(Protocol):
    """Noise-free training dynamics of ``n`` tasks on ``P`` states at once (state shape (P, d))."""

    @property
    def n(self) -> int:
        """Number of tasks."""

    def initial(self, count: int) -> FloatArray:
        """``count`` fresh states, shape (count, d)."""

    def step(self, state: FloatArray, tasks: IntArray) -> FloatArray:
        """One stage: state ``p`` (of (P, d)) trains ``tasks[p]`` (P,); returns the new (P, d)."""

    def utilities(self, state: FloatArray) -> FloatArray:
        """Noise-free utility of every task, shape (P, n), in ``[0, 1]``."""

    def entropy(self, state: FloatArray) -> FloatArray:
        """Noise-free policy entropy of every state, shape (P,) (nats)."""


def rollout(dynamics: Dynamics, orders: IntArray) -> FloatArray:
    """Noise-free utilities (P, n) after training the ``P`` orders (P, k) from fresh states."""
    orders = np.asarray(orders, dtype=np.int64)
    state = dynamics.initial(orders.shape[0])
    for stage in range(orders.shape[1]):
        state = dynamics.step(state, orders[:, stage])
    return dynamics.utilities(state)


class StepJob:
    """A :class:`~bench.worlds.base.Job` over :class:`Dynamics`, with Gaussian evaluation noise.

    ``noise_sd`` (n,): evaluation noise per task (utility units). The reported entropy of task
    ``j`` is the state's entropy times ``entropy_factor[j]`` plus ``N(0, entropy_noise_sd)``.
    """

    def __init__(
        self,
        dynamics: Dynamics,
        *,
        noise_sd: FloatArray,
        entropy_factor: FloatArray,
        entropy_noise_sd: float,
        seed: int,
    ) -> None:
        self.dynamics = dynamics
        self.noise_sd = noise_sd
        self.entropy_factor = entropy_factor
        self.entropy_noise_sd = entropy_noise_sd
        self._rng = np.random.default_rng(seed)
        self._state = dynamics.initial(1)
        self.trained: list[int] = []

    def train(self, task: int) -> None:
        """Train ``task`` for one stage (each task at most once)."""
        if task in self.trained or not 0 <= task < self.dynamics.n:
            raise ValueError(f"task {task} cannot be trained now")
        self._state = self.dynamics.step(self._state, np.array([task], dtype=np.int64))
        self.trained.append(task)

    def true_utilities(self) -> FloatArray:
        """Noise-free utilities now, shape (n,)."""
        values: FloatArray = self.dynamics.utilities(self._state)[0]
        return values

    def true_entropy(self) -> float:
        """Noise-free policy entropy now (nats)."""
        return float(self.dynamics.entropy(self._state)[0])

    def evaluate(self) -> Evaluation:
        """Noisy utilities of every task and the policy entropy measured on each."""
        n = self.dynamics.n
        values = self.true_utilities() + self._rng.normal(0.0, self.noise_sd)
        entropy = self.true_entropy() * self.entropy_factor
        entropy = entropy + self._rng.normal(0.0, self.entropy_noise_sd, n)
        return Evaluation(
            values={j: float(v) for j, v in enumerate(values)},
            entropies={j: float(h) for j, h in enumerate(entropy)},
        )


_D = TypeVar("_D", bound=Dynamics)


class StepWorld(Generic[_D]):
    """A :class:`~bench.worlds.base.World` over a :class:`Dynamics` and :class:`StepJob`.

    Subclasses set ``family`` and define :meth:`joint_utilities`. ``task_noise_sd`` (n,):
    evaluation noise per task (utility units); ``entropy_factor`` (n,) and ``entropy_noise_sd``
    (nats) as in :class:`StepJob`.
    """

    family: str

    def __init__(
        self,
        *,
        seed: int,
        names: tuple[str, ...],
        kinds: tuple[TaskKind, ...],
        dynamics: _D,
        task_noise_sd: FloatArray,
        entropy_factor: FloatArray,
        entropy_noise_sd: float = 0.02,
    ) -> None:
        self.seed = seed
        self.names = names
        self.kinds = kinds
        self.dynamics = dynamics
        self.task_noise_sd = task_noise_sd
        self.entropy_factor = entropy_factor
        self.entropy_noise_sd = entropy_noise_sd
        self.noise_sd = float(np.mean(task_noise_sd))
        """Mean over tasks of the evaluation noise standard deviation (utility units)."""

    @property
    def n(self) -> int:
        """Number of tasks."""
        return len(self.names)

    def start(self, seed: int) -> StepJob:
        """A fresh job; ``seed`` drives its evaluation noise."""
        return StepJob(
            self.dynamics,
            noise_sd=self.task_noise_sd,
            entropy_factor=self.entropy_factor,
            entropy_noise_sd=self.entropy_noise_sd,
            seed=seed,
        )

    def final_utilities(self, orders: IntArray) -> FloatArray:
        """Noise-free final utilities (P, n) of ``P`` full orders (P, n)."""
        return rollout(self.dynamics, orders)


# --- the oracle -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OracleResult:
    """Every order of a world and its noise-free final mean utility.

    ``orders`` (n!, n) lexicographic; ``utilities`` (n!,) final mean utility over tasks of each
    order (utility units); the best order, its value and the mean over all orders.
    """

    orders: IntArray
    utilities: FloatArray
    best_order: tuple[int, ...]
    best_value: float
    mean_value: float

    @classmethod
    def of(cls, orders: IntArray, utilities: FloatArray) -> OracleResult:
        """The result of ``orders`` (P, n) and their final mean utilities (P,)."""
        best = int(np.argmax(utilities))
        return cls(
            orders=orders,
            utilities=utilities,
            best_order=tuple(int(t) for t in orders[best]),
            best_value=float(utilities[best]),
            mean_value=float(utilities.mean()),
        )

    @property
    def worst_value(self) -> float:
        """Final mean utility of the worst order."""
        return float(self.utilities.min())


def all_orders(n: int) -> IntArray:
    """Every permutation of ``0..n-1``, shape (n!, n), lexicographic (``n <= 8``)."""
    if not 1 <= n <= ORACLE_MAX_TASKS:
        raise ValueError(f"exhaustive search is limited to 1 <= n <= {ORACLE_MAX_TASKS}, got {n}")
    return np.array(list(itertools.permutations(range(n))), dtype=np.int64)


def true_mean_utility(world: World, order: tuple[int, ...] | list[int] | IntArray) -> float:
    """Noise-free final mean utility over tasks of one full ``order`` (n,)."""
    orders = np.asarray(order, dtype=np.int64).reshape(1, -1)
    return float(world.final_utilities(orders)[0].mean())


def mean_utilities(world: World, orders: IntArray, *, chunk: int = _CHUNK_ORDERS) -> FloatArray:
    """Final mean utility (P,) of ``P`` orders (P, n), ``chunk`` orders at a time."""
    out = np.empty(orders.shape[0])
    for start in range(0, orders.shape[0], chunk):
        part = orders[start : start + chunk]
        out[start : start + chunk] = world.final_utilities(part).mean(axis=1)
    return out


def cache_dir() -> Path:
    """Where oracle results are cached: ``$ORDO_BENCH_CACHE`` or ``$XDG_CACHE_HOME/ordo-bench``."""
    explicit = os.environ.get("ORDO_BENCH_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ordo-bench"


def world_version(world: World) -> str:
    """The ``VERSION`` string of the module that defines ``world``'s class."""
    module = sys.modules.get(type(world).__module__)
    version = getattr(module, "VERSION", None)
    if not isinstance(version, str):
        raise TypeError(f"module {type(world).__module__} exposes no VERSION string")
    return version


def _cache_path(world: World, directory: Path) -> Path:
    family = _SAFE.sub("_", world.family)
    version = _SAFE.sub("_", world_version(world))
    return directory / f"{family}-n{world.n}-seed{world.seed}-v{version}.npz"


def _load(path: Path, count: int) -> FloatArray | None:
    try:
        with np.load(path) as data:
            utilities = np.asarray(data["utilities"], dtype=np.float64)
    except (OSError, KeyError, ValueError):
        return None
    return utilities if utilities.shape == (count,) else None


def _store(path: Path, utilities: FloatArray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, utilities=utilities)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def oracle(world: World, *, cache: Path | None = None, use_cache: bool = True) -> OracleResult:
    """Exhaustive search over every order of ``world`` (``n <= 8``), cached on disk.

    ``cache``: the cache directory (default :func:`cache_dir`); ``use_cache=False`` neither
    reads nor writes it. Cost: ``n!`` rollouts of ``n`` stages, vectorized in chunks.
    """
    orders = all_orders(world.n)
    path = _cache_path(world, cache if cache is not None else cache_dir()) if use_cache else None
    utilities = _load(path, orders.shape[0]) if path is not None else None
    if utilities is None:
        utilities = mean_utilities(world, orders)
        if path is not None:
            _store(path, utilities)
    return OracleResult.of(orders, utilities)


# --- the spread of a family ---------------------------------------------------------------------


def spread_report(family: str, n: int, seeds: int) -> str:
    """One line: over ``seeds`` worlds, the mean of ``(best - mean order) / best`` and of
    ``(best - worst) / best`` (per cent), and the mean time of an uncached oracle (s)."""
    from bench.worlds import draw_world

    gaps, ranges, times = [], [], []
    for seed in range(seeds):
        world = draw_world(family, n, seed)
        started = time.perf_counter()
        result = oracle(world, use_cache=False)
        times.append(time.perf_counter() - started)
        gaps.append((result.best_value - result.mean_value) / result.best_value)
        ranges.append((result.best_value - result.worst_value) / result.best_value)
    return (
        f"{family:>10} n={n}: (best-mean)/best {100 * np.mean(gaps):5.2f} % "
        f"(min {100 * np.min(gaps):.2f}, max {100 * np.max(gaps):.2f}), "
        f"(best-worst)/best {100 * np.mean(ranges):5.2f} %, oracle {np.mean(times):.3f} s"
    )


def main() -> None:
    """``python -m bench.worlds.oracle [--families ...] [--n 6 8] [--seeds 10]``."""
    parser = argparse.ArgumentParser(description="Spread of the order's effect per family.")
    parser.add_argument("--families", nargs="+", default=["skills", "additive", "recency"])
    parser.add_argument("--n", nargs="+", type=int, default=[6, 8])
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    for family in args.families:
        for n in args.n:
            print(spread_report(family, n, args.seeds), flush=True)


if __name__ == "__main__":
    main()
