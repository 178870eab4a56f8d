"""solver.planning: mean models, the entropy-aware fold, Thompson samples."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ordo_server.solver.estimation import (
    EffectKind,
    Observation,
    TaskKind,
    estimate_effects,
    recompute,
)
from ordo_server.solver.planning import (
    effect_model,
    ordering_problem,
    predicted_utilities,
    sample_estimates,
)
from tests.solver.factories import CODE, MATH, POETRY, worked_example_model

S, OE = TaskKind.STRUCTURED, TaskKind.OPEN_ENDED


def test_predicted_utilities_match_the_design_worked_example() -> None:
    model = worked_example_model()
    first = predicted_utilities(model, (MATH, CODE, POETRY), rho=0.0)
    assert first == pytest.approx([0.61, 0.40, 0.50])
    assert first.sum() == pytest.approx(1.51)
    second = predicted_utilities(model, (POETRY, MATH, CODE), rho=0.0)
    assert second == pytest.approx([0.63, 0.40, 0.32])
    with pytest.raises(ValueError, match="permutation"):
        predicted_utilities(model, (0, 0, 1), rho=0.0)


def test_entropy_aware_model_folds_the_drift_term_into_forward() -> None:
    drift = np.array([-0.4, -0.2, 0.3])
    observations = []
    rng = np.random.default_rng(0)
    for stage in range(300):
        j = stage % 3
        observations.append(Observation(EffectKind.DRIFT, j, j, float(drift[j]), 1))
        shift, uplift = (float(x) for x in rng.uniform(-1, 1, 2))
        value = 0.5 + (0.5 * shift if j == POETRY else 0.0) + 0.3 * uplift
        observations.append(Observation(EffectKind.LEVEL, j, j, value, 1, shift, uplift))
        observations.append(Observation(EffectKind.FORWARD, j, (j + 1) % 3, 0.1, 1))
    est = estimate_effects(recompute(observations), kinds=(S, S, OE))
    model = effect_model(est, np.ones(3), level_model="entropy", rho=0.5)
    c = est.level_entropy.entropy_slope.mean
    d = est.drift.mean
    f = est.forward.mean
    for i, j in itertools.permutations(range(3), 2):
        assert model.forward_mean[i, j] == pytest.approx(c[j] * d[i] + 0.5 * f[i, j])
    state = effect_model(est, np.ones(3), level_model="state", rho=0.5)
    c = est.level_state.entropy_slope.mean
    r = est.level_state.uplift_slope.mean
    assert r == pytest.approx([0.3, 0.3, 0.3], abs=0.02)
    for i, j in itertools.permutations(range(3), 2):
        assert state.forward_mean[i, j] == pytest.approx(c[j] * d[i] + r[j] * f[i, j])
    problem = ordering_problem(est, np.ones(3), level_model="entropy")
    assert problem.rho == 1.0
    # Poetry after both structured tasks: its level falls by c * (0.4 + 0.2), c about 0.5.
    late = predicted_utilities(problem.model, (MATH, CODE, POETRY), rho=problem.rho)
    early = predicted_utilities(problem.model, (POETRY, MATH, CODE), rho=problem.rho)
    slope = est.level_entropy.entropy_slope
    assert early[POETRY] - late[POETRY] == pytest.approx(-slope.mean[POETRY] * (d[0] + d[1]))
    assert d[:2] == pytest.approx([-0.4, -0.2], abs=0.01)
    # The omitted uplift term is extra noise for this model: a loose check.
    assert slope.mean[POETRY] == pytest.approx(0.5, abs=0.1)


def test_pairwise_model_keeps_rho_in_the_problem() -> None:
    est = estimate_effects(recompute([]), kinds=(S, OE))
    problem = ordering_problem(est, [0.5, 0.5], rho=0.3, prefix=(1,))
    assert problem.rho == 0.3
    assert problem.prefix == (1,)
    assert np.all(np.diag(problem.model.backward_mean) == 0.0)
    with pytest.raises(ValueError, match="weights"):
        effect_model(est, [1.0, -1.0])


def test_thompson_samples_are_seeded_and_follow_the_posterior() -> None:
    est = estimate_effects(recompute([]), kinds=(S, S, OE, OE))
    first = sample_estimates(est, seed=1)
    again = sample_estimates(est, seed=1)
    other = sample_estimates(est, seed=2)
    assert np.array_equal(first.backward.mean, again.backward.mean)
    assert not np.array_equal(first.backward.mean, other.backward.mean)
    draws = np.array([sample_estimates(est, seed=s).backward.mean[0, 2] for s in range(400)])
    assert draws.mean() == pytest.approx(float(est.backward.mean[0, 2]), abs=0.02)
    assert draws.std() == pytest.approx(float(est.backward.std[0, 2]), rel=0.15)
