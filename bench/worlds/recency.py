"""Family ``recency``: the last task trained on a skill dominates it (recency and saturation).

Hidden state: ``K`` shared *slots* in ``[0, 1]`` (settings of shared skills, e.g. answer style,
verbosity, format) plus one *exploration* slot, and one proficiency ``p_j`` in ``[0, 1]`` per
task. Each task uses one or two shared slots and the exploration slot, and has a preferred
setting on each (``pref[j, k]``; tasks of one kind roughly agree on a slot, the kinds disagree;
open-ended tasks want exploration high, structured ones low).

- **Recency.** Training ``t`` moves each slot ``k`` it uses a fraction ``pull[t, k]`` of the way
  to its preference (``0.5-0.9`` on shared slots, ``0.3-0.6`` on exploration): whoever trains a
  slot last dominates it, and earlier trainers' settings are overwritten.
- **Saturation.** ``t``'s own proficiency gains ``rate_t * (1 - p_t) * (0.5 + 0.5 m_t)``, where
  ``m_t`` is how well the slots fit ``t`` when the stage starts: a task learns less from a state
  set up for others.
- **Utility.** ``u_j = floor_j + (ceiling_j - floor_j) * p_j * m_j`` with the fit
  ``m_j = 1 - sens_j * sum_k weight[j, k] |s_k - pref[j, k]|`` (weights sum to 1 over the slots
  ``j`` uses, ``sens_j <= 1``), so utilities stay in ``[0, 1]`` without clipping.
- **Entropy.** The reported policy entropy is ``0.2 + 1.4 * s_explore`` (nats) times a task
  factor, plus noise: structured stages lower it, open-ended ones raise it, and it does matter
  (through the fit of the tasks that prefer it high or low).

Evaluation noise is Gaussian, per task standard deviation drawn in ``[0.01, 0.03]``. Joint
training (:meth:`RecencyWorld.joint_utilities`) is defined as in
:func:`app.simulation.joint_final_scores`: ``n`` rounds, each training every task in index order
for ``1/n`` of a stage, with every per-stage fraction compounded (``1 - (1 - r)^(1/n)``).
"""

from __future__ import annotations

import numpy as np

from bench.worlds.additive import BoolArray, draw_tasks
from bench.worlds.base import FloatArray, IntArray
from bench.worlds.oracle import StepWorld, rollout

__all__ = ["VERSION", "RecencyDynamics", "RecencyWorld", "recency_world"]

VERSION = "1"
"""Bump whenever the worlds of this family change (it keys the oracle's cache)."""

_ENTROPY_LOW, _ENTROPY_SPAN = 0.2, 1.4  # entropy (nats) at exploration 0, and its range


def _compound(fraction: FloatArray, parts: int) -> FloatArray:
    """The per-part fraction such that ``parts`` parts close ``fraction`` of a gap."""
    return np.asarray(1.0 - (1.0 - fraction) ** (1.0 / parts), dtype=np.float64)


class RecencyDynamics:
    """Batched dynamics; state (P, K + 1 + n) = slots (K shared, then exploration) and
    proficiencies (n).

    ``pref``, ``pull``, ``weight``: (n, K + 1); ``rate``, ``sens``, ``floor``, ``ceiling``,
    ``proficiency0``: (n,); ``slots0``: (K + 1,).
    """

    def __init__(
        self,
        *,
        pref: FloatArray,
        pull: FloatArray,
        weight: FloatArray,
        sens: FloatArray,
        rate: FloatArray,
        floor: FloatArray,
        ceiling: FloatArray,
        slots0: FloatArray,
        proficiency0: FloatArray,
    ) -> None:
        self.pref = pref
        self.pull = pull
        self.weight = weight
        self.sens = sens
        self.rate = rate
        self.floor = floor
        self.ceiling = ceiling
        self.slots0 = slots0
        self.proficiency0 = proficiency0

    @property
    def n(self) -> int:
        """Number of tasks."""
        return len(self.rate)

    @property
    def slot_count(self) -> int:
        """Number of slots, exploration included (``K + 1``)."""
        return len(self.slots0)

    def mini_stages(self, parts: int) -> RecencyDynamics:
        """The same world with every per-stage fraction cut so that ``parts`` parts make one."""
        return RecencyDynamics(
            pref=self.pref,
            pull=_compound(self.pull, parts),
            weight=self.weight,
            sens=self.sens,
            rate=_compound(self.rate, parts),
            floor=self.floor,
            ceiling=self.ceiling,
            slots0=self.slots0,
            proficiency0=self.proficiency0,
        )

    def initial(self, count: int) -> FloatArray:
        """``count`` fresh states (count, K + 1 + n)."""
        return np.tile(np.concatenate([self.slots0, self.proficiency0]), (count, 1))

    def fit(self, state: FloatArray) -> FloatArray:
        """How well the slots fit every task, shape (P, n), in ``[0, 1]``."""
        slots = state[:, : self.slot_count]
        gap = np.abs(slots[:, None, :] - self.pref[None, :, :])  # (P, n, K + 1)
        return np.asarray(1.0 - self.sens * np.einsum("pjk,jk->pj", gap, self.weight))

    def step(self, state: FloatArray, tasks: IntArray) -> FloatArray:
        """State ``p`` trains ``tasks[p]``: its proficiency gains (scaled by its fit at the start
        of the stage), then the slots it uses move towards its preferences."""
        rows, k = np.arange(len(tasks)), self.slot_count
        fit = self.fit(state)[rows, tasks]
        new = state.copy()
        level = state[rows, k + tasks]
        new[rows, k + tasks] = level + self.rate[tasks] * (1.0 - level) * (0.5 + 0.5 * fit)
        slots = state[:, :k]
        new[:, :k] = slots + self.pull[tasks] * (self.pref[tasks] - slots)
        return new

    def utilities(self, state: FloatArray) -> FloatArray:
        """Utilities (P, n)."""
        proficiency = state[:, self.slot_count :]
        return np.asarray(self.floor + (self.ceiling - self.floor) * proficiency * self.fit(state))

    def entropy(self, state: FloatArray) -> FloatArray:
        """Policy entropy (P,) (nats): an affine map of the exploration slot."""
        return np.asarray(_ENTROPY_LOW + _ENTROPY_SPAN * state[:, self.slot_count - 1])


