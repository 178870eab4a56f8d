"""Whole-run outcome model: learning the order from every evaluation of every run.

:mod:`solver.estimation` turns consecutive evaluations into conditional pairwise effects. Here
every evaluation is a data point of one Bayesian linear regression instead: the utility of task
``j`` after the trained sequence ``s`` (the first ``k`` stages of a run)::

    j not trained yet:  u_j(s) = base_j + sum_{i in s} F[i, j]                      + e_j x
    j trained:          u_j(s) = L_j + sum_{i in s before j} R[i, j]
                                      + sum_{i in s after j} B[i, j]                + e_j x

with ``x = H(s) - H_ref`` the mean policy entropy reported with the evaluation minus the mean
baseline entropy (0 when no entropy is reported). ``R[i, j]`` is what a task trained *before*
``j`` leaves in ``j``'s final level (``rho`` of docs/design.md §2 times ``F``, or an entropy or
skill effect: it is estimated, not assumed). One run of ``K`` stages gives ``(K + 1) n`` points, and
their noise is independent (differences of consecutive evaluations, which the additive
statistics use, are not).

Priors (config :class:`RunModelConfig`): ``F``, ``B``, ``R`` are a mean per kind pair
(``structured -> open_ended``, ...; hierarchical, shared across cells) plus a cell deviation;
``base``, ``L`` broad; the entropy slope ``e_j`` centred on 0.

Entropy is a state, not a pair effect: the entropy after a stage that trains ``t`` is modelled
as an affine map of the entropy before, ``H' = alpha_t H + beta_t`` (structured tasks lower it,
open-ended ones raise it; the map is learnt per task from the reported trajectories). Maps do
not commute (``f_a(f_b(H)) - f_b(f_a(H)) = beta_b (alpha_a - 1) - beta_a (alpha_b - 1)``), so the
final entropy depends on the order, which is the order effect that constant pairwise effects
miss. Predicted final utility of ``j`` under the order ``pi``::

    S_j(pi) = L_j + sum_{i before j} R[i, j] + sum_{i after j} B[i, j] + e_j (H_end(pi) - H_ref)

The first three terms are a Linear Ordering Problem (:func:`run_model_effects`, solved by
``solver.solve_ordering`` with ``rho = 1``); :func:`refine_order` then improves that order by
insertion moves under the full prediction, entropy term included, with the prefix fixed.

Exploration: :func:`exploration_order` designs the first runs so that every ordered pair is seen
in both orientations (a run and its reverse) before the loop starts exploiting; measured in one
orientation only, an effect is extrapolated from its kind group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
import numpy.typing as npt

from ordo_server.solver.estimation import TaskKind
from ordo_server.solver.lop import solve_lop
from ordo_server.solver.types import EffectModel, FloatMatrix, Order

IntArray = npt.NDArray[np.int64]

__all__ = [
    "EntropySteps",
    "RunModel",
    "RunModelConfig",
    "RunModelPosterior",
    "RunRecord",
    "entropy_maps",
    "exploration_order",
    "fit_run_model",
    "fit_run_model_posteriors",
    "insertion_moves",
    "mean_entropy",
    "predict_final_utilities",
    "predicted_objective",
    "refine_order",
    "restrict_run_model",
    "run_model_effects",
]


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run's trained order and what it reported.

    Attributes
    ----------
    trained : Order
        ``t_1, t_2, ...``: the task trained at each stage (distinct).
    utilities : sequence of mapping task -> utility
        ``utilities[k]``: evaluations after stage ``k`` (``0``: the baseline); tasks missing from
        a mapping are simply not data. ``len(utilities) <= len(trained) + 1``.
    entropies : sequence of mapping task -> entropy, optional
        Same indexing; the mean over the reported tasks is the state ``H``. Shorter or empty
        mappings mean "not reported".
    """

    trained: Order
    utilities: Sequence[Mapping[int, float]]
    entropies: Sequence[Mapping[int, float]] = ()


