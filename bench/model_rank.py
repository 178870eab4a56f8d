"""How well Ordo's models rank every order after R runs: ``python -m bench.model_rank``.

The closed loop measures what the loop finds; this measures what it has to go on. For every
world (exhaustive oracle, cached like the closed loop's), ``R`` runs of uniformly random orders
are trained and reported in full (baseline and every stage, as a trainer reports them), the
order posterior is fitted to them (:func:`solver.recommend.fit_order_posterior`, the default
configuration, or ``--ordo-config`` overrides as in ``bench.closed_loop``), and every one of
the ``n!`` orders is scored from the start by:

- each parametric model (``transition``, ``run``: its posterior mean, no residual process);
- the mixture (every member's mean, residual included, weighted by the stacking weights).

Printed per family and ``R``, means over seeds: the Spearman rank correlation of each score
with the orders' true final mean utilities, the stacking weight of each model, and the regret
(% of the best order's value) of the mixture's best order over all orders: where the loop's
search would land if it searched the whole space on this posterior. A model whose rank
correlation stays low cannot steer exploration, however the loop explores.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import spearmanr

from bench.baselines import run_order
from bench.closed_loop import parse_ordo_config, recommend_config
from bench.worlds import draw_world, family_names
from bench.worlds.base import World
from bench.worlds.oracle import oracle
from ordo_server.solver.learning import RunRecord
from ordo_server.solver.recommend import RecommendConfig, fit_order_posterior

FloatArray = npt.NDArray[np.float64]
MODELS = ("transition", "run")


@dataclass(frozen=True, slots=True)
class RankScore:
    """One world after ``R`` runs: rank correlations (mixture and each model), each model's
    stacking weight, and the regret % of the mixture's best order."""

    mixture: float
    models: dict[str, float]
    weights: dict[str, float]
    regret: float


def random_runs(world: World, count: int, seed: int) -> list[RunRecord]:
    """``count`` runs of uniformly random orders, every stage reported (evaluation noise drawn
    from ``seed``)."""
    rng = np.random.default_rng(seed)
    runs = []
    for r in range(count):
        order = tuple(int(t) for t in rng.permutation(world.n))
        _, evaluations = run_order(world, order, seed=seed * 1_000 + r)
        runs.append(
            RunRecord(
                trained=order,
                utilities=[dict(e.values) for e in evaluations],
                entropies=[dict(e.entropies) for e in evaluations],
            )
        )
    return runs


def _spearman(scores: FloatArray, values: FloatArray) -> float:
    """Rank correlation; 0 for a score that does not vary (a model with nothing to say)."""
    if np.ptp(scores) == 0:
        return 0.0
    return float(spearmanr(scores, values).statistic)


def rank_score(
    world: World, runs: int, seed: int, config: RecommendConfig | None = None
) -> RankScore:
    """Fit the posterior (``config``: the default's) to ``runs`` random runs of ``world`` and
    score every order."""
    result = oracle(world)
    values = np.asarray(result.utilities)
    weights = np.full(world.n, 1.0 / world.n)
    posterior = fit_order_posterior(
        random_runs(world, runs, seed), kinds=world.kinds, weights=weights, config=config
    )
    mixture = sum(
        w * mean for w, mean, _ in posterior.member_moments(result.orders, conditioned=False)
    )
    models: dict[str, float] = {}
    model_weights: dict[str, float] = {}
    for member, weight in zip(posterior.members, posterior.member_weights, strict=True):
        name = member.predictor.name
        if name not in MODELS:
            continue
        model_weights[name] = model_weights.get(name, 0.0) + float(weight)
        if name not in models:
            mean, _ = member.predictor.moments(result.orders, conditioned=False)
            models[name] = _spearman(mean, values)
    chosen = float(values[int(np.argmax(mixture))])
    return RankScore(
        mixture=_spearman(np.asarray(mixture), values),
        models=models,
        weights=model_weights,
        regret=100.0 * (result.best_value - chosen) / result.best_value,
    )


def family_row(
    family: str,
    n: int,
    runs: int,
    seeds: Sequence[int],
    config: RecommendConfig | None = None,
) -> str:
    """The family's mean scores over ``seeds`` after ``runs`` random runs."""
    scores = [rank_score(draw_world(family, n, seed), runs, seed, config) for seed in seeds]
    cells = [f"{family:<14}{runs:>3}", f"{np.mean([s.mixture for s in scores]):>8.2f}"]
    for model in MODELS:
        rho = [s.models[model] for s in scores if model in s.models]
        weight = [s.weights[model] for s in scores if model in s.weights]
        cells.append(f"{np.mean(rho):>11.2f}{np.mean(weight):>7.2f}" if rho else f"{'-':>18}")
    cells.append(f"{np.mean([s.regret for s in scores]):>9.2f}")
    return "".join(cells)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--families", nargs="+", default=list(family_names()))
    parser.add_argument("--n", type=int, default=6, help="tasks (exhaustive oracle: <= 8)")
    parser.add_argument("--runs", type=int, nargs="+", default=[4, 8], help="random runs R")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--ordo-config",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="RecommendConfig fields (as bench.closed_loop's; e.g. transition.noise_sd=0.03)",
    )
    args = parser.parse_args(argv)
    config = recommend_config(parse_ordo_config(args.ordo_config))
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    print(
        f"rank correlation with the true order values over all {args.n}! orders, after R random"
        f" runs; mean over {args.seeds} seeds from {args.first_seed}"
    )
    header = f"{'family':<14}{'R':>3}{'mixture':>8}"
    header += "".join(f"{model:>11}{'weight':>7}" for model in MODELS)
    print(header + f"{'regret %':>9}")
    for family in args.families:
        for runs in args.runs:
            print(family_row(family, args.n, runs, seeds, config), flush=True)


if __name__ == "__main__":
    main()
