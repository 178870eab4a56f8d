"""A simulated multi-task RL post-training job whose hidden truth is *not* additive.

The one home of the training dynamics, shared by ``ordo demo`` (installed, so it lives here)
and the closed-loop benchmark (``bench/simulator.py`` draws random worlds on top of it).
Mechanisms (nothing here knows Ordo's model):

- **Latent skills.** Each task ``j`` needs a mix of skills (``loadings[j]``, a row summing to 1):
  its own primary skill, a skill shared with its kind ("reasoning" for structured tasks,
  "expression" for open-ended ones), a general instruction-following skill and, sometimes, a
  bit of another task's primary skill. Tasks sharing skills transfer to each other.
- **Saturating gains.** Training task ``t`` closes a fraction ``learn_rate[t]`` of the gap to
  mastery on the skills it uses (weighted by how much it uses them): a skill that is already
  good gains little.
- **Interference.** Some skill pairs conflict: every unit gained on skill ``k`` costs a fraction
  ``conflict[k, l]`` of skill ``l``. Skills the stage does not use also decay a little
  (generic forgetting, ``decay[t]``).
- **Entropy.** Structured tasks (math, code: verifiable rewards) lower the policy entropy
  multiplicatively; open-ended tasks (writing, dialogue: judge rewards) raise it towards a
  ceiling (Omni-Thinker, arXiv 2507.14783: structured domains decrease entropy, open-ended
  domains increase it, and structured training after creative training collapses the entropy
  the creative task needs).
- **Open-ended tasks need entropy.** Their score is multiplied by
  ``q_j(H) = min(1, H / need_j) ** power_j``, and the same factor scales how well a stage that
  trains them learns: trained at low entropy they reach less, and later structured stages erode
  them by lowering ``H``.
- **Noisy evaluations.** Each evaluation adds Gaussian noise (``noise_sd[j]``, utility units);
  the reported entropy per task is ``H`` times a task factor plus noise.

For the demo:

- :func:`demo_world`, a hand-written world of six named tasks (math, code, QA, creative
  writing, dialogue, summarization) whose skill sharing and conflicts read like the domain;
- :func:`joint_final_scores`, joint training defined on the same budget: each of the ``n``
  stages is split into ``n`` interleaved mini-stages, one per task, each worth ``1/n`` of a
  stage (rates rescaled so that ``n`` mini-stages of a task alone equal one full stage).

Utilities are in ``[0, 1]``, higher is better. Shapes: ``n`` tasks, ``m`` skills, ``P`` states
simulated together.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from ordo_server.solver.estimation import TaskKind

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

STRUCTURED = TaskKind.STRUCTURED
OPEN_ENDED = TaskKind.OPEN_ENDED


@dataclass(frozen=True, slots=True)
class WorldParams:
    """Hidden parameters of a world (each mechanism is described in the module docstring)."""

    names: tuple[str, ...]
    kinds: tuple[TaskKind, ...]
    loadings: FloatArray  # (n, m), rows sum to 1: how much task j uses skill k
    skill0: FloatArray  # (m,), initial proficiency in [0, 1]
    learn_rate: FloatArray  # (n,), fraction of the gap to mastery closed per stage
    conflict: FloatArray  # (m, m), fraction of skill l lost per unit gained on skill k
    decay: FloatArray  # (n,), fraction of unused skills forgotten per stage
    floor: FloatArray  # (n,), score with no skill
    ceiling: FloatArray  # (n,), score with full skill and enough entropy
    entropy0: float
    entropy_max: float
    entropy_step: FloatArray  # (n,), log-decrease (structured) or fraction to the ceiling
    entropy_need: FloatArray  # (n,), entropy an open-ended task needs (0 for structured)
    entropy_power: FloatArray  # (n,), steepness of that need
    entropy_report_factor: FloatArray  # (n,), reported entropy of task j is H times this
    noise_sd: FloatArray  # (n,), evaluation noise (utility units)
    entropy_noise_sd: float

    @property
    def n(self) -> int:
        """Number of tasks."""
        return len(self.names)

    @property
    def open_ended(self) -> BoolArray:
        """Mask of the open-ended tasks, shape (n,)."""
        return np.array([kind == OPEN_ENDED for kind in self.kinds])


def _entropy_fitness(params: WorldParams, entropy: FloatArray) -> FloatArray:
    """``q_j(H) = min(1, H / need_j) ** power_j`` per state and task, shape (P, n)."""
    need = np.where(params.open_ended, params.entropy_need, 1.0)
    ratio = np.minimum(1.0, entropy[:, None] / need[None, :])
    q = ratio ** params.entropy_power[None, :]
    return np.asarray(np.where(params.open_ended[None, :], q, 1.0), dtype=np.float64)


def true_scores(params: WorldParams, skills: FloatArray, entropy: FloatArray) -> FloatArray:
    """Noise-free utilities, shape (P, n), of ``P`` states (skills (P, m), entropy (P,))."""
    mastery = skills @ params.loadings.T
    span = params.ceiling - params.floor
    return params.floor + span * mastery * _entropy_fitness(params, entropy)


def train_batch(
    params: WorldParams, skills: FloatArray, entropy: FloatArray, tasks: IntArray
) -> tuple[FloatArray, FloatArray]:
    """One stage for ``P`` states at once: state ``p`` trains ``tasks[p]``; returns new state."""
    focus = params.loadings[tasks] / params.loadings[tasks].max(axis=1, keepdims=True)
    fitness = _entropy_fitness(params, entropy)[np.arange(len(tasks)), tasks]
    rate = params.learn_rate[tasks] * fitness
    gain = rate[:, None] * focus * (1.0 - skills)
    learned = skills + gain
    interference = np.clip(gain @ params.conflict, 0.0, 1.0)
    forgetting = params.decay[tasks][:, None] * (1.0 - focus)
    new_skills = learned * (1.0 - interference) * (1.0 - forgetting)
    is_open = params.open_ended[tasks]
    step = params.entropy_step[tasks]
    raised = entropy + step * (params.entropy_max - entropy)
    lowered = entropy * np.exp(-step)
    return new_skills, np.where(is_open, raised, lowered)


def final_scores(params: WorldParams, orders: IntArray) -> FloatArray:
    """Noise-free final utilities, shape (P, n), of ``P`` full orders (shape (P, n))."""
    count = orders.shape[0]
    skills = np.tile(params.skill0, (count, 1))
    entropy = np.full(count, params.entropy0)
    for stage in range(orders.shape[1]):
        skills, entropy = train_batch(params, skills, entropy, orders[:, stage])
    return true_scores(params, skills, entropy)


def mini_stage_params(params: WorldParams, parts: int) -> WorldParams:
    """The world with every per-stage rate cut so that ``parts`` mini-stages make one stage.

    Fractions of a gap (learning, entropy raise, forgetting) compound: ``1 - (1 - r)^(1/parts)``;
    the structured entropy log-decrease divides: ``step / parts``.
    """

    def compound(rate: FloatArray) -> FloatArray:
        return np.asarray(1.0 - (1.0 - rate) ** (1.0 / parts), dtype=np.float64)

    step = np.where(params.open_ended, compound(params.entropy_step), params.entropy_step / parts)
    return replace(
        params,
        learn_rate=compound(params.learn_rate),
        decay=compound(params.decay),
        entropy_step=np.asarray(step, dtype=np.float64),
    )


def joint_final_scores(params: WorldParams) -> FloatArray:
    """Noise-free final utilities, shape (n,), of joint training on the budget of ``n`` stages.

    ``n`` rounds; each round trains every task for ``1/n`` of a stage, in index order (the
    interleaving that a mixed-batch trainer approximates).
    """
    mini = mini_stage_params(params, params.n)
    skills = params.skill0[None, :].copy()
    entropy = np.array([params.entropy0])
    for _round in range(params.n):
        for task in range(params.n):
            skills, entropy = train_batch(mini, skills, entropy, np.array([task], dtype=np.int64))
    scores: FloatArray = true_scores(params, skills, entropy)[0]
    return scores


def all_orders(n: int) -> IntArray:
    """Every permutation of ``0..n-1``, shape (n!, n)."""
    return np.array(list(itertools.permutations(range(n))), dtype=np.int64)


def kind_first_orders(params: WorldParams, first: str = STRUCTURED) -> IntArray:
    """Every order that trains all tasks of kind ``first`` before the others, shape (P, n)."""
    head = [j for j in range(params.n) if params.kinds[j] == first]
    tail = [j for j in range(params.n) if params.kinds[j] != first]
    orders = [
        list(a) + list(b)
        for a in itertools.permutations(head)
        for b in itertools.permutations(tail)
    ]
    return np.array(orders, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation of every task: utilities and the policy entropy measured on each."""

    values: dict[int, float]
    entropies: dict[int, float]