@dataclass(frozen=True, slots=True)
class RunModelConfig:
    """Priors and noise of the run model (utility units unless stated).

    Attributes
    ----------
    noise_sd : float
        Evaluation noise of one task's utility (a few hundred test items: 1-3 points).
    level_prior : tuple of float
        ``(mean, std)`` of ``base_j`` and ``L_j``.
    group_std : float
        Prior std of the mean effect of one kind pair (``F``, ``B`` and ``R`` each).
    deviation_std : float
        Prior std of a cell's deviation from its kind pair's mean (``F`` and ``B``).
    carry_std : float
        Same for ``R`` (what an earlier task leaves in a later task's level).
    entropy_slope_std : float
        Prior std of ``e_j`` (utility per entropy unit).
    entropy_noise_sd : float
        Noise of the mean reported entropy (entropy units).
    map_slope_std, map_offset_std : float
        Prior std of ``alpha_t`` (centred on 1) and ``beta_t`` (centred on 0, entropy units).
    """

    noise_sd: float = 0.025
    level_prior: tuple[float, float] = (0.5, 0.5)
    group_std: float = 0.1
    deviation_std: float = 0.05
    carry_std: float = 0.05
    entropy_slope_std: float = 0.3
    entropy_noise_sd: float = 0.02
    map_slope_std: float = 0.3
    map_offset_std: float = 0.5


@dataclass(frozen=True, slots=True)
class RunModel:
    """Posterior means (and marginal variances) of the run model of ``n`` tasks.

    Attributes
    ----------
    level_mean, level_var : FloatMatrix, shape (n,)
        ``L_j`` (utility units).
    carry_mean, carry_var : FloatMatrix, shape (n, n)
        ``R[i, j]``, zero diagonal.
    backward_mean, backward_var : FloatMatrix, shape (n, n)
        ``B[i, j]``, zero diagonal.
    forward_mean : FloatMatrix, shape (n, n)
        ``F[i, j]`` (not used by the final prediction; diagnostics).
    entropy_slope : FloatMatrix, shape (n,)
        ``e_j`` (utility per entropy unit).
    entropy_map : FloatMatrix, shape (n, 2)
        ``(alpha_t, beta_t)`` of every task's stage.
    entropy_ref : float
        ``H_ref``: mean baseline entropy (entropy units; 0 when none was reported).
    observations : int
        Evaluations the fit used.
    """

    level_mean: FloatMatrix
    level_var: FloatMatrix
    carry_mean: FloatMatrix
    carry_var: FloatMatrix
    backward_mean: FloatMatrix
    backward_var: FloatMatrix
    forward_mean: FloatMatrix
    entropy_slope: FloatMatrix
    entropy_map: FloatMatrix
    entropy_ref: float
    observations: int

    @property
    def n(self) -> int:
        """Number of tasks."""
        return int(self.level_mean.shape[0])


# --- the regression ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    """Column indices of the regression's parameter vector for ``n`` tasks, ``g`` kind pairs."""

    n: int
    groups: IntArray  # (n, n): kind-pair id of every ordered pair
    g: int

    @property
    def base(self) -> int:
        return 0

    @property
    def level(self) -> int:
        return self.n

    def cells(self, effect: int) -> int:
        """First column of the ``n * n`` deviations of effect 0 (F), 1 (B) or 2 (R)."""
        return 2 * self.n + effect * self.n * self.n

    @property
    def slope(self) -> int:
        return 2 * self.n + 3 * self.n * self.n

    def group(self, effect: int) -> int:
        """First column of the ``g`` kind-pair means of effect 0 (F), 1 (B) or 2 (R)."""
        return self.slope + self.n + effect * self.g

    @property
    def size(self) -> int:
        return self.slope + self.n + 3 * self.g


_FORWARD, _BACKWARD, _CARRY = 0, 1, 2


def _layout(kinds: Sequence[TaskKind | None]) -> _Layout:
    n = len(kinds)
    ids: dict[tuple[TaskKind | None, TaskKind | None], int] = {}
    groups = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(n):
            groups[i, j] = ids.setdefault((kinds[i], kinds[j]), len(ids))
    return _Layout(n=n, groups=groups, g=len(ids))


def _prior(layout: _Layout, config: RunModelConfig) -> tuple[FloatMatrix, FloatMatrix]:
    """Prior mean and variance of every parameter."""
    n = layout.n
    mean = np.zeros(layout.size)
    var = np.zeros(layout.size)
    level_mean, level_std = config.level_prior
    mean[: 2 * n] = level_mean
    var[: 2 * n] = level_std**2
    var[layout.cells(_FORWARD) : layout.cells(_CARRY)] = config.deviation_std**2
    var[layout.cells(_CARRY) : layout.slope] = config.carry_std**2
    var[layout.slope : layout.slope + n] = config.entropy_slope_std**2
    var[layout.group(_FORWARD) :] = config.group_std**2
    return mean, var


