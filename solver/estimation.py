"""Gaussian posteriors of effects from additive sufficient statistics (DESIGN §2, Estimation).

Pipeline: a run's per-stage evaluations become raw :class:`Observation` s
(:func:`stage_observations`, :func:`extract_observations`); observations fold into additive
sufficient statistics (:class:`StatsTable`, :func:`recompute`); statistics plus priors give
Gaussian posteriors (:func:`estimate_effects`).

Effects, with stage ``k`` training task ``t_k`` and task ``j`` evaluated at stages ``k-1`` and
``k`` (utilities ``u_{k-1}``, ``u_k``):

- ``j == t_k``: one ``G[j]`` observation ``u_k - u_{k-1}`` and one ``L[j]`` observation ``u_k``
  (``L`` needs only ``u_k``);
- ``j != t_k``, ``j`` not trained before stage ``k``: one ``F[t_k, j]`` observation
  ``u_k - u_{k-1}``;
- ``j != t_k``, ``j`` trained before stage ``k``: one ``B[t_k, j]`` observation;
- ``D[t_k]``: change of the mean policy entropy over the stage, the mean taken over the tasks
  whose entropy is reported at both ``k-1`` and ``k``.

Each effect has a prior ``N(m0, v0)`` and observations ``x_1..x_n`` with noise variance ``s2``.
The statistics ``(n, sum x, sum x^2)`` only grow by addition, so concurrent writers update them
with ``x = x + delta``. Conjugate normal update with known noise::

    v_post = 1 / (1 / v0 + n / s2)
    m_post = v_post * (m0 / v0 + sum_x / s2)

Noise variance rule (per task ``j``, evaluation noise ``sigma_j^2`` in squared utility units):
a difference observation (F, B, G) has variance ``2 sigma_j^2``, a level observation (L)
``sigma_j^2``. ``sigma_j^2`` is the pooled within-cell residual variance of the F, B and L cells
whose target is ``j`` (differences halved; G is left out: it varies with the context by
definition), shrunk towards the default with ``noise_prior_dof`` pseudo-degrees of freedom::

    sigma_j^2 = (nu0 * s0^2 + sum_cells SSR_c / f_c) / (nu0 + sum_cells (n_c - 1))

so the default rules while few cells have repeated observations and the data take over as
residual degrees of freedom accumulate (``f_c = 2`` for differences, ``1`` for levels). Residuals
include context effects a pairwise model cannot explain, which keeps intervals honest in a
non-additive world. Entropy drift uses one pooled noise variance over all tasks, same rule.

Priors, in order: an imported ``(mean, std)``; empirical Bayes: the mean and spread of the
raw cell means over the *other* observed cells of the same effect and kind group
(``F``/``B``: the pair ``(kind_i, kind_j)``, ``L``/``G``/``D``: ``kind_j``), the spread shrunk
towards the default variance (see ``_priors``); the default.

Entropy-aware levels: every ``L`` observation also carries ``entropy_shift`` = mean entropy
before the stage minus the run's baseline mean entropy. Per task the regression statistics of
``L`` on that shift are additive too (:class:`RegressionStats`); one slope per kind group is
estimated from the within-task variation (tasks keep their own intercept).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from solver.types import FloatMatrix

ArrayLike = npt.ArrayLike


@dataclass(frozen=True, slots=True)
class Posterior:
    """Posterior mean and variance, same shape as the inputs (utility units, squared units)."""

    mean: FloatMatrix
    var: FloatMatrix

    @property
    def std(self) -> FloatMatrix:
        """Posterior standard deviation (utility units)."""
        return np.sqrt(self.var)


def gaussian_posterior(
    prior_mean: ArrayLike,
    prior_var: ArrayLike,
    noise_var: ArrayLike,
    count: ArrayLike,
    total: ArrayLike,
) -> Posterior:
    """Posterior of a Gaussian mean with known noise variance.

    Parameters
    ----------
    prior_mean, prior_var : array_like
        ``m0`` and ``v0 > 0``.
    noise_var : array_like
        Observation noise variance ``s2 > 0``.
    count, total : array_like
        ``n`` observations and their sum ``sum x``.

    Returns
    -------
    Posterior
        ``mean`` and ``var`` broadcast to the common shape.
    """
    m0 = np.asarray(prior_mean, dtype=np.float64)
    v0 = np.asarray(prior_var, dtype=np.float64)
    s2 = np.asarray(noise_var, dtype=np.float64)
    n = np.asarray(count, dtype=np.float64)
    sx = np.asarray(total, dtype=np.float64)
    if np.any(v0 <= 0) or np.any(s2 <= 0):
        raise ValueError("prior_var and noise_var must be positive")
    precision = 1.0 / v0 + n / s2
    var = 1.0 / precision
    mean = var * (m0 / v0 + sx / s2)
    return Posterior(mean=np.asarray(mean, dtype=np.float64), var=np.asarray(var, dtype=np.float64))


# --- observations --------------------------------------------------------------------------------


class EffectKind(StrEnum):
    """Which effect an observation measures (DESIGN §2)."""

    FORWARD = "F"
    BACKWARD = "B"
    LEVEL = "L"
    GAIN = "G"
    DRIFT = "D"


class TaskKind(StrEnum):
    """Domain of a task: verifiable rewards lower entropy, judge rewards raise it."""

    STRUCTURED = "structured"
    OPEN_ENDED = "open_ended"


EffectKey = tuple[EffectKind, int, int]
"""``(kind, source, target)``: ``(kind, i, j)`` for F and B, ``(kind, j, j)`` for L, G, D."""

_DIFFERENCE_KINDS = frozenset({EffectKind.FORWARD, EffectKind.BACKWARD, EffectKind.GAIN})


@dataclass(frozen=True, slots=True)
class Observation:
    """One raw observation of one effect.

    Attributes
    ----------
    kind : EffectKind
        The effect observed.
    source, target : int
        Trained task ``i`` and affected task ``j``; both the task itself for ``L``, ``G``, ``D``.
    value : float
        Utility units (``F``, ``B``, ``L``, ``G``) or entropy units (``D``).
    stage : int
        1-based stage that produced it.
    entropy_shift : float or None
        ``L`` only: mean entropy before the stage minus the run's baseline mean entropy.
    """

    kind: EffectKind
    source: int
    target: int
    value: float
    stage: int
    entropy_shift: float | None = None

    @property
    def key(self) -> EffectKey:
        """The cell this observation belongs to."""
        return (self.kind, self.source, self.target)


def _mean_over_common(before: Mapping[int, float], after: Mapping[int, float]) -> float | None:
    """Mean of ``after - before`` over tasks present in both, ``None`` when none is."""
    common = sorted(set(before) & set(after))
    if not common:
        return None
    return float(np.mean([after[t] - before[t] for t in common]))


def stage_observations(
    *,
    stage: int,
    trained: Sequence[int],
    before: Mapping[int, float],
    after: Mapping[int, float],
    entropy_before: Mapping[int, float] | None = None,
    entropy_after: Mapping[int, float] | None = None,
    entropy_baseline: Mapping[int, float] | None = None,
) -> list[Observation]:
    """Observations produced by the report of one stage.

    Parameters
    ----------
    stage : int
        1-based stage ``k``.
    trained : sequence of int
        Tasks trained so far, at least ``k`` of them: ``trained[k - 1]`` is ``t_k``.
    before, after : mapping task -> utility
        Evaluations at stages ``k - 1`` and ``k``; missing tasks yield no observation.
    entropy_before, entropy_after, entropy_baseline : mapping task -> entropy, optional
        Policy entropies reported at ``k - 1``, ``k`` and ``0``.

    Returns
    -------
    list of Observation
        In a fixed order: per target task ascending, then the drift.
    """
    if stage < 1 or len(trained) < stage:
        raise ValueError(f"stage {stage} needs at least {stage} trained tasks")
    current = trained[stage - 1]
    earlier = set(trained[: stage - 1])
    if current in earlier:
        raise ValueError(f"task {current} trained twice")
    shift = None
    if entropy_before is not None and entropy_baseline is not None:
        shift = _mean_over_common(entropy_baseline, entropy_before)
    observations: list[Observation] = []
    for j in sorted(after):
        u_after = float(after[j])
        u_before = before.get(j)
        if j == current:
            if u_before is not None:
                gain = u_after - float(u_before)
                observations.append(Observation(EffectKind.GAIN, j, j, gain, stage))
            observations.append(Observation(EffectKind.LEVEL, j, j, u_after, stage, shift))
        elif u_before is not None:
            kind = EffectKind.BACKWARD if j in earlier else EffectKind.FORWARD
            observations.append(Observation(kind, current, j, u_after - float(u_before), stage))
    if entropy_before is not None and entropy_after is not None:
        drift = _mean_over_common(entropy_before, entropy_after)
        if drift is not None:
            observations.append(Observation(EffectKind.DRIFT, current, current, drift, stage))
    return observations


def extract_observations(
    trained: Sequence[int],
    utilities: Sequence[Mapping[int, float]],
    entropies: Sequence[Mapping[int, float]] | None = None,
) -> list[Observation]:
    """All observations of one run.

    Parameters
    ----------
    trained : sequence of int
        ``t_1, t_2, ...``: the task trained at each stage (distinct).
    utilities : sequence of mapping task -> utility
        ``utilities[k]`` is the evaluation after stage ``k``; ``utilities[0]`` the baseline.
        May stop early (stages not reported yet): ``len(utilities) <= len(trained) + 1``.
    entropies : sequence of mapping task -> entropy, optional
        Same indexing as ``utilities``; may be shorter or hold empty mappings.

    Returns
    -------
    list of Observation
        Ordered by stage, as :func:`stage_observations` emits them.
    """
    if len(utilities) > len(trained) + 1:
        raise ValueError("more evaluations than stages")
    if len(set(trained)) != len(trained):
        raise ValueError("a task is trained twice")

    def entropy_at(k: int) -> Mapping[int, float] | None:
        if entropies is None or k >= len(entropies):
            return None
        return entropies[k]

    observations: list[Observation] = []
    for k in range(1, len(utilities)):
        observations += stage_observations(
            stage=k,
            trained=trained,
            before=utilities[k - 1],
            after=utilities[k],
            entropy_before=entropy_at(k - 1),
            entropy_after=entropy_at(k),
            entropy_baseline=entropy_at(0),
        )
    return observations


# --- sufficient statistics -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SufficientStats:
    """``(count, sum x, sum x^2)`` of one cell; adds up (``a + b`` is ``a.merge(b)``)."""

    count: int = 0
    sum_x: float = 0.0
    sum_x2: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float]) -> SufficientStats:
        """Statistics of ``values``, summed in the given order."""
        total = cls()
        for x in values:
            total = total + cls(1, float(x), float(x) * float(x))
        return total

    def merge(self, other: SufficientStats) -> SufficientStats:
        """Statistics of the union of both samples."""
        return SufficientStats(
            self.count + other.count, self.sum_x + other.sum_x, self.sum_x2 + other.sum_x2
        )

    def __add__(self, other: SufficientStats) -> SufficientStats:
        return self.merge(other)

    @property
    def mean(self) -> float:
        """Sample mean (NaN when empty)."""
        return self.sum_x / self.count if self.count else float("nan")

    @property
    def residual_ss(self) -> float:
        """Sum of squared deviations from the mean (``>= 0``; 0 when empty)."""
        if self.count == 0:
            return 0.0
        return max(self.sum_x2 - self.sum_x * self.sum_x / self.count, 0.0)


@dataclass(frozen=True, slots=True)
class RegressionStats:
    """Additive statistics of pairs ``(x, y)`` for a simple regression of ``y`` on ``x``."""

    count: int = 0
    sum_x: float = 0.0
    sum_x2: float = 0.0
    sum_y: float = 0.0
    sum_xy: float = 0.0
    sum_y2: float = 0.0

    @classmethod
    def of_pair(cls, x: float, y: float) -> RegressionStats:
        """Statistics of one pair."""
        return cls(1, x, x * x, y, x * y, y * y)

    def merge(self, other: RegressionStats) -> RegressionStats:
        """Statistics of the union of both samples."""
        return RegressionStats(
            self.count + other.count,
            self.sum_x + other.sum_x,
            self.sum_x2 + other.sum_x2,
            self.sum_y + other.sum_y,
            self.sum_xy + other.sum_xy,
            self.sum_y2 + other.sum_y2,
        )

    def __add__(self, other: RegressionStats) -> RegressionStats:
        return self.merge(other)

    @property
    def centered_xx(self) -> float:
        """``sum (x - mean x)^2`` (0 when empty)."""
        return max(self.sum_x2 - self.sum_x**2 / self.count, 0.0) if self.count else 0.0

    @property
    def centered_xy(self) -> float:
        """``sum (x - mean x)(y - mean y)`` (0 when empty)."""
        return self.sum_xy - self.sum_x * self.sum_y / self.count if self.count else 0.0


@dataclass(frozen=True, slots=True)
class StatsTable:
    """All sufficient statistics of a project; immutable, adds up like its cells.

    Attributes
    ----------
    cells : mapping EffectKey -> SufficientStats
        One entry per observed cell.
    level_entropy : mapping task -> RegressionStats
        ``L`` observations of task ``j`` (``y``, utility) against their entropy shift (``x``).
    """

    cells: Mapping[EffectKey, SufficientStats] = field(default_factory=dict)
    level_entropy: Mapping[int, RegressionStats] = field(default_factory=dict)

    def merge(self, other: StatsTable) -> StatsTable:
        """Cell-wise sum: what atomic ``x = x + delta`` increments produce."""
        cells = dict(self.cells)
        for key, stats in other.cells.items():
            cells[key] = cells.get(key, SufficientStats()) + stats
        level_entropy = dict(self.level_entropy)
        for task, reg in other.level_entropy.items():
            level_entropy[task] = level_entropy.get(task, RegressionStats()) + reg
        return StatsTable(cells, level_entropy)

    def __add__(self, other: StatsTable) -> StatsTable:
        return self.merge(other)

    def get(self, key: EffectKey) -> SufficientStats:
        """Statistics of one cell (empty when never observed)."""
        return self.cells.get(key, SufficientStats())


def increments(observations: Iterable[Observation]) -> StatsTable:
    """The deltas one report adds: a table built from ``observations`` alone."""
    return recompute(observations)


def recompute(observations: Iterable[Observation]) -> StatsTable:
    """Statistics from raw observations, summed in the given order.

    Folding the per-report :func:`increments` in report order gives the same sums term by term
    (floating-point addition in the same order); in another order they agree to rounding.
    """
    cells: dict[EffectKey, SufficientStats] = {}
    level_entropy: dict[int, RegressionStats] = {}
    for obs in observations:
        cells[obs.key] = cells.get(obs.key, SufficientStats()) + SufficientStats.of([obs.value])
        if obs.kind is EffectKind.LEVEL and obs.entropy_shift is not None:
            pair = RegressionStats.of_pair(obs.entropy_shift, obs.value)
            level_entropy[obs.target] = level_entropy.get(obs.target, RegressionStats()) + pair
    return StatsTable(cells, level_entropy)


# --- priors and posteriors -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriorSpec:
    """A prior ``N(mean, std^2)`` (utility units, or entropy units for ``D``)."""

    mean: float
    std: float


@dataclass(frozen=True, slots=True)
class EstimationConfig:
    """Defaults and rules of the estimation (all in utility units unless stated).

    Attributes
    ----------
    default_priors : mapping EffectKind -> PriorSpec
        Last-resort priors.
    noise_sd : float
        Default evaluation noise ``s0`` of one task's utility.
    noise_prior_dof : float
        ``nu0``: pseudo-degrees of freedom of ``s0`` in the pooled noise estimate.
    drift_noise_sd : float
        Default noise of one entropy-drift observation (entropy units).
    eb_min_std : float
        Floor of an empirical-Bayes spread (std; it can be estimated as ~0).
    eb_prior_dof : float
        Pseudo-degrees of freedom of the default variance in an empirical-Bayes prior.
    slope_prior : PriorSpec
        Prior of the entropy slope of a level (utility per entropy unit).
    classify_z : float
        ``z`` of :func:`classify_kind`.
    """

    default_priors: Mapping[EffectKind, PriorSpec] = field(
        default_factory=lambda: {
            EffectKind.FORWARD: PriorSpec(0.0, 0.1),
            EffectKind.BACKWARD: PriorSpec(0.0, 0.1),
            EffectKind.LEVEL: PriorSpec(0.5, 0.5),
            EffectKind.GAIN: PriorSpec(0.0, 0.3),
            EffectKind.DRIFT: PriorSpec(0.0, 0.5),
        }
    )
    noise_sd: float = 0.05
    noise_prior_dof: float = 4.0
    drift_noise_sd: float = 0.1
    eb_min_std: float = 0.01
    eb_prior_dof: float = 2.0
    slope_prior: PriorSpec = field(default_factory=lambda: PriorSpec(0.0, 0.5))
    classify_z: float = 1.96


ImportedPriors = Mapping[EffectKey, PriorSpec]
"""Priors the user imported, by cell."""


@dataclass(frozen=True, slots=True)
class EffectEstimates:
    """Posteriors of all effects of ``n`` tasks.

    Attributes
    ----------
    forward, backward : Posterior, shape (n, n)
        ``F[i, j]``, ``B[i, j]`` (diagonal: prior only, never used).
    level, gain : Posterior, shape (n,)
        ``L[j]``, ``G[j]`` (utility units).
    drift : Posterior, shape (n,)
        ``D[j]`` (entropy units).
    level_slope : Posterior, shape (n,)
        ``c_j``: change of ``L[j]`` per entropy unit of shift before j is trained (shared by
        the tasks of one kind group).
    level_at_baseline : Posterior, shape (n,)
        ``L[j]`` at zero entropy shift: ``L`` observations adjusted by ``c_j * shift``.
    counts : mapping EffectKind -> FloatMatrix
        Observation counts, shapes as the posteriors.
    noise_var : FloatMatrix, shape (n,)
        Evaluation noise variance ``sigma_j^2`` used.
    kinds : tuple of TaskKind or None
        Kinds used for the groups: declared, else classified from the drift.
    """

    forward: Posterior
    backward: Posterior
    level: Posterior
    gain: Posterior
    drift: Posterior
    level_slope: Posterior
    level_at_baseline: Posterior
    counts: Mapping[EffectKind, FloatMatrix]
    noise_var: FloatMatrix
    kinds: tuple[TaskKind | None, ...]

    @property
    def n(self) -> int:
        """Number of tasks."""
        return int(self.level.mean.shape[0])


def classify_kind(drift_mean: float, drift_std: float, *, z: float = 1.96) -> TaskKind | None:
    """Kind of a task from its entropy drift posterior.

    ``structured`` when ``drift_mean + z * drift_std < 0`` (entropy confidently falls),
    ``open_ended`` when ``drift_mean - z * drift_std > 0``, else ``None`` (undecided).
    """
    if drift_mean + z * drift_std < 0:
        return TaskKind.STRUCTURED
    if drift_mean - z * drift_std > 0:
        return TaskKind.OPEN_ENDED
    return None


def _noise_variances(
    table: StatsTable, n: int, config: EstimationConfig
) -> tuple[FloatMatrix, float]:
    """Per-task evaluation noise ``sigma_j^2`` and the pooled drift noise (module rule)."""
    nu0 = config.noise_prior_dof
    ss = np.full(n, nu0 * config.noise_sd**2)
    dof = np.full(n, nu0)
    drift_ss = nu0 * config.drift_noise_sd**2
    drift_dof = nu0
    for (kind, _, target), stats in table.cells.items():
        # A gain is the level minus whatever the context left: its spread is not noise.
        if stats.count < 2 or kind is EffectKind.GAIN:
            continue
        if kind is EffectKind.DRIFT:
            drift_ss += stats.residual_ss
            drift_dof += stats.count - 1
            continue
        factor = 2.0 if kind in _DIFFERENCE_KINDS else 1.0
        ss[target] += stats.residual_ss / factor
        dof[target] += stats.count - 1
    return np.asarray(ss / dof, dtype=np.float64), drift_ss / drift_dof


def _cell_arrays(table: StatsTable, kind: EffectKind, n: int) -> tuple[FloatMatrix, FloatMatrix]:
    """Counts and sums of one effect kind: ``(n, n)`` for F/B, ``(n,)`` otherwise."""
    pairwise = kind in (EffectKind.FORWARD, EffectKind.BACKWARD)
    shape = (n, n) if pairwise else (n,)
    count = np.zeros(shape)
    total = np.zeros(shape)
    for (k, i, j), stats in table.cells.items():
        if k is not kind:
            continue
        index = (i, j) if pairwise else (j,)
        count[index] = stats.count
        total[index] = stats.sum_x
    return count, total


def _group_ids(kind: EffectKind, kinds: Sequence[TaskKind | None]) -> npt.NDArray[np.int64]:
    """Empirical-Bayes group of every cell as an integer id: kind pair for F/B, task kind else."""
    n = len(kinds)
    pairwise = kind in (EffectKind.FORWARD, EffectKind.BACKWARD)
    ids: dict[object, int] = {}
    groups = np.empty((n, n) if pairwise else (n,), dtype=np.int64)
    for index in np.ndindex(groups.shape):
        key = tuple(kinds[t] for t in index)
        groups[index] = ids.setdefault(key, len(ids))
    return groups


def _priors(
    kind: EffectKind,
    *,
    count: FloatMatrix,
    cell_mean: FloatMatrix,
    obs_var: FloatMatrix,
    kinds: Sequence[TaskKind | None],
    imported: ImportedPriors,
    config: EstimationConfig,
) -> tuple[FloatMatrix, FloatMatrix]:
    """Prior means and variances of every cell of one effect kind (imported, EB, default).

    The empirical-Bayes prior of a cell uses the other observed cells of its group (leave one
    out, so a cell's data never enter its own prior): their mean, and the spread of their means
    net of sampling variance (method of moments, floored at ``eb_min_std``), shrunk towards the
    default variance with ``eb_prior_dof`` pseudo-degrees of freedom, because a spread from a
    handful of cells is itself very uncertain. With fewer than two other cells the variance is
    the default.
    """
    default = config.default_priors[kind]
    prior_mean = np.full(count.shape, default.mean)
    prior_var = np.full(count.shape, default.std**2)
    groups = _group_ids(kind, kinds)
    valid = np.ones(count.shape, dtype=bool)
    if count.ndim == 2:
        np.fill_diagonal(valid, False)
    observed = (count > 0) & valid
    sampling_var = np.where(observed, obs_var / np.maximum(count, 1.0), 0.0)
    for group in np.unique(groups[valid]):
        members = (groups == group) & valid
        in_group = members & observed
        means = cell_mean[in_group]
        samp = sampling_var[in_group]
        total, total_sq, total_samp, size = means.sum(), (means**2).sum(), samp.sum(), means.size
        for index in zip(*np.nonzero(members), strict=True):
            own = bool(observed[index])
            k = size - (1 if own else 0)
            if k < 1:
                continue
            s = total - (cell_mean[index] if own else 0.0)
            s2 = total_sq - (cell_mean[index] ** 2 if own else 0.0)
            sv = total_samp - (sampling_var[index] if own else 0.0)
            prior_mean[index] = s / k
            if k >= 2:
                spread = max((s2 - s * s / k) / (k - 1) - sv / k, config.eb_min_std**2)
                nu = config.eb_prior_dof
                prior_var[index] = (nu * default.std**2 + (k - 1) * spread) / (nu + k - 1)
    for (k_kind, i, j), spec in imported.items():
        if k_kind is not kind:
            continue
        index = (i, j) if count.ndim == 2 else (j,)
        prior_mean[index] = spec.mean
        prior_var[index] = spec.std**2
    return prior_mean, prior_var


def _posterior_of(
    kind: EffectKind,
    table: StatsTable,
    *,
    obs_var: FloatMatrix,
    kinds: Sequence[TaskKind | None],
    imported: ImportedPriors,
    config: EstimationConfig,
) -> tuple[Posterior, FloatMatrix]:
    """Posterior and counts of one effect kind."""
    n = len(kinds)
    count, total = _cell_arrays(table, kind, n)
    cell_mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    prior_mean, prior_var = _priors(
        kind,
        count=count,
        cell_mean=cell_mean,
        obs_var=obs_var,
        kinds=kinds,
        imported=imported,
        config=config,
    )
    return gaussian_posterior(prior_mean, prior_var, obs_var, count, total), count


def _resolve_kinds(
    declared: Sequence[TaskKind | None],
    table: StatsTable,
    drift_noise_var: float,
    config: EstimationConfig,
) -> tuple[TaskKind | None, ...]:
    """Declared kinds, with unknown ones classified from a default-prior drift posterior."""
    n = len(declared)
    count, total = _cell_arrays(table, EffectKind.DRIFT, n)
    default = config.default_priors[EffectKind.DRIFT]
    drift = gaussian_posterior(default.mean, default.std**2, drift_noise_var, count, total)
    return tuple(
        kind
        if kind is not None
        else classify_kind(float(drift.mean[j]), float(drift.std[j]), z=config.classify_z)
        for j, kind in enumerate(declared)
    )


def _level_slopes(
    table: StatsTable,
    *,
    noise_var: FloatMatrix,
    kinds: Sequence[TaskKind | None],
    config: EstimationConfig,
) -> Posterior:
    """Entropy slope of the level, one per kind group, from within-task variation.

    With per-task intercepts, the slope's likelihood uses the centered sums
    ``Sxx_j``, ``Sxy_j`` of each task weighted by ``1 / sigma_j^2``.
    """
    n = len(kinds)
    prior = config.slope_prior
    mean = np.full(n, prior.mean)
    var = np.full(n, prior.std**2)
    for group in set(kinds):
        members = [j for j in range(n) if kinds[j] == group]
        precision = 1.0 / prior.std**2
        weighted = prior.mean / prior.std**2
        for j in members:
            reg = table.level_entropy.get(j, RegressionStats())
            precision += reg.centered_xx / noise_var[j]
            weighted += reg.centered_xy / noise_var[j]
        mean[members] = weighted / precision
        var[members] = 1.0 / precision
    return Posterior(mean=mean, var=var)


def estimate_effects(
    table: StatsTable,
    *,
    kinds: Sequence[TaskKind | None],
    imported: ImportedPriors | None = None,
    config: EstimationConfig | None = None,
) -> EffectEstimates:
    """Posteriors of every effect from the sufficient statistics.

    Parameters
    ----------
    table : StatsTable
        Statistics of the project's observations (tasks ``0..n-1``).
    kinds : sequence of TaskKind or None, length n
        Declared kinds; ``None`` entries are classified from the entropy drift.
    imported : mapping EffectKey -> PriorSpec, optional
        User-imported priors; they win over empirical Bayes.
    config : EstimationConfig, optional
        Defaults and rules.

    Returns
    -------
    EffectEstimates
        Deterministic function of its inputs (no randomness); ``O(n^4)`` at worst for the
        leave-one-out empirical Bayes, negligible for ``n`` up to a few dozen.
    """
    config = config or EstimationConfig()
    imported = imported or {}
    n = len(kinds)
    for kind, i, j in table.cells:
        if not (0 <= i < n and 0 <= j < n):
            raise ValueError(f"cell {(kind.value, i, j)} outside 0..{n - 1}")
    sigma2, drift_var = _noise_variances(table, n, config)
    resolved = _resolve_kinds(kinds, table, drift_var, config)
    diff_var = np.broadcast_to(2.0 * sigma2, (n, n)).astype(np.float64)

    def posterior(kind: EffectKind, obs_var: FloatMatrix) -> tuple[Posterior, FloatMatrix]:
        return _posterior_of(
            kind, table, obs_var=obs_var, kinds=resolved, imported=imported, config=config
        )

    forward, n_f = posterior(EffectKind.FORWARD, diff_var)
    backward, n_b = posterior(EffectKind.BACKWARD, diff_var)
    level, n_l = posterior(EffectKind.LEVEL, sigma2)
    gain, n_g = posterior(EffectKind.GAIN, 2.0 * sigma2)
    drift, n_d = posterior(EffectKind.DRIFT, np.full(n, drift_var))
    slope = _level_slopes(table, noise_var=sigma2, kinds=resolved, config=config)
    adjusted = _adjusted_levels(table, slope, sigma2, resolved, imported, config)
    return EffectEstimates(
        forward=forward,
        backward=backward,
        level=level,
        gain=gain,
        drift=drift,
        level_slope=slope,
        level_at_baseline=adjusted,
        counts={
            EffectKind.FORWARD: n_f,
            EffectKind.BACKWARD: n_b,
            EffectKind.LEVEL: n_l,
            EffectKind.GAIN: n_g,
            EffectKind.DRIFT: n_d,
        },
        noise_var=sigma2,
        kinds=resolved,
    )


def _adjusted_levels(
    table: StatsTable,
    slope: Posterior,
    sigma2: FloatMatrix,
    kinds: Sequence[TaskKind | None],
    imported: ImportedPriors,
    config: EstimationConfig,
) -> Posterior:
    """``L[j]`` at zero entropy shift: each ``L`` observation minus ``c_j * shift``.

    Only observations that carry a shift are adjusted; the slope's own uncertainty is not
    propagated (it is small next to the level's once a few runs are in).
    """
    cells: dict[EffectKey, SufficientStats] = {}
    for key, stats in table.cells.items():
        if key[0] is not EffectKind.LEVEL:
            continue
        reg = table.level_entropy.get(key[2], RegressionStats())
        shifted = float(slope.mean[key[2]]) * reg.sum_x
        cells[key] = replace(stats, sum_x=stats.sum_x - shifted)
    adjusted_table = StatsTable(cells)
    posterior, _ = _posterior_of(
        EffectKind.LEVEL,
        adjusted_table,
        obs_var=sigma2,
        kinds=kinds,
        imported=imported,
        config=config,
    )
    return posterior
