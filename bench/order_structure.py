"""What an order's value is made of, per world family: ``python -m bench.order_structure``.

For every world (exhaustive oracle, cached like the closed loop's), the share of the variance
of all ``n!`` orders' final mean utilities that a least-squares fit explains on each feature
set: the last task trained (``n`` indicators), each task's position (``n^2``), the pairwise
precedences (``C(n, 2)``: what the run model and the Mallows kernel see), and positions and
precedences together. Printed per family: the mean over seeds, and the spread of the orders'
values (standard deviation, % of the best). A family whose values precedence explains is one a
pairwise model can learn; the rest of the spread is structure no pairwise model sees.

A second table gives the *ceiling* of each feature set: the true regret (% of the best order's
value) of the order that its least-squares fit to all ``n!`` noise-free values ranks first,
what a model of that form learns from every order at once; beside it, the exact expected
regret of the best of R uniformly random orders (chosen on their true values) and half of it,
the issue's "0.5 x best-of-R" bar.

The last tables (one per ``--train`` value) ask how far a flexible model gets from more data
than a loop ever has: a Gaussian process over orders (the product of a Mallows kernel on the
Kendall distance and a kernel on the Hamming distance of positions, both decays and the noise
chosen by the marginal likelihood on a grid) fitted to the noise-free values of ``train``
orders drawn at random. For the orders it has not seen: the true regret of the best of its top
1, 4 and 8 picks (what 1, 4 or 8 runs of them would keep, chosen on true values), the regret
of the best unseen order, and the Spearman correlation of its predictions with their values.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from bench.baselines import before_indicators, kendall_distance
from bench.worlds import draw_world, family_names
from bench.worlds.oracle import oracle

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
FEATURE_SETS = ("last task", "task x position", "precedence", "both")
KENDALL_DECAYS = (1.0, 3.0, 10.0, 30.0)
"""Grid of the Mallows kernel's decay per unit of normalized Kendall distance."""
POSITION_DECAYS = (0.0, 1.0, 3.0, 10.0)
"""Grid of the position kernel's decay per unit of normalized Hamming distance."""
NOISE_SHARES = (1e-4, 1e-2, 1e-1)
"""Grid of the noise variance, per unit of the standardized values' variance."""


def features(orders: IntArray) -> dict[str, FloatArray]:
    """Each feature set's design matrix over ``orders`` (P, n), without the intercept."""
    count, n = orders.shape
    position = np.argsort(orders, axis=1)  # position[p, t]: where task t is in order p
    at = np.zeros((count, n * n))
    at[np.repeat(np.arange(count), n), (np.arange(n) * n + position).ravel()] = 1.0
    last = np.zeros((count, n))
    last[np.arange(count), orders[:, -1]] = 1.0
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    precedes = np.column_stack([position[:, a] < position[:, b] for a, b in pairs]).astype(float)
    return {
        "last task": last,
        "task x position": at,
        "precedence": precedes,
        "both": np.column_stack([at, precedes]),
    }


def explained(design: FloatArray, values: FloatArray) -> float:
    """R^2 of the least-squares fit of ``values`` (P,) on ``design`` (P, k) and an intercept."""
    full = np.column_stack([np.ones(len(values)), design])
    beta, *_ = np.linalg.lstsq(full, values, rcond=None)
    residual = values - full @ beta
    return float(1.0 - np.var(residual) / np.var(values))


def fit_regret(design: FloatArray, values: FloatArray) -> float:
    """True regret, % of ``max(values)``, of the order whose least-squares fit is highest.

    ``design`` (P, k) and ``values`` (P,) over the same ``P`` orders; ties in the fit go to
    the first order.
    """
    full = np.column_stack([np.ones(len(values)), design])
    beta, *_ = np.linalg.lstsq(full, values, rcond=None)
    best = float(np.max(values))
    return 100.0 * (best - float(values[int(np.argmax(full @ beta))])) / best


