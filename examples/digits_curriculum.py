"""A real model on real data, trained one task per stage in the order Ordo gives.

Data: scikit-learn's bundled handwritten digits (``load_digits``: 1,797 8x8 images, shipped with
the package, nothing downloaded), split into five tasks, one per digit pair: 0v1, 2v3, 4v5, 6v7,
8v9. Model: one linear ``SGDClassifier`` over all ten classes, trained with ``partial_fit`` on
one task's images per stage. A task's score is the accuracy on its held-out images, choosing
between the pair's two classes; training later pairs moves the shared weights and erodes earlier
pairs: measured forgetting.

The script:

1. creates a project with the five tasks and a trainer key;
2. trains ``--runs`` runs in the order Ordo gives (adaptive: re-planned after each report;
   Thompson sampling in all but the last run, which exploits), evaluating every task after each
   stage and reporting the accuracies through the client;
3. trains ``--random-runs`` runs in random orders, the same way but without Ordo (every run
   starts from the same initial model with the same data shuffles: only the order differs);
4. prints the measured backward transfer (BWT: mean over the tasks trained before the last of
   final accuracy minus accuracy right after that task's own stage; negative = forgetting) and
   the final mean accuracy: Ordo's last run against the random orders.

Run it with ``python examples/digits_curriculum.py`` (an in-process Ordo on a temporary SQLite
database) or against a server with ``ORDO_URL`` and a global admin ``ORDO_TOKEN``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split

from ordo_client import Client
from ordo_client.models import Strategy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ordo_local import ordo_server

PAIRS: tuple[tuple[int, int], ...] = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
CLASSES = np.arange(10)


@dataclass(frozen=True)
class DigitTasks:
    """Train and test images split by digit pair; ``keys[i]`` names ``PAIRS[i]``."""

    x_train: npt.NDArray[np.float64]
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.float64]
    y_test: npt.NDArray[np.int64]

    @property
    def keys(self) -> list[str]:
        """Task keys: ``d0v1``, ``d2v3``, ..."""
        return [f"d{a}v{b}" for a, b in PAIRS]


def load_tasks(seed: int) -> DigitTasks:
    """The digits, scaled to [0, 1], 70 % train / 30 % test stratified by class."""
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x / 16.0, y, test_size=0.3, random_state=seed, stratify=y
    )
    return DigitTasks(x_train, y_train, x_test, y_test)


def new_model(seed: int) -> SGDClassifier:
    """A linear SVM trained by SGD at a constant step: simple, fast, and it forgets."""
    return SGDClassifier(
        loss="hinge", alpha=1e-4, learning_rate="constant", eta0=0.05, random_state=seed
    )


def train_stage(
    model: SGDClassifier, data: DigitTasks, task: int, *, epochs: int, rng: np.random.Generator
) -> None:
    """One stage: ``epochs`` shuffled passes over one digit pair's training images."""
    rows = np.flatnonzero(np.isin(data.y_train, PAIRS[task]))
    for _ in range(epochs):
        order = rng.permutation(rows)
        model.partial_fit(data.x_train[order], data.y_train[order], classes=CLASSES)


def evaluate(model: SGDClassifier, data: DigitTasks) -> list[float]:
    """Accuracy on each pair's test images, choosing between that pair's two classes."""
    scores = []
    for pair in PAIRS:
        rows = np.isin(data.y_test, pair)
        if hasattr(model, "coef_"):
            margins = model.decision_function(data.x_test[rows])[:, list(pair)]
        else:  # an untrained model has all-zero weights: it always picks the first class
            margins = np.zeros((int(rows.sum()), 2))
        predicted = np.asarray(pair)[margins.argmax(axis=1)]
        scores.append(float(np.mean(predicted == data.y_test[rows])))
    return scores


@dataclass(frozen=True)
class RunResult:
    """One run: its order, final accuracies and measured backward transfer."""

    order: list[str]
    final: list[float]
    bwt: float

    @property
    def final_mean(self) -> float:
        """Mean final accuracy over tasks."""
        return float(np.mean(self.final))


def backward_transfer(
    order: Sequence[int], after_own: dict[int, float], final: list[float]
) -> float:
    """Mean over all tasks but the last trained of (final - right after its own stage)."""
    return float(np.mean([final[t] - after_own[t] for t in order[:-1]]))


def ordo_run(
    client: Client,
    project_id: str,
    data: DigitTasks,
    *,
    strategy: Strategy,
    client_id: str,
    seed: int,
    epochs: int,
) -> RunResult:
    """A run in the order Ordo gives: next -> train -> evaluate every task -> report."""
    model, rng = new_model(seed), np.random.default_rng(seed)
    index = {key: i for i, key in enumerate(data.keys)}
    run = client.start_run(project_id, adaptive=True, strategy=strategy, client_id=client_id)
    order: list[int] = []
    after_own: dict[int, float] = {}
    with client.lease(run):
        for stage in run.stages():
            if stage.task is not None:
                order.append(index[stage.task])
                train_stage(model, data, order[-1], epochs=epochs, rng=rng)
            scores = evaluate(model, data)
            if order:
                after_own[order[-1]] = scores[order[-1]]
            run.report(stage.stage or 0, dict(zip(data.keys, scores, strict=True)))
    run.complete()
    final = evaluate(model, data)
    return RunResult(
        [data.keys[t] for t in order], final, backward_transfer(order, after_own, final)
    )


