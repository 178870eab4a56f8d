"""Real-learner worlds: a small MLP trained with SGD on continual-learning tasks cut from digits.

Three families after van de Ven & Tolias 2019 ("Three scenarios for continual learning") and
Hsu et al. 2018, cut from scikit-learn's bundled 8x8 digits (1,797 images, offline):

- :func:`split_world`: each task tells apart two digits drawn per seed (distinct pairs across
  tasks, a digit may recur); the first digit of the pair is label 0, the second label 1, so a
  digit that recurs in another pair may be labelled the other way (real conflict);
- :func:`permuted_world`: each task is 10-class digits under its own fixed pixel permutation
  (task 0 the identity);
- :func:`rotated_world`: each task is 10-class digits rotated by its own angle (task 0 upright).

Heads: ``"shared"`` (one output layer for every task: domain-incremental, 2 outputs for split
tasks, 10 otherwise) or ``"separate"`` (one head per task: task-incremental). Even seeds share,
odd seeds separate, unless ``heads=`` says otherwise.

The learner: ``64 -> 32 ReLU -> outputs``, plain SGD on the mean cross-entropy, minibatches of
:data:`BATCH`, :data:`EPOCHS` epochs over the task's training split per stage (20 steps for the
10-class tasks, about 12 for a split task); later stages overwrite what earlier ones taught
(forgetting), related tasks help each other (transfer). Every job of a
world starts from the same weights (drawn from the world seed) and the minibatch shuffles of a
stage are seeded by ``(world seed, task, stage index)``, so training is deterministic given the
order trained so far, and every network trained on the same task at the same stage sees the
same minibatches. That makes prefix sharing cheap: :meth:`DigitsWorld.final_utilities` trains
each distinct prefix once, level by level, all networks of a level at once (one GEMM for the
hidden layer of a whole group, float32). A job runs the same code with a batch of one network,
and gives bit for bit the state of the same prefix in :meth:`DigitsWorld.final_utilities`.
Cost of all ``n!`` orders on one core: about 1 s at n = 6; at n = 8 about 17 s (split) to
42 s (10-class) of CPU time.

Utilities: a task's utility is its accuracy on its held-out test split (noise-free: the whole
split). :meth:`DigitsJob.evaluate` measures each task on a bootstrap subsample of its test split
drawn with the job's seed, sized so the standard deviation is about :data:`TARGET_NOISE_SD`;
the entropy reported is the mean predictive entropy (nats) on the same subsample.

Kinds: half the tasks are called STRUCTURED and half OPEN_ENDED in a random index order. The
label has no mechanism here (no entropy effect): it only lets the service see both kinds.

Shapes: ``n`` tasks, ``B`` networks trained together, ``H`` hidden units, ``O`` outputs,
``K`` heads (1 shared, ``n`` separate), ``m`` samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from bench.worlds.base import Evaluation, FloatArray, IntArray
from ordo_server.solver.estimation import TaskKind

__all__ = [
    "VERSION",
    "DigitsJob",
    "DigitsWorld",
    "Heads",
    "permuted_world",
    "rotated_world",
    "split_world",
]

VERSION = "2"
"""Bumped whenever outcomes change (the oracle cache is keyed on it)."""

Heads = Literal["shared", "separate"]
F32 = npt.NDArray[np.float32]

HIDDEN = 32
"""Hidden units of the MLP."""
BATCH = 32
"""Minibatch size (samples)."""
EPOCHS = 2
"""Epochs over a task's training split per stage."""
LEARNING_RATE = 0.4
"""Plain SGD step size on the mean cross-entropy (nats per sample)."""
TARGET_NOISE_SD = 0.03
"""Aimed standard deviation of one task's noisy evaluation (accuracy units)."""
N_TRAIN = 320
"""Training samples per task of the 10-class families."""
N_TEST = 300
"""Test samples per task of the 10-class families."""
SPLIT_TEST_FRACTION = 0.4
"""Share of a split task's samples held out for testing."""
GROUP_CHUNK = 2048
"""Networks evaluated together (bounds the memory of one evaluation GEMM)."""

_FAMILY_TAG = {"mlp-split": 1, "mlp-permuted": 2, "mlp-rotated": 3}
"""Family name (as in the world registry) -> the tag mixed into every seed of its worlds."""


@dataclass(frozen=True, slots=True)
class _Task:
    """One task's data: inputs (m, 64) float32 in [0, 1], labels (m,) int64."""

    x_train: F32
    y_train: IntArray
    x_test: F32
    y_test: IntArray


