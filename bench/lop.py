"""LOP engine benchmark on LOLIB instances against best-known values (prints; not a test).

Usage::

    python -m bench.lop [--sets IO,SGB,MB,RandA1,xLOLIB] [--time-limit S] [--instances DIR]
                        [--seed K] [--seeds R] [--workers W] [--only NAME[,NAME...]]

Instances and ``best_known.csv`` come from ``../shared/benchmarks/lop`` relative to the repository
root, or ``$ORDO_LOP_INSTANCES``, or ``--instances``. Without ``--time-limit`` each set gets the
budget of its target (issue 3): IO 10 s (must be proven well before), SGB 60 s (optimum within
5 s, proven within 60 s), MB, RandA1 and xLOLIB 10 s.

One row per instance, then one summary line per set; a CSV goes to ``bench/out/``. With
``--seeds R`` every instance is solved with seeds ``K .. K+R-1`` (one 10 s run depends much on
the seed and on the machine's timing) and, after the per-seed summaries, one line per set gives
the distribution over seeds of the set's mean gap and of its worst instance gap.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ordo_server.solver.lop import solve_lop
from ordo_server.solver.types import FloatMatrix

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INSTANCES = REPO_ROOT.parent / "shared" / "benchmarks" / "lop"
OUT_DIR = REPO_ROOT / "bench" / "out"
SETS = ("IO", "SGB", "MB", "RandA1", "xLOLIB")
DEFAULT_TIME_LIMIT_S = {"IO": 10.0, "SGB": 60.0, "MB": 10.0, "RandA1": 10.0, "xLOLIB": 10.0}
TARGETS = {
    "IO": "all proven; median <= 0.5 s, none over 3 s",
    "SGB": "optimum within 5 s; proven within 60 s",
    "MB": "optimum within 5 s",
    "RandA1": "within 0.05 % of best known in 10 s",
    "xLOLIB": "within 0.10 % of best known in 10 s",
}


@dataclass(frozen=True, slots=True)
class Instance:
    name: str
    set_name: str
    n: int
    best_known: float
    optimum_known: bool


@dataclass(frozen=True, slots=True)
class Row:
    instance: Instance
    seed: int
    value: float
    bound: float
    proven: bool
    method: str
    time_to_best_s: float
    total_s: float

    @property
    def gap_pct(self) -> float:
        return 100.0 * (self.instance.best_known - self.value) / abs(self.instance.best_known)


def read_matrix(path: Path) -> FloatMatrix:
    """LOLIB file: ``n`` then ``n * n`` whitespace-separated numbers, row by row."""
    tokens = path.read_text().split()
    n = int(tokens[0])
    return np.array(tokens[1 : 1 + n * n], dtype=np.float64).reshape(n, n)


def read_instances(folder: Path) -> list[Instance]:
    with (folder / "best_known.csv").open() as handle:
        return [
            Instance(
                name=row["instance"],
                set_name=row["source"].split("|")[0].strip(),
                n=int(row["n"]),
                best_known=float(row["best_known"]),
                optimum_known=row["proven_optimal"] == "yes",
            )
            for row in csv.DictReader(handle)
        ]


def run_one(
    folder: Path, instance: Instance, *, time_limit_s: float, seed: int, workers: int
) -> Row:
    weights = read_matrix(folder / instance.name)
    started = time.perf_counter()
    result = solve_lop(weights, time_limit_s=time_limit_s, seed=seed, num_workers=workers)
    total = time.perf_counter() - started
    return Row(
        instance=instance,
        seed=seed,
        value=result.value,
        bound=result.bound,
        proven=result.proven_optimal,
        method=result.method,
        time_to_best_s=result.time_to_best_s,
        total_s=total,
    )


def print_row(row: Row) -> None:
    inst = row.instance
    print(
        f"{inst.set_name:<7} {inst.name:<16} {inst.n:>4} {row.value:>12.0f}"
        f" {inst.best_known:>12.0f} {row.gap_pct:>8.4f}"
        f" {'yes' if row.proven else 'no':>6} {row.method:>9}"
        f" {row.time_to_best_s:>8.2f} {row.total_s:>8.2f}",
        flush=True,
    )


def summary_line(set_name: str, rows: list[Row]) -> str:
    totals = [r.total_s for r in rows]
    to_best = [r.time_to_best_s for r in rows]
    gaps = [r.gap_pct for r in rows]
    reached = sum(r.value >= r.instance.best_known for r in rows)
    proven = sum(r.proven for r in rows)
    return (
        f"{set_name}: {len(rows)} instances; total s median {statistics.median(totals):.2f}"
        f" worst {max(totals):.2f}; to-best s median {statistics.median(to_best):.2f}"
        f" worst {max(to_best):.2f}; best known reached {reached}/{len(rows)};"
        f" proven {proven}/{len(rows)}; gap % mean {statistics.fmean(gaps):.4f}"
        f" worst {max(gaps):.4f}   [target: {TARGETS.get(set_name, '-')}]"
    )


def over_seeds_line(set_name: str, rows: list[Row]) -> str:
    """Distribution over seeds of the set's mean and worst gap, and each instance's mean gap."""
    seeds = sorted({r.seed for r in rows})
    means = [statistics.fmean(r.gap_pct for r in rows if r.seed == s) for s in seeds]
    worsts = [max(r.gap_pct for r in rows if r.seed == s) for s in seeds]
    names = sorted({r.instance.name for r in rows}, key=lambda name: (len(name), name))
    per_instance = ", ".join(
        f"{name} {statistics.fmean(r.gap_pct for r in rows if r.instance.name == name):.4f}"
        for name in names
    )
    return (
        f"{set_name} over {len(seeds)} seeds: set gap % mean {statistics.fmean(means):.4f}"
        f" median {statistics.median(means):.4f} worst seed {max(means):.4f};"
        f" worst-instance gap % median {statistics.median(worsts):.4f};"
        f" per instance mean gap %: {per_instance}"
    )


def write_csv(rows: list[Row]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"lop-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "set",
                "seed",
                "instance",
                "n",
                "value",
                "best_known",
                "gap_pct",
                "bound",
                "proven_optimal",
                "method",
                "time_to_best_s",
                "total_s",
            ]
        )
        for r in rows:
            writer.writerow(
                [
                    r.instance.set_name,
                    r.seed,
                    r.instance.name,
                    r.instance.n,
                    f"{r.value:.0f}",
                    f"{r.instance.best_known:.0f}",
                    f"{r.gap_pct:.5f}",
                    f"{r.bound:.1f}",
                    "yes" if r.proven else "no",
                    r.method,
                    f"{r.time_to_best_s:.3f}",
                    f"{r.total_s:.3f}",
                ]
            )
    return path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated set names")
    parser.add_argument("--only", default="", help="comma-separated instance names")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds per instance")
    parser.add_argument(
        "--instances",
        type=Path,
        default=Path(os.environ.get("ORDO_LOP_INSTANCES", DEFAULT_INSTANCES)),
        help="folder with the LOLIB files and best_known.csv",
    )
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument(
        "--seeds", type=int, default=1, help="number of seeds (from --seed), each a full pass"
    )
    parser.add_argument("--workers", type=int, default=2)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    wanted_sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    instances = [
        inst
        for inst in read_instances(args.instances)
        if inst.set_name in wanted_sets and (not only or inst.name in only)
    ]
    instances.sort(key=lambda inst: (wanted_sets.index(inst.set_name), inst.n, inst.name))
    print(
        f"{'set':<7} {'instance':<16} {'n':>4} {'value':>12} {'best known':>12} {'gap %':>8}"
        f" {'proven':>6} {'method':>9} {'to best':>8} {'total s':>8}"
    )
    rows: list[Row] = []
    seeds = range(args.seed, args.seed + max(1, args.seeds))
    for seed in seeds:
        for inst in instances:
            limit = args.time_limit or DEFAULT_TIME_LIMIT_S.get(inst.set_name, 10.0)
            row = run_one(args.instances, inst, time_limit_s=limit, seed=seed, workers=args.workers)
            print_row(row)
            rows.append(row)
    print()
    for seed in seeds:
        for set_name in wanted_sets:
            set_rows = [r for r in rows if r.instance.set_name == set_name and r.seed == seed]
            if set_rows:
                prefix = f"seed {seed} " if len(seeds) > 1 else ""
                print(prefix + summary_line(set_name, set_rows))
    if len(seeds) > 1:
        print()
        for set_name in wanted_sets:
            set_rows = [r for r in rows if r.instance.set_name == set_name]
            if set_rows:
                print(over_seeds_line(set_name, set_rows))
    print(f"CSV: {write_csv(rows).relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
