"""What an order's value is made of, per world family: ``python -m bench.order_structure``.

For every world (exhaustive oracle, cached like the closed loop's), the share of the variance
of all ``n!`` orders' final mean utilities that a least-squares fit explains on each feature
set: the last task trained (``n`` indicators), each task's position (``n^2``), the pairwise
precedences (``C(n, 2)``: what the run model and the Mallows kernel see), and positions and
precedences together. Printed per family: the mean over seeds, and the spread of the orders'
values (standard deviation, % of the best). A family whose values precedence explains is one a
pairwise model can learn; the rest of the spread is structure no pairwise model sees.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from bench.worlds import draw_world, family_names
from bench.worlds.oracle import oracle

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
FEATURE_SETS = ("last task", "task x position", "precedence", "both")


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
    args = parser.parse_args(argv)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    print(
        "share of the variance of all orders' values explained (R^2), "
        f"n = {args.n}, seeds {seeds.start}-{seeds.stop - 1}"
    )
    print(f"  {'family':<14}{'last':>5}  {'pos.':>5}  {'prec.':>5}  {'both':>5}  {'sd % best':>8}")
    for family in args.families:
        print(family_row(family, args.n, seeds), flush=True)


if __name__ == "__main__":
    main()
