"""Stage transitions: what training task ``t`` does to every task's utility from a given state.

:mod:`solver.learning` regresses every evaluation on the set of tasks trained before it (a
pairwise model: exact when effects add up). This model reads the same reports as *state
transitions* instead: the change of task ``j``'s utility over a stage that trains ``t`` is a
function of the state before the stage::

    u'_j - u_j = theta[t, j] . (1, u_j - 1/2, H - H_ref, z_j)        (+ noise)

``u_j`` the utility of ``j`` before the stage, ``H`` the mean policy entropy, ``z_j`` 1 when
``j`` was trained at an earlier stage (forgetting differs from forward transfer). The slope on
``u_j`` lets gains saturate and forgetting scale with what there is to forget; the entropy term
lets a stage's effect depend on the entropy the earlier stages left; so the model is not
additive and the order of the stages matters beyond pairs. The entropy follows the per-task
affine maps of :mod:`solver.learning` (``H' = alpha_t H + beta_t``).

Every cell ``(t, j)`` is a 4-parameter Bayesian linear regression whose prior mean is the
posterior of its *group* (kind of ``t``, kind of ``j``, ``t == j``), itself fitted on the pooled
data of the group: cells with few observations borrow from their group. Cost: ``O(N)`` to
accumulate the ``N`` stage observations and ``O(n^2)`` batched 4 x 4 solves, so it scales to
hundreds of tasks; a rollout of ``P`` orders is ``O(P n^2)``.

Predictions roll the state forward from the observed baseline (or from the state a running
run has reached): the mean model gives point predictions, :func:`sample_transition_params`
draws parameters from the posterior for uncertainty and Thompson sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ordo_server.solver.estimation import TaskKind
from ordo_server.solver.learning import (
    EntropySteps,
    RunModelConfig,
    RunRecord,
    entropy_maps,
    mean_entropy,
)
from ordo_server.solver.types import FloatMatrix

IntArray = npt.NDArray[np.int64]

__all__ = [
    "StageTable",
    "TransitionConfig",
    "TransitionModel",
    "TransitionState",
    "fit_transition_model",
    "rollout",
    "sample_transition_params",
]

FEATURES = 4
"""Intercept, utility before (centred on 1/2), entropy shift, trained-before flag."""


@dataclass(frozen=True, slots=True)
class TransitionConfig:
    """Priors and noise (utility units unless stated).

    Attributes
    ----------
    noise_sd : float
        Noise of one evaluation; a stage's change is a difference of two (variance ``2 sd^2``).
        The fit uses the larger of this and the noise estimated from the baselines.
    group_prior_std : tuple of 4 float
        Prior std of a group's mean parameters (intercept, saturation slope, entropy slope,
        trained flag).
    cell_prior_std : tuple of 4 float
        Prior std of a cell's deviation from its group.
    baseline_prior : tuple of float
        ``(mean, std)`` of a task's utility before any training.
    """

    noise_sd: float = 0.02
    group_prior_std: tuple[float, float, float, float] = (0.1, 0.3, 0.3, 0.1)
    cell_prior_std: tuple[float, float, float, float] = (0.04, 0.1, 0.1, 0.04)
    baseline_prior: tuple[float, float] = (0.5, 0.5)


@dataclass(frozen=True, slots=True)
class TransitionModel:
    """Posterior of the transition model of ``n`` tasks.

    Attributes
    ----------
    mean : FloatMatrix, shape (n, n, 4)
        ``theta[t, j]``: posterior mean of the effect of training ``t`` on ``j``.
    chol : FloatMatrix, shape (n, n, 4, 4)
        Lower Cholesky factor of every cell's posterior covariance.
    baseline_mean, baseline_var : FloatMatrix, shape (n,)
        Utility of every task before training (mean of the runs' baselines, shrunk to the prior).
    entropy_map : FloatMatrix, shape (n, 2)
        ``(alpha_t, beta_t)`` (entropy units).
    entropy_ref : float
        Mean baseline entropy (0 when none was reported).
    entropy0 : float
        Baseline entropy the rollouts start from.
    noise_sd : FloatMatrix, shape (n,)
        Evaluation noise of every task (estimated from the baselines, floored by the config's).
    observations : int
        Stage observations the fit used.
    bounds : tuple of float
        Range rollouts keep utilities in: the reported range widened by a tenth of its width
        on each side (a linear map compounded over many stages must not run away).
    """

    mean: FloatMatrix
    chol: FloatMatrix
    baseline_mean: FloatMatrix
    baseline_var: FloatMatrix
    entropy_map: FloatMatrix
    entropy_ref: float
    entropy0: float
    noise_sd: FloatMatrix
    observations: int
    bounds: tuple[float, float] = (-np.inf, np.inf)

    @property
    def n(self) -> int:
        """Number of tasks."""
        return int(self.mean.shape[0])


@dataclass(frozen=True, slots=True)
class TransitionState:
    """Where rollouts start: utilities (n,), mean entropy, and which tasks are trained (n,)."""

    utilities: FloatMatrix
    entropy: float
    trained: npt.NDArray[np.bool_]


def _groups(kinds: Sequence[TaskKind | None]) -> tuple[IntArray, int]:
    """Group id of every cell ``(t, j)``, shape (n, n), and the number of groups."""
    n = len(kinds)
    ids: dict[tuple[TaskKind | None, TaskKind | None, bool], int] = {}
    groups = np.zeros((n, n), dtype=np.int64)
    for t in range(n):
        for j in range(n):
            groups[t, j] = ids.setdefault((kinds[t], kinds[j], t == j), len(ids))
    return groups, len(ids)


@dataclass(frozen=True, slots=True)
class StageTable:
    """Every run's reports as flat arrays, built once (:meth:`of`): a fit on some of the runs
    (a held-out fit) selects its rows by run index instead of walking the reports again. Rows
    keep run order, then stage order, then each evaluation's order, so a fit adds its terms in
    the order a walk over the runs would.

    Attributes
    ----------
    runs : int
        Number of runs ``R``.
    base_run, base_task : IntArray, shape (B,)
        Run and task of every baseline evaluation; ``base_value`` (B,) its utility.
    base_entropy : FloatMatrix, shape (R,)
        Mean baseline entropy of every run (NaN: not reported).
    run, trained, task : IntArray, shape (N,)
        Every observed stage change: its run, the task the stage trained, the task evaluated.
    before, entropy, done, change : FloatMatrix, shape (N,)
        The task's utility before the stage, the mean entropy before it (NaN: not reported),
        1 when the task was trained at an earlier stage, and the change of its utility.
    low, high : FloatMatrix, shape (R,)
        Smallest and largest utility each run reported (NaN: none).
    steps : EntropySteps
        The entropy before and after every stage.
    """

    runs: int
    base_run: IntArray
    base_task: IntArray
    base_value: FloatMatrix
    base_entropy: FloatMatrix
    run: IntArray
    trained: IntArray
    task: IntArray
    before: FloatMatrix
    entropy: FloatMatrix
    done: FloatMatrix
    change: FloatMatrix
    low: FloatMatrix
    high: FloatMatrix
    steps: EntropySteps

    @classmethod
    def of(cls, runs: Sequence[RunRecord]) -> StageTable:
        """The table of ``runs``."""
        base: list[tuple[int, int, float]] = []
        rows: list[tuple[int, int, int, float, float, float, float]] = []
        low, high = np.full(len(runs), np.nan), np.full(len(runs), np.nan)
        for r, run in enumerate(runs):
            if run.utilities:
                base += [(r, j, value) for j, value in run.utilities[0].items()]
            values = [v for stage in run.utilities for v in stage.values()]
            if values:
                low[r], high[r] = min(values), max(values)
            rows += _changes(r, run)
        base_entropy = [mean_entropy(run.entropies, 0) for run in runs]
        base_columns = list(zip(*base, strict=True)) or [(), (), ()]
        columns = list(zip(*rows, strict=True)) or [()] * 7
        ints = [np.array(c, dtype=np.int64) for c in (*base_columns[:2], *columns[:3])]
        floats = [np.array(c, dtype=np.float64) for c in (base_columns[2], *columns[3:])]
        return cls(
            runs=len(runs),
            base_run=ints[0],
            base_task=ints[1],
            base_value=floats[0],
            base_entropy=np.array(
                [np.nan if h is None else h for h in base_entropy], dtype=np.float64
            ),
            run=ints[2],
            trained=ints[3],
            task=ints[4],
            before=floats[1],
            entropy=floats[2],
            done=floats[3],
            change=floats[4],
            low=low,
            high=high,
            steps=EntropySteps.of(runs),
        )


def _changes(r: int, run: RunRecord) -> list[tuple[int, int, int, float, float, float, float]]:
    """Run ``r``'s stage changes: (run, trained task, task, utility before, entropy before or
    NaN, trained-before flag, change)."""
    out = []
    done: set[int] = set()
    for k in range(1, min(len(run.utilities), len(run.trained) + 1)):
        t = run.trained[k - 1]
        before, after = run.utilities[k - 1], run.utilities[k]
        entropy = mean_entropy(run.entropies, k - 1)
        h = np.nan if entropy is None else entropy
        for j, value in before.items():
            if j in after:
                out.append((r, t, j, value, h, 1.0 if j in done else 0.0, after[j] - value))
        done.add(t)
    return out


def _entropy_reference(table: StageTable, kept: npt.NDArray[np.bool_]) -> float:
    """Mean baseline entropy of the kept runs that reported one (0 when none did)."""
    baselines = table.base_entropy[kept & ~np.isnan(table.base_entropy)]
    return float(np.mean(baselines)) if len(baselines) else 0.0


def _stage_data(
    table: StageTable, kept: npt.NDArray[np.bool_], entropy_ref: float
) -> tuple[IntArray, IntArray, FloatMatrix, FloatMatrix]:
    """The kept runs' stage changes: trained task (N,), task (N,), features (N, 4), change
    (N,)."""
    rows = kept[table.run]
    entropy = table.entropy[rows]
    shift = np.where(np.isnan(entropy), 0.0, entropy - entropy_ref)
    x = np.stack(
        [np.ones(len(shift)), table.before[rows] - 0.5, shift, table.done[rows]], axis=1
    ).reshape(-1, FEATURES)
    return table.trained[rows], table.task[rows], x, table.change[rows]


def baseline_noise(
    runs: Sequence[RunRecord],
    n: int,
    prior_sd: float,
    *,
    table: StageTable | None = None,
    kept: npt.NDArray[np.bool_] | None = None,
) -> FloatMatrix:
    """Per-task evaluation noise sd, shape (n,), from the spread of the runs' baselines.

    Every run starts from the same untrained state, so its baseline evaluations are repeated
    measurements of one value: their sample variance is the noise. Pooled with the prior as
    four pseudo-observations of ``prior_sd^2``. ``table``: ``StageTable.of(runs)`` already
    built; ``kept``: which runs count, shape (R,) (default all).
    """
    table = table or StageTable.of(runs)
    tasks, values = _baselines(table, kept)
    prior_weight = 4.0
    sums = np.zeros(n)
    squares = np.zeros(n)
    counts = np.zeros(n)
    np.add.at(sums, tasks, values)
    np.add.at(squares, tasks, values * values)
    np.add.at(counts, tasks, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
        scatter = np.maximum(squares - counts * means**2, 0.0)
    dof = np.maximum(counts - 1, 0)
    variance = (prior_weight * prior_sd**2 + scatter) / (prior_weight + dof)
    return np.asarray(np.sqrt(variance), dtype=np.float64)


def _baselines(
    table: StageTable, kept: npt.NDArray[np.bool_] | None
) -> tuple[IntArray, FloatMatrix]:
    """Task (B,) and utility (B,) of the kept runs' baseline evaluations."""
    if kept is None:
        return table.base_task, table.base_value
    rows = kept[table.base_run]
    return table.base_task[rows], table.base_value[rows]


def _baseline(
    table: StageTable,
    kept: npt.NDArray[np.bool_],
    n: int,
    noise: FloatMatrix,
    prior: tuple[float, float],
) -> tuple[FloatMatrix, FloatMatrix]:
    """Posterior mean and variance of every task's untrained utility, shape (n,) each."""
    tasks, values = _baselines(table, kept)
    precision = np.full(n, 1.0 / prior[1] ** 2)
    moment = precision * prior[0]
    np.add.at(precision, tasks, 1.0 / noise[tasks] ** 2)
    np.add.at(moment, tasks, values / noise[tasks] ** 2)
    return moment / precision, 1.0 / precision


def _batched_posterior(
    gram: FloatMatrix, moment: FloatMatrix, prior_mean: FloatMatrix, prior_var: FloatMatrix
) -> tuple[FloatMatrix, FloatMatrix]:
    """Posterior mean (..., 4) and covariance (..., 4, 4) of batched Gaussian regressions."""
    prior_precision = np.zeros(gram.shape)
    idx = np.arange(FEATURES)
    prior_precision[..., idx, idx] = 1.0 / prior_var
    precision = gram + prior_precision
    rhs = moment + prior_mean / prior_var
    covariance = np.asarray(np.linalg.inv(precision), dtype=np.float64)
    mean = np.asarray(np.einsum("...ab,...b->...a", covariance, rhs), dtype=np.float64)
    return mean, covariance


def fit_transition_model(
    runs: Sequence[RunRecord],
    *,
    kinds: Sequence[TaskKind | None],
    config: TransitionConfig | None = None,
    table: StageTable | None = None,
    kept: npt.NDArray[np.bool_] | None = None,
) -> TransitionModel:
    """Posterior of the transition model from every stage of every run (module docstring).

    Parameters
    ----------
    runs : sequence of RunRecord
        Completed and running runs (a partial run is data up to its last report). Validated by
        the caller (:func:`solver.learning.fit_run_model` rules).
    kinds : sequence of TaskKind or None, length n
        Task kinds (they define the groups).
    config : TransitionConfig, optional
        Priors and noise.
    table : StageTable, optional
        ``StageTable.of(runs)`` already built (held-out fits share one).
    kept : array of bool, shape (len(runs),), optional
        Fit on these runs only (default all): the fit on the kept runs, to the last bit.

    Returns
    -------
    TransitionModel
        Deterministic. ``O(N + n^2)``.
    """
    config = config or TransitionConfig()
    table = table or StageTable.of(runs)
    kept = np.ones(table.runs, dtype=bool) if kept is None else kept
    n = len(kinds)
    noise = baseline_noise(runs, n, config.noise_sd, table=table, kept=kept)
    baseline_mean, baseline_var = _baseline(table, kept, n, noise, config.baseline_prior)
    entropy_ref = _entropy_reference(table, kept)
    ts, js, x, y = _stage_data(table, kept, entropy_ref)
    # A change is a difference of two evaluations: variance 2 sd^2 of the task's noise.
    inv_var = 1.0 / (2.0 * np.maximum(noise, config.noise_sd) ** 2)
    weight = inv_var[js] if len(js) else np.zeros(0)
    outer = np.einsum("na,nb,n->nab", x, x, weight)
    groups, g = _groups(kinds)
    group_of = groups[ts, js]
    group_gram = np.zeros((g, FEATURES, FEATURES))
    group_moment = np.zeros((g, FEATURES))
    np.add.at(group_gram, group_of, outer)
    np.add.at(group_moment, group_of, x * (weight * y)[:, None])
    group_mean, _ = _batched_posterior(
        group_gram,
        group_moment,
        np.zeros(FEATURES),
        np.square(np.array(config.group_prior_std)),
    )
    cell_gram = np.zeros((n, n, FEATURES, FEATURES))
    cell_moment = np.zeros((n, n, FEATURES))
    np.add.at(cell_gram, (ts, js), outer)
    np.add.at(cell_moment, (ts, js), x * (weight * y)[:, None])
    mean, covariance = _batched_posterior(
        cell_gram,
        cell_moment,
        group_mean[groups],
        np.square(np.array(config.cell_prior_std)),
    )
    jitter = 1e-12 * np.eye(FEATURES)
    chol = np.asarray(np.linalg.cholesky(covariance + jitter), dtype=np.float64)
    map_config = RunModelConfig()
    return TransitionModel(
        mean=mean,
        chol=chol,
        baseline_mean=baseline_mean,
        baseline_var=baseline_var,
        entropy_map=entropy_maps(runs, n, map_config, steps=table.steps, kept=kept),
        entropy_ref=entropy_ref,
        entropy0=entropy_ref,
        noise_sd=noise,
        observations=len(y),
        bounds=_bounds(table, kept),
    )


def _bounds(table: StageTable, kept: npt.NDArray[np.bool_]) -> tuple[float, float]:
    reported = kept & ~np.isnan(table.low)
    if not reported.any():
        return (-np.inf, np.inf)
    low, high = float(table.low[reported].min()), float(table.high[reported].max())
    margin = 0.1 * max(high - low, 1e-6)
    return (low - margin, high + margin)


def sample_transition_params(
    model: TransitionModel, count: int, rng: np.random.Generator
) -> FloatMatrix:
    """``count`` posterior draws of ``theta``, shape (count, n, n, 4)."""
    z = rng.standard_normal((count, model.n, model.n, FEATURES))
    draws = model.mean[None] + np.einsum("tjab,ktjb->ktja", model.chol, z)
    return np.asarray(draws, dtype=np.float64)


def rollout(
    model: TransitionModel,
    params: FloatMatrix,
    orders: npt.ArrayLike,
    *,
    start: TransitionState | None = None,
    skip: int = 0,
) -> FloatMatrix:
    """Predicted final utilities, shape (K, P, n), of ``P`` orders under ``K`` parameter sets.

    Parameters
    ----------
    model : TransitionModel
        Baseline and entropy maps.
    params : FloatMatrix, shape (K, n, n, 4) or (n, n, 4)
        Parameter sets (posterior mean or draws).
    orders : array_like, shape (P, n)
        Full orders.
    start : TransitionState, optional
        State after the first ``skip`` stages (shared by every order); default the baseline.
    skip : int
        Stages already trained (the orders' common prefix).

    Notes
    -----
    ``O(K P n (n - skip))``.
    """
    theta = np.asarray(params, dtype=np.float64)
    if theta.ndim == 3:
        theta = theta[None]
    array = np.atleast_2d(np.asarray(orders, dtype=np.int64))
    k_count, count, n = len(theta), len(array), model.n
    if start is None:
        utilities = np.tile(model.baseline_mean, (k_count, count, 1))
        entropy = np.full((k_count, count), model.entropy0)
        trained = np.zeros((k_count, count, n))
    else:
        utilities = np.tile(np.asarray(start.utilities, dtype=np.float64), (k_count, count, 1))
        entropy = np.full((k_count, count), start.entropy)
        trained = np.tile(start.trained.astype(np.float64), (k_count, count, 1))
    alpha, beta = model.entropy_map[:, 0], model.entropy_map[:, 1]
    draw = np.arange(k_count)[:, None]
    for stage in range(skip, n):
        task = array[:, stage]  # (P,)
        cell = theta[draw, task[None, :]]  # (K, P, n, 4)
        shift = (entropy - model.entropy_ref)[:, :, None]
        change = (
            cell[..., 0]
            + cell[..., 1] * (utilities - 0.5)
            + cell[..., 2] * shift
            + cell[..., 3] * trained
        )
        utilities = np.clip(utilities + change, *model.bounds)
        trained[:, np.arange(count), task] = 1.0
        entropy = alpha[task][None, :] * entropy + beta[task][None, :]
    return np.asarray(utilities, dtype=np.float64)