def mean_entropy(entropies: Sequence[Mapping[int, float]], k: int) -> float | None:
    """Mean entropy reported at stage ``k`` (``None``: not reported)."""
    if k >= len(entropies) or not entropies[k]:
        return None
    values = entropies[k].values()
    return float(sum(values) / len(values))


def _entropy_reference(runs: Sequence[RunRecord]) -> float:
    baselines = [h for run in runs if (h := mean_entropy(run.entropies, 0)) is not None]
    return float(np.mean(baselines)) if baselines else 0.0


def _validate_runs(runs: Sequence[RunRecord], n: int) -> None:
    for index, run in enumerate(runs):
        if len(set(run.trained)) != len(run.trained):
            raise ValueError(f"run {index}: a task is trained twice")
        if any(not 0 <= t < n for t in run.trained):
            raise ValueError(f"run {index}: trained task outside 0..{n - 1}")
        if len(run.utilities) > len(run.trained) + 1:
            raise ValueError(f"run {index}: more evaluations than stages")
        for k, evaluation in enumerate(run.utilities):
            values = list(evaluation.values())
            if any(not 0 <= j < n for j in evaluation) or not np.all(np.isfinite(values)):
                raise ValueError(f"run {index}, stage {k}: task outside 0..{n - 1} or NaN")
        for k, entropies in enumerate(run.entropies):
            if not np.all(np.isfinite(list(entropies.values()))):
                raise ValueError(f"run {index}, stage {k}: NaN or infinite entropy")


def _regression_data(
    runs: Sequence[RunRecord], layout: _Layout, entropy_ref: float
) -> tuple[FloatMatrix, FloatMatrix]:
    """Design matrix (N, p) and utilities (N,) of every evaluation of every run (rows in run,
    stage and task order)."""
    parts = [_run_design(run, layout, entropy_ref) for run in runs]
    if not parts:
        return np.zeros((0, layout.size)), np.zeros(0)
    return np.concatenate([d for d, _ in parts]), np.concatenate([u for _, u in parts])