def expected_best_of_random(values: FloatArray, runs: int) -> float:
    """Expected regret, % of ``max(values)``, of the best of ``runs`` uniform draws of ``values``.

    Exact: draws with replacement, chosen on their true values; the k-th smallest of ``P``
    values is the maximum with probability ``(k / P)^runs - ((k - 1) / P)^runs``.
    """
    ranked = np.sort(values)
    share = np.arange(len(ranked) + 1) / len(ranked)
    chance = share[1:] ** runs - share[:-1] ** runs
    best = float(ranked[-1])
    return 100.0 * (best - float(chance @ ranked)) / best


def ceiling_row(family: str, n: int, seeds: Sequence[int], runs: Sequence[int]) -> str:
    """Per feature set, the mean fit-argmax regret; per R, best-of-R random and its half."""
    rows = []
    for seed in seeds:
        result = oracle(draw_world(family, n, seed))
        designs = features(result.orders)
        cells = [fit_regret(designs[name], result.utilities) for name in FEATURE_SETS]
        rows.append(cells + [expected_best_of_random(result.utilities, r) for r in runs])
    mean = np.mean(rows, axis=0)
    fits = "  ".join(f"{value:5.2f}" for value in mean[: len(FEATURE_SETS)])
    randoms = "  ".join(f"{value:5.2f} / {value / 2:4.2f}" for value in mean[len(FEATURE_SETS) :])
    return f"  {family:<14}{fits}  {randoms}"


def order_distances(left: IntArray, right: IntArray) -> tuple[FloatArray, FloatArray]:
    """Kendall and Hamming distances (L, R) between orders ``left`` (L, n) and ``right`` (R, n).

    Both normalized to [0, 1]: discordant pairs over ``C(n, 2)``
    (:func:`bench.baselines.kendall_distance`), differing positions over ``n`` (an inner
    product of the position indicators).
    """
    n = left.shape[1]
    discordant = kendall_distance(before_indicators(left), before_indicators(right))
    same_place = features(left)["task x position"] @ features(right)["task x position"].T
    return discordant / (n * (n - 1) / 2), (n - same_place) / n


PICKS = (1, 4, 8)
"""How many of the GP's best-predicted unseen orders are run, the best of them kept."""


@dataclass(frozen=True, slots=True)
class UnseenPicks:
    """How a GP fitted to some orders' true values does on the orders it has not seen.

    ``picked[k]``: the true regret (% of the best order's value) of the best of the ``k``
    unseen orders it predicts best (what ``k`` runs of its top picks would keep, chosen on true
    values); ``best_unseen``: the regret of the best unseen order; ``rank``: the Spearman
    correlation of its predictions with the unseen orders' values.
    """

    picked: dict[int, float]
    best_unseen: float
    rank: float


def unseen_picks(
    orders: IntArray,
    values: FloatArray,
    train: int,
    rng: np.random.Generator,
    picks: Sequence[int] = PICKS,
) -> UnseenPicks:
    """Fit the order GP to ``train`` random orders of ``orders`` (P, n) with ``values`` (P,);
    judge its ranking of the other ``P - train``."""
    if not 0 < train < len(values):
        raise ValueError(f"train must leave orders unseen: 0 < train < {len(values)}, got {train}")
    shuffled = rng.permutation(len(values))
    seen, unseen = shuffled[:train], shuffled[train:]
    kendall_seen, hamming_seen = order_distances(orders[seen], orders[seen])
    y = (values[seen] - values[seen].mean()) / max(float(values[seen].std()), 1e-12)
    best_fit: tuple[float, float, FloatArray] | None = None
    best_evidence = -np.inf
    for lk in KENDALL_DECAYS:
        for lh in POSITION_DECAYS:
            gram = np.exp(-lk * kendall_seen - lh * hamming_seen)
            for noise in NOISE_SHARES:
                chol = np.linalg.cholesky(gram + noise * np.eye(train))
                alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, y))
                evidence = -0.5 * float(y @ alpha) - float(np.log(np.diag(chol)).sum())
                if evidence > best_evidence:
                    best_evidence, best_fit = evidence, (lk, lh, alpha)
    assert best_fit is not None
    lk, lh, alpha = best_fit
    kendall, hamming = order_distances(orders[unseen], orders[seen])
    predicted = np.exp(-lk * kendall - lh * hamming) @ alpha
    ranked = values[unseen[np.argsort(-predicted, kind="stable")]]
    best = float(values.max())
    return UnseenPicks(
        picked={k: 100.0 * (best - float(ranked[:k].max())) / best for k in picks},
        best_unseen=100.0 * (best - float(ranked.max())) / best,
        rank=float(stats.spearmanr(predicted, values[unseen]).statistic),
    )


