"""Gaussian posteriors of effects from additive sufficient statistics (docs/design.md §3).

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
``sigma_j^2``. ``sigma_j^2`` is the pooled within-cell residual variance of the F and B cells
whose target is ``j`` (differences, so halved), shrunk towards the default with
``noise_prior_dof`` pseudo-degrees of freedom::

    sigma_j^2 = (nu0 * s0^2 + sum_cells SSR_c / 2) / (nu0 + sum_cells (n_c - 1))

so the default rules while few cells have repeated observations and the data take over as
residual degrees of freedom accumulate. L and G cells are left out: a level, and so a gain,
depends on the state the stage starts from by definition, so their spread is not noise. Residuals
include context effects a pairwise model cannot explain, which keeps intervals honest in a
non-additive world. Entropy drift uses one pooled noise variance over all tasks, same rule.

Priors, in order: an imported ``(mean, std)``; empirical Bayes: the mean and spread of the
raw cell means over the *other* observed cells of the same effect and kind group
(``F``/``B``: the pair ``(kind_i, kind_j)``, ``L``/``G``/``D``: ``kind_j``), the spread shrunk
towards the default variance (see ``_priors``); the default.

State-aware levels: the level a stage reaches depends on the state it starts from. Every ``L``
observation also carries two covariates: ``uplift`` = the task's utility before the stage minus
its baseline utility in the run (what earlier stages gave it), and ``entropy_shift`` = mean
policy entropy before the stage minus the run's baseline mean entropy. Per task the statistics
of the regression of ``L`` on them are additive too (:class:`LevelRegressionStats`). One pair of
slopes per kind group is estimated from the within-task variation (each task keeps its own
intercept), by a conjugate Gaussian regression with known noise ``sigma_j^2``:

    L = a_j + rho_kind * uplift + c_kind * entropy_shift + noise

``EffectEstimates.level_entropy`` fits the entropy slope alone (``rho = 0``, the paper's reset
assumption); ``EffectEstimates.level_state`` fits both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from ordo_server.solver.types import FloatMatrix

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
    """Which effect an observation measures (docs/design.md §3)."""

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
    uplift : float or None
        ``L`` only: the task's utility before the stage minus its baseline utility in the run.
    """

    kind: EffectKind
    source: int
    target: int
    value: float
    stage: int
    entropy_shift: float | None = None
    uplift: float | None = None

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
    baseline: Mapping[int, float] | None = None,
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
    baseline : mapping task -> utility, optional
        The run's stage-0 evaluation (for the ``uplift`` of ``L`` observations).
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
            uplift = None
            if baseline is not None and u_before is not None and j in baseline:
                uplift = float(u_before) - float(baseline[j])
            level = Observation(EffectKind.LEVEL, j, j, u_after, stage, shift, uplift)
            observations.append(level)
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
            baseline=utilities[0],
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


