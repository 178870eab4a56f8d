"""Family ``skills``: the closed-loop benchmark's simulator (latent skills and entropy).

An adapter over :func:`bench.simulator.draw_world` and :class:`app.simulation.Simulator`: the
world of ``(n, seed)`` is the very world that ``python -m bench.closed_loop`` draws for that
``n`` and seed. Valid for ``4 <= n <= 10``: from ``n = 11`` on, some seeds draw more
open-ended tasks than :mod:`bench.simulator` has names for and its ``draw_world`` fails
(``RuntimeError``). Jobs are simulators; final utilities are
:func:`app.simulation.final_scores`; joint training is
:func:`app.simulation.joint_final_scores` (interleaved mini-stages on the same budget).
"""

from __future__ import annotations

import numpy as np

from bench import simulator
from bench.worlds.base import FloatArray, IntArray
from ordo_server.app.simulation import Simulator, WorldParams, final_scores, joint_final_scores
from ordo_server.solver.estimation import TaskKind

__all__ = ["VERSION", "SkillsWorld", "skills_world"]

VERSION = "1"
"""Bump whenever the worlds of this family change (it keys the oracle's cache)."""


class SkillsWorld:
    """A world of the skills-and-entropy simulator; ``params`` is its hidden truth."""

    family = "skills"

    def __init__(self, params: WorldParams, *, seed: int) -> None:
        self.params = params
        self.seed = seed
        self.names: tuple[str, ...] = params.names
        self.kinds: tuple[TaskKind, ...] = params.kinds
        self.noise_sd = float(np.mean(params.noise_sd))
        """Mean over tasks of the evaluation noise standard deviation (utility units)."""

    @property
    def n(self) -> int:
        """Number of tasks."""
        return self.params.n

    def start(self, seed: int) -> Simulator:
        """A fresh job; ``seed`` drives its evaluation noise."""
        return Simulator(self.params, seed=seed)

    def final_utilities(self, orders: IntArray) -> FloatArray:
        """Noise-free final utilities (P, n) of ``P`` full orders (P, n)."""
        return final_scores(self.params, np.asarray(orders, dtype=np.int64))

    def joint_utilities(self) -> FloatArray | None:
        """Noise-free final utilities (n,) of joint training (interleaved mini-stages)."""
        return joint_final_scores(self.params)


def skills_world(n: int, seed: int) -> SkillsWorld:
    """The closed-loop benchmark's world of ``n`` tasks (``4 <= n <= 10``) and ``seed``."""
    return SkillsWorld(simulator.draw_world(n, seed), seed=seed)
