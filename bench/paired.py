"""Two versions of Ordo on the same worlds, paired per world: ``python -m bench.paired``.

Run ``python -m bench.paired --before A.json [B.json ...] --after C.json [D.json ...]
[--method Ordo] [--at 2 4 8]``, each file a ``--json`` output of :mod:`bench.closed_loop`
(typically ``--methods ordo``, the same worlds, one version of the code or one
``--ordo-config`` each). Worlds are matched by ``(family, n, seed)``; a world in only one side
is an error, so that a partial run is not mistaken for a result.

Printed per family and overall (every matched world pooled): the mean regret of the
recommendation before and after at each ``R`` of ``--at``, and the mean paired difference
(after - before) with its standard error (sample sd over worlds / sqrt(worlds); negative =
better). Regrets in % of the oracle's best final mean utility, as in the benchmark.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

WorldKey = tuple[str, int, int]
"""``(family, n, seed)``."""


@dataclass(frozen=True, slots=True)
class Paired:
    """Paired regrets of one group of worlds at one ``R`` (regret in %)."""

    worlds: int
    before: float
    after: float
    difference: float
    """Mean of (after - before) over the worlds."""
    standard_error: float
    """Sample sd of the differences / sqrt(worlds); NaN with one world."""


def load_regrets(paths: Sequence[Path], method: str) -> dict[WorldKey, list[float]]:
    """``method``'s recommendation regret after each run, per world, from ``--json`` files."""
    out: dict[WorldKey, list[float]] = {}
    for path in paths:
        data: dict[str, Any] = json.loads(path.read_text())
        for world in data["worlds"]:
            key = (str(world["family"]), int(world["n"]), int(world["seed"]))
            if key in out:
                raise SystemExit(f"{path}: world {key} appears twice")
            out[key] = [float(v) for v in world["sequential"][method]["recommended_regret"]]
    return out


def paired(before: Sequence[float], after: Sequence[float]) -> Paired:
    """Mean before, after and the paired difference with its standard error."""
    b, a = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    diff = a - b
    se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
    return Paired(len(diff), float(b.mean()), float(a.mean()), float(diff.mean()), se)


def compare(
    before: dict[WorldKey, list[float]], after: dict[WorldKey, list[float]], at: Sequence[int]
) -> dict[str, dict[int, Paired]]:
    """Per family (registry order of appearance) and ``"overall"``: :class:`Paired` at each R."""
    if set(before) != set(after):
        missing = sorted(set(before) ^ set(after))
        raise SystemExit(f"the two sides differ in {len(missing)} worlds, e.g. {missing[:3]}")
    keys = list(before)
    families = list(dict.fromkeys(k[0] for k in keys))
    groups = {f: [k for k in keys if k[0] == f] for f in families}
    groups["overall"] = keys
    return {
        name: {
            r: paired([before[k][r - 1] for k in group], [after[k][r - 1] for k in group])
            for r in at
        }
        for name, group in groups.items()
    }


def report_lines(table: dict[str, dict[int, Paired]], at: Sequence[int]) -> list[str]:
    """One line per group: worlds, then per R ``before -> after (diff ± se)``."""
    lines = [
        "regret % (mean over worlds), before -> after, paired difference ± s.e. (negative = better)"
    ]
    for name, by_r in table.items():
        cells = [
            f"R{r} {p.before:5.2f} -> {p.after:5.2f} ({p.difference:+.2f} ± {p.standard_error:.2f})"
            for r, p in by_r.items()
        ]
        worlds = next(iter(by_r.values())).worlds if by_r else 0
        lines.append(f"  {name:<13}{worlds:>4}  " + "   ".join(cells))
    return lines


def main(argv: Sequence[str] | None = None) -> dict[str, dict[int, Paired]]:
    """Pair the files, print the table."""
    parser = argparse.ArgumentParser(description="Pair two closed-loop --json outputs by world.")
    parser.add_argument("--before", type=Path, nargs="+", required=True)
    parser.add_argument("--after", type=Path, nargs="+", required=True)
    parser.add_argument("--method", default="Ordo", help="the sequential method compared")
    parser.add_argument("--at", type=int, nargs="+", default=[2, 4, 8], help="runs R")
    args = parser.parse_args(argv)
    table = compare(
        load_regrets(args.before, args.method), load_regrets(args.after, args.method), args.at
    )
    print("\n".join(report_lines(table, args.at)))
    return table


if __name__ == "__main__":
    main()