def _run_design(
    run: RunRecord, layout: _Layout, entropy_ref: float
) -> tuple[FloatMatrix, FloatMatrix]:
    """One run's rows of the design (module formula): the row of task ``j`` evaluated after
    stage ``k`` counts ``base_j`` or ``L_j``, one per trained pair (its cell and its kind pair's
    mean) and the entropy shift on ``j``'s slope. Shape (N, p) and (N,)."""
    stages: list[int] = []
    tasks: list[int] = []
    targets: list[float] = []
    shifts: list[float] = []
    for k, evaluation in enumerate(run.utilities):
        entropy = mean_entropy(run.entropies, k)
        shift = 0.0 if entropy is None else entropy - entropy_ref
        for task, value in sorted(evaluation.items()):
            stages.append(k)
            tasks.append(task)
            targets.append(float(value))
            shifts.append(shift)
    n = layout.n
    stage, j = np.array(stages, dtype=np.int64), np.array(tasks, dtype=np.int64)
    position = np.full(n, n + 1, dtype=np.int64)  # stage index at which each task was trained
    position[list(run.trained)] = np.arange(len(run.trained))
    own = position[j]  # (N,)
    trained = own < stage  # the evaluated task was trained before its evaluation
    earlier = position[None, :] < stage[:, None]  # [row, i]: i trained before the evaluation
    earlier[np.arange(len(j)), j] = False
    pairs = {
        _FORWARD: earlier & ~trained[:, None],
        _CARRY: earlier & trained[:, None] & (position[None, :] < own[:, None]),
        _BACKWARD: earlier & trained[:, None] & (position[None, :] > own[:, None]),
    }
    design = np.zeros((len(j), layout.size))
    rows = np.arange(len(j))
    design[rows, np.where(trained, layout.level, layout.base) + j] = 1.0
    for effect, mask in pairs.items():
        row, i = np.nonzero(mask)
        col = j[row]
        design[row, layout.cells(effect) + i * n + col] += 1.0
        np.add.at(design, (row, layout.group(effect) + layout.groups[i, col]), 1.0)
    design[rows, layout.slope + j] = shifts
    return design, np.array(targets, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class EntropySteps:
    """Every stage of every run whose mean entropy was reported before and after it, flat.

    Built once from the runs (:meth:`of`); a fit on some of the runs selects its rows by run
    index, so held-out fits do not walk the reports again.

    Attributes
    ----------
    run : IntArray, shape (N,)
        Index of the step's run in the runs it was built from.
    task : IntArray, shape (N,)
        The task the stage trained.
    before, after : FloatMatrix, shape (N,)
        Mean entropy before and after the stage (entropy units).
    """

    run: IntArray
    task: IntArray
    before: FloatMatrix
    after: FloatMatrix

    @classmethod
    def of(cls, runs: Sequence[RunRecord]) -> EntropySteps:
        """The steps of ``runs``, in run order then stage order."""
        run_of: list[int] = []
        tasks: list[int] = []
        befores: list[float] = []
        afters: list[float] = []
        for index, run in enumerate(runs):
            means = [mean_entropy(run.entropies, k) for k in range(len(run.entropies))]
            for k in range(1, min(len(means), len(run.trained) + 1)):
                before, after = means[k - 1], means[k]
                if before is None or after is None:
                    continue
                run_of.append(index)
                tasks.append(run.trained[k - 1])
                befores.append(before)
                afters.append(after)
        return cls(
            run=np.array(run_of, dtype=np.int64),
            task=np.array(tasks, dtype=np.int64),
            before=np.array(befores, dtype=np.float64),
            after=np.array(afters, dtype=np.float64),
        )


def entropy_maps(
    runs: Sequence[RunRecord],
    n: int,
    config: RunModelConfig,
    *,
    steps: EntropySteps | None = None,
    kept: npt.NDArray[np.bool_] | None = None,
) -> FloatMatrix:
    """Posterior mean ``(alpha_t, beta_t)`` of every task's entropy map, shape (n, 2).

    ``steps``: ``EntropySteps.of(runs)`` already built; ``kept``: which of ``runs`` to fit on,
    shape (len(runs),) (default all). Each step adds its terms in run and stage order.
    """
    steps = steps or EntropySteps.of(runs)
    rows = np.ones(len(steps.run), dtype=bool) if kept is None else kept[steps.run]
    tasks, before, after = steps.task[rows], steps.before[rows], steps.after[rows]
    prior_precision = np.diag([1.0 / config.map_slope_std**2, 1.0 / config.map_offset_std**2])
    prior_mean = np.array([1.0, 0.0])
    gram = np.repeat(prior_precision[None], n, axis=0)
    moment = np.repeat((prior_precision @ prior_mean)[None], n, axis=0)
    noise_var = config.entropy_noise_sd**2
    x = np.stack([before, np.ones(len(before))], axis=1)  # (N, 2): the step's regressors
    np.add.at(gram, tasks, x[:, :, None] * x[:, None, :] / noise_var)
    np.add.at(moment, tasks, x * after[:, None] / noise_var)
    return np.asarray(np.linalg.solve(gram, moment[:, :, None])[:, :, 0], dtype=np.float64)


def fit_run_model(
    runs: Sequence[RunRecord],
    *,
    kinds: Sequence[TaskKind | None],
    config: RunModelConfig | None = None,
) -> RunModel:
    """Posterior of the run model from every evaluation of every run (module docstring).

    Parameters
    ----------
    runs : sequence of RunRecord
        Completed and running runs alike (a partial run is data up to its last report).
    kinds : sequence of TaskKind or None, length n
        Task kinds (they define the kind-pair groups; ``None`` is a group of its own).
    config : RunModelConfig, optional
        Priors and noise.

    Returns
    -------
    RunModel
        Deterministic. Cost: one dense ``p x p`` solve, ``p = 3 n^2 + 3 n + 3 g``
        (``g <= 9`` kind pairs): ~10 ms at ``n = 6``, ~40 ms at ``n = 8``, ~0.8 s at
        ``n = 20`` (ten runs, one BLAS thread).

    Raises
    ------
    ValueError
        A run trains a task twice or outside ``0..n-1``, reports more stages than it trained, or
        reports a NaN.
    """
    config = config or RunModelConfig()
    n = len(kinds)
    _validate_runs(runs, n)
    layout = _layout(kinds)
    entropy_ref = _entropy_reference(runs)
    design, utilities = _regression_data(runs, layout, entropy_ref)
    prior_mean, prior_var = _prior(layout, config)
    noise_var = config.noise_sd**2
    precision = np.diag(1.0 / prior_var) + design.T @ design / noise_var
    moment = prior_mean / prior_var + design.T @ utilities / noise_var
    covariance: FloatMatrix = np.asarray(np.linalg.inv(precision), dtype=np.float64)
    posterior = RunModelPosterior(
        layout=layout,
        mean=covariance @ moment,
        covariance=covariance,
        entropy_map=entropy_maps(runs, n, config),
        entropy_ref=entropy_ref,
    )
    return replace(posterior.summary_of(posterior.mean), observations=len(utilities))


@dataclass(frozen=True, slots=True)
class RunModelPosterior:
    """The run model's full Gaussian posterior, for exact predictive variances and draws.

    Attributes
    ----------
    mean : FloatMatrix, shape (p,)
        Posterior mean of the parameter vector (``p = 3 n^2 + 3 n + 3 g``).
    covariance : FloatMatrix, shape (p, p)
        Posterior covariance.
    entropy_map : FloatMatrix, shape (n, 2)
        ``(alpha_t, beta_t)``.
    entropy_ref : float
        ``H_ref`` (entropy units).
    """

    layout: _Layout
    mean: FloatMatrix
    covariance: FloatMatrix
    entropy_map: FloatMatrix
    entropy_ref: float
    _mean_summary: list[RunModel] = field(default_factory=list, compare=False, repr=False)

    @property
    def n(self) -> int:
        """Number of tasks."""
        return self.layout.n

    def final_features(
        self,
        orders: npt.ArrayLike,
        weights: npt.ArrayLike,
        *,
        entropy_now: float | None = None,
        trained: int = 0,
    ) -> FloatMatrix:
        """``a(pi)``, shape (P, p): the objective ``sum_j w_j S_j(pi)`` is ``a(pi) . theta``.

        The entropy term uses the posterior-mean entropy maps (module docstring), from
        ``entropy_now`` after the first ``trained`` stages when given.
        """
        layout, n = self.layout, self.n
        w = np.asarray(weights, dtype=np.float64)
        array = _as_orders(orders, n)
        position = np.argsort(array, axis=1)
        before = (position[:, :, None] < position[:, None, :]).astype(np.float64)
        after = np.transpose(before, (0, 2, 1)).copy()
        eye = np.eye(n, dtype=bool)
        before[:, eye] = 0.0
        after[:, eye] = 0.0
        carry = before * w[None, None, :]  # [p, i, j]: i before j, weighted by w_j
        backward = after * w[None, None, :]  # [p, i, j]: i after j
        features = np.zeros((len(array), layout.size))
        features[:, layout.level : layout.level + n] = w
        nn = n * n
        start_b, start_r = layout.cells(_BACKWARD), layout.cells(_CARRY)
        features[:, start_b : start_b + nn] = backward.reshape(-1, nn)
        features[:, start_r : start_r + nn] = carry.reshape(-1, nn)
        onehot = np.zeros((nn, layout.g))
        onehot[np.arange(nn), layout.groups.ravel()] = 1.0
        group_b, group_r = layout.group(_BACKWARD), layout.group(_CARRY)
        features[:, group_b : group_b + layout.g] = backward.reshape(-1, nn) @ onehot
        features[:, group_r : group_r + layout.g] = carry.reshape(-1, nn) @ onehot
        entropy = np.full(len(array), self.entropy_ref if entropy_now is None else entropy_now)
        alpha, beta = self.entropy_map[:, 0], self.entropy_map[:, 1]
        for stage in range(trained if entropy_now is not None else 0, n):
            task = array[:, stage]
            entropy = alpha[task] * entropy + beta[task]
        shift = entropy - self.entropy_ref
        features[:, layout.slope : layout.slope + n] = shift[:, None] * w[None, :]
        return features

    def summary(self, mean: FloatMatrix | None = None) -> RunModel:
        """Means (``mean`` instead of the posterior mean when given, e.g. a draw) and marginal
        variances as a :class:`RunModel`. The posterior mean's is made once and kept (its
        arrays read-only: every plan of a batch predicts with it)."""
        if mean is not None and mean is not self.mean:
            return self.summary_of(mean)
        if not self._mean_summary:
            summary = self.summary_of(self.mean)
            for item in fields(summary):
                value = getattr(summary, item.name)
                if isinstance(value, np.ndarray) and value is not self.entropy_map:
                    value.flags.writeable = False
            self._mean_summary.append(summary)
        return self._mean_summary[0]

    def summary_of(self, theta: FloatMatrix) -> RunModel:
        """:meth:`summary` with the means ``theta``, made anew (arrays of its own)."""
        layout, n = self.layout, self.n
        covariance = self.covariance
        return RunModel(
            level_mean=theta[layout.level : layout.level + n].copy(),
            level_var=np.diag(covariance)[layout.level : layout.level + n].copy(),
            carry_mean=_pair_effect(theta, layout, _CARRY),
            carry_var=_pair_variance(covariance, layout, _CARRY),
            backward_mean=_pair_effect(theta, layout, _BACKWARD),
            backward_var=_pair_variance(covariance, layout, _BACKWARD),
            forward_mean=_pair_effect(theta, layout, _FORWARD),
            entropy_slope=theta[layout.slope : layout.slope + n].copy(),
            entropy_map=self.entropy_map,
            entropy_ref=self.entropy_ref,
            observations=0,
        )


def fit_run_model_posteriors(
    runs: Sequence[RunRecord],
    *,
    kinds: Sequence[TaskKind | None],
    holdouts: Sequence[int | None] = (None,),
    config: RunModelConfig | None = None,
    steps: EntropySteps | None = None,
) -> list[RunModelPosterior]:
    """The run model's posterior on all runs (``None``) and without each run in ``holdouts``.

    The design of every run is built once; a held-out fit subtracts its run's terms from the
    normal equations, so ``k`` folds cost ``k`` dense ``p x p`` inversions and one design.
    Same model and priors as :func:`fit_run_model` (``H_ref`` from all runs). ``steps``:
    ``EntropySteps.of(runs)`` already built (e.g. a ``StageTable``'s).
    """
    config = config or RunModelConfig()
    n = len(kinds)
    _validate_runs(runs, n)
    layout = _layout(kinds)
    entropy_ref = _entropy_reference(runs)
    noise_var = config.noise_sd**2
    prior_mean, prior_var = _prior(layout, config)
    steps = steps or EntropySteps.of(runs)
    grams, moments = [], []
    for run in runs:
        design, utilities = _regression_data([run], layout, entropy_ref)
        grams.append(design.T @ design / noise_var)
        moments.append(design.T @ utilities / noise_var)
    gram_all = np.diag(1.0 / prior_var) + np.sum(grams, axis=0)
    moment_all = prior_mean / prior_var + np.sum(moments, axis=0)
    fits: list[RunModelPosterior] = []
    for holdout in holdouts:
        kept = np.ones(len(runs), dtype=bool)
        if holdout is not None:
            kept[holdout] = False
        precision, moment = gram_all, moment_all
        if holdout is not None:
            precision = gram_all - grams[holdout]
            moment = moment_all - moments[holdout]
        covariance = np.asarray(np.linalg.inv(precision), dtype=np.float64)
        covariance = (covariance + covariance.T) / 2.0
        fits.append(
            RunModelPosterior(
                layout=layout,
                mean=covariance @ moment,
                covariance=covariance,
                entropy_map=entropy_maps(runs, n, config, steps=steps, kept=kept),
                entropy_ref=entropy_ref,
            )
        )
    return fits


def _pair_effect(mean: FloatMatrix, layout: _Layout, effect: int) -> FloatMatrix:
    """Cell deviation plus kind-pair mean, shape (n, n), zero diagonal."""
    n = layout.n
    start = layout.cells(effect)
    cells = mean[start : start + n * n].reshape(n, n)
    out = cells + mean[layout.group(effect) + layout.groups]
    np.fill_diagonal(out, 0.0)
    return np.asarray(out, dtype=np.float64)


def _pair_variance(covariance: FloatMatrix, layout: _Layout, effect: int) -> FloatMatrix:
    """Marginal variance of deviation plus group mean, shape (n, n), zero diagonal."""
    n = layout.n
    cell = layout.cells(effect) + np.arange(n * n).reshape(n, n)
    group = layout.group(effect) + layout.groups
    var = covariance[cell, cell] + covariance[group, group] + 2.0 * covariance[cell, group]
    out = np.maximum(var, 0.0)
    np.fill_diagonal(out, 0.0)
    return np.asarray(out, dtype=np.float64)


def restrict_run_model(model: RunModel, tasks: Sequence[int]) -> RunModel:
    """The model of the tasks ``tasks`` only (in that order): a schedule of a task subset.

    Parameters
    ----------
    model : RunModel
        A model of ``n`` tasks.
    tasks : sequence of int
        Distinct task indexes in ``0..n-1``; index ``k`` of the result is task ``tasks[k]``.

    Returns
    -------
    RunModel
        Same posteriors restricted to the subset; the entropy trajectory then runs over the
        subset's stages only. ``observations`` and ``entropy_ref`` are unchanged.
    """
    idx = np.asarray(tasks, dtype=np.int64)
    if len(set(idx.tolist())) != len(idx) or np.any((idx < 0) | (idx >= model.n)):
        raise ValueError(f"tasks must be distinct indexes in 0..{model.n - 1}")
    grid = np.ix_(idx, idx)
    return RunModel(
        level_mean=model.level_mean[idx],
        level_var=model.level_var[idx],
        carry_mean=model.carry_mean[grid],
        carry_var=model.carry_var[grid],
        backward_mean=model.backward_mean[grid],
        backward_var=model.backward_var[grid],
        forward_mean=model.forward_mean[grid],
        entropy_slope=model.entropy_slope[idx],
        entropy_map=model.entropy_map[idx],
        entropy_ref=model.entropy_ref,
        observations=model.observations,
    )


# --- prediction and planning --------------------------------------------------------------------


def run_model_effects(model: RunModel, weights: npt.ArrayLike) -> EffectModel:
    """The pairwise (LOP) part of the run model as an :class:`EffectModel`; solve with ``rho = 1``.

    ``forward`` holds ``R`` (what an earlier task leaves in a later one's final level), so
    ``sum_j w_j S_j = const + sum_{a before b} (w_a B[b, a] + w_b R[a, b])`` as in
    docs/design.md §2.
    The entropy term is left out (not pairwise): :func:`refine_order` adds it.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (model.n,) or np.any(~np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be {model.n} finite non-negative numbers")
    return EffectModel(
        level_mean=model.level_mean.copy(),
        level_var=model.level_var.copy(),
        forward_mean=model.carry_mean.copy(),
        forward_var=model.carry_var.copy(),
        backward_mean=model.backward_mean.copy(),
        backward_var=model.backward_var.copy(),
        weights=w.copy(),
    )


def _as_orders(orders: npt.ArrayLike, n: int) -> IntArray:
    array = np.atleast_2d(np.asarray(orders, dtype=np.int64))
    if array.ndim != 2 or array.shape[1] != n:
        raise ValueError(f"orders must have shape (P, {n})")
    if np.any(np.sort(array, axis=1) != np.arange(n)):
        raise ValueError(f"every order must be a permutation of 0..{n - 1}")
    return array


def predict_final_utilities(
    model: RunModel,
    orders: npt.ArrayLike,
    *,
    entropy_now: float | None = None,
    trained: int = 0,
) -> FloatMatrix:
    """Predicted final utility of every task under each order, shape (P, n) (utility units).

    Parameters
    ----------
    model : RunModel
        A fitted model.
    orders : array_like, shape (P, n) or (n,)
        Full orders.
    entropy_now, trained : float or None, int
        Observed state: the mean entropy reported after the first ``trained`` stages (which all
        orders share). The entropy trajectory then starts from it instead of from ``H_ref``.

    Notes
    -----
    ``O(P n^2)``; the module docstring gives the formula.
    """
    n = model.n
    array = _as_orders(orders, n)
    position = np.argsort(array, axis=1)
    before = position[:, :, None] < position[:, None, :]  # [p, i, j]: i before j
    carry = np.einsum("pij,ij->pj", before, model.carry_mean)
    backward = np.einsum("pji,ij->pj", before, model.backward_mean)
    entropy = np.full(len(array), model.entropy_ref if entropy_now is None else entropy_now)
    start = trained if entropy_now is not None else 0
    alpha, beta = model.entropy_map[:, 0], model.entropy_map[:, 1]
    for stage in range(start, n):
        task = array[:, stage]
        entropy = alpha[task] * entropy + beta[task]
    shift = (entropy - model.entropy_ref)[:, None] * model.entropy_slope[None, :]
    return np.asarray(model.level_mean + carry + backward + shift, dtype=np.float64)


def predicted_objective(
    model: RunModel,
    weights: npt.ArrayLike,
    orders: npt.ArrayLike,
    *,
    entropy_now: float | None = None,
    trained: int = 0,
) -> FloatMatrix:
    """``sum_j w_j S_j`` of each order, shape (P,) (weighted utility units)."""
    w = np.asarray(weights, dtype=np.float64)
    utilities = predict_final_utilities(model, orders, entropy_now=entropy_now, trained=trained)
    return np.asarray(utilities @ w, dtype=np.float64)


def insertion_moves(order: Order, fixed: int, window: int | None = None) -> IntArray:
    """Every order reached by moving one free task (past ``fixed``) to another free position,
    at most ``window`` positions away when given; shape (moves, n)."""
    moves = []
    free = range(fixed, len(order))
    for source in free:
        rest = order[:source] + order[source + 1 :]
        for target in free:
            if target != source and (window is None or abs(target - source) <= window):
                moves.append((*rest[:target], order[source], *rest[target:]))
    return np.array(moves, dtype=np.int64).reshape(-1, len(order))


def refine_order(
    model: RunModel,
    weights: npt.ArrayLike,
    order: Order,
    *,
    prefix_length: int = 0,
    entropy_now: float | None = None,
    is_feasible: Callable[[Order], bool] | None = None,
    max_rounds: int = 100,
) -> Order:
    """Best-improvement insertion search on the full prediction (entropy term included).

    Parameters
    ----------
    model, weights : RunModel, array_like shape (n,)
        The model and task weights.
    order : Order
        Start, typically the LOP optimum of :func:`run_model_effects`.
    prefix_length : int
        The first ``prefix_length`` tasks are trained already and stay in place.
    entropy_now : float, optional
        Mean entropy reported after the prefix (see :func:`predict_final_utilities`).
    is_feasible : callable, optional
        Accepts only orders it returns ``True`` for (the problem's constraints, e.g.
        ``lambda order: not solver.check_order(problem, order)``); ``order`` must pass.
    max_rounds : int
        Improving moves at most.

    Returns
    -------
    Order
        A local optimum: no single insertion of a free task improves the prediction; never
        worse than ``order``. ``O(rounds n^4)``.
    """
    current = tuple(int(t) for t in order)
    _as_orders(current, model.n)
    if not 0 <= prefix_length <= len(current):
        raise ValueError("prefix_length must be between 0 and n")

    def score(orders: npt.ArrayLike) -> FloatMatrix:
        return predicted_objective(
            model, weights, orders, entropy_now=entropy_now, trained=prefix_length
        )

    value = float(score(current)[0])
    for _ in range(max_rounds):
        moves = insertion_moves(current, prefix_length)
        if is_feasible is not None and len(moves):
            keep = [is_feasible(tuple(int(t) for t in move)) for move in moves]
            moves = moves[np.array(keep, dtype=bool)]
        if len(moves) == 0:
            break
        values = score(moves)
        best = int(np.argmax(values))
        # A relative tolerance keeps rounding noise from cycling between equal orders.
        if values[best] <= value + 1e-12 * max(1.0, abs(value)):
            break
        current, value = tuple(int(t) for t in moves[best]), float(values[best])
    return current


def exploration_order(
    previous: Sequence[Order], n: int, *, design_runs: int = 2, seed: int = 0
) -> Order | None:
    """The order of the next designed run, or ``None`` once the loop should exploit.

    The first run is planned from the priors (``None``); runs ``2..design_runs`` balance the
    orientations seen so far: the order maximizing ``sum_{a before b} (c[b, a] - c[a, b])``,
    ``c[a, b]`` = previous runs training ``a`` before ``b`` (a Linear Ordering Problem). After
    one run that is its reverse, so every ordered pair has then been measured both ways, in
    ``2n`` stages instead of the ``n^2`` of a pairwise protocol.

    Parameters
    ----------
    previous : sequence of Order
        Full orders of the project's earlier runs (partial runs are skipped).
    n : int
        Number of tasks.
    design_runs : int
        Runs (the first included) before the loop exploits.
    seed : int
        Seed of the LOP heuristic when ``n`` is too large for the exact DP.
    """
    complete = [tuple(order) for order in previous if sorted(order) == list(range(n))]
    if not complete or len(complete) >= design_runs:
        return None
    counts = np.zeros((n, n))
    for order in complete:
        position = np.argsort(np.asarray(order))
        counts += position[:, None] < position[None, :]
    balance = counts.T - counts
    if not np.any(balance):
        return None
    solution = solve_lop(balance, time_limit_s=1.0, seed=seed, num_workers=1)
    return tuple(int(t) for t in solution.order)