class RecencyWorld(StepWorld[RecencyDynamics]):
    """A world of the ``recency`` family; :attr:`dynamics` holds its parameters."""

    family = "recency"

    def joint_utilities(self) -> FloatArray | None:
        """Noise-free final utilities (n,) of joint training: ``n`` rounds of ``n`` mini-stages,
        every task once per round in index order, each worth ``1/n`` of a stage."""
        n = self.n
        rounds = np.tile(np.arange(n, dtype=np.int64), n)[None, :]
        final: FloatArray = rollout(self.dynamics.mini_stages(n), rounds)[0]
        return final


def _draw_slots(
    rng: np.random.Generator, is_open: BoolArray, slots: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Preferences, pulls and weights (n, K + 1) of the tasks on ``K`` shared slots plus one
    exploration slot (the last column)."""
    n = len(is_open)
    kind = is_open.astype(np.int64)
    # Per kind and shared slot: the kinds pull most slots in opposite directions.
    centre = np.empty((2, slots))
    centre[0] = rng.uniform(0.05, 0.95, slots)
    centre[1] = np.clip(1.0 - centre[0] + rng.normal(0.0, 0.15, slots), 0.05, 0.95)
    pref = np.empty((n, slots + 1))
    pref[:, :slots] = np.clip(centre[kind] + rng.normal(0.0, 0.12, (n, slots)), 0.0, 1.0)
    pref[:, slots] = np.where(is_open, rng.uniform(0.7, 0.95, n), rng.uniform(0.05, 0.3, n))
    use = np.zeros((n, slots + 1), dtype=np.bool_)
    for j in range(n):
        use[j, rng.choice(slots, size=int(rng.integers(1, 3)), replace=False)] = True
    use[:, slots] = True
    pull = np.where(use, rng.uniform(0.5, 0.9, (n, slots + 1)), 0.0)
    pull[:, slots] = rng.uniform(0.3, 0.6, n)
    weight = np.where(use, rng.uniform(0.5, 1.0, (n, slots + 1)), 0.0)
    weight[:, slots] *= np.where(is_open, 1.0, 0.5)  # open-ended tasks care more
    weight /= weight.sum(axis=1, keepdims=True)
    return pref, pull, weight


def recency_world(n: int, seed: int) -> RecencyWorld:
    """The recency world of ``n`` tasks (``4 <= n <= 14``) drawn from ``seed``."""
    rng = np.random.default_rng([seed, 0x2EC])
    names, kinds, is_open = draw_tasks(rng, n)
    slots = 3 if n <= 8 else 4
    pref, pull, weight = _draw_slots(rng, is_open, slots)
    slots0 = np.append(rng.uniform(0.3, 0.7, slots), 0.5)
    dynamics = RecencyDynamics(
        pref=pref,
        pull=pull,
        weight=weight,
        sens=rng.uniform(0.5, 1.0, n),
        rate=rng.uniform(0.5, 0.8, n),
        floor=rng.uniform(0.05, 0.2, n),
        ceiling=rng.uniform(0.75, 0.95, n),
        slots0=slots0,
        proficiency0=rng.uniform(0.1, 0.3, n),
    )
    return RecencyWorld(
        seed=seed,
        names=names,
        kinds=kinds,
        dynamics=dynamics,
        task_noise_sd=rng.uniform(0.01, 0.03, n),
        entropy_factor=rng.uniform(0.8, 1.2, n),
    )