Pair = tuple[float, float]
Triple = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class LevelRegressionStats:
    """Additive statistics of ``L`` observations ``y`` against ``x = (uplift, entropy_shift)``.

    ``sum_xx`` holds ``(sum u^2, sum u h, sum h^2)``; everything else is what its name says.
    """

    count: int = 0
    sum_x: Pair = (0.0, 0.0)
    sum_xx: Triple = (0.0, 0.0, 0.0)
    sum_y: float = 0.0
    sum_xy: Pair = (0.0, 0.0)
    sum_y2: float = 0.0

    @classmethod
    def of(cls, uplift: float, entropy_shift: float, y: float) -> LevelRegressionStats:
        """Statistics of one observation."""
        u, h = uplift, entropy_shift
        return cls(1, (u, h), (u * u, u * h, h * h), y, (u * y, h * y), y * y)

    def merge(self, other: LevelRegressionStats) -> LevelRegressionStats:
        """Statistics of the union of both samples."""
        return LevelRegressionStats(
            self.count + other.count,
            (self.sum_x[0] + other.sum_x[0], self.sum_x[1] + other.sum_x[1]),
            (
                self.sum_xx[0] + other.sum_xx[0],
                self.sum_xx[1] + other.sum_xx[1],
                self.sum_xx[2] + other.sum_xx[2],
            ),
            self.sum_y + other.sum_y,
            (self.sum_xy[0] + other.sum_xy[0], self.sum_xy[1] + other.sum_xy[1]),
            self.sum_y2 + other.sum_y2,
        )

    def __add__(self, other: LevelRegressionStats) -> LevelRegressionStats:
        return self.merge(other)

    def centered(self) -> tuple[FloatMatrix, FloatMatrix]:
        """``sum (x - mean x)(x - mean x)^T`` (2, 2) and ``sum (x - mean x)(y - mean y)`` (2,)."""
        if self.count == 0:
            return np.zeros((2, 2)), np.zeros(2)
        mx = np.array(self.sum_x) / self.count
        xx = np.array(
            [[self.sum_xx[0], self.sum_xx[1]], [self.sum_xx[1], self.sum_xx[2]]]
        ) - self.count * np.outer(mx, mx)
        xy = np.array(self.sum_xy) - mx * self.sum_y
        return xx, xy


@dataclass(frozen=True, slots=True)
class StatsTable:
    """All sufficient statistics of a project; immutable, adds up like its cells.

    Attributes
    ----------
    cells : mapping EffectKey -> SufficientStats
        One entry per observed cell.
    levels : mapping task -> LevelRegressionStats
        ``L`` observations of task ``j`` that carry both covariates (uplift, entropy shift).
    """

    cells: Mapping[EffectKey, SufficientStats] = field(default_factory=dict)
    levels: Mapping[int, LevelRegressionStats] = field(default_factory=dict)

    def merge(self, other: StatsTable) -> StatsTable:
        """Cell-wise sum: what atomic ``x = x + delta`` increments produce."""
        cells = dict(self.cells)
        for key, stats in other.cells.items():
            cells[key] = cells.get(key, SufficientStats()) + stats
        levels = dict(self.levels)
        for task, reg in other.levels.items():
            levels[task] = levels.get(task, LevelRegressionStats()) + reg
        return StatsTable(cells, levels)

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
    levels: dict[int, LevelRegressionStats] = {}
    for obs in observations:
        cells[obs.key] = cells.get(obs.key, SufficientStats()) + SufficientStats.of([obs.value])
        if (
            obs.kind is EffectKind.LEVEL
            and obs.entropy_shift is not None
            and obs.uplift is not None
        ):
            one = LevelRegressionStats.of(obs.uplift, obs.entropy_shift, obs.value)
            levels[obs.target] = levels.get(obs.target, LevelRegressionStats()) + one
    return StatsTable(cells, levels)


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
    uplift_slope_prior : PriorSpec
        Prior of ``rho_kind``: share of a task's pre-stage uplift its level keeps (unitless;
        centred on 0, the paper's reset assumption).
    entropy_slope_prior : PriorSpec
        Prior of ``c_kind``: change of a level per entropy unit of shift (utility per entropy).
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
    uplift_slope_prior: PriorSpec = field(default_factory=lambda: PriorSpec(0.0, 0.5))
    entropy_slope_prior: PriorSpec = field(default_factory=lambda: PriorSpec(0.0, 0.5))
    classify_z: float = 1.96


ImportedPriors = Mapping[EffectKey, PriorSpec]
"""Priors the user imported, by cell."""


