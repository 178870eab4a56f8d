"""Family ``additive``: worlds where Ordo's pairwise / whole-run model is exact.

After the trained sequence ``s`` (utility units, ``M[i, j]`` = effect of training ``i`` on
``j``)::

    j not trained yet:  u_j(s) = base_j + sum_{i in s} G[i, j]
    j trained:          u_j(s) = L_j + sum_{i in s before j} F[i, j] + sum_{i in s after j} B[i, j]

so the final utility of an order ``pi`` is ``S_j = L_j + sum_{i before j} F[i, j] +
sum_{i after j} B[i, j]`` (``solver.scoring`` with ``rho = 1``) and the best order is the
optimum of a Linear Ordering Problem. This is the whole-run model of ``solver.learning`` with
``R = F`` (here) and its ``F = G`` (here), and no entropy slope.

Effects have kind structure (mean per kind pair plus a per-cell deviation): a structured task
trained after an open-ended one erodes it (``B[structured, open]`` mostly negative); tasks of
the same kind transfer to each other (same-kind ``F`` and ``G`` mostly positive). Magnitudes are
scaled by ``1 / (n - 1)`` (each task has ``n - 1`` partners) so that the best order beats the
average one by a few per cent of its mean utility at every ``n``; each task's effects are shrunk
where needed so that every utility of every order stays in ``[0, 1]`` (no clipping).

The policy entropy drifts (structured stages lower it multiplicatively, open-ended ones raise it
towards a ceiling) and is reported with every evaluation, but it has *no* effect on utilities:
a model that reads entropy must learn to ignore it here. Evaluation noise is Gaussian, per task
standard deviation drawn in ``[0.01, 0.03]``. Joint training is not defined (``None``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from bench.worlds.base import FloatArray, IntArray
from bench.worlds.oracle import StepWorld
from ordo_server.solver.estimation import TaskKind

__all__ = [
    "VERSION",
    "AdditiveDynamics",
    "AdditiveWorld",
    "BoolArray",
    "additive_world",
    "draw_tasks",
]

VERSION = "1"
"""Bump whenever the worlds of this family change (it keys the oracle's cache)."""

MIN_TASKS, MAX_TASKS = 4, 14
_STRUCTURED_NAMES = (
    "math", "code", "logic", "science", "tabular", "puzzles", "sql", "physics", "chemistry",
    "theorem_proving", "unit_conversion", "regex",
)  # fmt: skip
_OPEN_NAMES = (
    "creative_writing", "dialogue", "general_qa", "summarization", "roleplay", "poetry",
    "brainstorming", "translation", "essay", "advice", "storytelling", "email",
)  # fmt: skip
# Mean effect per kind pair, indexed [kind of i, kind of j] with 0 = structured, 1 = open-ended,
# before scaling by 1 / (n - 1) (utility units).
_F_MEAN = np.array([[0.10, -0.03], [0.02, 0.08]])
_B_MEAN = np.array([[0.02, -0.16], [-0.05, 0.0]])
_G_MEAN = np.array([[0.08, -0.04], [0.0, 0.06]])
_CELL_SD = 0.06
_HEADROOM = 0.02  # every utility of every order stays in [_HEADROOM, 1 - _HEADROOM]

BoolArray = npt.NDArray[np.bool_]


def draw_tasks(
    rng: np.random.Generator, n: int
) -> tuple[tuple[str, ...], tuple[TaskKind, ...], BoolArray]:
    """Names, kinds and the open-ended mask (n,) of ``n`` tasks, both kinds present.

    Kinds come in a random index order, so no solver tie-break can favour one kind by accident.
    """
    if not MIN_TASKS <= n <= MAX_TASKS:
        raise ValueError(f"n must be between {MIN_TASKS} and {MAX_TASKS}, got {n}")
    n_structured = int(np.clip(rng.integers(n // 2 - 1, n // 2 + 2), 2, n - 2))
    is_open = rng.permutation(np.arange(n) >= n_structured)
    structured = iter(rng.permutation(_STRUCTURED_NAMES))
    open_ended = iter(rng.permutation(_OPEN_NAMES))
    names = tuple(str(next(open_ended if flag else structured)) for flag in is_open)
    kinds = tuple(TaskKind.OPEN_ENDED if flag else TaskKind.STRUCTURED for flag in is_open)
    return names, kinds, np.asarray(is_open, dtype=np.bool_)


def _kind_effect(
    rng: np.random.Generator, is_open: BoolArray, means: FloatArray, scale: float
) -> FloatArray:
    """Kind-pair mean plus a per-cell deviation, times ``scale``; shape (n, n), zero diagonal."""
    k = is_open.astype(np.int64)
    n = len(k)
    effect = (means[k[:, None], k[None, :]] + rng.normal(0.0, _CELL_SD, (n, n))) * scale
    np.fill_diagonal(effect, 0.0)
    return np.asarray(effect, dtype=np.float64)


def _shrink_to_bounds(level: FloatArray, effects: FloatArray) -> FloatArray:
    """Per task ``j``, the factor (n,) in ``(0, 1]`` on column ``j`` of ``effects`` (n, n) that
    keeps ``level[j]`` plus any subset sum of the column within the headroom bounds."""
    up = np.clip(effects, 0.0, None).sum(axis=0)
    down = np.clip(effects, None, 0.0).sum(axis=0)
    room_up = (1.0 - _HEADROOM - level) / np.maximum(up, 1e-12)
    room_down = (level - _HEADROOM) / np.maximum(-down, 1e-12)
    return np.asarray(np.minimum(1.0, np.minimum(room_up, room_down)), dtype=np.float64)


class AdditiveDynamics:
    """Batched dynamics; state (P, 2n + 1) = utilities (n), trained mask (n), entropy (1)."""

    def __init__(
        self,
        *,
        base: FloatArray,
        level: FloatArray,
        forward: FloatArray,
        backward: FloatArray,
        transfer: FloatArray,
        is_open: BoolArray,
        entropy_step: FloatArray,
        entropy0: float = 1.0,
        entropy_max: float = 1.6,
    ) -> None:
        self.base = base
        self.level = level
        self.forward = forward
        self.backward = backward
        self.transfer = transfer
        self.is_open = is_open
        self.entropy_step = entropy_step
        self.entropy0 = entropy0
        self.entropy_max = entropy_max

    @property
    def n(self) -> int:
        """Number of tasks."""
        return len(self.base)

    def initial(self, count: int) -> FloatArray:
        """``count`` fresh states (count, 2n + 1)."""
        state = np.zeros((count, 2 * self.n + 1))
        state[:, : self.n] = self.base
        state[:, -1] = self.entropy0
        return state

    def step(self, state: FloatArray, tasks: IntArray) -> FloatArray:
        """State ``p`` trains ``tasks[p]``: others move by ``G`` or ``B``, ``tasks[p]`` jumps to
        its level plus the ``F`` of what was trained before it."""
        n, rows = self.n, np.arange(len(tasks))
        utilities, trained = state[:, :n], state[:, n : 2 * n]
        shift = np.where(trained > 0.5, self.backward[tasks], self.transfer[tasks])
        new = state.copy()
        new[:, :n] = utilities + shift
        new[rows, tasks] = self.level[tasks] + np.einsum(
            "pi,ip->p", trained, self.forward[:, tasks]
        )
        new[rows, n + tasks] = 1.0
        entropy, step = state[:, -1], self.entropy_step[tasks]
        raised = entropy + step * (self.entropy_max - entropy)
        lowered = entropy * np.exp(-step)
        new[:, -1] = np.where(self.is_open[tasks], raised, lowered)
        return new

    def utilities(self, state: FloatArray) -> FloatArray:
        """Utilities (P, n)."""
        return state[:, : self.n].copy()

    def entropy(self, state: FloatArray) -> FloatArray:
        """Policy entropy (P,)."""
        return state[:, -1].copy()


class AdditiveWorld(StepWorld[AdditiveDynamics]):
    """A world of the ``additive`` family; :attr:`dynamics` holds its effects."""

    family = "additive"

    def pairwise_utilities(self, orders: IntArray) -> FloatArray:
        """``S_j = L_j + sum_{i before j} F[i, j] + sum_{i after j} B[i, j]``, shape (P, n), of
        ``P`` full orders (P, n): the closed form that :meth:`final_utilities` must equal."""
        orders = np.asarray(orders, dtype=np.int64)
        count, n = orders.shape
        position = np.empty_like(orders)
        position[np.arange(count)[:, None], orders] = np.arange(n)
        before = position[:, :, None] < position[:, None, :]  # (P, i, j): i before j
        d = self.dynamics
        after = ~before & ~np.eye(n, dtype=np.bool_)
        return np.asarray(
            d.level
            + np.einsum("pij,ij->pj", before, d.forward)
            + np.einsum("pij,ij->pj", after, d.backward),
            dtype=np.float64,
        )

    def joint_utilities(self) -> FloatArray | None:
        """Joint training is not defined in an additive world."""
        return None


def additive_world(n: int, seed: int) -> AdditiveWorld:
    """The additive world of ``n`` tasks (``4 <= n <= 14``) drawn from ``seed``."""
    rng = np.random.default_rng([seed, 0xADD])
    names, kinds, is_open = draw_tasks(rng, n)
    scale = rng.uniform(1.0, 1.5) / (n - 1)
    forward = _kind_effect(rng, is_open, _F_MEAN, scale)
    backward = _kind_effect(rng, is_open, _B_MEAN, scale)
    transfer = _kind_effect(rng, is_open, _G_MEAN, scale)
    level = rng.uniform(0.45, 0.7, n)
    base = level - rng.uniform(0.2, 0.35, n)
    # One factor per task on F and B together: a task's final utility mixes both.
    final_factor = _shrink_to_bounds(level, np.where(forward > backward, forward, backward))
    final_factor = np.minimum(
        final_factor, _shrink_to_bounds(level, np.where(forward < backward, forward, backward))
    )
    forward, backward = forward * final_factor, backward * final_factor
    transfer = transfer * _shrink_to_bounds(base, transfer)
    entropy_step = np.where(is_open, rng.uniform(0.15, 0.4, n), rng.uniform(0.15, 0.35, n))
    dynamics = AdditiveDynamics(
        base=base,
        level=level,
        forward=forward,
        backward=backward,
        transfer=transfer,
        is_open=is_open,
        entropy_step=np.asarray(entropy_step, dtype=np.float64),
    )
    return AdditiveWorld(
        seed=seed,
        names=names,
        kinds=kinds,
        dynamics=dynamics,
        task_noise_sd=rng.uniform(0.01, 0.03, n),
        entropy_factor=rng.uniform(0.8, 1.2, n),
    )
