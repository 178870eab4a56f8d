"""A simulated multi-task RL post-training world whose hidden truth is *not* additive.

Mechanisms (every parameter is drawn per seed; nothing here knows Ordo's model):

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
  ceiling (the Omni-Thinker entropy story, ``shared/reference/paper.md`` §1.6: structured domains
  decrease entropy, open-ended domains increase it, and structured training after creative
  training collapses the entropy the creative task needs).
- **Open-ended tasks need entropy.** Their score is multiplied by
  ``q_j(H) = min(1, H / need_j) ** power_j``, and the same factor scales how well a stage that
  trains them learns: trained at low entropy they reach less, and later structured stages erode
  them by lowering ``H``.
- **Noisy evaluations.** Each evaluation adds Gaussian noise (``noise_sd[j]``, utility units;
  ~1-3 points, the standard error of a few hundred test items); the reported entropy per task
  is ``H`` times a task factor plus noise.

Scores are utilities in ``[0, 1]`` (higher is better); the objective is the final mean utility
over tasks, noise-free for scoring. The oracle enumerates every order (``n <= 8``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from solver.estimation import TaskKind

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_STRUCTURED_NAMES = ("math", "code", "logic", "science", "tabular", "puzzles", "sql", "physics")
_OPEN_NAMES = ("creative_writing", "dialogue", "general_qa", "summarization", "roleplay", "poetry")
ORACLE_MAX_TASKS = 8


@dataclass(frozen=True, slots=True)
class WorldParams:
    """Hidden parameters of one world; shapes: ``n`` tasks, ``m = n + 3`` skills."""

    names: tuple[str, ...]
    kinds: tuple[TaskKind, ...]
    loadings: FloatArray  # (n, m), rows sum to 1
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
    def open_ended(self) -> npt.NDArray[np.bool_]:
        """Mask of the open-ended tasks, shape (n,)."""
        return np.array([k is TaskKind.OPEN_ENDED for k in self.kinds])


def draw_world(n: int, seed: int) -> WorldParams:
    """Draw a world of ``n`` tasks (``4 <= n <= 14``) from its seed."""
    if not 4 <= n <= 14:
        raise ValueError("n must be between 4 and 14")
    rng = np.random.default_rng(seed)
    n_structured = int(np.clip(rng.integers(n // 2 - 1, n // 2 + 2), 2, n - 2))
    # Kinds in a random index order, so no solver tie-break can favour one kind by accident.
    is_open = rng.permutation(np.arange(n) >= n_structured)
    kinds = tuple(TaskKind.OPEN_ENDED if flag else TaskKind.STRUCTURED for flag in is_open)
    structured_names = iter(rng.permutation(_STRUCTURED_NAMES))
    open_names = iter(rng.permutation(_OPEN_NAMES))
    names = tuple(str(next(open_names if flag else structured_names)) for flag in is_open)
    m = n + 3
    reasoning, expression, general = n, n + 1, n + 2
    loadings = np.zeros((n, m))
    for j in range(n):
        loadings[j, j] = rng.uniform(0.4, 0.7)
        loadings[j, expression if is_open[j] else reasoning] = rng.uniform(0.1, 0.3)
        loadings[j, general] = rng.uniform(0.05, 0.15)
        if rng.random() < 0.5:
            other = int(rng.choice([t for t in range(n) if t != j]))
            loadings[j, other] += rng.uniform(0.05, 0.2)
    loadings /= loadings.sum(axis=1, keepdims=True)
    conflict = np.where(rng.random((m, m)) < 0.2, rng.uniform(0.1, 0.5, (m, m)), 0.0)
    np.fill_diagonal(conflict, 0.0)
    return WorldParams(
        names=names,
        kinds=kinds,
        loadings=loadings,
        skill0=rng.uniform(0.05, 0.35, m),
        learn_rate=rng.uniform(0.5, 0.85, n),
        conflict=conflict,
        decay=rng.uniform(0.01, 0.06, n),
        floor=rng.uniform(0.0, 0.2, n),
        ceiling=rng.uniform(0.6, 0.95, n),
        entropy0=1.0,
        entropy_max=1.6,
        entropy_step=np.where(is_open, rng.uniform(0.15, 0.4, n), rng.uniform(0.15, 0.35, n)),
        entropy_need=np.where(is_open, rng.uniform(0.7, 1.0, n), 0.0),
        entropy_power=np.where(is_open, rng.uniform(0.3, 0.8, n), 0.0),
        entropy_report_factor=rng.uniform(0.8, 1.2, n),
        noise_sd=rng.uniform(0.01, 0.03, n),
        entropy_noise_sd=0.02,
    )


def _entropy_fitness(params: WorldParams, entropy: FloatArray) -> FloatArray:
    """``q_j(H)`` for every state and task, shape (P, n); 1 for structured tasks."""
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


def all_orders(n: int) -> IntArray:
    """Every permutation of ``0..n-1``, shape (n!, n), lexicographic."""
    if n > ORACLE_MAX_TASKS:
        raise ValueError(f"exhaustive search is limited to n <= {ORACLE_MAX_TASKS}")
    return np.array(list(itertools.permutations(range(n))), dtype=np.int64)


@dataclass(frozen=True, slots=True)
class OracleResult:
    """Exhaustive search over every order: the best, and the whole distribution."""

    best_order: tuple[int, ...]
    best_utility: float
    orders: IntArray  # (n!, n)
    utilities: FloatArray  # (n!,), final mean utility of each order


def oracle(params: WorldParams) -> OracleResult:
    """Best order by the noise-free final mean utility, exhaustive over all ``n!`` orders."""
    orders = all_orders(params.n)
    utilities = final_scores(params, orders).mean(axis=1)
    best = int(np.argmax(utilities))
    return OracleResult(
        best_order=tuple(int(t) for t in orders[best]),
        best_utility=float(utilities[best]),
        orders=orders,
        utilities=utilities,
    )


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation of every task: utilities and reported policy entropies."""

    values: dict[int, float]
    entropies: dict[int, float]


class Simulator:
    """One training job in a world: ``train`` stages, ``evaluate`` with noise."""

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
        """Train ``task`` for one stage (a full pass over its data)."""
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
