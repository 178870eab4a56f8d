"""The posterior over orders' outcomes: models held against the data, recommendation, exploration.

One model's argmax is only as good as the model. Here several outcome models answer together and
the project's own runs decide how much each is believed:

- **members**: a parametric mean ``mu_k(pi)`` of the objective ``sum_j w_j S_j(pi)`` of an order
  (``run``: the pairwise whole-run regression of :mod:`solver.learning`; ``transition``: the
  state-transition model of :mod:`solver.transition`; ``constant``: the mean observed final,
  no structure at all), each with a *residual* Gaussian process over orders fitted to the
  observed finals, at a few residual scales ``s``: by default on the Mallows kernel
  ``s^2 exp(-lambda d_K(pi, pi') / C(n, 2))`` (``d_K`` the Kendall distance: which task comes
  before which); ``RecommendConfig.residual_kernels`` may add or put instead a position kernel
  ``s^2 exp(-mu d_H(pi, pi') / n)`` (``d_H`` the Hamming distance: which task sits where) or
  the mean of the two, each one more member per model and scale (measured, not the default:
  bench/README.md). The residual carries what the parametric
  part misses: at an observed order the posterior is pinned to the evidence (the model's own
  parameter variance shrinks by the residual's unexplained share there), away from the
  observed orders it falls back to the model with the model's doubt added;
- **weights**: stacking on the leave-one-run-out predictive density of each member (the
  held-out run's *final* objective, every model refitted without that run, the last ``folds``
  completed runs held out in turn): the mixture weights that predict the held-out runs best,
  with a small Dirichlet pseudo-count. A model the data contradict loses weight, one that
  predicts unseen orders well gains it;
- **recommendation** (:func:`recommend`): among the observed orders, each model's optimum and
  the local optima of the mixture mean (insertion moves), the order of the best reported run
  unless a candidate beats it with posterior probability ``beat_probability`` (0.9);
  unobserved candidates' means are discounted by ``trust``;
- **exploration** (:func:`explore_order`): the next run follows the order of highest expected
  improvement over the best observed order (:func:`improvement_order`, exact for the
  mixture), re-planned after every stage with the trained prefix fixed; before any run has
  completed, one Thompson draw (:func:`thompson_order`: a member drawn by weight, its
  parameters from their posterior, its residual process jointly on the candidate orders).

A run being re-planned (``current``) conditions the models on the state it has reached: the
transition model rolls forward from its last evaluation, the run model from its entropy. The
fit does not depend on it: :meth:`OrderPosterior.given` conditions one fit on any run, so the
runs of a project re-planned on the same data share one fit.

Units: utilities as reported (``[0, 1]`` by convention); objective = weighted sum of final
utilities. Orders are tuples of task indexes ``0..n-1``. Cost at ``n = 8`` with 8 runs:
a few tens of milliseconds (one BLAS thread); above ``run_model_max_tasks`` the run model
(``p ~ 3 n^2`` parameters, a dense inverse) leaves the ensemble and the transition model
(``O(n^2)`` small solves) carries it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from hashlib import sha256
from itertools import permutations
from math import comb, factorial, log, pi, sqrt
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import special

from ordo_server.solver.estimation import TaskKind
from ordo_server.solver.learning import (
    RunModelConfig,
    RunModelPosterior,
    RunRecord,
    fit_run_model_posteriors,
    insertion_moves,
    mean_entropy,
    predict_final_utilities,
)
from ordo_server.solver.lop import solve_lop
from ordo_server.solver.transition import (
    StageTable,
    TransitionConfig,
    TransitionModel,
    TransitionState,
    baseline_noise,
    fit_transition_model,
    rollout,
    sample_transition_params,
)
from ordo_server.solver.types import FloatMatrix, Order

IntArray = npt.NDArray[np.int64]
# The residual processes' kernels (RecommendConfig.residual_kernels).
Kernel = Literal["kendall", "position", "mixed"]
Feasible = Callable[[Order], bool]
Starts = Sequence[Order] | Callable[[], Sequence[Order]]
"""Start orders of a search, or a function that makes them (called only if a search runs: e.g.
the constrained solver's order, which exploration does not need where it scores every
completion)."""

__all__ = [
    "Kernel",
    "OrderPosterior",
    "RecommendConfig",
    "Recommendation",
    "Starts",
    "explore_order",
    "fit_order_posterior",
    "improvement_order",
    "plan_seed",
    "recommend",
    "thompson_order",
]

Z_90 = 1.6448536269514722
MAX_SEED = 2**31 - 1


def plan_seed(*parts: str | int) -> int:
    """A sampling seed from stable names (project, run client id or sequence number, ...).

    ``sha256`` of the parts joined by ``:``, first 8 bytes big-endian, mod ``2^31 - 1`` (the
    API's seed range): the same project and run give the same draws on any machine and in any
    process.
    """
    digest = sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % MAX_SEED


@dataclass(frozen=True, slots=True)
class RecommendConfig:
    """Settings of the ensemble (objective units are per unit of ``sum(w)``).

    Attributes
    ----------
    kernel_decay : float
        ``lambda`` of the Mallows kernel: correlation ``exp(-lambda / C(n, 2))`` between orders one
        adjacent swap apart, ``exp(-lambda / 2)`` between unrelated orders.
    residual_scales : tuple of float
        Residual process scales ``s`` tried (each is one member per model).
    residual_kernels : tuple of {"kendall", "position", "mixed"}
        Residual kernels tried (each is one member per model and scale): ``"kendall"``, the
        Mallows kernel on the Kendall distance (what precedence explains), ``"position"``,
        ``exp(-position_decay d_H / n)`` on the Hamming distance (which task sits where),
        ``"mixed"``, the mean of the two correlations (both at once). The stacking weights
        choose between them on the held-out runs.
    position_decay : float
        ``mu`` of the position kernel: correlation ``exp(-2 mu / n)`` between orders one swap
        apart, about ``exp(-mu)`` between unrelated orders.
    residual_bias : float
        Variance of a constant offset of the residual, per unit of ``s^2`` (a model's level
        error then costs it little in the held-out score: mostly its shape does). 4 brought
        the 90 % intervals' coverage from 94-96 % to 90-92 % on tuning worlds disjoint from the
        benchmark's (seeds 100-111 of every family, n = 6) at equal regret.
    draws : int
        Posterior draws of the transition model's parameters for its predictive moments.
    folds : int
        Completed runs held out (the most recent ones) for the model weights.
    run_model_max_tasks : int
        Above this many tasks the run model is left out (its fit is cubic in ``n^2``).
    risk : float
        The recommendation maximizes ``mean - risk * std`` (0: the posterior mean).
    starts : int
        Local searches of the mixture mean (from the best start orders).
    trust_prior : tuple of float or None
        ``(mean, std)`` of the prior of the posterior's *trust*: the slope of the observed
        finals on their leave-one-run-out predicted means, clipped to [0, 1]. The
        recommendation pulls an unobserved order's value towards the observed orders' mean by
        ``1 - trust`` (:func:`_decision_values`), so where the models have not shown that they
        rank held-out runs right, an observed order wins. ``None``: off (trust 1). (0.5, 0.5)
        lowered the mean regret after 2 and 8 runs on two sets of tuning worlds disjoint from
        the benchmark's (seeds 100-111 and 200-211 of every family, n = 6) and never left the
        recommendation worse than the best run on average; it costs 0.2-0.5 points at R = 2-4
        where the models fit (synthetic families).
    beat_probability : float or None
        The recommendation is the best observed order (highest posterior mean among the
        completed runs' orders) unless another candidate beats it with at least this posterior
        probability (:func:`_chosen`). 0.9 left the mean regret as it was on the tuning worlds
        (seeds 100-111 and 200-211 of every family, n = 6; after 4 runs 4.54 -> 4.42 %, after
        8 3.27 -> 3.29 %) and took the share of (world, R) where the recommendation is within
        the noise of the best run so far from 92 % to 99 %. ``None``: the highest decision
        value, whatever its odds.
    incumbent : {"reported", "posterior"}
        The order the recommendation holds on to unless a candidate beats it:
        ``"reported"``, the order of the completed run with the highest reported objective
        (the best run so far, as its user sees it), or ``"posterior"``, the observed order of
        highest posterior mean. The posterior's order was worse than the best run by more than
        the noise of a reported final in 19 of 1,344 (world, R) on the tuning worlds (seeds
        100-111 and 200-211 of every family, n = 6; up to 2.3 noise sds, where the posterior
        pulled the best run's final down as luck), ``"reported"`` in 1 (two runs whose finals
        agree to 15 digits); mean regret at R = 2 / 4 / 8 +0.07 / +0.02 / +0.06 (standard
        errors 0.06 / 0.05 / 0.05).
    max_moves : int
        Neighbourhood size of one search round: above it (about 20 free tasks) a task moves
        at most ``max_moves // (2 * free)`` positions (at least 2) instead of anywhere.
    max_rounds : int
        Improving moves per local search.
    exhaustive_completions : int
        Exploration (:func:`improvement_order`) scores every completion of the prefix when
        there are at most this many (``(n - k)!`` after ``k`` trained tasks: every re-plan at
        n = 6), instead of climbing from a few starts: the exact argmax of the expected
        improvement, at a fifth of the cost (1.5 against 5-6 ms for 120 completions on one
        core). 0: always the local search.
    noise_sd : float
        Prior evaluation noise of one task (utility units); the baselines refine it.
    """

    kernel_decay: float = 3.0
    residual_bias: float = 4.0
    residual_scales: tuple[float, ...] = (0.003, 0.01, 0.03)
    residual_kernels: tuple[Kernel, ...] = ("kendall",)
    position_decay: float = 3.0
    draws: int = 24
    folds: int = 8
    run_model_max_tasks: int = 12
    risk: float = 0.0
    starts: int = 3
    max_moves: int = 400
    trust_prior: tuple[float, float] | None = (0.5, 0.5)
    beat_probability: float | None = 0.9
    incumbent: Literal["reported", "posterior"] = "reported"
    max_rounds: int = 60
    exhaustive_completions: int = 120
    noise_sd: float = 0.02
    transition: TransitionConfig = field(default_factory=TransitionConfig)
    run_model: RunModelConfig = field(default_factory=RunModelConfig)


# --- inputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Data:
    """Runs, weights and the completed runs' observed objectives."""

    runs: Sequence[RunRecord]
    kinds: Sequence[TaskKind | None]
    weights: FloatMatrix
    complete: list[int]  # indexes into runs
    orders: IntArray  # (R, n) orders of the complete runs
    finals: FloatMatrix  # (R,) reported objective of each
    final_var: float  # noise variance of a reported objective
    table: StageTable  # every run's reports as arrays, shared by the held-out fits

    @property
    def n(self) -> int:
        return len(self.kinds)


def _is_complete(run: RunRecord, n: int, weights: FloatMatrix) -> bool:
    if len(run.trained) != n or len(run.utilities) != n + 1:
        return False
    return all(j in run.utilities[n] for j in range(n) if weights[j] > 0)


def _objective_of(run: RunRecord, weights: FloatMatrix) -> float:
    final = run.utilities[-1]
    return float(sum(weights[j] * final[j] for j in range(len(weights)) if weights[j] > 0))


def _data(
    runs: Sequence[RunRecord],
    kinds: Sequence[TaskKind | None],
    weights: npt.ArrayLike,
    noise_sd: float,
) -> _Data:
    n = len(kinds)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or np.any(~np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be {n} finite non-negative numbers")
    complete = [i for i, run in enumerate(runs) if _is_complete(run, n, w)]
    orders = np.array([runs[i].trained for i in complete], dtype=np.int64).reshape(-1, n)
    finals = np.array([_objective_of(runs[i], w) for i in complete], dtype=np.float64)
    table = StageTable.of(runs)
    noise = baseline_noise(runs, n, noise_sd, table=table)
    return _Data(
        runs=runs,
        kinds=kinds,
        weights=w,
        complete=complete,
        orders=orders,
        finals=finals,
        final_var=float(np.sum(w**2 * noise**2)),
        table=table,
    )


@dataclass(frozen=True, slots=True)
class _Current:
    """A run being re-planned: its trained prefix and the state it reached."""

    prefix: Order
    utilities: FloatMatrix | None  # (n,) last evaluation, None when not reported in full
    entropy: float | None


def _current(run: RunRecord | None, n: int) -> _Current:
    if run is None:
        return _Current((), None, None)
    prefix = tuple(int(t) for t in run.trained)
    k = len(prefix)
    utilities = None
    if len(run.utilities) > k and len(run.utilities[k]) == n:
        utilities = np.array([run.utilities[k][j] for j in range(n)], dtype=np.float64)
    return _Current(prefix, utilities, mean_entropy(run.entropies, k) if run.entropies else None)


# --- the parametric members --------------------------------------------------------------------


class _Predictor:
    """A parametric mean of the objective with its own (parameter) variance."""

    name = "predictor"

    def moments(self, orders: IntArray, *, conditioned: bool) -> tuple[FloatMatrix, FloatMatrix]:
        """Objective mean and variance, shape (P,) each."""
        raise NotImplementedError

    def point(self, orders: IntArray, *, conditioned: bool) -> FloatMatrix:
        """Objective at the parameters' posterior mean, shape (P,): the cheap plug-in mean the
        search climbs on (equal to ``moments(...)[0]`` for a model linear in its parameters)."""
        return self.moments(orders, conditioned=conditioned)[0]

    def utilities(self, orders: IntArray, *, conditioned: bool) -> FloatMatrix:
        """Mean final utility of every task, shape (P, n)."""
        raise NotImplementedError

    def utility_moments(
        self, orders: IntArray, *, conditioned: bool
    ) -> tuple[FloatMatrix, FloatMatrix]:
        """Mean and variance of every task's final utility, shape (P, n) each."""
        mean = self.utilities(orders, conditioned=conditioned)
        return mean, np.zeros(mean.shape)

    def draw(self, rng: np.random.Generator) -> _Predictor:
        """A predictor of one posterior draw (no parameter variance)."""
        raise NotImplementedError

    def given(self, current: _Current) -> _Predictor:
        """The same fitted predictor, conditioned on the run ``current`` (nothing refitted)."""
        return self


def _row_of(kept: IntArray, orders: IntArray) -> int | None:
    """The row of ``kept`` (P, n) that is ``orders`` when it is one order (shape (1, n));
    ``None`` otherwise."""
    if len(orders) != 1 or kept.shape[1:] != orders.shape[1:]:
        return None
    hits = np.flatnonzero(np.all(kept == orders[0], axis=1))
    return int(hits[0]) if len(hits) else None


class _TransitionPredictor(_Predictor):
    name = "transition"

    def __init__(
        self,
        model: TransitionModel,
        params: FloatMatrix,
        weights: FloatMatrix,
        current: _Current,
    ) -> None:
        self.model, self.params, self.weights, self.current = model, params, weights, current
        # The last rollout of the predictor's own draws: a plan's prediction asks for the
        # utilities' moments of an order its search rolled out with others (one tuple, replaced
        # whole: the orders, the conditioning, the finals).
        self._last: tuple[IntArray, bool, FloatMatrix] | None = None

    def _finals(
        self, orders: IntArray, conditioned: bool, params: FloatMatrix | None = None
    ) -> FloatMatrix:
        """Final utilities of ``orders`` (P, n) under each parameter row of ``params`` (K, ...;
        default the predictor's draws): shape (K, P, n). The same orders as the last rollout of
        the draws, or one of them alone, are read from it: a rollout is elementwise in the
        orders, so the rows are those a rollout of their own gives, to the bit."""
        if params is not None:
            return self._rollout(orders, conditioned, params)
        kept = self._kept_finals(orders, conditioned)
        if kept is not None:
            return kept
        finals = self._rollout(orders, conditioned, self.params)
        finals.flags.writeable = False  # shared with the next caller of the same orders
        self._last = (np.array(orders, dtype=np.int64), conditioned, finals)
        return finals

    def _kept_finals(self, orders: IntArray, conditioned: bool) -> FloatMatrix | None:
        if self._last is None:
            return None
        last_orders, last_conditioned, finals = self._last
        if last_conditioned != conditioned or last_orders.shape[1:] != orders.shape[1:]:
            return None
        if last_orders.shape == orders.shape and np.array_equal(last_orders, orders):
            return finals
        row = _row_of(last_orders, orders)
        return None if row is None else finals[:, row : row + 1]

    def _rollout(self, orders: IntArray, conditioned: bool, params: FloatMatrix) -> FloatMatrix:
        current = self.current
        if conditioned and current.prefix and current.utilities is not None:
            trained = np.zeros(self.model.n, dtype=bool)
            trained[list(current.prefix)] = True
            entropy = self.model.entropy0 if current.entropy is None else current.entropy
            start = TransitionState(current.utilities, entropy, trained)
            return rollout(self.model, params, orders, start=start, skip=len(current.prefix))
        return rollout(self.model, params, orders)

    def point(self, orders: IntArray, *, conditioned: bool) -> FloatMatrix:
        center = self.model.mean if len(self.params) > 1 else self.params[0]
        finals = self._finals(orders, conditioned, center)[0]  # (P, n)
        return np.asarray(finals @ self.weights, dtype=np.float64)

    def moments(self, orders: IntArray, *, conditioned: bool) -> tuple[FloatMatrix, FloatMatrix]:
        objective = self._finals(orders, conditioned) @ self.weights  # (K, P)
        return objective.mean(axis=0), objective.var(axis=0)

    def utilities(self, orders: IntArray, *, conditioned: bool) -> FloatMatrix:
        return np.asarray(self._finals(orders, conditioned).mean(axis=0), dtype=np.float64)

    def utility_moments(
        self, orders: IntArray, *, conditioned: bool
    ) -> tuple[FloatMatrix, FloatMatrix]:
        finals = self._finals(orders, conditioned)
        return finals.mean(axis=0), finals.var(axis=0)

    def draw(self, rng: np.random.Generator) -> _Predictor:
        params = sample_transition_params(self.model, 1, rng)
        return _TransitionPredictor(self.model, params, self.weights, self.current)

    def given(self, current: _Current) -> _Predictor:
        return _TransitionPredictor(self.model, self.params, self.weights, current)


class _RunModelPredictor(_Predictor):
    name = "run"

    def __init__(
        self,
        posterior: RunModelPosterior,
        weights: FloatMatrix,
        current: _Current,
        theta: FloatMatrix | None = None,
    ) -> None:
        self.posterior, self.weights, self.current = posterior, weights, current
        self.theta = posterior.mean if theta is None else theta

    def _features(self, orders: IntArray, conditioned: bool) -> FloatMatrix:
        if conditioned and self.current.entropy is not None and self.current.prefix:
            return self.posterior.final_features(
                orders,
                self.weights,
                entropy_now=self.current.entropy,
                trained=len(self.current.prefix),
            )
        return self.posterior.final_features(orders, self.weights)

    def point(self, orders: IntArray, *, conditioned: bool) -> FloatMatrix:
        return np.asarray(self._features(orders, conditioned) @ self.theta, dtype=np.float64)

    def moments(self, orders: IntArray, *, conditioned: bool) -> tuple[FloatMatrix, FloatMatrix]:
        features = self._features(orders, conditioned)
        mean = features @ self.theta
        if self.theta is not self.posterior.mean:
            return mean, np.zeros(len(mean))
        var = np.sum((features @ self.posterior.covariance) * features, axis=1)
        return mean, np.maximum(var, 0.0)

    def utilities(self, orders: IntArray, *, conditioned: bool) -> FloatMatrix:
        summary = self.posterior.summary(self.theta)
        if conditioned and self.current.entropy is not None and self.current.prefix:
            return predict_final_utilities(
                summary, orders, entropy_now=self.current.entropy, trained=len(self.current.prefix)
            )
        return predict_final_utilities(summary, orders)

    def utility_moments(
        self, orders: IntArray, *, conditioned: bool
    ) -> tuple[FloatMatrix, FloatMatrix]:
        mean = self.utilities(orders, conditioned=conditioned)
        if self.theta is not self.posterior.mean:
            return mean, np.zeros(mean.shape)
        summary = self.posterior.summary()
        position = np.argsort(orders, axis=1)
        before = position[:, :, None] < position[:, None, :]  # [p, i, j]: i before j
        var = (
            summary.level_var[None, :]
            + np.einsum("pij,ij->pj", before, summary.carry_var)
            + np.einsum("pji,ij->pj", before, summary.backward_var)
        )
        return mean, np.asarray(var, dtype=np.float64)

    def draw(self, rng: np.random.Generator) -> _Predictor:
        cov = self.posterior.covariance
        chol = np.linalg.cholesky(cov + 1e-12 * np.eye(len(cov)))
        theta = self.posterior.mean + chol @ rng.standard_normal(len(cov))
        return _RunModelPredictor(self.posterior, self.weights, self.current, theta)

    def given(self, current: _Current) -> _Predictor:
        # ``theta`` stays the very posterior mean: ``moments`` tells a draw by identity.
        return _RunModelPredictor(self.posterior, self.weights, current, self.theta)


class _ConstantPredictor(_Predictor):
    """No structure: every order is the mean observed final (a model-free member)."""

    name = "constant"

    def __init__(
        self, mean: float, var: float, task_means: FloatMatrix, fixed: bool = False
    ) -> None:
        self.mean, self.var, self.task_means, self.fixed = mean, var, task_means, fixed

    def moments(self, orders: IntArray, *, conditioned: bool) -> tuple[FloatMatrix, FloatMatrix]:
        count = len(orders)
        return np.full(count, self.mean), np.full(count, 0.0 if self.fixed else self.var)

    def utilities(self, orders: IntArray, *, conditioned: bool) -> FloatMatrix:
        return np.tile(self.task_means, (len(orders), 1))

    def draw(self, rng: np.random.Generator) -> _Predictor:
        value = float(self.mean + np.sqrt(self.var) * rng.standard_normal())
        return _ConstantPredictor(value, 0.0, self.task_means, fixed=True)


def _constant_predictor(data: _Data, kept: Sequence[int], level_prior: float) -> _Predictor:
    """Mean of the kept completed runs' finals (prior: every task at ``level_prior``)."""
    n, w = data.n, data.weights
    if not kept:
        return _ConstantPredictor(
            level_prior * float(w.sum()), (0.5 * w.sum()) ** 2, np.full(n, 0.5)
        )
    finals = data.finals[kept]
    spread = float(np.var(finals, ddof=1)) if len(kept) > 1 else (0.05 * float(w.sum())) ** 2
    tasks = np.array(
        [[data.runs[data.complete[i]].utilities[-1].get(j, 0.0) for j in range(n)] for i in kept]
    )
    return _ConstantPredictor(float(finals.mean()), spread, tasks.mean(axis=0))


# --- the residual process ----------------------------------------------------------------------


def _before(orders: IntArray) -> FloatMatrix:
    """``before[p, i * n + j]`` = 1 when ``i`` precedes ``j`` in order ``p``, shape (P, n^2)."""
    count, n = orders.shape
    position = np.argsort(orders, axis=1)
    return (position[:, :, None] < position[:, None, :]).reshape(count, n * n).astype(np.float64)


def _kendall(a: IntArray, b: IntArray) -> FloatMatrix:
    """Kendall distances (discordant pairs), shape (len(a), len(b))."""
    n = a.shape[1]
    before_b = _before(b).reshape(len(b), n, n).transpose(0, 2, 1).reshape(len(b), n * n)
    return np.asarray(_before(a) @ before_b.T, dtype=np.float64)


def _hamming(a: IntArray, b: IntArray) -> FloatMatrix:
    """Hamming distances (positions holding different tasks), shape (len(a), len(b))."""
    return np.asarray((a[:, None, :] != b[None, :, :]).sum(axis=2), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class _Correlation:
    """Prior correlation of the residual between two orders (RecommendConfig.residual_kernels):
    ``exp(-kendall_decay d_K)``, ``exp(-position_decay d_H)`` or their mean (``"mixed"``)."""

    kernel: Kernel
    kendall_decay: float  # per discordant pair: lambda / C(n, 2)
    position_decay: float  # per position holding different tasks: mu / n

    def __call__(self, a: IntArray, b: IntArray) -> FloatMatrix:
        """Correlations between ``a`` and ``b``, shape (len(a), len(b))."""
        if self.kernel == "kendall":
            return np.exp(-self.kendall_decay * _kendall(a, b))
        if self.kernel == "position":
            return np.exp(-self.position_decay * _hamming(a, b))
        by_pairs = np.exp(-self.kendall_decay * _kendall(a, b))
        return 0.5 * (by_pairs + np.exp(-self.position_decay * _hamming(a, b)))


# Correlations of candidate orders with the observed ones, (P, R), per residual kernel.
Correlations = dict[_Correlation, FloatMatrix]


@dataclass(frozen=True, slots=True)
class _Residual:
    """GP posterior of the residual at the observed orders (kernel ``s^2 c(pi, pi') + bias``,
    ``c`` the :class:`_Correlation`)."""

    orders: IntArray  # (R, n)
    alpha: FloatMatrix  # (R,) (K + D)^-1 r
    factor: FloatMatrix  # (R, R) inverse of (K + D)
    scale: float  # s^2
    correlation: _Correlation
    bias: float  # variance of a constant offset of the whole residual (0: none)

    @property
    def prior_var(self) -> float:
        """Prior variance of the residual at any order."""
        return self.scale + self.bias

    def gram(self, a: IntArray, b: IntArray) -> FloatMatrix:
        """Prior covariance of the residual between ``a`` and ``b``, shape (len(a), len(b))."""
        return np.asarray(self.scale * self.correlation(a, b) + self.bias, dtype=np.float64)

    def predict(
        self,
        orders: IntArray,
        correlations: Correlations | None = None,
        shared: dict[tuple[object, ...], tuple[FloatMatrix, FloatMatrix]] | None = None,
    ) -> tuple[FloatMatrix, FloatMatrix]:
        """Residual mean and variance at ``orders``, shape (P,) each (``correlations``: those
        of ``orders`` with the observed orders, (P, R) per kernel, when already computed).

        ``shared``: where the residual processes of one question about the same ``orders``
        keep what depends on the process but not on the residuals (the cross covariance and
        the variance): the models' processes of one kernel and scale share their factor, so
        they compute it once between them (the same values, to the bit).
        """
        if len(self.orders) == 0:
            return np.zeros(len(orders)), np.full(len(orders), self.prior_var)
        key = (id(self.factor), self.correlation, self.scale, self.bias)
        if shared is not None and key in shared:
            cross, var = shared[key]
            return cross @ self.alpha, var
        if correlations is None or self.correlation not in correlations:
            correlations = {self.correlation: self.correlation(orders, self.orders)}
        cross = self.scale * correlations[self.correlation] + self.bias  # (P, R)
        # (cross @ factor) . cross row by row: a matrix product, not einsum's unblocked triple
        # loop (0.6 of a second's 1.0 in a recommendation over 300 runs).
        var = np.maximum(self.prior_var - np.sum((cross @ self.factor) * cross, axis=1), 1e-18)
        if shared is not None:
            shared[key] = cross, var
        return cross @ self.alpha, var

    def covariance(self, orders: IntArray) -> FloatMatrix:
        """Posterior covariance of the residual at ``orders``, shape (P, P)."""
        prior = self.gram(orders, orders)
        if len(self.orders) == 0:
            return prior
        cross = self.gram(orders, self.orders)
        return np.asarray(prior - cross @ self.factor @ cross.T, dtype=np.float64)


def _residual(
    orders: IntArray,
    residuals: FloatMatrix,
    noise: FloatMatrix,
    scale: float,
    correlation: _Correlation,
    bias: float = 0.0,
    factor: FloatMatrix | None = None,
) -> _Residual:
    """The residual process fitted to ``residuals`` (R,) at ``orders`` (R, n); ``factor``: its
    :func:`_residual_factor`, already computed for another model's residuals at the same
    orders."""
    if len(orders) == 0:
        empty = np.zeros((0, 0))
        return _Residual(orders, np.zeros(0), empty, scale, correlation, bias)
    if factor is None:
        factor = _residual_factor(orders, noise, scale, correlation, bias)
    return _Residual(orders, factor @ residuals, factor, scale, correlation, bias)


def _residual_factor(
    orders: IntArray, noise: FloatMatrix, scale: float, correlation: _Correlation, bias: float
) -> FloatMatrix:
    """Inverse of the residual's prior covariance plus noise at ``orders``, shape (R, R): the
    same for every model's residuals (only the residuals differ)."""
    gram = scale * correlation(orders, orders) + bias + np.diag(noise)
    return np.asarray(np.linalg.inv(gram), dtype=np.float64)


# --- the ensemble ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Member:
    predictor: _Predictor
    residual: _Residual
    name: str


@dataclass(slots=True)
class _Shared:
    """What a posterior and every copy :meth:`OrderPosterior.given` makes of it compute once:
    values that do not depend on the run being re-planned."""

    best_observed_mean: float | None = None
    # Local optima of the exploration's climbs from the start, by incumbent, limits and start
    # order: a copy with no trained prefix predicts as the fit itself, so the first plans of a
    # batch climb from their shared starts once (only their random starts differ).
    climbs: dict[tuple[object, ...], Order] = field(default_factory=dict)
    # The run model's pairwise optimum (:func:`_lop_start`), by prefix and objective weights.
    lop_starts: dict[tuple[object, ...], Order | None] = field(default_factory=dict)


MemberMoments = list[tuple[float, FloatMatrix, FloatMatrix]]


@dataclass(slots=True)
class _Scored:
    """The last orders a posterior scored on its full member moments (conditioned), shape
    (P, n), and those moments: a plan's prediction asks again for the order its search chose
    among them."""

    orders: IntArray | None = None
    moments: MemberMoments | None = None

    def row(self, orders: IntArray) -> MemberMoments | None:
        """The kept moments of ``orders`` when it is one order (shape (1, n)) among the kept
        ones, shape (1,) each; ``None`` otherwise."""
        if self.orders is None or self.moments is None:
            return None
        row = _row_of(self.orders, orders)
        if row is None:
            return None
        return [
            (weight, mean[row : row + 1], var[row : row + 1]) for weight, mean, var in self.moments
        ]


@dataclass(frozen=True, slots=True)
class OrderPosterior:
    """The mixture posterior of the objective of any order.

    Attributes
    ----------
    weights : dict of str to float
        Posterior weight of every member (``"model@scale"``), summing to 1.
    elpd : dict of str to float
        Leave-one-run-out log predictive density of every member (nats; 0 without folds).
    observed : list of Order
        Completed runs' orders, oldest first, and ``finals`` their reported objectives.
    trust : float
        In [0, 1]: how far the held-out predictions ranked runs right (``RecommendConfig``
        ``trust_prior``); the recommendation discounts unobserved orders by ``1 - trust``.
    """

    members: tuple[_Member, ...]
    member_weights: FloatMatrix
    weights: dict[str, float]
    elpd: dict[str, float]
    observed: list[Order]
    finals: FloatMatrix
    final_var: float
    prefix: Order
    n: int
    trust: float = 1.0
    shared: _Shared = field(default_factory=_Shared, compare=False, repr=False)
    scored: _Scored = field(default_factory=_Scored, compare=False, repr=False)

    def given(self, current: RunRecord | None) -> OrderPosterior:
        """This posterior for the run ``current`` being re-planned: predictions start from the
        state it reached and orders keep its trained prefix (``None``: from the start).

        Nothing is refitted: the models, their stacking weights and residual processes are fitted
        to the runs alone, whichever run is re-planned. One fit therefore serves every run of a
        project planned on the same data, and ``fit_order_posterior(runs, ..., current=run)`` is
        ``fit_order_posterior(runs, ...).given(run)``, to the last bit.
        """
        state = _current(current, self.n)
        conditioned: dict[int, _Predictor] = {}
        members: list[_Member] = []
        for member in self.members:
            # Members sharing a model share its conditioned copy (``member_moments`` predicts
            # each model once).
            key = id(member.predictor)
            if key not in conditioned:
                conditioned[key] = member.predictor.given(state)
            members.append(_Member(conditioned[key], member.residual, member.name))
        return replace(self, members=tuple(members), prefix=state.prefix, scored=_Scored())

    def best_observed_mean(self) -> float:
        """The highest mixture mean objective among the observed orders, from the start (``-inf``
        without any): computed once for this posterior and every copy :meth:`given` makes of it
        (the same value to the bit: from the start, the run being re-planned does not count), so
        the runs of a plan batch share it."""
        if self.shared.best_observed_mean is None:
            best = -np.inf
            if self.observed:
                best = float(np.max(self.moments(self.observed, conditioned=False)[0]))
            self.shared.best_observed_mean = best
        return self.shared.best_observed_mean

    def moments(
        self, orders: npt.ArrayLike, *, conditioned: bool = True
    ) -> tuple[FloatMatrix, FloatMatrix]:
        """Mixture mean and standard deviation of the objective, shape (P,) each
        (``conditioned=False``: from the start, ignoring the run being re-planned)."""
        count = len(np.atleast_2d(np.asarray(orders)))
        means, second = np.zeros(count), np.zeros(count)
        for weight, mean, var in self.member_moments(orders, conditioned=conditioned):
            means += weight * mean
            second += weight * (var + mean**2)
        return means, np.sqrt(np.maximum(second - means**2, 0.0))

    def member_moments(
        self, orders: npt.ArrayLike, *, conditioned: bool = True, plug_in: bool = False
    ) -> MemberMoments:
        """Every active member's normalized weight, mean and variance of the objective, shape
        (P,) each: the mixture is these Gaussians (``plug_in``: each model at its parameters'
        posterior mean, without its parameter variance: the cheap version a search climbs).

        Each model's prediction and the correlations with the observed orders are computed once
        and shared by the members (one per residual scale) built on them. The last orders scored
        in full (conditioned, not ``plug_in``) are kept with their moments: one of them asked
        alone again (a plan's prediction of the order its search chose) is their row, equal to
        its own computation up to the last bits of the sums over observed runs.
        """
        full = conditioned and not plug_in
        if full:
            kept = self.scored.row(np.atleast_2d(np.asarray(orders, dtype=np.int64)))
            if kept is not None:
                return kept
        out = self._member_moments(orders, conditioned=conditioned, plug_in=plug_in)
        if full:
            self.scored.orders = np.array(orders, dtype=np.int64, ndmin=2)  # a copy
            self.scored.moments = out
        return out

    def _member_moments(
        self, orders: npt.ArrayLike, *, conditioned: bool, plug_in: bool
    ) -> MemberMoments:
        array, correlations = self._with_correlations(orders)
        predicted: dict[int, tuple[FloatMatrix, FloatMatrix]] = {}
        shared: dict[tuple[object, ...], tuple[FloatMatrix, FloatMatrix]] = {}
        active = self._active()
        total = sum(weight for _, weight in active)
        out: MemberMoments = []
        for member, weight in active:
            key = id(member.predictor)
            if key not in predicted and plug_in:
                point = member.predictor.point(array, conditioned=conditioned)
                predicted[key] = point, np.zeros(len(point))
            elif key not in predicted:
                predicted[key] = member.predictor.moments(array, conditioned=conditioned)
            model_mean, model_var = predicted[key]
            residual_mean, residual_var = member.residual.predict(array, correlations, shared)
            mean, var = _combine(
                model_mean, model_var, residual_mean, residual_var, member.residual.prior_var
            )
            out.append((weight / total, mean, var))
        return out

    def expected_improvement(
        self, orders: npt.ArrayLike, incumbent: float, *, plug_in: bool = False
    ) -> FloatMatrix:
        """Expected improvement of the objective over ``incumbent``, shape (P,): exact for the
        mixture (the weighted sum of its Gaussian members' improvements); ``plug_in``: on
        :meth:`member_moments`' cheap version."""
        total: FloatMatrix = np.zeros(len(np.atleast_2d(np.asarray(orders))))
        for weight, mean, var in self.member_moments(orders, plug_in=plug_in):
            total = total + weight * _gaussian_improvement(mean, np.sqrt(var), incumbent)
        return total

    def _active(self) -> list[tuple[_Member, float]]:
        """The members with a weight that counts (>= 1e-6), with their weights."""
        pairs = zip(self.members, self.member_weights, strict=True)
        return [(member, float(weight)) for member, weight in pairs if weight >= 1e-6]

    def _with_correlations(self, orders: npt.ArrayLike) -> tuple[IntArray, Correlations | None]:
        """``orders`` as an (P, n) array and their correlations with the observed orders under
        each active member's kernel, (P, R) each (``None`` without observations)."""
        array = np.atleast_2d(np.asarray(orders, dtype=np.int64))
        observed = np.array(self.observed, dtype=np.int64).reshape(-1, self.n)
        if not len(observed):
            return array, None
        kernels = dict.fromkeys(member.residual.correlation for member, _ in self._active())
        return array, {kernel: kernel(array, observed) for kernel in kernels}

    def plug_in_mean(self, orders: npt.ArrayLike) -> FloatMatrix:
        """Mixture mean of the objective with every model at its parameters' posterior mean,
        shape (P,): what the search climbs on (one rollout per order instead of one per draw;
        candidates are then compared on :meth:`moments`)."""
        array, correlations = self._with_correlations(orders)
        means = np.zeros(len(array))
        predicted: dict[int, FloatMatrix] = {}
        shared: dict[tuple[object, ...], tuple[FloatMatrix, FloatMatrix]] = {}
        for member, weight in self._active():
            key = id(member.predictor)
            if key not in predicted:
                predicted[key] = member.predictor.point(array, conditioned=True)
            residual = member.residual.predict(array, correlations, shared)[0]
            means += weight * (predicted[key] + residual)
        return means / sum(weight for _, weight in self._active())

    def utilities(self, orders: npt.ArrayLike) -> FloatMatrix:
        """Mixture mean of every task's final utility, shape (P, n) (parametric parts only)."""
        return self.utility_moments(orders)[0]

    def utility_moments(self, orders: npt.ArrayLike) -> tuple[FloatMatrix, FloatMatrix]:
        """Mixture mean and std of every task's final utility, shape (P, n) each.

        The parametric parts only (the residual process is on the objective): the spread of the
        members' predictions plus each member's own parameter spread where it has draws.
        """
        array = np.atleast_2d(np.asarray(orders, dtype=np.int64))
        first, second = np.zeros((len(array), self.n)), np.zeros((len(array), self.n))
        total = 0.0
        for member, weight in zip(self.members, self.member_weights, strict=True):
            if weight >= 1e-6:
                mean, var = member.predictor.utility_moments(array, conditioned=True)
                first += weight * mean
                second += weight * (var + mean**2)
                total += weight
        first, second = first / total, second / total
        return first, np.sqrt(np.maximum(second - first**2, 0.0))


def _gaussian_improvement(mean: FloatMatrix, std: FloatMatrix, incumbent: float) -> FloatMatrix:
    """``E[max(X - incumbent, 0)]`` for ``X ~ N(mean, std^2)``."""
    std = np.maximum(std, 1e-12)
    z = (mean - incumbent) / std
    improvement = (mean - incumbent) * special.ndtr(z) + std * np.exp(-0.5 * z**2) / sqrt(2 * pi)
    return np.asarray(np.maximum(improvement, 0.0), dtype=np.float64)


def _combine(
    mean: FloatMatrix,
    var: FloatMatrix,
    residual_mean: FloatMatrix,
    residual_var: FloatMatrix,
    prior_var: float,
) -> tuple[FloatMatrix, FloatMatrix]:
    """A member's posterior: model plus residual; the model's own variance shrinks where the
    residual process is pinned by nearby observations (``residual_var / scale``: 0 at an
    observed order without noise, 1 far from every observation)."""
    unexplained = np.clip(residual_var / prior_var, 0.0, 1.0)
    return mean + residual_mean, unexplained * var + residual_var


def _member_moments(member: _Member, orders: IntArray) -> tuple[FloatMatrix, FloatMatrix]:
    mean, var = member.predictor.moments(orders, conditioned=True)
    residual_mean, residual_var = member.residual.predict(orders)
    return _combine(mean, var, residual_mean, residual_var, member.residual.prior_var)


def _predictors(
    data: _Data,
    kept: Sequence[int],
    run_posterior: RunModelPosterior | None,
    current: _Current,
    config: RecommendConfig,
) -> list[_Predictor]:
    """The parametric members fitted to the runs ``kept`` (indexes into ``data.complete`` for the
    constant model; the run model comes fitted)."""
    transition = fit_transition_model(
        data.runs,
        kinds=data.kinds,
        config=config.transition,
        table=data.table,
        kept=_runs_kept(data, kept),
    )
    rng = np.random.default_rng(20261203)
    params = sample_transition_params(transition, config.draws, rng)
    out: list[_Predictor] = [_TransitionPredictor(transition, params, data.weights, current)]
    if run_posterior is not None:
        out.append(_RunModelPredictor(run_posterior, data.weights, current))
    out.append(_constant_predictor(data, kept, config.run_model.level_prior[0]))
    return out


def _runs_kept(data: _Data, kept: Sequence[int]) -> npt.NDArray[np.bool_]:
    """Which runs a fit uses, shape (len(runs),): all except the completed ones not in
    ``kept``."""
    mask = np.ones(len(data.runs), dtype=bool)
    held = set(range(len(data.complete))) - set(kept)
    mask[[data.complete[i] for i in held]] = False
    return mask


def _scales(data: _Data, config: RecommendConfig) -> list[float]:
    total = float(data.weights.sum()) or 1.0
    return [(c * total) ** 2 for c in config.residual_scales]


@dataclass(frozen=True, slots=True)
class _ResidualSpec:
    """One residual process of every model: its correlation and scale ``s^2`` (objective units
    squared); ``label`` names it in the members' names."""

    correlation: _Correlation
    scale: float
    label: str


def _residual_specs(data: _Data, config: RecommendConfig, n: int) -> list[_ResidualSpec]:
    """The residual processes every model is paired with, in member order (kernel, then
    scale). The Kendall members keep their names ``@scale``; the others add ``/kernel``."""
    kendall_decay = config.kernel_decay / max(comb(n, 2), 1)
    position_decay = config.position_decay / max(n, 1)
    specs = []
    for kernel in config.residual_kernels:
        correlation = _Correlation(kernel, kendall_decay, position_decay)
        suffix = "" if kernel == "kendall" else f"/{kernel}"
        for c, scale in zip(config.residual_scales, _scales(data, config), strict=True):
            specs.append(_ResidualSpec(correlation, scale, f"{c:g}{suffix}"))
    return specs


def _residual_factors(
    orders: IntArray, noise: FloatMatrix, specs: Sequence[_ResidualSpec], config: RecommendConfig
) -> list[FloatMatrix]:
    """:func:`_residual_factor` of every residual spec at ``orders`` (R, n), in spec order
    (shared by the models: one inverse per spec, not one per member)."""
    if len(orders) == 0:
        return [np.zeros((0, 0)) for _ in specs]
    return [
        _residual_factor(
            orders, noise, spec.scale, spec.correlation, config.residual_bias * spec.scale
        )
        for spec in specs
    ]


def _inverse_without(inverse: FloatMatrix, i: int) -> FloatMatrix:
    """The inverse of a symmetric positive definite matrix without its row and column ``i``,
    from the inverse ``B`` of the whole one, shape (R - 1, R - 1): ``B[-i, -i] - B[-i, i]
    B[i, -i] / B[i, i]`` (O(R^2) instead of a fresh O(R^3) inverse)."""
    kept = np.arange(len(inverse)) != i
    column = inverse[kept, i]
    return np.asarray(
        inverse[np.ix_(kept, kept)] - np.outer(column, column) / inverse[i, i], dtype=np.float64
    )


def _held_out(data: _Data, config: RecommendConfig) -> list[int]:
    """Completed runs held out in turn (indexes into ``data.complete``): the most recent
    ``folds``, none with fewer than two."""
    count = len(data.complete)
    return [] if count < 2 else list(range(max(0, count - config.folds), count))


def _fold_scores(
    data: _Data,
    config: RecommendConfig,
    run_posteriors: Sequence[RunModelPosterior | None],
    specs: Sequence[_ResidualSpec],
    models: int,
    factors: Sequence[FloatMatrix],
) -> tuple[FloatMatrix, FloatMatrix]:
    """Leave-one-run-out log predictive density and predicted mean of every held-out final,
    shape (folds, models x residuals) each, member order of :func:`fit_order_posterior`;
    ``run_posteriors``: the run model without each held-out run (``None`` entries: none);
    ``factors``: every spec's residual factor on all completed runs (:func:`_residual_factors`),
    from which each fold's is downdated."""
    count = len(data.complete)
    held = _held_out(data, config)
    scores = np.zeros((len(held), models, len(specs)))
    means = np.zeros((len(held), models, len(specs)))
    none = _Current((), None, None)
    for fold, i in enumerate(held):
        kept = [k for k in range(count) if k != i]
        predictors = _predictors(data, kept, run_posteriors[fold], none, config)
        noise = np.full(len(kept), data.final_var)
        fold_factors = [_inverse_without(factor, i) for factor in factors]
        for m, predictor in enumerate(predictors):
            mean, var = predictor.moments(data.orders, conditioned=False)
            residuals = data.finals[kept] - mean[kept]
            for s, spec in enumerate(specs):
                gp = _residual(
                    data.orders[kept],
                    residuals,
                    noise,
                    spec.scale,
                    spec.correlation,
                    config.residual_bias * spec.scale,
                    fold_factors[s],
                )
                r_mean, r_var = gp.predict(data.orders[i : i + 1])
                m_i, v_i = _combine(mean[i : i + 1], var[i : i + 1], r_mean, r_var, gp.prior_var)
                total_var = float(v_i[0] + data.final_var)
                error = float(data.finals[i] - m_i[0])
                scores[fold, m, s] = -0.5 * (log(2 * pi * total_var) + error**2 / total_var)
                means[fold, m, s] = m_i[0]
    shape = (len(held), models * len(specs))
    return scores.reshape(shape), means.reshape(shape)


def _stacking_weights(scores: FloatMatrix, *, pseudo_count: float = 0.1) -> FloatMatrix:
    """Mixture weights maximizing the held-out log score of the mixture (stacking).

    ``scores``: log predictive density of every held-out run under every member, shape
    (folds, members). EM on the simplex, with ``pseudo_count`` per member (a Dirichlet prior
    that keeps every member alive while evidence is thin); uniform without folds.
    """
    folds, members = scores.shape
    weights = np.full(members, 1.0 / members)
    if folds == 0:
        return weights
    density = np.exp(scores - scores.max(axis=1, keepdims=True))
    for _ in range(200):
        joint = density * weights[None, :]
        responsibility = joint / joint.sum(axis=1, keepdims=True)
        updated = (responsibility.sum(axis=0) + pseudo_count) / (folds + members * pseudo_count)
        if np.max(np.abs(updated - weights)) < 1e-9:
            weights = updated
            break
        weights = updated
    return np.asarray(weights, dtype=np.float64)


def _trust(
    predicted: FloatMatrix, observed: FloatMatrix, final_var: float, config: RecommendConfig
) -> float:
    """How far the held-out predictions rank runs right: the posterior slope ``b`` of the
    observed finals on their leave-one-run-out predicted means (both centred), prior
    ``N(trust_prior)``, noise the larger of the finals' and the fit's residual variance;
    clipped to [0, 1]. 1 when off or without folds."""
    if config.trust_prior is None or len(predicted) < 2:
        return 1.0
    x, y = predicted - predicted.mean(), observed - observed.mean()
    sxx = float(x @ x)
    slope = float(x @ y) / sxx if sxx > 0 else 0.0
    residual = float(np.mean((y - slope * x) ** 2)) if sxx > 0 else float(np.mean(y**2))
    noise = max(final_var, residual)
    prior_mean, prior_sd = config.trust_prior
    precision = 1.0 / prior_sd**2 + sxx / noise
    posterior = (prior_mean / prior_sd**2 + float(x @ y) / noise) / precision
    return float(np.clip(posterior, 0.0, 1.0))


def fit_order_posterior(
    runs: Sequence[RunRecord],
    *,
    kinds: Sequence[TaskKind | None],
    weights: npt.ArrayLike,
    current: RunRecord | None = None,
    config: RecommendConfig | None = None,
) -> OrderPosterior:
    """The ensemble posterior from every run of the project (module docstring).

    Parameters
    ----------
    runs : sequence of RunRecord
        Every run (completed, failed, running): all are stage data; completed runs over every
        task are also final observations.
    kinds : sequence of TaskKind or None, length n
        Task kinds (the models' groups).
    weights : array_like, shape (n,)
        Non-negative task weights of the objective.
    current : RunRecord, optional
        The run being re-planned: predictions start from the state it reached
        (:meth:`OrderPosterior.given`: the fit itself does not depend on it).
    config : RecommendConfig, optional
        Settings.

    Returns
    -------
    OrderPosterior
        Deterministic for its inputs.
    """
    config = config or RecommendConfig()
    n = len(kinds)
    data = _data(runs, kinds, weights, config.noise_sd)
    specs = _residual_specs(data, config, n)
    use_run_model = n <= config.run_model_max_tasks
    held = _held_out(data, config)
    run_posterior: RunModelPosterior | None = None
    folds: list[RunModelPosterior | None] = [None] * len(held)
    if use_run_model:
        # One design for the full fit and every held-out fit.
        fitted = fit_run_model_posteriors(
            runs,
            kinds=kinds,
            holdouts=[None, *(data.complete[i] for i in held)],
            config=config.run_model,
            steps=data.table.steps,
        )
        run_posterior, folds = fitted[0], list(fitted[1:])
    noise = np.full(len(data.finals), data.final_var)
    factors = _residual_factors(data.orders, noise, specs, config)
    models = 3 if use_run_model else 2
    scores, held_means = _fold_scores(data, config, folds, specs, models, factors)
    everything = list(range(len(data.complete)))
    predictors = _predictors(data, everything, run_posterior, _current(None, n), config)
    members: list[_Member] = []
    names: list[str] = []
    for predictor in predictors:
        mean, _ = predictor.moments(data.orders, conditioned=False)
        residuals = data.finals - mean
        for spec, factor in zip(specs, factors, strict=True):
            gp = _residual(
                data.orders,
                residuals,
                noise,
                spec.scale,
                spec.correlation,
                config.residual_bias * spec.scale,
                factor,
            )
            name = f"{predictor.name}@{spec.label}"
            members.append(_Member(predictor, gp, name))
            names.append(name)
    flat = scores.sum(axis=0).ravel()
    member_weights = _stacking_weights(scores)
    trust = _trust(held_means @ member_weights, data.finals[held], data.final_var, config)
    posterior = OrderPosterior(
        trust=trust,
        members=tuple(members),
        member_weights=member_weights,
        weights={name: float(w) for name, w in zip(names, member_weights, strict=True)},
        elpd={name: float(s) for name, s in zip(names, flat, strict=True)},
        observed=[tuple(int(t) for t in order) for order in data.orders],
        finals=data.finals,
        final_var=data.final_var,
        prefix=(),
        n=n,
    )
    return posterior if current is None else posterior.given(current)


# --- search -----------------------------------------------------------------------------------


def _local_search(
    score: Callable[[IntArray], FloatMatrix],
    start: Order,
    *,
    fixed: int,
    is_feasible: Feasible | None,
    max_rounds: int,
    max_moves: int,
) -> tuple[Order, float]:
    """Best-improvement insertion search; never worse than ``start`` when ``start`` is
    feasible. From an infeasible start it first moves to the best feasible neighbour, whatever
    its score (so a search whose starts are all infeasible still answers a feasible order)."""
    current = start
    value = float(score(np.array([start], dtype=np.int64))[0])
    feasible = is_feasible is None or is_feasible(start)
    free = len(start) - fixed
    window = None if free * (free - 1) <= max_moves else max(2, max_moves // (2 * free))
    for _ in range(max_rounds):
        moves = insertion_moves(current, fixed, window)
        if is_feasible is not None and len(moves):
            keep = np.array([is_feasible(tuple(int(t) for t in m)) for m in moves], dtype=bool)
            moves = moves[keep]
        if len(moves) == 0:
            break
        values = score(moves)
        best = int(np.argmax(values))
        if feasible and values[best] <= value + 1e-12 * max(1.0, abs(value)):
            break
        current, value = tuple(int(t) for t in moves[best]), float(values[best])
        feasible = True
    return current, value


def _climbed(
    score: Callable[[IntArray], FloatMatrix],
    starts: Sequence[Order],
    fixed: int,
    is_feasible: Feasible | None,
    config: RecommendConfig,
    kept: tuple[dict[tuple[object, ...], Order], tuple[object, ...]] | None = None,
) -> list[Order]:
    """The local optimum of ``score`` reached from each start (``kept``: where the optima of
    this very ``score`` are kept, and what tells it from another, for the next caller)."""
    climbs, known = kept if kept is not None else ({}, ())
    out = []
    for start in starts:
        key = (*known, config.max_rounds, config.max_moves, start)
        if key not in climbs:
            climbs[key] = _local_search(
                score,
                start,
                fixed=fixed,
                is_feasible=is_feasible,
                max_rounds=config.max_rounds,
                max_moves=config.max_moves,
            )[0]
        out.append(climbs[key])
    return out


def _lop_start(posterior: OrderPosterior, weights: FloatMatrix, prefix: Order) -> Order | None:
    """The run model's pairwise optimum over the free tasks (``None`` without the run model):
    solved once per fit, prefix and weights (it reads the fit alone, never the conditioning)."""
    key = (prefix, np.ascontiguousarray(weights, dtype=np.float64).tobytes())
    kept = posterior.shared.lop_starts
    if key not in kept:
        kept[key] = _solved_lop_start(posterior, weights, prefix)
    return kept[key]


def _solved_lop_start(
    posterior: OrderPosterior, weights: FloatMatrix, prefix: Order
) -> Order | None:
    predictor = next(
        (m.predictor for m in posterior.members if isinstance(m.predictor, _RunModelPredictor)),
        None,
    )
    if predictor is None:
        return None
    summary = predictor.posterior.summary()
    free = [t for t in range(posterior.n) if t not in set(prefix)]
    if len(free) < 2:
        return (*prefix, *free)
    carry = summary.carry_mean * weights[None, :]
    backward = summary.backward_mean.T * weights[:, None]
    matrix = (carry + backward)[np.ix_(free, free)]
    solution = solve_lop(matrix, time_limit_s=1.0, seed=0, num_workers=1)
    return (*prefix, *(free[int(k)] for k in solution.order))


def _distinct_feasible(candidates: Sequence[Order], is_feasible: Feasible | None) -> list[Order]:
    """The distinct candidates in order, the infeasible ones left out unless none is feasible
    (then all of them: a search may start from an infeasible order and leave it)."""
    unique = list(dict.fromkeys(candidates))
    feasible = [order for order in unique if is_feasible is None or is_feasible(order)]
    return feasible or unique


def _start_orders(
    posterior: OrderPosterior,
    weights: FloatMatrix,
    starts: Starts,
    is_feasible: Feasible | None,
) -> list[Order]:
    prefix = posterior.prefix
    given = starts() if callable(starts) else starts
    candidates: list[Order] = [tuple(int(t) for t in s) for s in given]
    candidates += [o for o in posterior.observed if o[: len(prefix)] == prefix]
    lop = _lop_start(posterior, weights, prefix)
    if lop is not None:
        candidates.append(lop)
    if not candidates:
        free = [t for t in range(posterior.n) if t not in set(prefix)]
        candidates.append((*prefix, *free))
    distinct = _distinct_feasible(candidates, is_feasible)
    return distinct if is_feasible is None or is_feasible(distinct[0]) else distinct[:1]


# --- recommendation and exploration ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The recommended order and its posterior.

    Attributes
    ----------
    order : Order
        The recommendation.
    mean, std : float
        Posterior of its objective (weighted utility units); ``interval`` the 90 % interval.
    utilities : FloatMatrix, shape (n,)
        Predicted final utility of every task (task index order).
    observed : bool
        Whether the order was already run to completion.
    best_observed : Order or None
        The observed order the recommendation holds on to unless another beats it
        (``RecommendConfig.incumbent``: by default the best reported run's order);
        ``best_observed_mean`` its posterior mean.
    posterior : OrderPosterior
        The ensemble (weights, evidence).
    """

    order: Order
    mean: float
    std: float
    utilities: FloatMatrix
    observed: bool
    best_observed: Order | None
    best_observed_mean: float | None
    posterior: OrderPosterior

    @property
    def interval(self) -> tuple[float, float]:
        """90 % interval of the objective."""
        return self.mean - Z_90 * self.std, self.mean + Z_90 * self.std


def _decision_values(
    posterior: OrderPosterior, candidates: Sequence[Order], values: FloatMatrix
) -> FloatMatrix:
    """The values a recommendation is chosen on: an unobserved candidate's value is pulled
    towards the mean value of the observed ones by ``1 - trust`` (the held-out evidence that the
    posterior ranks unobserved orders right); an observed order keeps its own."""
    seen = set(posterior.observed)
    known = np.array([c in seen for c in candidates], dtype=bool)
    if posterior.trust >= 1.0 or not known.any():
        return values
    center = float(values[known].mean())
    pulled = center + posterior.trust * (values - center)
    return np.where(known, values, pulled)


def _beat_probability(posterior: OrderPosterior, orders: IntArray, incumbent: int) -> FloatMatrix:
    """Posterior probability that each of ``orders`` has a higher objective than
    ``orders[incumbent]``, shape (P,): per member a Gaussian difference (the two taken as
    independent, which overstates the spread of the difference: conservative), mixed by
    weight."""
    probability: FloatMatrix = np.zeros(len(orders))
    for weight, mean, var in posterior.member_moments(orders):
        spread = np.sqrt(np.maximum(var + var[incumbent], 1e-18))
        probability = probability + weight * special.ndtr((mean - mean[incumbent]) / spread)
    return probability


def _incumbent(
    posterior: OrderPosterior,
    candidates: Sequence[Order],
    values: FloatMatrix,
    rule: Literal["reported", "posterior"],
) -> int | None:
    """Index of the observed candidate the recommendation holds on to unless beaten
    (``RecommendConfig.incumbent``): the order of the best reported run among the candidates
    (``"reported"``; runs that reported the same final told apart by their decision value, so
    the candidates' order never decides), or the observed candidate of highest decision value
    (``"posterior"``); ``None`` when no candidate was observed."""
    seen = set(posterior.observed)
    known = [i for i, c in enumerate(candidates) if c in seen]
    if not known:
        return None
    if rule != "reported":
        return max(known, key=lambda i: float(values[i]))
    best_final: dict[Order, float] = {}
    for order, final in zip(posterior.observed, posterior.finals, strict=True):
        best_final[order] = max(float(final), best_final.get(order, -np.inf))
    return max(known, key=lambda i: (best_final[candidates[i]], float(values[i])))


def _chosen(
    posterior: OrderPosterior,
    array: IntArray,
    values: FloatMatrix,
    incumbent: int | None,
    beat_probability: float | None,
) -> int:
    """Index of the recommended candidate: the highest decision value; with
    ``beat_probability``, the incumbent unless a higher one beats it with at least that
    posterior probability."""
    best = int(np.argmax(values))
    if beat_probability is None or incumbent is None or best == incumbent:
        return best
    probability = _beat_probability(posterior, array, incumbent)
    eligible = [
        i
        for i in range(len(array))
        if i == incumbent or (values[i] > values[incumbent] and probability[i] >= beat_probability)
    ]
    return max(eligible, key=lambda i: float(values[i]))


def recommend(
    runs: Sequence[RunRecord],
    *,
    kinds: Sequence[TaskKind | None],
    weights: npt.ArrayLike,
    current: RunRecord | None = None,
    is_feasible: Feasible | None = None,
    starts: Starts = (),
    config: RecommendConfig | None = None,
    posterior: OrderPosterior | None = None,
) -> Recommendation:
    """The order with the highest posterior mean objective (``mean - risk * std``); with
    ``config.beat_probability``, the order of the best reported run (``config.incumbent``)
    unless a candidate beats it with that posterior probability.

    Candidates: ``starts`` (e.g. the constrained solver's order), the observed orders, the run
    model's pairwise optimum, and the local optima of the mixture mean from the best of them.
    With ``current`` the orders keep its trained prefix. Deterministic.
    """
    config = config or RecommendConfig()
    w = np.asarray(weights, dtype=np.float64)
    posterior = posterior or fit_order_posterior(
        runs, kinds=kinds, weights=w, current=current, config=config
    )

    def score(orders: IntArray) -> FloatMatrix:
        if config.risk == 0.0:
            return posterior.plug_in_mean(orders)
        mean, std = posterior.moments(orders)
        return np.asarray(mean - config.risk * std, dtype=np.float64)

    candidates = _start_orders(posterior, w, starts, is_feasible)
    values = score(np.array(candidates, dtype=np.int64))
    ranked = [candidates[i] for i in np.argsort(-values, kind="stable")[: config.starts]]
    fixed = len(posterior.prefix)
    candidates += _climbed(score, ranked, fixed, is_feasible, config)
    unique = _distinct_feasible(candidates, is_feasible)
    array = np.array(unique, dtype=np.int64)
    mean, std = posterior.moments(array)
    values = _decision_values(posterior, unique, mean - config.risk * std)
    incumbent = _incumbent(posterior, unique, values, config.incumbent)
    chosen = _chosen(posterior, array, values, incumbent, config.beat_probability)
    order = unique[chosen]
    return Recommendation(
        order=order,
        mean=float(mean[chosen]),
        std=float(std[chosen]),
        utilities=posterior.utilities(array[chosen : chosen + 1])[0],
        observed=order in set(posterior.observed),
        best_observed=None if incumbent is None else unique[incumbent],
        best_observed_mean=None if incumbent is None else float(mean[incumbent]),
        posterior=posterior,
    )


def thompson_order(
    runs: Sequence[RunRecord],
    *,
    kinds: Sequence[TaskKind | None],
    weights: npt.ArrayLike,
    seed: int,
    current: RunRecord | None = None,
    is_feasible: Feasible | None = None,
    starts: Starts = (),
    config: RecommendConfig | None = None,
    posterior: OrderPosterior | None = None,
) -> Order:
    """The next run's order: the argmax of one Thompson draw from the ensemble.

    A member is drawn by weight, its parametric part from its posterior, and its residual
    process jointly over the candidates (the draw's local optima from every start, and the
    observed orders). Deterministic for ``seed`` and the inputs.
    """
    config = config or RecommendConfig()
    w = np.asarray(weights, dtype=np.float64)
    posterior = posterior or fit_order_posterior(
        runs, kinds=kinds, weights=w, current=current, config=config
    )
    rng = np.random.default_rng(seed)
    index = int(rng.choice(len(posterior.members), p=posterior.member_weights))
    member = posterior.members[index]
    drawn = member.predictor.draw(rng)
    observed = np.array(posterior.observed, dtype=np.int64).reshape(-1, posterior.n)
    mean_obs, _ = drawn.moments(observed, conditioned=False)
    residual = _residual(
        observed,
        posterior.finals - mean_obs,
        np.full(len(observed), posterior.final_var),
        member.residual.scale,
        member.residual.correlation,
        member.residual.bias,
        member.residual.factor,  # same orders, noise and kernel: only the residuals differ
    )

    def score(orders: IntArray) -> FloatMatrix:
        mean, _ = drawn.moments(orders, conditioned=True)
        return np.asarray(mean + residual.predict(orders)[0], dtype=np.float64)

    fixed = len(posterior.prefix)
    starts_all = _start_orders(posterior, w, starts, is_feasible)
    shuffled = [starts_all[i] for i in rng.permutation(len(starts_all))]
    free = [t for t in range(posterior.n) if t not in set(posterior.prefix)]
    random_start = (*posterior.prefix, *(free[i] for i in rng.permutation(len(free))))
    if is_feasible is None or is_feasible(random_start):
        shuffled.append(random_start)
    candidates = list(shuffled)
    candidates += _climbed(score, shuffled[: config.starts + 1], fixed, is_feasible, config)
    unique = _distinct_feasible(candidates, is_feasible)
    array = np.array(unique, dtype=np.int64)
    mean, _ = drawn.moments(array, conditioned=True)
    cov = residual.covariance(array)
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(len(cov)) * max(1.0, float(np.trace(cov))))
    sample = mean + residual.predict(array)[0] + chol @ rng.standard_normal(len(array))
    chosen: Order = unique[int(np.argmax(sample))]
    return chosen


def _completions(
    posterior: OrderPosterior, is_feasible: Feasible | None, limit: int
) -> IntArray | None:
    """Every feasible completion of the posterior's prefix, shape (P, n), in lexicographic
    order of the free tasks; ``None`` when there are more than ``limit`` or none is feasible."""
    prefix = posterior.prefix
    trained = set(prefix)
    free = [t for t in range(posterior.n) if t not in trained]
    if factorial(len(free)) > limit:
        return None
    orders = [(*prefix, *rest) for rest in permutations(free)]
    if is_feasible is not None:
        orders = [order for order in orders if is_feasible(order)]
    return np.array(orders, dtype=np.int64) if orders else None


def improvement_order(
    runs: Sequence[RunRecord],
    *,
    kinds: Sequence[TaskKind | None],
    weights: npt.ArrayLike,
    current: RunRecord | None = None,
    is_feasible: Feasible | None = None,
    starts: Starts = (),
    config: RecommendConfig | None = None,
    posterior: OrderPosterior | None = None,
    seed: int = 0,
) -> Order:
    """The next run's order by expected improvement over the ensemble posterior.

    The incumbent is the best posterior mean among the observed orders (from the start, not
    conditioned on ``current``); the improvement of the mixture is exact (its Gaussian
    members' improvements, weighted). Up to ``config.exhaustive_completions`` completions of
    the prefix, every feasible one is scored (the first of equal improvements wins; a callable
    ``starts`` is not called). Above, or when none is feasible, candidates: the start orders, a
    random one (``seed``), and the local optima, from the best
    of them and the random one, of the improvement with every model at its parameters'
    posterior mean (one rollout per order; the candidates are then compared on the full
    improvement). Deterministic for its inputs.
    """
    config = config or RecommendConfig()
    w = np.asarray(weights, dtype=np.float64)
    posterior = posterior or fit_order_posterior(
        runs, kinds=kinds, weights=w, current=current, config=config
    )
    incumbent = posterior.best_observed_mean()
    if not np.isfinite(incumbent):
        incumbent = float(np.max(posterior.finals)) if len(posterior.finals) else 0.0

    def score(orders: IntArray) -> FloatMatrix:
        return posterior.expected_improvement(orders, incumbent)

    def climb(orders: IntArray) -> FloatMatrix:
        return posterior.expected_improvement(orders, incumbent, plug_in=True)

    completions = _completions(posterior, is_feasible, config.exhaustive_completions)
    if completions is not None:
        return tuple(int(t) for t in completions[int(np.argmax(score(completions)))])
    rng = np.random.default_rng(seed)
    fixed = len(posterior.prefix)
    candidates = _start_orders(posterior, w, starts, is_feasible)
    free = [t for t in range(posterior.n) if t not in set(posterior.prefix)]
    random_start = (*posterior.prefix, *(free[i] for i in rng.permutation(len(free))))
    if is_feasible is None or is_feasible(random_start):
        candidates.append(random_start)
    values = score(np.array(candidates, dtype=np.int64))
    ranked = [candidates[i] for i in np.argsort(-values, kind="stable")[: config.starts]]
    if random_start in candidates and random_start not in ranked:
        ranked.append(random_start)
    # From the start (no prefix) every copy of the fit climbs the same improvement.
    shared = not posterior.prefix and is_feasible is None
    kept = (posterior.shared.climbs, ("improvement", incumbent)) if shared else None
    candidates += _climbed(climb, ranked, fixed, is_feasible, config, kept)
    unique = _distinct_feasible(candidates, is_feasible)
    chosen: Order = unique[int(np.argmax(score(np.array(unique, dtype=np.int64))))]
    return chosen


def explore_order(
    runs: Sequence[RunRecord],
    *,
    kinds: Sequence[TaskKind | None],
    weights: npt.ArrayLike,
    seed: int,
    current: RunRecord | None = None,
    is_feasible: Feasible | None = None,
    starts: Starts = (),
    config: RecommendConfig | None = None,
    posterior: OrderPosterior | None = None,
) -> Order:
    """The next run's order (what an adaptive run follows and re-plans with).

    Before any run has completed, one Thompson draw (:func:`thompson_order`: nothing to improve
    on yet, and the draw spreads the first runs); from then on the order of highest expected
    improvement over the best observed order (:func:`improvement_order`). Deterministic for
    ``seed`` and the inputs.
    """
    config = config or RecommendConfig()
    w = np.asarray(weights, dtype=np.float64)
    posterior = posterior or fit_order_posterior(
        runs, kinds=kinds, weights=w, current=current, config=config
    )
    plan = thompson_order if not posterior.observed else improvement_order
    return plan(
        runs,
        kinds=kinds,
        weights=w,
        seed=seed,
        current=current,
        is_feasible=is_feasible,
        starts=starts,
        config=config,
        posterior=posterior,
    )