def unseen_row(family: str, n: int, seeds: Sequence[int], train: int) -> str:
    """The family's means of :func:`unseen_picks` over ``seeds`` (the draw seeded by the world)."""
    rows = []
    for seed in seeds:
        result = oracle(draw_world(family, n, seed))
        found = unseen_picks(
            result.orders, result.utilities, train, np.random.default_rng([seed, n, train])
        )
        rows.append([*(found.picked[k] for k in PICKS), found.best_unseen, found.rank])
    cells = "  ".join(f"{value:6.2f}" for value in np.mean(rows, axis=0))
    return f"  {family:<14}{cells}"


def family_row(family: str, n: int, seeds: Sequence[int]) -> str:
    """The family's mean R^2 per feature set and the spread of its orders' values."""
    shares, spreads = [], []
    for seed in seeds:
        result = oracle(draw_world(family, n, seed))
        designs = features(result.orders)
        shares.append([explained(designs[name], result.utilities) for name in FEATURE_SETS])
        spreads.append(100.0 * float(np.std(result.utilities)) / result.best_value)
    mean = np.mean(shares, axis=0)
    cells = "  ".join(f"{value:5.2f}" for value in mean)
    return f"  {family:<14}{cells}  {np.mean(spreads):9.1f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--families", nargs="+", default=list(family_names()))
    parser.add_argument("--n", type=int, default=6, help="tasks (<= 8; n! orders each)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--runs", type=int, nargs="+", default=[4, 8], help="R of best-of-R")
    parser.add_argument(
        "--train",
        type=int,
        nargs="+",
        default=[48, 360],
        help="orders the GP sees, at most half of all, one table each (0: none)",
    )
    args = parser.parse_args(argv)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    print(
        "share of the variance of all orders' values explained (R^2), "
        f"n = {args.n}, seeds {seeds.start}-{seeds.stop - 1}"
    )
    print(f"  {'family':<14}{'last':>5}  {'pos.':>5}  {'prec.':>5}  {'both':>5}  {'sd % best':>8}")
    for family in args.families:
        print(family_row(family, args.n, seeds), flush=True)
    print(
        "\nceiling: true regret % of the order each all-orders fit ranks first; "
        "best-of-R random (true values) / half of it"
    )
    randoms = "  ".join(f"{'best-of-' + str(r):>12}" for r in args.runs)
    print(f"  {'family':<14}{'last':>5}  {'pos.':>5}  {'prec.':>5}  {'both':>5}  {randoms}")
    for family in args.families:
        print(ceiling_row(family, args.n, seeds, args.runs), flush=True)
    for asked in args.train:
        train = min(asked, math.factorial(args.n) // 2)
        if train <= 0:
            continue
        print(
            f"\na GP over orders fitted to {train} orders' true values: the true regret % of the "
            "best of its top k unseen picks, of the best unseen order, and its Spearman (unseen)"
        )
        tops = "  ".join(f"{'top ' + str(k):>6}" for k in PICKS)
        print(f"  {'family':<14}{tops}  {'best':>6}  {'rank':>6}")
        for family in args.families:
            print(unseen_row(family, args.n, seeds, train), flush=True)


if __name__ == "__main__":
    main()
