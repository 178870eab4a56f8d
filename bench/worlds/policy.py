"""Family ``policy``: a real policy-gradient learner, the seed paper's entropy mechanism (§1.6).

One small softmax policy over ``K`` answers, ``logits = W phi(x)`` with ``phi(x)`` a prompt's
feature vector (``d`` features and a constant one, so ``W`` carries the bias). ``W`` is shared
by every task: tasks transfer and interfere through it. Each task draws its prompts from its own
feature cluster; tasks of one domain have overlapping clusters.

- *Structured* (verifiable) tasks: reward 1 when the sampled answer is the prompt's correct
  answer (the argmax of a task-specific linear map of ``phi(x)``), else 0. Training on them
  sharpens the policy: entropy falls. Utility: expected accuracy on held-out prompts.
- *Open-ended* tasks: reward = graded quality ``q(a, x)`` in ``[0, 1]`` plus a diversity term
  (one minus the share of the group's other samples that gave the same answer). Training on them
  raises entropy. Utility: expected quality times a diversity factor
  ``min(1, mean entropy / target entropy)``, so structured training after them erodes them.

Training is GRPO-style: per prompt a group of ``G`` sampled answers, advantages
``(r - mean r) / (std r + eps)`` within the group, a policy-gradient step on
``log pi(a|x) * advantage`` (no critic), a fixed number of steps per stage. Every random draw of
a stage (prompts, sampling uniforms) is seeded from ``(world seed, task, stage index)``, so the
noise-free state after an order is a function of the order alone.

Speed: :meth:`PolicyWorld.final_utilities` trains each distinct prefix of the given orders once,
all policies of one depth and task in one batch. Every contraction is written as a fixed
sequence of elementwise operations (no BLAS, no reductions across the batch axis), so a policy's
result does not depend on the batch it was trained in: a job trained stage by stage reaches
exactly the state of :meth:`PolicyWorld.final_utilities`. Cost of all orders (one core): n = 6
(1,956 prefixes) ~0.6 s, n = 8 (109,600 prefixes) ~40 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bench.worlds.base import Evaluation, FloatArray, IntArray
from ordo_server.solver.estimation import TaskKind

__all__ = ["VERSION", "PolicyJob", "PolicyWorld", "policy_world"]

VERSION = "1"
"""Bump whenever the worlds of this family change (it keys the oracle's cache)."""

BoolArray = npt.NDArray[np.bool_]

N_ANSWERS = 16
"""``K``: size of the answer space."""
N_FEATURES = 10
"""``d``: prompt features (a constant feature is appended for the bias)."""
GROUP_SIZE = 8
"""``G``: sampled answers per prompt (one GRPO group)."""
PROMPTS_PER_STEP = 8
"""``B``: prompts per update step."""
STEPS_PER_STAGE = 12
"""``S``: update steps of one stage (the stage budget)."""
TRAIN_PROMPTS = 64
"""Training prompts per task."""
EVAL_PROMPTS = 32
"""Held-out prompts per task (noise-free utilities and entropies)."""
EVAL_SAMPLES = 400
"""Prompts (one sampled answer each) of one task's noisy evaluation."""
DIVERSITY_WEIGHT = 2.0
"""Weight of the diversity term in an open-ended reward (reward units)."""
TARGET_ENTROPY_SHARE = 0.8
"""Diversity factor target: this share of ``log K`` nats of mean entropy gives factor 1."""
QUALITY_SHARPNESS = 0.6
"""Quality of an open-ended answer: ``exp(sharpness * (score - best score) / sd of scores)``."""
LR_SCALE = 0.6
"""Median learning rate of a task (per-task rates are log-uniform within a factor 3)."""
INIT_SCALE = 1.3
"""Scale of the initial policy's weights (sets its initial entropy)."""
ADV_EPS = 1e-6
"""Added to the group's reward sd in the advantage."""
CHUNK = 8192
"""Policies trained in one batch (memory bound only: results do not depend on it)."""
NOISE_SD = 0.012
"""Typical sd of one task's noisy evaluation (utility units): the mean measured over states of
n = 6 worlds (structured ~0.014, binomial at ``EVAL_SAMPLES``; open-ended ~0.009)."""

_TAG_WORLD = 0
_TAG_STAGE = 1
_TAG_JOINT = 2


@dataclass(frozen=True, slots=True)
class Prompts:
    """Prompts of every task.

    Attributes
    ----------
    phi:
        Features, shape (n, P, d + 1), the last one constant 1.
    table:
        Reward of every answer, shape (n, P, K): a one-hot of the correct answer (structured)
        or the graded quality in ``[0, 1]`` (open-ended).
    """

    phi: FloatArray
    table: FloatArray


@dataclass(frozen=True, slots=True)
class Batch:
    """The random draws of ``S`` update steps of ``B`` prompts with groups of ``G``.

    Attributes
    ----------
    phi:
        Prompt features, shape (S, B, d + 1).
    table:
        Reward of every answer of each prompt, shape (S, B, K).
    diversity:
        Weight of the diversity term of each prompt, shape (S, B) (0 for structured tasks).
    lr:
        Learning rate of each prompt, shape (S, B).
    uniforms:
        Uniform draws in ``[0, 1)`` that sample the group's answers, shape (S, B, G).
    """

    phi: FloatArray
    table: FloatArray
    diversity: FloatArray
    lr: FloatArray
    uniforms: FloatArray


class PolicyWorld:
    """A world of the policy-gradient family; its tasks and initial policy are its truth."""

    family = "policy"

    def __init__(
        self,
        *,
        seed: int,
        kinds: tuple[TaskKind, ...],
        train: Prompts,
        held_out: Prompts,
        lr: FloatArray,
        theta0: FloatArray,
    ) -> None:
        self.seed = seed
        self.kinds = kinds
        self.names: tuple[str, ...] = tuple(
            f"{'verify' if k is TaskKind.STRUCTURED else 'write'}-{i}" for i, k in enumerate(kinds)
        )
        self.noise_sd = NOISE_SD
        self.train_prompts = train
        self.held_out = held_out
        self.lr = lr
        """Learning rate of each task, shape (n,)."""
        self.theta0 = theta0
        """Initial policy, shape (d + 1, K)."""
        self.open_ended = np.array([k is TaskKind.OPEN_ENDED for k in kinds])
        self._stages: dict[tuple[int, int], Batch] = {}

    @property
    def n(self) -> int:
        """Number of tasks."""
        return len(self.kinds)

    def start(self, seed: int) -> PolicyJob:
        """A fresh job; ``seed`` drives its evaluation noise only."""
        return PolicyJob(self, seed=seed)

    def stage_batch(self, task: int, stage: int) -> Batch:
        """The draws of training ``task`` at stage index ``stage`` (cached)."""
        key = (task, stage)
        if key not in self._stages:
            rng = np.random.default_rng([self.seed, self.n, _TAG_STAGE, task, stage])
            tasks = np.full((STEPS_PER_STAGE, PROMPTS_PER_STEP), task, dtype=np.int64)
            self._stages[key] = self._draw_batch(rng, tasks)
        return self._stages[key]

    def joint_batch(self) -> Batch:
        """Draws of joint training: ``n * S`` steps, each prompt of a uniformly drawn task."""
        rng = np.random.default_rng([self.seed, self.n, _TAG_JOINT])
        tasks = rng.integers(0, self.n, size=(self.n * STEPS_PER_STAGE, PROMPTS_PER_STEP))
        return self._draw_batch(rng, tasks)

    def _draw_batch(self, rng: np.random.Generator, tasks: IntArray) -> Batch:
        """Prompts and uniforms for the step-by-prompt task grid ``tasks`` (S, B)."""
        idx = rng.integers(0, TRAIN_PROMPTS, size=tasks.shape)
        uniforms = rng.random((*tasks.shape, GROUP_SIZE))
        return Batch(
            phi=self.train_prompts.phi[tasks, idx],
            table=self.train_prompts.table[tasks, idx],
            diversity=np.where(self.open_ended[tasks], DIVERSITY_WEIGHT, 0.0),
            lr=self.lr[tasks],
            uniforms=uniforms,
        )

    def train_many(self, theta: FloatArray, task: int, stage: int) -> FloatArray:
        """Policies (N, d + 1, K) after training ``task`` at stage index ``stage``."""
        batch = self.stage_batch(task, stage)
        out = np.empty_like(theta)
        for lo in range(0, theta.shape[0], CHUNK):
            out[lo : lo + CHUNK] = train_steps(theta[lo : lo + CHUNK], batch)
        return out

    def utilities(self, theta: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Noise-free utilities and mean entropies (nats), each (N, n), of policies (N, d+1, K)."""
        util = np.empty((theta.shape[0], self.n))
        ent = np.empty((theta.shape[0], self.n))
        for lo in range(0, theta.shape[0], CHUNK):
            probs = softmax_probs(theta[lo : lo + CHUNK], self.held_out.phi)
            util[lo : lo + CHUNK], ent[lo : lo + CHUNK] = self._score(probs, self.held_out.table)
        return util, ent

    def _score(self, probs: FloatArray, table: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Utilities and mean entropies (N, n) from probabilities (N, n, P, K), tables (n, P, K)."""
        expected = (probs * table[None]).sum(axis=-1).mean(axis=-1)
        entropy = prompt_entropy(probs).mean(axis=-1)
        factor = np.minimum(1.0, entropy / (TARGET_ENTROPY_SHARE * np.log(N_ANSWERS)))
        util = np.where(self.open_ended[None], expected * factor, expected)
        return np.clip(util, 0.0, 1.0), entropy

    def final_utilities(self, orders: IntArray) -> FloatArray:
        """Noise-free final utilities (P, n) of ``P`` full orders (P, n).

        Each distinct prefix is trained once; cost ~ (number of prefixes) * ``S`` steps.
        """
        orders = _check_orders(np.asarray(orders, dtype=np.int64), self.n)
        states = self.theta0[None].copy()
        parent_of_order = np.zeros(orders.shape[0], dtype=np.int64)
        for depth in range(self.n):
            prefixes, first, inverse = np.unique(
                orders[:, : depth + 1], axis=0, return_index=True, return_inverse=True
            )
            parents = parent_of_order[first]
            new_states = np.empty((prefixes.shape[0], *states.shape[1:]))
            for task in np.unique(prefixes[:, depth]):
                sel = np.flatnonzero(prefixes[:, depth] == task)
                new_states[sel] = self.train_many(states[parents[sel]], int(task), depth)
            states, parent_of_order = new_states, inverse.reshape(-1)
        util, _ = self.utilities(states)
        return util[parent_of_order]

    def joint_utilities(self) -> FloatArray:
        """Noise-free utilities (n,) after ``n * S`` steps, each on prompts of all tasks."""
        theta = train_steps(self.theta0[None].copy(), self.joint_batch())
        util, _ = self.utilities(theta)
        joint: FloatArray = util[0]
        return joint


class PolicyJob:
    """One training run: a policy trained stage by stage, evaluated with sampling noise."""

    def __init__(self, world: PolicyWorld, *, seed: int) -> None:
        self.world = world
        self.trained: list[int] = []
        self._rng = np.random.default_rng(seed)
        self._theta = world.theta0[None].copy()

    def train(self, task: int) -> None:
        """Train ``task`` for one stage (each task at most once)."""
        if task in self.trained or not 0 <= task < self.world.n:
            raise ValueError(f"task {task} cannot be trained now")
        self._theta = self.world.train_many(self._theta, task, len(self.trained))
        self.trained.append(task)

    def true_utilities(self) -> FloatArray:
        """Noise-free utilities now, shape (n,)."""
        util, _ = self.world.utilities(self._theta)
        now: FloatArray = util[0]
        return now

    def true_entropies(self) -> FloatArray:
        """Noise-free mean policy entropy (nats) on each task's held-out prompts, shape (n,)."""
        _, ent = self.world.utilities(self._theta)
        now: FloatArray = ent[0]
        return now

    def evaluate(self) -> Evaluation:
        """Scores of ``EVAL_SAMPLES`` sampled prompts and answers per task, and their entropy."""
        w = self.world
        idx = self._rng.integers(0, EVAL_PROMPTS, size=(w.n, EVAL_SAMPLES))
        rows = np.arange(w.n)[:, None]
        phi, table = w.held_out.phi[rows, idx], w.held_out.table[rows, idx]
        probs = softmax_probs(self._theta, phi)[0]
        answers = sample_answers(probs, self._rng.random((w.n, EVAL_SAMPLES, 1)))[..., 0]
        rewards = np.take_along_axis(table, answers[..., None], axis=-1)[..., 0].mean(axis=-1)
        entropy = prompt_entropy(probs).mean(axis=-1)
        factor = np.minimum(1.0, entropy / (TARGET_ENTROPY_SHARE * np.log(N_ANSWERS)))
        values = np.clip(np.where(w.open_ended, rewards * factor, rewards), 0.0, 1.0)
        return Evaluation(
            values={t: float(values[t]) for t in range(w.n)},
            entropies={t: float(entropy[t]) for t in range(w.n)},
        )


def softmax_probs(theta: FloatArray, phi: FloatArray) -> FloatArray:
    """Answer probabilities (N, *P, K) of policies ``theta`` (N, D, K) on prompts ``phi`` (*P, D).

    The contraction over ``D`` is a fixed sequence of elementwise multiply-adds, so each
    policy's result is bit-identical whatever the batch size ``N``.
    """
    extra = phi.ndim - 1
    logits = np.zeros((theta.shape[0], *phi.shape[:-1], theta.shape[-1]))
    term = np.empty_like(logits)
    for j in range(phi.shape[-1]):
        w_j = theta[:, j, :].reshape(theta.shape[0], *([1] * extra), theta.shape[-1])
        np.multiply(w_j, phi[None, ..., j, None], out=term)
        logits += term
    logits -= logits.max(axis=-1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=-1, keepdims=True)
    return logits


def prompt_entropy(probs: FloatArray) -> FloatArray:
    """Entropy (nats) of each distribution of ``probs`` (..., K), shape (...)."""
    logp = np.log(np.maximum(probs, 1e-300))
    entropy: FloatArray = -(probs * logp).sum(axis=-1)
    return entropy


def sample_answers(probs: FloatArray, uniforms: FloatArray) -> IntArray:
    """Answers (..., G) drawn by inverse CDF from ``probs`` (..., K) with ``uniforms`` (..., G)."""
    cdf = np.cumsum(probs, axis=-1)
    counts = (cdf[..., None, :] <= uniforms[..., None]).sum(axis=-1)
    answers: IntArray = np.minimum(counts, probs.shape[-1] - 1).astype(np.int64)
    return answers


def group_rewards(answers: IntArray, table: FloatArray, diversity: FloatArray) -> FloatArray:
    """Rewards (N, B, G) of ``answers`` (N, B, G) under ``table`` (B, K) and ``diversity`` (B,).

    Reward = ``table[b, a]`` + ``diversity[b]`` * (share of the group's other answers that differ).
    """
    n_group = answers.shape[-1]
    base = np.take_along_axis(np.broadcast_to(table, (answers.shape[0], *table.shape)), answers, -1)
    same = (answers[..., :, None] == answers[..., None, :]).sum(axis=-1) - 1
    differ = 1.0 - same / (n_group - 1)
    rewards: FloatArray = base + diversity[None, :, None] * differ
    return rewards


def train_steps(theta: FloatArray, batch: Batch) -> FloatArray:
    """Policies (N, D, K) after the GRPO steps of ``batch`` from ``theta`` (N, D, K)."""
    theta = theta.copy()
    step = np.empty_like(theta)
    n_answers = theta.shape[-1]
    arange_k = np.arange(n_answers)
    for s in range(batch.phi.shape[0]):
        phi = batch.phi[s]
        probs = softmax_probs(theta, phi)
        answers = sample_answers(probs, batch.uniforms[s][None])
        rewards = group_rewards(answers, batch.table[s], batch.diversity[s])
        adv = (rewards - rewards.mean(axis=-1, keepdims=True)) / (
            rewards.std(axis=-1, keepdims=True) + ADV_EPS
        )
        # d log pi(a|x) / d logits = onehot(a) - pi(.|x), summed over the group in fixed order.
        coef = -probs * adv.sum(axis=-1)[..., None]
        for g in range(answers.shape[-1]):
            coef += (answers[..., g, None] == arange_k) * adv[..., g, None]
        scale = batch.lr[s] / (answers.shape[-1] * phi.shape[0])
        for b in range(phi.shape[0]):
            np.multiply((scale[b] * phi[b])[None, :, None], coef[:, b, None, :], out=step)
            theta += step
    return theta


def _check_orders(orders: IntArray, n: int) -> IntArray:
    """``orders`` (P, n) when each row is a permutation of ``range(n)``; raises otherwise."""
    if orders.ndim != 2 or orders.shape[1] != n:
        raise ValueError(f"orders must have shape (P, {n}), got {orders.shape}")
    if not np.array_equal(np.sort(orders, axis=1), np.broadcast_to(np.arange(n), orders.shape)):
        raise ValueError("every order must be a permutation of range(n)")
    return orders


def _unit(x: FloatArray) -> FloatArray:
    """``x`` scaled to unit norm along the last axis."""
    normed: FloatArray = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return normed


def _draw_kinds(rng: np.random.Generator, n: int) -> tuple[TaskKind, ...]:
    """Kinds of ``n`` tasks: 30-50 % open-ended (at least one of each), in random index order."""
    n_open = int(np.clip(round(n * rng.uniform(0.3, 0.5)), 1, n - 1))
    is_open = rng.permutation(np.arange(n) < n_open)
    return tuple(TaskKind.OPEN_ENDED if o else TaskKind.STRUCTURED for o in is_open)


def _draw_prompts(
    rng: np.random.Generator, centers: FloatArray, maps: FloatArray, is_open: BoolArray, size: int
) -> Prompts:
    """``size`` prompts of each task around ``centers`` (n, d) with answer ``maps`` (n, K, d)."""
    n, d = centers.shape
    feats = _unit(centers[:, None, :] + 0.55 * rng.standard_normal((n, size, d)) / np.sqrt(d))
    scores = np.einsum("nkd,npd->npk", maps, feats)
    onehot = (scores == scores.max(axis=-1, keepdims=True)).astype(np.float64)
    spread = scores - scores.max(axis=-1, keepdims=True)
    quality = np.exp(QUALITY_SHARPNESS * spread / scores.std(axis=-1, keepdims=True))
    table = np.where(is_open[:, None, None], quality, onehot)
    phi = np.concatenate([2.0 * feats, np.ones((n, size, 1))], axis=-1)
    return Prompts(phi=phi, table=table)


def policy_world(n: int, seed: int) -> PolicyWorld:
    """The policy-gradient world of ``n`` tasks (``2 <= n``) and ``seed``, deterministic."""
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    rng = np.random.default_rng([seed, n, _TAG_WORLD])
    k, d = N_ANSWERS, N_FEATURES
    kinds = _draw_kinds(rng, n)
    is_open = np.array([kd is TaskKind.OPEN_ENDED for kd in kinds])
    n_domains = max(2, n // 3)
    domain = rng.integers(0, n_domains, size=n)
    domain_centers = _unit(rng.standard_normal((n_domains, d)))
    centers = _unit(domain_centers[domain] + 0.8 * _unit(rng.standard_normal((n, d))))
    domain_maps = rng.standard_normal((n_domains, k, d))
    maps = 0.75 * domain_maps[domain] + 0.66 * rng.standard_normal((n, k, d))
    train = _draw_prompts(rng, centers, maps, is_open, TRAIN_PROMPTS)
    held_out = _draw_prompts(rng, centers, maps, is_open, EVAL_PROMPTS)
    lr = LR_SCALE * np.exp(rng.uniform(np.log(0.5), np.log(1.5), size=n))
    theta0 = np.zeros((d + 1, k))
    theta0[:d] = INIT_SCALE * rng.standard_normal((d, k))
    return PolicyWorld(seed=seed, kinds=kinds, train=train, held_out=held_out, lr=lr, theta0=theta0)