def random_run(data: DigitTasks, *, order_seed: int, seed: int, epochs: int) -> RunResult:
    """The same training in a random order, without Ordo."""
    model, rng = new_model(seed), np.random.default_rng(seed)
    order = [int(t) for t in np.random.default_rng(order_seed).permutation(len(PAIRS))]
    after_own = {}
    for task in order:
        train_stage(model, data, task, epochs=epochs, rng=rng)
        after_own[task] = evaluate(model, data)[task]
    final = evaluate(model, data)
    return RunResult(
        [data.keys[t] for t in order], final, backward_transfer(order, after_own, final)
    )


@dataclass(frozen=True)
class Summary:
    """What the script prints (and writes with ``--json``)."""

    ordo_order: list[str]
    ordo_bwt: float
    ordo_final_mean: float
    random_bwt: float
    random_bwt_std: float
    random_final_mean: float
    ordo_runs: int
    random_runs: int


def summarize(ordo: list[RunResult], random_runs: list[RunResult]) -> Summary:
    """Ordo's last (exploiting) run against the mean of the random orders."""
    last = ordo[-1]
    bwts = [r.bwt for r in random_runs]
    return Summary(
        ordo_order=last.order,
        ordo_bwt=last.bwt,
        ordo_final_mean=last.final_mean,
        random_bwt=float(np.mean(bwts)),
        random_bwt_std=statistics.stdev(bwts) if len(bwts) > 1 else 0.0,
        random_final_mean=float(np.mean([r.final_mean for r in random_runs])),
        ordo_runs=len(ordo),
        random_runs=len(random_runs),
    )


def print_summary(summary: Summary) -> None:
    """The comparison as a small text table."""
    print(f"\nOrdo's order in its last run: {' -> '.join(summary.ordo_order)}")
    print(f"{'strategy':<28}{'BWT (forgetting < 0)':>22}{'final mean accuracy':>22}")
    print(f"{'Ordo (last of ' + str(summary.ordo_runs) + ' runs)':<28}"
          f"{summary.ordo_bwt:>22.4f}{summary.ordo_final_mean:>22.4f}")  # fmt: skip
    random_label = f"random order ({summary.random_runs} runs)"
    random_bwt = f"{summary.random_bwt:.4f} ± {summary.random_bwt_std:.4f}"
    print(f"{random_label:<28}{random_bwt:>22}{summary.random_final_mean:>22.4f}")
    change = summary.ordo_bwt - summary.random_bwt
    print(f"BWT with Ordo's order: {change:+.4f} against the mean random order "
          "(positive: less forgetting).")  # fmt: skip


def project_name(seed: int) -> str:
    """The seed alone on the example's own (fresh) server, so the same seed gives the same
    plans (the server seeds them by project name and client_id); a unique name on a shared
    server (``ORDO_URL``), where the project's history makes the results its own anyway."""
    if os.environ.get("ORDO_URL"):
        return f"digits-{seed}-{secrets.token_hex(3)}"
    return f"digits-{seed}"


def main(argv: list[str] | None = None) -> Summary:
    """Train with Ordo's orders and with random orders; print and return the comparison."""
    parser = argparse.ArgumentParser(description="Digits split into tasks, ordered by Ordo.")
    parser.add_argument("--runs", type=int, default=6, help="runs that follow Ordo")
    parser.add_argument("--random-runs", type=int, default=10, help="runs in random orders")
    parser.add_argument("--epochs", type=int, default=3, help="passes over a task per stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    data = load_tasks(args.seed)
    ordo_results = []
    with ordo_server() as (url, admin_token):
        with Client(url, admin_token) as admin:
            project = admin.create_project(project_name(args.seed))
            admin.create_tasks(
                project.id, [{"key": key, "kind": "structured"} for key in data.keys]
            )
            trainer_key = admin.create_api_key(project.id, role="trainer").key
        with Client(url, trainer_key) as client:
            for number in range(args.runs):
                strategy: Strategy = "exploit" if number == args.runs - 1 else "thompson"
                result = ordo_run(client, project.id, data, strategy=strategy,
                                  client_id=f"digits-{number}", seed=args.seed,
                                  epochs=args.epochs)  # fmt: skip
                print(f"Ordo run {number + 1}: {' -> '.join(result.order)}  BWT {result.bwt:+.4f}")
                ordo_results.append(result)
    random_results = [
        random_run(data, order_seed=1000 + number, seed=args.seed, epochs=args.epochs)
        for number in range(args.random_runs)
    ]
    summary = summarize(ordo_results, random_results)
    print_summary(summary)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(summary), indent=2))
    return summary


if __name__ == "__main__":
    main()
