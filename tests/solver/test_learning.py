"""solver.learning: the whole-run regression recovers a known truth; planning and design."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from ordo_server.solver.estimation import TaskKind
from ordo_server.solver.learning import (
    RunModel,
    RunModelConfig,
    RunRecord,
    exploration_order,
    fit_run_model,
    fit_run_model_posteriors,
    predict_final_utilities,
    predicted_objective,
    refine_order,
    restrict_run_model,
    run_model_effects,
)
from ordo_server.solver.scoring import score_order
from ordo_server.solver.solve import solve_ordering
from ordo_server.solver.types import Order, OrderingProblem, SolveParams

S, OE = TaskKind.STRUCTURED, TaskKind.OPEN_ENDED
MATH, CODE, POETRY = 0, 1, 2


def _truth(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    effects = {name: rng.normal(0.0, 0.04, (n, n)) for name in ("F", "B", "R")}
    for matrix in effects.values():
        np.fill_diagonal(matrix, 0.0)
    return {"base": rng.uniform(0.1, 0.3, n), "L": rng.uniform(0.5, 0.8, n), **effects}


def _utility(truth: dict[str, np.ndarray], trained: Order, task: int) -> float:
    """The additive world of the module docstring (no entropy)."""
    if task not in trained:
        return float(truth["base"][task] + sum(truth["F"][i, task] for i in trained))
    own = trained.index(task)
    carry = sum(truth["R"][i, task] for i in trained[:own])
    backward = sum(truth["B"][i, task] for i in trained[own + 1 :])
    return float(truth["L"][task] + carry + backward)


def _run(truth: dict[str, np.ndarray], order: Order) -> RunRecord:
    n = len(order)
    utilities = [{j: _utility(truth, order[:k], j) for j in range(n)} for k in range(n + 1)]
    return RunRecord(trained=order, utilities=utilities)


def _model(
    n: int,
    *,
    level: list[float],
    backward: dict[tuple[int, int], float] | None = None,
    slope: list[float] | None = None,
    entropy_map: list[tuple[float, float]] | None = None,
) -> RunModel:
    b = np.zeros((n, n))
    for (i, j), value in (backward or {}).items():
        b[i, j] = value
    zeros = np.zeros((n, n))
    return RunModel(
        level_mean=np.array(level),
        level_var=np.zeros(n),
        carry_mean=zeros,
        carry_var=zeros,
        backward_mean=b,
        backward_var=zeros,
        forward_mean=zeros,
        entropy_slope=np.array(slope or [0.0] * n),
        entropy_map=np.array(entropy_map or [(1.0, 0.0)] * n),
        entropy_ref=1.0,
        observations=0,
    )


def test_fit_recovers_an_additive_truth_from_noise_free_runs() -> None:
    n = 4
    truth = _truth(n, seed=3)
    runs = [_run(truth, order) for order in itertools.permutations(range(n))]
    config = RunModelConfig(noise_sd=1e-3, group_std=1.0, deviation_std=1.0, carry_std=1.0)
    model = fit_run_model(runs, kinds=[S, S, OE, OE], config=config)
    assert model.observations == 24 * (n + 1) * n
    assert model.level_mean == pytest.approx(truth["L"], abs=1e-3)
    assert model.backward_mean == pytest.approx(truth["B"], abs=1e-3)
    assert model.carry_mean == pytest.approx(truth["R"], abs=1e-3)
    assert model.forward_mean == pytest.approx(truth["F"], abs=1e-3)
    assert np.all(model.backward_var >= 0)
    assert np.all(np.diag(model.backward_var) == 0)
    # With no entropy reported the prediction is the additive truth itself.
    orders = np.array(list(itertools.permutations(range(n))))
    predicted = predict_final_utilities(model, orders)
    exact = [[_utility(truth, tuple(o), j) for j in range(n)] for o in orders]
    assert predicted == pytest.approx(np.array(exact), abs=5e-3)


def test_without_data_the_fit_is_the_prior() -> None:
    model = fit_run_model([], kinds=[S, OE, None])
    assert model.level_mean == pytest.approx([0.5, 0.5, 0.5])
    assert model.level_var == pytest.approx([0.25, 0.25, 0.25])
    assert not np.any(model.backward_mean)
    assert model.entropy_map == pytest.approx(np.array([[1.0, 0.0]] * 3))
    assert model.observations == 0


def test_entropy_maps_are_learnt_from_the_reported_trajectory() -> None:
    maps = {0: (0.8, 0.0), 1: (0.7, 0.48), 2: (0.9, 0.05)}  # H' = alpha H + beta
    runs = []
    for order in itertools.permutations(range(3)):
        entropy = [1.0]
        for task in order:
            alpha, beta = maps[task]
            entropy.append(alpha * entropy[-1] + beta)
        utilities = [{0: 0.5}] * 4
        # Two tasks report the state with different factors; the model uses their mean.
        entropies = [{0: 1.1 * h, 1: 0.9 * h} for h in entropy]
        runs.append(RunRecord(order, utilities, entropies))
    config = RunModelConfig(entropy_noise_sd=1e-4)
    model = fit_run_model(runs, kinds=[S, OE, S], config=config)
    assert model.entropy_ref == pytest.approx(1.0)
    assert model.entropy_map == pytest.approx(np.array([maps[t] for t in range(3)]), abs=1e-3)


def test_predictions_match_the_design_worked_example() -> None:
    """docs/design.md §2: (math, code, poetry) totals 1.51, (poetry, math, code) 1.35."""
    backward = {
        (CODE, POETRY): -0.10,
        (MATH, POETRY): -0.08,
        (POETRY, MATH): -0.02,
        (CODE, MATH): 0.03,
        (MATH, CODE): 0.01,
    }
    model = _model(3, level=[0.60, 0.40, 0.50], backward=backward)
    utilities = predict_final_utilities(model, [(MATH, CODE, POETRY), (POETRY, MATH, CODE)])
    assert utilities[0] == pytest.approx([0.61, 0.40, 0.50])
    assert utilities.sum(axis=1) == pytest.approx([1.51, 1.35])
    assert predicted_objective(model, np.ones(3), (MATH, CODE, POETRY)) == pytest.approx([1.51])
    with pytest.raises(ValueError, match="permutation"):
        predict_final_utilities(model, (0, 0, 1))


def test_the_lop_part_scores_like_the_solver_oracle() -> None:
    n = 5
    truth = _truth(n, seed=8)
    rng = np.random.default_rng(0)
    runs = [_run(truth, tuple(int(t) for t in rng.permutation(n))) for _ in range(3)]
    model = fit_run_model(runs, kinds=[S, S, OE, OE, S])
    weights = np.array([0.1, 0.3, 0.2, 0.2, 0.2])
    problem = OrderingProblem(model=run_model_effects(model, weights), rho=1.0)
    for order in itertools.islice(itertools.permutations(range(n)), 0, 120, 7):
        expected = float(predicted_objective(model, weights, order)[0])
        assert score_order(problem, order) == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="weights"):
        run_model_effects(model, np.array([1.0, -1.0, 0.0, 0.0, 0.0]))


def test_refine_order_adds_the_entropy_state_the_lop_misses() -> None:
    """Task 0 needs entropy at the end; task 2 collapses it, task 1 restores it.

    Without the entropy term every order ties (no pair effects); with it the best orders end
    with the restoring task 1 after the collapsing task 2.
    """
    model = _model(
        4,
        level=[0.5, 0.5, 0.5, 0.5],
        slope=[0.3, 0.0, 0.0, 0.0],
        entropy_map=[(1.0, 0.0), (0.5, 0.8), (0.4, 0.0), (1.0, 0.0)],
    )
    weights = np.ones(4)
    start: Order = (1, 2, 0, 3)
    refined = refine_order(model, weights, start)
    every = np.array(list(itertools.permutations(range(4))))
    best = predicted_objective(model, weights, every).max()
    assert predicted_objective(model, weights, refined)[0] == pytest.approx(best)
    assert refined.index(1) > refined.index(2)
    # The trained prefix stays; the observed entropy replaces the predicted one.
    kept = refine_order(model, weights, start, prefix_length=2, entropy_now=1.0)
    assert kept[:2] == (1, 2)
    assert (
        predicted_objective(model, weights, kept, entropy_now=1.0, trained=2)[0]
        >= predicted_objective(model, weights, start, entropy_now=1.0, trained=2)[0]
    )
    with pytest.raises(ValueError, match="prefix_length"):
        refine_order(model, weights, start, prefix_length=5)
    # A constraint (task 1 trained first) forbids every improving move.
    pinned = refine_order(model, weights, start, is_feasible=lambda order: order[0] == 1)
    assert pinned[0] == 1
    assert predicted_objective(model, weights, pinned)[0] < best


def test_observed_entropy_changes_the_prediction_of_the_rest() -> None:
    model = _model(2, level=[0.5, 0.5], slope=[0.2, 0.0], entropy_map=[(0.5, 0.0), (1.0, 0.0)])
    predicted = predict_final_utilities(model, (1, 0))[0, 0]
    assert predicted == pytest.approx(0.5 + 0.2 * (0.5 - 1.0))
    observed = predict_final_utilities(model, (1, 0), entropy_now=1.6, trained=1)[0, 0]
    assert observed == pytest.approx(0.5 + 0.2 * (0.8 - 1.0))


def test_exploration_designs_the_reverse_then_exploits() -> None:
    assert exploration_order([], 4) is None
    assert exploration_order([(2, 0, 3, 1)], 4) == (1, 3, 0, 2)
    assert exploration_order([(2, 0, 3, 1), (1, 3, 0, 2)], 4) is None
    assert exploration_order([(2, 0, 3, 1), (1, 3, 0, 2)], 4, design_runs=3) is None  # balanced
    assert exploration_order([(0, 1, 2), (0, 1, 2)], 3, design_runs=3) == (2, 1, 0)
    assert exploration_order([(2, 0)], 4) is None  # a partial run is not a design input
    assert exploration_order([(0, 1, 2)], 3, design_runs=1) is None


def test_invalid_runs_are_rejected() -> None:
    good = RunRecord((0, 1), [{0: 0.1, 1: 0.2}, {0: 0.5, 1: 0.2}])
    with pytest.raises(ValueError, match="twice"):
        fit_run_model([replace(good, trained=(0, 0))], kinds=[S, S])
    with pytest.raises(ValueError, match="outside"):
        fit_run_model([replace(good, trained=(0, 5))], kinds=[S, S])
    with pytest.raises(ValueError, match="more evaluations"):
        fit_run_model([replace(good, trained=(0,), utilities=[{}, {}, {}])], kinds=[S, S])
    with pytest.raises(ValueError, match="NaN"):
        fit_run_model([replace(good, utilities=[{0: float("nan")}])], kinds=[S, S])
    with pytest.raises(ValueError, match="entropy"):
        fit_run_model([replace(good, entropies=[{0: float("inf")}])], kinds=[S, S])


def test_a_partial_run_is_data_up_to_its_last_report() -> None:
    truth = _truth(3, seed=1)
    full = _run(truth, (0, 1, 2))
    partial = RunRecord((0, 1, 2), full.utilities[:2])
    model = fit_run_model([partial], kinds=[S, S, S])
    assert model.observations == 6
    solved = solve_ordering(
        OrderingProblem(model=run_model_effects(model, np.ones(3)), rho=1.0, prefix=(0,)),
        SolveParams(time_limit_s=2.0, num_workers=1),
    )
    assert solved.order[0] == 0


def test_a_restricted_model_predicts_the_subset_as_the_full_model_does() -> None:
    truth = _truth(4, seed=2)
    model = fit_run_model([_run(truth, (0, 1, 2, 3)), _run(truth, (3, 2, 1, 0))], kinds=[S] * 4)
    sub = restrict_run_model(model, (3, 1))
    assert sub.n == 2
    assert sub.backward_mean[0, 1] == model.backward_mean[3, 1]
    assert sub.carry_mean[1, 0] == model.carry_mean[1, 3]
    # No entropy: the subset's prediction is the full one's terms among the subset's tasks.
    expected = model.level_mean[1] + model.carry_mean[3, 1]
    assert predict_final_utilities(sub, (0, 1))[0, 1] == pytest.approx(expected)
    with pytest.raises(ValueError, match="distinct"):
        restrict_run_model(model, (1, 1))
    with pytest.raises(ValueError, match="distinct"):
        restrict_run_model(model, (4,))


def test_held_out_posteriors_are_the_fits_without_each_run() -> None:
    """One design serves every held-out fit (its run's terms subtracted): the posterior of
    fitting the other runs alone, partial runs and entropies included."""
    n = 4
    truth = _truth(n, seed=5)
    rng = np.random.default_rng(2)
    runs = []
    for index, order in enumerate(itertools.permutations(range(n))):
        stages = n + 1 if index % 5 else 3
        # Every baseline entropy is 1, so H_ref (from all runs) is the same with or without one.
        entropies = [{0: 1.0}] + [{0: float(rng.uniform(0.5, 1.5))} for _ in range(stages - 1)]
        runs.append(RunRecord(order, _run(truth, order).utilities[:stages], entropies))
    kinds = [S, S, OE, OE]
    full, *held = fit_run_model_posteriors(runs, kinds=kinds, holdouts=[None, 0, 5])
    for posterior, dropped in zip(held, (0, 5), strict=True):
        kept = [run for index, run in enumerate(runs) if index != dropped]
        (alone,) = fit_run_model_posteriors(kept, kinds=kinds)
        assert np.array_equal(posterior.entropy_map, alone.entropy_map)
        assert not np.array_equal(posterior.entropy_map, full.entropy_map)
        assert posterior.mean == pytest.approx(alone.mean, abs=1e-9)
        assert posterior.covariance == pytest.approx(alone.covariance, abs=1e-9)
