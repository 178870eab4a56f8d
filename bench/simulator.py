"""Random worlds for the closed-loop benchmark, on the training dynamics of ``app.simulation``.

The dynamics (latent skills, saturating gains, interference, entropy, noisy evaluations) have
one home, :mod:`app.simulation`, shared with ``ordo demo``; this module re-exports its names and
adds what only the benchmark needs: :func:`draw_world`, whose every parameter is drawn per seed
(evaluation noise ~1-3 points, the standard error of a few hundred test items), and the
exhaustive :func:`oracle` (``n <= 8``).

Scores are utilities in ``[0, 1]`` (higher is better); the objective is the final mean utility
over tasks, noise-free for scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ordo_server.app import simulation
from ordo_server.app.simulation import (
    Evaluation,
    FloatArray,
    IntArray,
    Simulator,
    WorldParams,
    final_scores,
    train_batch,
    true_scores,
)
from ordo_server.solver.estimation import TaskKind

__all__ = [
    "ORACLE_MAX_TASKS",
    "Evaluation",
    "OracleResult",
    "Simulator",
    "WorldParams",
    "all_orders",
    "draw_world",
    "final_scores",
    "oracle",
    "train_batch",
    "true_scores",
]

_STRUCTURED_NAMES = ("math", "code", "logic", "science", "tabular", "puzzles", "sql", "physics")
_OPEN_NAMES = ("creative_writing", "dialogue", "general_qa", "summarization", "roleplay", "poetry")
ORACLE_MAX_TASKS = 8


def draw_world(n: int, seed: int) -> WorldParams:
    """Draw a world of ``n`` tasks (``4 <= n <= 14``) from its seed."""
    if not 4 <= n <= 14:
        raise ValueError("n must be between 4 and 14")
    rng = np.random.default_rng(seed)
    n_structured = int(np.clip(rng.integers(n // 2 - 1, n // 2 + 2), 2, n - 2))
    # Kinds in a random index order, so no solver tie-break can favour one kind by accident.
    is_open = rng.permutation(np.arange(n) >= n_structured)
    kinds = tuple(TaskKind.OPEN_ENDED if flag else TaskKind.STRUCTURED for flag in is_open)
    structured_names = iter(rng.permutation(_STRUCTURED_NAMES))
    open_names = iter(rng.permutation(_OPEN_NAMES))
    names = tuple(str(next(open_names if flag else structured_names)) for flag in is_open)
    m = n + 3
    reasoning, expression, general = n, n + 1, n + 2
    loadings = np.zeros((n, m))
    for j in range(n):
        loadings[j, j] = rng.uniform(0.4, 0.7)
        loadings[j, expression if is_open[j] else reasoning] = rng.uniform(0.1, 0.3)
        loadings[j, general] = rng.uniform(0.05, 0.15)
        if rng.random() < 0.5:
            other = int(rng.choice([t for t in range(n) if t != j]))
            loadings[j, other] += rng.uniform(0.05, 0.2)
    loadings /= loadings.sum(axis=1, keepdims=True)
    conflict = np.where(rng.random((m, m)) < 0.2, rng.uniform(0.1, 0.5, (m, m)), 0.0)
    np.fill_diagonal(conflict, 0.0)
    return WorldParams(
        names=names,
        kinds=kinds,
        loadings=loadings,
        skill0=rng.uniform(0.05, 0.35, m),
        learn_rate=rng.uniform(0.5, 0.85, n),
        conflict=conflict,
        decay=rng.uniform(0.01, 0.06, n),
        floor=rng.uniform(0.0, 0.2, n),
        ceiling=rng.uniform(0.6, 0.95, n),
        entropy0=1.0,
        entropy_max=1.6,
        entropy_step=np.where(is_open, rng.uniform(0.15, 0.4, n), rng.uniform(0.15, 0.35, n)),
        entropy_need=np.where(is_open, rng.uniform(0.7, 1.0, n), 0.0),
        entropy_power=np.where(is_open, rng.uniform(0.3, 0.8, n), 0.0),
        entropy_report_factor=rng.uniform(0.8, 1.2, n),
        noise_sd=rng.uniform(0.01, 0.03, n),
        entropy_noise_sd=0.02,
    )


def all_orders(n: int) -> IntArray:
    """Every permutation of ``0..n-1``, shape (n!, n), lexicographic (``n <= 8``)."""
    if n > ORACLE_MAX_TASKS:
        raise ValueError(f"exhaustive search is limited to n <= {ORACLE_MAX_TASKS}")
    return simulation.all_orders(n)


@dataclass(frozen=True, slots=True)
class OracleResult:
    """Exhaustive search over every order: the best, and the whole distribution."""

    best_order: tuple[int, ...]
    best_utility: float
    orders: IntArray  # (n!, n)
    utilities: FloatArray  # (n!,), final mean utility of each order


def oracle(params: WorldParams) -> OracleResult:
    """Best order by the noise-free final mean utility, exhaustive over all ``n!`` orders."""
    orders = all_orders(params.n)
    utilities = final_scores(params, orders).mean(axis=1)
    best = int(np.argmax(utilities))
    return OracleResult(
        best_order=tuple(int(t) for t in orders[best]),
        best_utility=float(utilities[best]),
        orders=orders,
        utilities=utilities,
    )
