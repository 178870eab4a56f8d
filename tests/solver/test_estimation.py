"""Update rules of solver.estimation on hand-computed cases, and recovery of a known truth."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from ordo_server.solver.estimation import (
    EffectKind,
    EstimationConfig,
    LevelRegressionStats,
    Observation,
    PriorSpec,
    StatsTable,
    SufficientStats,
    TaskKind,
    classify_kind,
    estimate_effects,
    extract_observations,
    gaussian_posterior,
    increments,
    recompute,
    stage_observations,
)

F, B, L, G, D = (
    EffectKind.FORWARD,
    EffectKind.BACKWARD,
    EffectKind.LEVEL,
    EffectKind.GAIN,
    EffectKind.DRIFT,
)
S, OE = TaskKind.STRUCTURED, TaskKind.OPEN_ENDED


def _values(observations: list[Observation]) -> list[tuple[str, int, int, float, int]]:
    return [(o.kind.value, o.source, o.target, round(o.value, 12), o.stage) for o in observations]


def test_gaussian_posterior_hand_case() -> None:
    post = gaussian_posterior(0.0, 1.0, 1.0, 1, 2.0)
    assert float(post.var) == pytest.approx(0.5)
    assert float(post.mean) == pytest.approx(1.0)
    # Two observations summing to 1.0 with noise 0.5 and prior N(1, 0.25): precision 4 + 4.
    post = gaussian_posterior(1.0, 0.25, 0.5, 2, 1.0)
    assert float(post.var) == pytest.approx(1 / 8)
    assert float(post.mean) == pytest.approx((1 / 8) * (4.0 + 2.0))


def test_gaussian_posterior_rejects_non_positive_variances() -> None:
    with pytest.raises(ValueError, match="positive"):
        gaussian_posterior(0.0, 0.0, 1.0, 0, 0.0)


def test_extract_observations_hand_case() -> None:
    # Trains 1, then 0, then 2; task 2 is not evaluated at stage 1.
    utilities = [
        {0: 0.10, 1: 0.20, 2: 0.30},
        {0: 0.15, 1: 0.60},
        {0: 0.70, 1: 0.55, 2: 0.35},
        {0: 0.65, 1: 0.50, 2: 0.80},
    ]
    observations = extract_observations([1, 0, 2], utilities)
    assert _values(observations) == [
        ("F", 1, 0, 0.05, 1),
        ("G", 1, 1, 0.40, 1),
        ("L", 1, 1, 0.60, 1),
        ("G", 0, 0, 0.55, 2),
        ("L", 0, 0, 0.70, 2),
        ("B", 0, 1, -0.05, 2),
        ("B", 2, 0, -0.05, 3),
        ("B", 2, 1, -0.05, 3),
        ("G", 2, 2, 0.45, 3),
        ("L", 2, 2, 0.80, 3),
    ]


def test_extract_observations_entropy_drift_and_shift() -> None:
    utilities = [{0: 0.1, 1: 0.1}, {0: 0.5, 1: 0.2}, {0: 0.4, 1: 0.6}]
    entropies = [{0: 1.0, 1: 1.2}, {0: 0.8, 1: 0.9}, {0: 1.0}]
    observations = extract_observations([0, 1], utilities, entropies)
    drifts = [(o.source, round(o.value, 12)) for o in observations if o.kind is D]
    # Stage 1: mean of (-0.2, -0.3); stage 2: only task 0 is reported at both stages.
    assert drifts == [(0, -0.25), (1, 0.2)]
    levels = [(o.target, o.entropy_shift, o.uplift) for o in observations if o.kind is L]
    assert levels[0] == (0, 0.0, 0.0)
    assert levels[1][0] == 1
    assert levels[1][1] == pytest.approx(-0.25)
    assert levels[1][2] == pytest.approx(0.1)  # task 1 went from 0.1 to 0.2 before its stage


def test_extract_observations_rejects_bad_runs() -> None:
    with pytest.raises(ValueError, match="twice"):
        extract_observations([0, 0], [{0: 0.0}, {0: 1.0}])
    with pytest.raises(ValueError, match="more evaluations"):
        extract_observations([0], [{0: 0.0}, {0: 1.0}, {0: 2.0}])
    with pytest.raises(ValueError, match="stage 2"):
        stage_observations(stage=2, trained=[0], before={}, after={})


def test_sufficient_stats_add_up() -> None:
    a = SufficientStats.of([1.0, 2.0])
    b = SufficientStats.of([4.0])
    assert a + b == SufficientStats(3, 7.0, 21.0)
    assert a.merge(b) == SufficientStats.of([1.0, 2.0, 4.0])
    assert (a + b).mean == pytest.approx(7 / 3)
    assert (a + b).residual_ss == pytest.approx(21 - 49 / 3)
    assert math.isnan(SufficientStats().mean)
    reg = LevelRegressionStats.of(1.0, 0.0, 2.0) + LevelRegressionStats.of(3.0, 1.0, 6.0)
    xx, xy = reg.centered()
    assert xx == pytest.approx(np.array([[2.0, 1.0], [1.0, 0.5]]))
    assert xy == pytest.approx(np.array([4.0, 2.0]))


def _random_run(rng: random.Random, n: int) -> tuple[list[int], list[dict[int, float]]]:
    trained = list(range(n))
    rng.shuffle(trained)
    utilities = [{j: rng.random() for j in range(n) if rng.random() > 0.1} for _ in range(n + 1)]
    return trained, utilities


def test_recompute_equals_incremental() -> None:
    rng = random.Random(7)
    incremental = StatsTable()
    everything: list[Observation] = []
    for _ in range(5):
        trained, utilities = _random_run(rng, 5)
        entropies = [{j: rng.random() for j in range(5)} for _ in range(6)]
        for k in range(1, 6):
            report = stage_observations(
                stage=k,
                trained=trained,
                before=utilities[k - 1],
                after=utilities[k],
                entropy_before=entropies[k - 1],
                entropy_after=entropies[k],
                entropy_baseline=entropies[0],
            )
            incremental = incremental + increments(report)
            everything += report
    assert recompute(everything) == incremental
    shuffled = list(everything)
    rng.shuffle(shuffled)
    other = recompute(shuffled)
    assert other.cells.keys() == incremental.cells.keys()
    for key, stats in incremental.cells.items():
        assert other.cells[key].count == stats.count
        assert other.cells[key].sum_x == pytest.approx(stats.sum_x, abs=1e-12)
        assert other.cells[key].sum_x2 == pytest.approx(stats.sum_x2, abs=1e-12)


def test_classify_kind() -> None:
    assert classify_kind(-0.3, 0.1) is S
    assert classify_kind(0.3, 0.1) is OE
    assert classify_kind(-0.1, 0.1) is None
    assert classify_kind(-0.1, 0.1, z=0.5) is S


def _table(observations: list[tuple[EffectKind, int, int, float]]) -> StatsTable:
    return recompute(Observation(k, i, j, x, 1) for k, i, j, x in observations)


def test_empirical_bayes_prior_by_kind_pair() -> None:
    # Tasks 0, 1 structured, 2, 3 open-ended. Three observed structured -> open cells.
    kinds = (S, S, OE, OE)
    config = EstimationConfig(noise_prior_dof=1e9)  # noise fixed at the default
    table = _table([(B, 0, 2, -0.10), (B, 0, 3, -0.20), (B, 1, 2, -0.30)])
    est = estimate_effects(table, kinds=kinds, config=config)
    # The unobserved cell of the same kind pair gets the mean of the three, and their spread
    # net of sampling variance (2 * 0.05^2 per observation).
    # net of sampling variance (2 * 0.05^2 per observation), shrunk to the default variance
    # 0.1^2 with 2 pseudo-degrees of freedom.
    spread = np.var([-0.1, -0.2, -0.3], ddof=1) - 2 * 0.05**2
    assert est.backward.mean[1, 3] == pytest.approx(-0.2)
    assert est.backward.var[1, 3] == pytest.approx((2 * 0.1**2 + 2 * spread) / 4)
    # An observed cell's prior leaves itself out: the two other cells.
    loo_mean = -0.25
    loo_spread = max(float(np.var([-0.2, -0.3], ddof=1)) - 2 * 0.05**2, 0.01**2)
    loo_var = (2 * 0.1**2 + 1 * loo_spread) / 3
    expected = gaussian_posterior(loo_mean, loo_var, 2 * 0.05**2, 1, -0.10)
    assert est.backward.mean[0, 2] == pytest.approx(float(expected.mean))
    assert est.backward.var[0, 2] == pytest.approx(float(expected.var))
    # Another kind pair has no observations: the default prior.
    assert est.backward.mean[2, 0] == pytest.approx(0.0)
    assert est.backward.var[2, 0] == pytest.approx(0.1**2)


def test_imported_prior_wins_over_empirical_bayes() -> None:
    kinds = (S, S, OE, OE)
    table = _table([(B, 0, 2, -0.10), (B, 0, 3, -0.20), (B, 1, 2, -0.30)])
    imported = {(B, 1, 3): PriorSpec(0.5, 0.2)}
    est = estimate_effects(table, kinds=kinds, imported=imported)
    assert est.backward.mean[1, 3] == pytest.approx(0.5)
    assert est.backward.std[1, 3] == pytest.approx(0.2)


def test_noise_variance_pools_within_cell_residuals() -> None:
    # Task 1 has a forward cell with residual SS 0.02 over 2 dof (difference: halved -> 0.01)
    # and a backward cell with residual SS 0.005 over 1 dof; its level cell does not count.
    table = _table(
        [
            (F, 0, 1, 0.0),
            (F, 0, 1, 0.1),
            (F, 0, 1, 0.2),
            (B, 2, 1, 0.5),
            (B, 2, 1, 0.6),
            (L, 1, 1, 0.1),
            (L, 1, 1, 0.9),
        ]
    )
    config = EstimationConfig(noise_sd=0.05, noise_prior_dof=4.0)
    est = estimate_effects(table, kinds=(S, S, S), config=config)
    expected = (4 * 0.05**2 + 0.02 / 2 + 0.005 / 2) / (4 + 2 + 1)
    assert est.noise_var[1] == pytest.approx(expected)
    assert est.noise_var[0] == pytest.approx(0.05**2)


def test_unknown_kind_is_classified_from_entropy_drift() -> None:
    table = _table([(D, 0, 0, -0.4), (D, 0, 0, -0.5), (D, 1, 1, 0.45), (D, 1, 1, 0.5)])
    est = estimate_effects(table, kinds=(None, None, None))
    assert est.kinds == (S, OE, None)


def test_level_slopes_are_recovered() -> None:
    rng = np.random.default_rng(3)
    observations = []
    uplift_slope = {S: 0.5, OE: 0.2}
    entropy_slope = {S: 0.0, OE: 0.4}
    intercept = [0.6, 0.5, 0.4, 0.3]
    kinds = (S, S, OE, OE)
    for stage in range(400):
        j = stage % 4
        uplift, shift = (float(x) for x in rng.uniform(-0.5, 0.5, 2))
        mean = intercept[j] + uplift_slope[kinds[j]] * uplift + entropy_slope[kinds[j]] * shift
        value = mean + float(rng.normal(0, 0.02))
        observations.append(Observation(L, j, j, value, 1, shift, uplift))
    est = estimate_effects(recompute(observations), kinds=kinds)
    state = est.level_state
    for j in (0, 2):
        for post, truth in (
            (state.uplift_slope, uplift_slope),
            (state.entropy_slope, entropy_slope),
        ):
            assert post.mean[j] == pytest.approx(truth[kinds[j]], abs=3 * post.std[j])
            assert post.std[j] < 0.02
    assert np.allclose(state.intercept.mean, intercept, atol=0.01)
    # The entropy-only model has no uplift term at all.
    assert np.all(est.level_entropy.uplift_slope.mean == 0.0)
    assert np.all(est.level_entropy.uplift_slope.var == 0.0)


def test_additive_truth_is_recovered_within_posterior_intervals() -> None:
    """Runs in random orders of a world that *is* additive: ~95 % intervals cover the truth."""
    n, runs, noise_sd = 6, 12, 0.03
    kinds = (S, S, S, OE, OE, OE)
    covered, total = 0, 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        level = rng.uniform(0.4, 0.8, n)
        forward = rng.normal(0.02, 0.05, (n, n))
        backward = rng.normal(-0.03, 0.05, (n, n))
        observations: list[Observation] = []
        for _ in range(runs):
            order = [int(t) for t in rng.permutation(n)]
            truth = rng.uniform(0.1, 0.3, n)
            utilities = [dict(enumerate(truth + rng.normal(0, noise_sd, n)))]
            for k, t in enumerate(order, start=1):
                for j in range(n):
                    if j == t:
                        truth[j] = level[j]
                    elif j in order[: k - 1]:
                        truth[j] += backward[t, j]
                    else:
                        truth[j] += forward[t, j]
                utilities.append(dict(enumerate(truth + rng.normal(0, noise_sd, n))))
            observations += extract_observations(order, utilities)
        est = estimate_effects(recompute(observations), kinds=kinds)
        for post, true in ((est.forward, forward), (est.backward, backward)):
            for i, j in itertools.permutations(range(n), 2):
                total += 1
                covered += abs(post.mean[i, j] - true[i, j]) <= 1.96 * post.std[i, j]
        for j in range(n):
            total += 1
            covered += abs(est.level.mean[j] - level[j]) <= 1.96 * est.level.std[j]
    coverage = covered / total
    assert 0.90 <= coverage <= 0.99, coverage


def test_estimate_rejects_cells_outside_the_task_range() -> None:
    with pytest.raises(ValueError, match="outside"):
        estimate_effects(_table([(F, 0, 5, 0.1)]), kinds=(S, S))