@dataclass(slots=True)
class _Nets:
    """``B`` networks: ``w1`` (B, H, 64), ``b1`` (B, H, 1), ``w2`` (K, B, O, H), ``b2``
    (K, B, O, 1), float32.

    Samples run along the last axis everywhere (activations (B, H, m), logits (B, O, m)), so
    the hidden layer of all networks is one GEMM ``w1.reshape(B * H, 64) @ x.T`` with no copy.
    """

    w1: F32
    b1: F32
    w2: F32
    b2: F32

    @property
    def size(self) -> int:
        """Number of networks ``B``."""
        return int(self.w1.shape[0])

    def take(self, idx: IntArray) -> _Nets:
        """Copies of networks ``idx`` (contiguous arrays)."""
        return _Nets(self.w1[idx], self.b1[idx], self.w2[:, idx], self.b2[:, idx])

    def put(self, idx: IntArray, other: _Nets) -> None:
        """Write ``other``'s networks into slots ``idx``."""
        self.w1[idx] = other.w1
        self.b1[idx] = other.b1
        self.w2[:, idx] = other.w2
        self.b2[:, idx] = other.b2


@cache
def _digits() -> tuple[F32, IntArray]:
    """All 1,797 digits: images (1797, 8, 8) float32 in [0, 1] and labels (1797,)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (np.asarray(data.images, dtype=np.float64) / 16.0).astype(np.float32)
    return images, np.asarray(data.target, dtype=np.int64)


def _flat(images: F32) -> F32:
    """Images (m, 8, 8) as contiguous float32 rows (m, 64)."""
    return np.ascontiguousarray(images.reshape(len(images), 64), dtype=np.float32)


def _split_tasks(n: int, rng: np.random.Generator) -> tuple[list[_Task], list[str]]:
    """``n`` two-digit tasks on distinct pairs (label 0: first digit of the pair)."""
    images, labels = _digits()
    pairs = [(a, b) for a in range(10) for b in range(10) if a < b]
    chosen = rng.choice(len(pairs), size=n, replace=False)
    tasks, names = [], []
    for c in chosen:
        a, b = pairs[int(c)]
        if rng.random() < 0.5:
            a, b = b, a
        idx = rng.permutation(np.flatnonzero((labels == a) | (labels == b)))
        n_test = round(SPLIT_TEST_FRACTION * len(idx))
        y = (labels[idx] == b).astype(np.int64)
        x = _flat(images[idx])
        tasks.append(_Task(x[n_test:], y[n_test:], x[:n_test], y[:n_test]))
        names.append(f"split {a}v{b}")
    return tasks, names


def _ten_class_tasks(
    transforms: list[Callable[[F32], F32]], rng: np.random.Generator
) -> list[_Task]:
    """10-class tasks on one train/test partition, each with its own image transform.

    ``transforms[t]`` maps images (m, 8, 8) to input rows (m, 64), float32.
    """
    images, labels = _digits()
    order = rng.permutation(len(labels))
    train_pool, test_pool = order[: len(order) // 2], order[len(order) // 2 :]
    tasks = []
    for transform in transforms:
        tr = rng.choice(train_pool, size=N_TRAIN, replace=False)
        te = rng.choice(test_pool, size=N_TEST, replace=False)
        x_tr, x_te = transform(images[tr]), transform(images[te])
        tasks.append(_Task(x_tr, labels[tr], x_te, labels[te]))
    return tasks


def _permuter(perm: IntArray) -> Callable[[F32], F32]:
    """Flatten, then reorder the 64 pixels by ``perm`` (64,)."""
    return lambda images: np.ascontiguousarray(_flat(images)[:, perm])


def _rotator(angle_deg: float) -> Callable[[F32], F32]:
    """Rotate by ``angle_deg`` degrees (bilinear, same 8x8 frame), then flatten."""

    def rotate(images: F32) -> F32:
        out = ndimage.rotate(images, angle_deg, axes=(1, 2), reshape=False, order=1)
        return _flat(np.asarray(out, dtype=np.float32))

    return rotate


def _init_nets(n_heads: int, n_out: int, rng: np.random.Generator) -> _Nets:
    """One network (B = 1): He-scaled normal weights, zero biases."""
    w1 = rng.normal(0.0, np.sqrt(2.0 / 64), (1, HIDDEN, 64)).astype(np.float32)
    w2 = rng.normal(0.0, np.sqrt(1.0 / HIDDEN), (n_heads, 1, n_out, HIDDEN)).astype(np.float32)
    return _Nets(
        w1,
        np.zeros((1, HIDDEN, 1), np.float32),
        w2,
        np.zeros((n_heads, 1, n_out, 1), np.float32),
    )


def _hidden(x: F32, nets: _Nets) -> F32:
    """ReLU hidden activations (B, H, m) of inputs ``x`` (m, 64), one GEMM for all networks."""
    b = nets.size
    pre = (nets.w1.reshape(b * HIDDEN, 64) @ x.T).reshape(b, HIDDEN, len(x))
    pre += nets.b1
    np.maximum(pre, 0.0, out=pre)
    return pre


def _logits(h: F32, nets: _Nets, head: int) -> F32:
    """Logits (B, O, m) of hidden activations ``h`` (B, H, m) through head ``head``."""
    out: F32 = np.matmul(nets.w2[head], h)
    out += nets.b2[head]
    return out


def _softmax(z: F32, axis: int) -> F32:
    """Softmax over ``axis``."""
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    p: F32 = e / e.sum(axis=axis, keepdims=True)
    return p


def _correct(z: F32, y: IntArray) -> npt.NDArray[np.bool_]:
    """Whether logits ``z`` (B, O, m) rank label ``y`` (m,) first, shape (B, m).

    Same as ``z.argmax(axis=1) == y`` but for exact ties (counted correct), and much faster
    on this layout.
    """
    picked: npt.NDArray[np.bool_] = z[:, y, np.arange(len(y))] >= z.max(axis=1)
    return picked


def _sgd_step(nets: _Nets, x: F32, y: IntArray, head: int) -> None:
    """One SGD step of every network on the same minibatch ``x`` (m, 64), ``y`` (m,)."""
    b, m = nets.size, len(x)
    h = _hidden(x, nets)
    grad = _softmax(_logits(h, nets, head), axis=1)
    grad[:, y, np.arange(m)] -= 1.0
    grad *= np.float32(1.0 / m)
    dw2 = np.matmul(grad, h.transpose(0, 2, 1))
    dh = np.matmul(nets.w2[head].transpose(0, 2, 1), grad)
    dh *= h > 0
    dw1 = dh.reshape(b * HIDDEN, m) @ x
    lr = np.float32(LEARNING_RATE)
    nets.w2[head] -= lr * dw2
    nets.b2[head] -= lr * grad.sum(axis=2, keepdims=True)
    nets.w1 -= lr * dw1.reshape(b, HIDDEN, 64)
    nets.b1 -= lr * dh.sum(axis=2, keepdims=True)


class DigitsWorld:
    """A digits world: ``n`` tasks, one MLP, deterministic for ``(family, n, seed, heads)``."""

    def __init__(
        self,
        family: str,
        n: int,
        seed: int,
        tasks: list[_Task],
        names: list[str],
        *,
        heads: Heads,
        n_out: int,
    ) -> None:
        rng = np.random.default_rng([seed, _FAMILY_TAG[family], 7])
        self.family = family
        self.seed = seed
        self.heads: Heads = heads
        self.names = tuple(names)
        pool = [TaskKind.STRUCTURED] * (n // 2) + [TaskKind.OPEN_ENDED] * (n - n // 2)
        self.kinds = tuple(pool[int(i)] for i in rng.permutation(n))
        self._tasks = tasks
        self._init = _init_nets(n if heads == "separate" else 1, n_out, rng)
        self.eval_size, self.noise_sd = self._calibrate_noise()
        """Test samples drawn (with replacement) per noisy evaluation of a task, and the typical
        sd (accuracy units) it gives."""

    @property
    def n(self) -> int:
        """Number of tasks."""
        return len(self._tasks)

    def _head(self, task: int) -> int:
        """Head index of ``task``."""
        return task if self.heads == "separate" else 0

    def _batches(self, task: int, stage: int) -> list[IntArray]:
        """Minibatch indices into ``task``'s training split at stage ``stage`` (deterministic).

        :data:`EPOCHS` reshuffles; the remainder of an epoch (under :data:`BATCH`) is dropped.
        """
        rng = np.random.default_rng([self.seed, _FAMILY_TAG[self.family], task, stage])
        m = len(self._tasks[task].y_train)
        out = []
        for _ in range(EPOCHS):
            perm = rng.permutation(m)
            out += [perm[i : i + BATCH] for i in range(0, m - BATCH + 1, BATCH)]
        return out

    def train_stage(self, nets: _Nets, task: int, stage: int) -> None:
        """Train every network of ``nets`` in place on ``task`` as stage ``stage`` (0-based)."""
        data = self._tasks[task]
        head = self._head(task)
        for idx in self._batches(task, stage):
            _sgd_step(nets, data.x_train[idx], data.y_train[idx], head)

    def fresh(self, count: int = 1) -> _Nets:
        """``count`` copies of the initial network."""
        return self._init.take(np.zeros(count, dtype=np.int64))

    def measure(self, nets: _Nets, task: int, rng: np.random.Generator) -> tuple[float, float]:
        """Noisy accuracy and mean predictive entropy (nats) of one network (B = 1) on ``task``.

        Both on :attr:`eval_size` test samples drawn with replacement by ``rng``.
        """
        data = self._tasks[task]
        rows = rng.integers(0, len(data.y_test), self.eval_size)
        z = _logits(_hidden(np.ascontiguousarray(data.x_test[rows]), nets), nets, self._head(task))
        p = _softmax(z, axis=1)
        entropy = -(p * np.log(np.maximum(p, np.float32(1e-12)))).sum(axis=1)
        return float(_correct(z, data.y_test[rows]).mean()), float(entropy.mean())

    def accuracies(self, nets: _Nets) -> FloatArray:
        """Noise-free accuracy (B, n) of every network on every task's full test split."""
        out = np.empty((nets.size, self.n))
        for lo in range(0, nets.size, GROUP_CHUNK):
            part = nets.take(np.arange(lo, min(lo + GROUP_CHUNK, nets.size)))
            for j, data in enumerate(self._tasks):
                z = _logits(_hidden(data.x_test, part), part, self._head(j))
                out[lo : lo + part.size, j] = _correct(z, data.y_test).mean(axis=1)
        return out

    def start(self, seed: int) -> DigitsJob:
        """A fresh job; ``seed`` drives its evaluation noise only."""
        return DigitsJob(self, seed=seed)

    def final_utilities(self, orders: IntArray) -> FloatArray:
        """Noise-free final accuracy of every task, shape (P, n), of ``P`` full orders (P, n).

        Prefix sharing: orders are grouped by first task and each group's prefix tree is
        trained level by level, every distinct prefix once. Cost for all ``n!`` orders: one
        stage per prefix node (1,956 at n = 6, 109,600 at n = 8).
        """
        orders = np.asarray(orders, dtype=np.int64).reshape(-1, self.n)
        out = np.empty((len(orders), self.n))
        for first in np.unique(orders[:, 0]):
            rows = np.flatnonzero(orders[:, 0] == first)
            out[rows] = self._tree_utilities(orders[rows])
        return out

    def _tree_utilities(self, orders: IntArray) -> FloatArray:
        """Final accuracies (P, n) of ``orders`` trained as one prefix tree, level by level."""
        nets = self.fresh(1)
        node = np.zeros(len(orders), dtype=np.int64)
        for stage in range(self.n):
            keys, node = np.unique(node * self.n + orders[:, stage], return_inverse=True)
            nets = nets.take(keys // self.n)
            tasks = keys % self.n
            for task in np.unique(tasks):
                idx = np.flatnonzero(tasks == task)
                group = nets.take(idx)
                self.train_stage(group, int(task), stage)
                nets.put(idx, group)
        return self.accuracies(nets)[node.reshape(-1)]

    def joint_utilities(self) -> FloatArray:
        """Noise-free accuracies (n,) after joint training on the same number of SGD steps.

        The union of every task's training data, shuffled together (each sample routed to its
        task's head), for as many minibatches as a full sequential run takes.
        """
        n_steps = sum(len(self._batches(t, 0)) for t in range(self.n))
        xs = np.concatenate([d.x_train for d in self._tasks])
        ys = np.concatenate([d.y_train for d in self._tasks])
        ts = np.concatenate([np.full(len(d.y_train), t) for t, d in enumerate(self._tasks)])
        rng = np.random.default_rng([self.seed, _FAMILY_TAG[self.family], 99])
        nets = self.fresh(1)
        done = 0
        while done < n_steps:
            perm = rng.permutation(len(ys))
            for i in range(0, len(ys) - BATCH + 1, BATCH):
                if done == n_steps:
                    break
                idx = perm[i : i + BATCH]
                self._joint_step(nets, xs[idx], ys[idx], ts[idx])
                done += 1
        out: FloatArray = self.accuracies(nets)[0]
        return out

    def _joint_step(self, nets: _Nets, x: F32, y: IntArray, tasks: IntArray) -> None:
        """One SGD step of one network on a mixed minibatch (each sample through its head)."""
        heads = tasks if self.heads == "separate" else np.zeros_like(tasks)
        m = len(x)
        h = _hidden(x, nets)[0].T
        w2, b2 = nets.w2[heads, 0], nets.b2[heads, 0, :, 0]
        grad = _softmax(np.einsum("mh,moh->mo", h, w2) + b2, axis=1)
        grad[np.arange(m), y] -= 1.0
        grad *= np.float32(1.0 / m)
        dh = np.einsum("mo,moh->mh", grad, w2) * (h > 0)
        lr = np.float32(LEARNING_RATE)
        np.add.at(nets.w2[:, 0], heads, -lr * grad[:, :, None] * h[:, None, :])
        np.add.at(nets.b2[:, 0, :, 0], heads, -lr * grad)
        nets.w1[0] -= lr * (dh.T @ x)
        nets.b1[0, :, 0] -= lr * dh.sum(axis=0)

    def _calibrate_noise(self) -> tuple[int, float]:
        """Bootstrap size of an evaluation and the typical sd (accuracy units) it gives.

        Sized on the accuracies ``p`` (n,) after training the identity order, so that the
        binomial sd ``sqrt(p (1 - p) / size)`` averaged over tasks is about
        :data:`TARGET_NOISE_SD` (size clipped to [20, 400] samples).
        """
        nets = self.fresh(1)
        for stage in range(self.n):
            self.train_stage(nets, stage, stage)
        p = self.accuracies(nets)[0]
        sd_one = max(float(np.mean(np.sqrt(p * (1.0 - p)))), 0.01)
        size = int(np.clip(round((sd_one / TARGET_NOISE_SD) ** 2), 20, 400))
        return size, sd_one / float(np.sqrt(size))


class DigitsJob:
    """One training run in a :class:`DigitsWorld`; the same code as its prefix tree, B = 1."""

    def __init__(self, world: DigitsWorld, *, seed: int) -> None:
        self.world = world
        self.trained: list[int] = []
        self._nets = world.fresh(1)
        self._rng = np.random.default_rng(seed)

    def train(self, task: int) -> None:
        """Train ``task`` for one stage (each task at most once)."""
        if task in self.trained or not 0 <= task < self.world.n:
            raise ValueError(f"task {task} cannot be trained now")
        self.world.train_stage(self._nets, task, len(self.trained))
        self.trained.append(task)

    def true_utilities(self) -> FloatArray:
        """Noise-free accuracy (n,) of every task on its full test split."""
        out: FloatArray = self.world.accuracies(self._nets)[0]
        return out

    def evaluate(self) -> Evaluation:
        """Accuracy and mean predictive entropy (nats) of each task on a bootstrap subsample."""
        values, entropies = {}, {}
        for j in range(self.world.n):
            values[j], entropies[j] = self.world.measure(self._nets, j, self._rng)
        return Evaluation(values=values, entropies=entropies)


def _pick_heads(seed: int, heads: Heads | None) -> Heads:
    """``heads`` if given, else shared for even seeds and separate for odd ones."""
    if heads is not None:
        return heads
    return "shared" if seed % 2 == 0 else "separate"


def split_world(n: int, seed: int, *, heads: Heads | None = None) -> DigitsWorld:
    """Split digits: ``n`` two-digit tasks on distinct pairs (1 <= n <= 45)."""
    rng = np.random.default_rng([seed, _FAMILY_TAG["mlp-split"]])
    tasks, names = _split_tasks(n, rng)
    return DigitsWorld("mlp-split", n, seed, tasks, names, heads=_pick_heads(seed, heads), n_out=2)


def permuted_world(n: int, seed: int, *, heads: Heads | None = None) -> DigitsWorld:
    """Permuted digits: ``n`` 10-class tasks, each with its own pixel permutation."""
    rng = np.random.default_rng([seed, _FAMILY_TAG["mlp-permuted"]])
    perms = [np.arange(64)] + [rng.permutation(64) for _ in range(n - 1)]
    tasks = _ten_class_tasks([_permuter(p) for p in perms], rng)
    names = ["perm identity"] + [f"perm {t}" for t in range(1, n)]
    return DigitsWorld(
        "mlp-permuted", n, seed, tasks, names, heads=_pick_heads(seed, heads), n_out=10
    )


def rotated_world(n: int, seed: int, *, heads: Heads | None = None) -> DigitsWorld:
    """Rotated digits: ``n`` 10-class tasks, task 0 upright, others by angles in [15, 180)."""
    rng = np.random.default_rng([seed, _FAMILY_TAG["mlp-rotated"]])
    angles = np.concatenate([[0.0], rng.uniform(15.0, 180.0, n - 1)]).astype(np.float64)
    tasks = _ten_class_tasks([_rotator(float(a)) for a in angles], rng)
    names = [f"rot {round(float(a))}deg" for a in angles]
    return DigitsWorld(
        "mlp-rotated", n, seed, tasks, names, heads=_pick_heads(seed, heads), n_out=10
    )