class Simulator:
    """One training job in a world: ``train`` one task per stage, ``evaluate`` with noise."""

    def __init__(self, params: WorldParams, *, seed: int) -> None:
        self.params = params
        self._rng = np.random.default_rng(seed)
        self._skills = params.skill0[None, :].copy()
        self._entropy = np.array([params.entropy0])
        self.trained: list[int] = []

    @property
    def kinds(self) -> tuple[TaskKind, ...]:
        """Kind of every task."""
        return self.params.kinds

    def train(self, task: int) -> None:
        """Train ``task`` for one stage."""
        if task in self.trained or not 0 <= task < self.params.n:
            raise ValueError(f"task {task} cannot be trained now")
        tasks = np.array([task], dtype=np.int64)
        self._skills, self._entropy = train_batch(self.params, self._skills, self._entropy, tasks)
        self.trained.append(task)

    def true_utilities(self) -> FloatArray:
        """Noise-free utilities now, shape (n,)."""
        scores: FloatArray = true_scores(self.params, self._skills, self._entropy)[0]
        return scores

    def evaluate(self) -> Evaluation:
        """Noisy utilities of every task and the policy entropy measured on each."""
        p = self.params
        values = self.true_utilities() + self._rng.normal(0.0, p.noise_sd)
        entropy = float(self._entropy[0]) * p.entropy_report_factor
        entropy = entropy + self._rng.normal(0.0, p.entropy_noise_sd, p.n)
        return Evaluation(
            values={j: float(v) for j, v in enumerate(values)},
            entropies={j: float(h) for j, h in enumerate(entropy)},
        )