@dataclass(frozen=True, slots=True)
class LevelModel:
    """``L[j] = intercept[j] + uplift_slope[j] * uplift + entropy_slope[j] * entropy_shift``.

    All three are posteriors of shape (n,); slopes are shared within a kind group. A slope that
    the model leaves out has mean 0 and variance 0.
    """

    intercept: Posterior
    uplift_slope: Posterior
    entropy_slope: Posterior


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
    level_entropy : LevelModel
        Levels regressed on the entropy shift alone.
    level_state : LevelModel
        Levels regressed on the uplift and the entropy shift.
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
    level_entropy: LevelModel
    level_state: LevelModel
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
        if stats.count < 2 or kind in (EffectKind.LEVEL, EffectKind.GAIN):
            continue
        if kind is EffectKind.DRIFT:
            drift_ss += stats.residual_ss
            drift_dof += stats.count - 1
            continue
        ss[target] += stats.residual_ss / 2.0
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
    use: tuple[bool, bool],
) -> tuple[Posterior, Posterior]:
    """Uplift and entropy slopes of the level, one pair per kind group.

    With per-task intercepts the likelihood uses each task's centered sums ``Cxx_j``, ``Cxy_j``
    weighted by ``1 / sigma_j^2``: precision ``P0 + sum_j Cxx_j / sigma_j^2``, mean
    ``P^-1 (P0 m0 + sum_j Cxy_j / sigma_j^2)``. ``use`` selects the covariates; a left-out
    slope is exactly 0.
    """
    n = len(kinds)
    selected = [k for k in range(2) if use[k]]
    priors = (config.uplift_slope_prior, config.entropy_slope_prior)
    m0 = np.array([priors[k].mean for k in selected])
    p0 = np.diag([1.0 / priors[k].std ** 2 for k in selected])
    means = np.zeros((2, n))
    variances = np.zeros((2, n))
    for group in set(kinds):
        members = [j for j in range(n) if kinds[j] == group]
        precision = p0.copy()
        weighted = p0 @ m0
        for j in members:
            xx, xy = table.levels.get(j, LevelRegressionStats()).centered()
            precision += xx[np.ix_(selected, selected)] / noise_var[j]
            weighted += xy[selected] / noise_var[j]
        cov = np.linalg.inv(precision)
        for row, k in enumerate(selected):
            means[k, members] = (cov @ weighted)[row]
            variances[k, members] = cov[row, row]
    return (
        Posterior(mean=means[0], var=variances[0]),
        Posterior(mean=means[1], var=variances[1]),
    )


def _level_model(
    table: StatsTable,
    *,
    sigma2: FloatMatrix,
    kinds: Sequence[TaskKind | None],
    imported: ImportedPriors,
    config: EstimationConfig,
    use: tuple[bool, bool],
) -> LevelModel:
    """Slopes, then intercepts: ``L`` observations minus the slopes times their covariates.

    Observations without covariates enter the intercept unadjusted; the slopes' own
    uncertainty is not propagated into the intercept (small next to it after a few runs).
    """
    uplift, entropy = _level_slopes(table, noise_var=sigma2, kinds=kinds, config=config, use=use)
    cells: dict[EffectKey, SufficientStats] = {}
    for key, stats in table.cells.items():
        if key[0] is not EffectKind.LEVEL:
            continue
        j = key[2]
        reg = table.levels.get(j, LevelRegressionStats())
        shift = uplift.mean[j] * reg.sum_x[0] + entropy.mean[j] * reg.sum_x[1]
        cells[key] = replace(stats, sum_x=stats.sum_x - float(shift))
    intercept, _ = _posterior_of(
        EffectKind.LEVEL,
        StatsTable(cells),
        obs_var=sigma2,
        kinds=kinds,
        imported=imported,
        config=config,
    )
    return LevelModel(intercept=intercept, uplift_slope=uplift, entropy_slope=entropy)


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

    def level_model(use: tuple[bool, bool]) -> LevelModel:
        return _level_model(
            table, sigma2=sigma2, kinds=resolved, imported=imported, config=config, use=use
        )

    return EffectEstimates(
        forward=forward,
        backward=backward,
        level=level,
        gain=gain,
        drift=drift,
        level_entropy=level_model((False, True)),
        level_state=level_model((True, True)),
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
