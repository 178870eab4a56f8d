"""The one interface of every benchmark world: a hidden truth that trains one task per stage.

A *world* is a family member drawn from a seed (``n`` tasks with names and kinds). A *job* is
one training run in it: a fresh state, ``train(t)`` one stage at a time, ``evaluate()`` every
task with noise and the policy entropy. The benchmark's trainers only see jobs; the oracle and
the scoring see :meth:`World.final_utilities` (noise-free final utility of full orders).

Utilities are in ``[0, 1]`` (higher is better); the benchmark's objective is the final *mean*
utility over tasks. Worlds live in ``bench/``, never in the service.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from ordo_server.app.simulation import Evaluation
from ordo_server.solver.estimation import TaskKind

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

__all__ = ["Evaluation", "FloatArray", "IntArray", "Job", "World"]


class Job(Protocol):
    """One training run from a fresh state."""

    trained: list[int]

    def train(self, task: int) -> None:
        """Train ``task`` for one stage (each task at most once per job)."""

    def evaluate(self) -> Evaluation:
        """Noisy utility of every task and the policy entropy measured on each (``entropies``
        may be empty when the world has no entropy)."""


class World(Protocol):
    """A hidden truth of ``n`` tasks, deterministic for its ``(family, n, seed)``."""

    family: str
    seed: int
    names: tuple[str, ...]
    kinds: tuple[TaskKind, ...]
    noise_sd: float
    """Typical standard deviation of one task's evaluation (utility units)."""

    @property
    def n(self) -> int:
        """Number of tasks."""

    def start(self, seed: int) -> Job:
        """A fresh job; ``seed`` drives its evaluation noise only (training is deterministic)."""

    def final_utilities(self, orders: IntArray) -> FloatArray:
        """Noise-free final utility of every task, shape (P, n), of ``P`` full orders (P, n)."""

    def joint_utilities(self) -> FloatArray | None:
        """Noise-free final utilities (n,) of joint training on the same budget, or ``None``
        where the world does not define it."""