# --- the demo's world --------------------------------------------------------------------------

DEMO_TASKS: tuple[tuple[str, TaskKind, str], ...] = (
    ("math", STRUCTURED, "Competition math (verifiable answers)"),
    ("code", STRUCTURED, "Code generation (unit tests)"),
    ("qa", STRUCTURED, "Factual QA (exact match)"),
    ("creative_writing", OPEN_ENDED, "Creative writing (LLM judge)"),
    ("dialogue", OPEN_ENDED, "Multi-turn dialogue (LLM judge)"),
    ("summarization", OPEN_ENDED, "Summarization (LLM judge)"),
)
# Skills: one per task, then three shared ones.
_REASONING, _EXPRESSION, _GENERAL = 6, 7, 8
# Rows: task; entries (skill, weight). Structured tasks share reasoning, open-ended ones
# expression; QA and summarization share reading; code builds on math.
_LOADINGS: tuple[tuple[tuple[int, float], ...], ...] = (
    ((0, 0.55), (_REASONING, 0.30), (_GENERAL, 0.10), (1, 0.05)),
    ((1, 0.55), (_REASONING, 0.25), (_GENERAL, 0.10), (0, 0.10)),
    ((2, 0.50), (_REASONING, 0.15), (_GENERAL, 0.20), (5, 0.15)),
    ((3, 0.55), (_EXPRESSION, 0.30), (_GENERAL, 0.10), (4, 0.05)),
    ((4, 0.50), (_EXPRESSION, 0.25), (_GENERAL, 0.15), (2, 0.10)),
    ((5, 0.50), (_EXPRESSION, 0.20), (_GENERAL, 0.10), (2, 0.20)),
)
# (gained skill, hurt skill, fraction lost per unit gained): terse reasoning styles erode
# expressive ones and the other way round, a little.
_CONFLICTS: tuple[tuple[int, int, float], ...] = (
    (_REASONING, _EXPRESSION, 0.50),
    (0, 3, 0.40),
    (1, 4, 0.30),
    (_EXPRESSION, _REASONING, 0.20),
    (3, 2, 0.20),
    (4, 1, 0.15),
)


def demo_world(seed: int = 0) -> WorldParams:
    """The six-task world of ``ordo demo``; ``seed`` jitters rates and noise a little."""
    rng = np.random.default_rng(seed)
    n, m = len(DEMO_TASKS), 9
    loadings = np.zeros((n, m))
    for j, row in enumerate(_LOADINGS):
        for skill, weight in row:
            loadings[j, skill] = weight
    loadings /= loadings.sum(axis=1, keepdims=True)
    conflict = np.zeros((m, m))
    for gained, hurt, fraction in _CONFLICTS:
        conflict[gained, hurt] = fraction
    kinds = tuple(kind for _key, kind, _name in DEMO_TASKS)
    is_open = np.array([kind == OPEN_ENDED for kind in kinds])
    return WorldParams(
        names=tuple(key for key, _kind, _name in DEMO_TASKS),
        kinds=kinds,
        loadings=loadings,
        skill0=rng.uniform(0.15, 0.3, m),
        learn_rate=rng.uniform(0.6, 0.75, n),
        conflict=conflict,
        decay=rng.uniform(0.03, 0.08, n),
        floor=np.array([0.05, 0.05, 0.15, 0.2, 0.2, 0.2]),
        ceiling=np.array([0.85, 0.8, 0.9, 0.9, 0.9, 0.9]),
        entropy0=1.0,
        entropy_max=1.6,
        entropy_step=np.where(is_open, rng.uniform(0.2, 0.35, n), rng.uniform(0.2, 0.3, n)),
        entropy_need=np.where(is_open, rng.uniform(0.85, 1.0, n), 0.0),
        entropy_power=np.where(is_open, rng.uniform(0.75, 1.2, n), 0.0),
        entropy_report_factor=rng.uniform(0.9, 1.1, n),
        noise_sd=np.full(n, 0.015),
        entropy_noise_sd=0.02,
    )
