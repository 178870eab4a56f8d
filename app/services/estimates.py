"""Use cases of priors and estimates: import priors, read posteriors as matrices or CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from ordo_server.app.errors import FieldIssue, InvalidInputError
from ordo_server.app.repositories import estimates as estimate_repo
from ordo_server.app.repositories import projects as project_repo
from ordo_server.app.repositories import statistics as stat_repo
from ordo_server.app.repositories import tasks as task_repo
from ordo_server.app.repositories.estimates import EstimateStats, PriorCell
from ordo_server.app.repositories.observations import LevelSums
from ordo_server.app.schemas.estimate import (
    PAIR_EFFECTS,
    Effect,
    EstimatesRead,
    MatrixEstimate,
    PriorEntry,
    PriorMatrix,
    PriorsImported,
    VectorEstimate,
)
from ordo_server.app.schemas.project import ProjectSettings
from ordo_server.app.services import statistics as stat_service
from ordo_server.app.services.auth import ProjectContext
from ordo_server.models import Task
from ordo_server.solver.estimation import (
    EffectEstimates,
    EffectKey,
    EffectKind,
    EstimationConfig,
    LevelRegressionStats,
    Posterior,
    PriorSpec,
    StatsTable,
    SufficientStats,
    TaskKind,
    estimate_effects,
)
from ordo_server.solver.types import FloatMatrix

CSV_HEADER = ("effect", "src", "dst", "mean", "std", "count")


# --- priors ------------------------------------------------------------------------------------


def import_priors(
    session: Session, context: ProjectContext, body: Sequence[PriorEntry] | PriorMatrix
) -> PriorsImported:
    """Write imported priors (long or wide form) and bump the estimates version."""
    tasks = {task.key: task for task in task_repo.list_tasks(session, context.id)}
    if isinstance(body, PriorMatrix):
        cells = _cells_from_matrix(body, tasks)
    else:
        cells = _cells_from_entries(body, tasks)
    estimate_repo.set_priors(session, context.id, cells)
    project_repo.bump_estimates_version(session, context.id)
    version = stat_repo.estimates_version(session, context.id)
    return PriorsImported(imported=len(cells), estimates_version=version)


def _unknown_keys_error(issues: list[FieldIssue], unknown: set[str]) -> InvalidInputError:
    names = ", ".join(sorted(unknown))
    return InvalidInputError(f"Unknown task keys: {names}.", errors=issues)


def _cells_from_entries(entries: Sequence[PriorEntry], tasks: dict[str, Task]) -> list[PriorCell]:
    issues: list[FieldIssue] = []
    unknown: set[str] = set()
    seen: set[tuple[str, str, str]] = set()
    cells: list[PriorCell] = []
    for i, entry in enumerate(entries):
        src_key = _entry_source(entry, i, issues)
        named = [("src", entry.src), ("dst", entry.dst)]
        if entry.effect not in PAIR_EFFECTS:
            named = named[1:]
        for field, key in named:
            if key is not None and key not in tasks:
                unknown.add(key)
                issues.append(FieldIssue(f"[{i}].{field}", f"Unknown task key {key!r}"))
        if src_key is None or src_key not in tasks or entry.dst not in tasks:
            continue
        identity = (entry.effect.value, src_key, entry.dst)
        if identity in seen:
            issues.append(FieldIssue(f"[{i}]", f"Duplicate prior for {'/'.join(identity)}"))
            continue
        seen.add(identity)
        cells.append(
            PriorCell(
                effect=entry.effect.value,
                src_task_id=tasks[src_key].id,
                dst_task_id=tasks[entry.dst].id,
                mean=entry.mean,
                var=entry.std**2,
            )
        )
    if unknown:
        raise _unknown_keys_error(issues, unknown)
    if issues:
        raise InvalidInputError("The priors are invalid; see `errors`.", errors=issues)
    return cells


def _entry_source(entry: PriorEntry, i: int, issues: list[FieldIssue]) -> str | None:
    """The source task key of an entry: its own for pairs, the target for per-task effects."""
    if entry.effect in PAIR_EFFECTS:
        if entry.src is None:
            issues.append(FieldIssue(f"[{i}].src", f"Required for effect {entry.effect.value}"))
        elif entry.src == entry.dst:
            issues.append(FieldIssue(f"[{i}].dst", "Must differ from src"))
            return None
        return entry.src
    if entry.src is not None and entry.src != entry.dst:
        issues.append(FieldIssue(f"[{i}].src", f"Omit src for effect {entry.effect.value}"))
        return None
    return entry.dst


@dataclass(frozen=True, slots=True)
class _Shape:
    """Expected shape of a wide-form array: ``n`` rows, and ``n`` columns when a matrix."""

    n: int
    matrix: bool

    def check(self, field: str, value: object, issues: list[FieldIssue]) -> bool:
        if not isinstance(value, list):
            return False
        is_matrix = bool(value) and isinstance(value[0], list)
        what = (
            f"a matrix of shape ({self.n}, {self.n})"
            if self.matrix
            else f"a vector of {self.n} values"
        )
        if is_matrix != self.matrix:
            issues.append(FieldIssue(field, f"Expected {what}"))
            return False
        if len(value) != self.n:
            issues.append(FieldIssue(field, f"Expected {self.n} rows, got {len(value)}"))
            return False
        ok = True
        for i, row in enumerate(value if self.matrix else []):
            if not isinstance(row, list) or len(row) != self.n:
                got = len(row) if isinstance(row, list) else "a number"
                issues.append(FieldIssue(f"{field}[{i}]", f"Expected {self.n} columns, got {got}"))
                ok = False
        return ok


def _cells_from_matrix(body: PriorMatrix, tasks: dict[str, Task]) -> list[PriorCell]:
    issues: list[FieldIssue] = []
    seen: set[str] = set()
    unknown: set[str] = set()
    for i, key in enumerate(body.tasks):
        if key in seen:
            issues.append(FieldIssue(f"tasks[{i}]", f"Duplicate key {key!r}"))
        elif key not in tasks:
            unknown.add(key)
            issues.append(FieldIssue(f"tasks[{i}]", f"Unknown task key {key!r}"))
        seen.add(key)
    if unknown:
        raise _unknown_keys_error(issues, unknown)
    shape = _Shape(n=len(body.tasks), matrix=body.effect in PAIR_EFFECTS)
    mean_ok = shape.check("mean", body.mean, issues)
    std_ok = not isinstance(body.std, list) or shape.check("std", body.std, issues)
    if issues or not (mean_ok and std_ok):
        raise InvalidInputError("The prior matrix is invalid; see `errors`.", errors=issues)
    ids = [tasks[key].id for key in body.tasks]
    cells = []
    for src, dst, field in _cell_positions(shape):
        mean = _cell(body.mean, src, dst, shape.matrix)
        if mean is None:
            continue
        std = (
            body.std if not isinstance(body.std, list) else _cell(body.std, src, dst, shape.matrix)
        )
        if std is None:
            issues.append(FieldIssue(f"std{field}", "Missing std for a given mean"))
            continue
        cells.append(
            PriorCell(
                effect=body.effect.value,
                src_task_id=ids[src],
                dst_task_id=ids[dst],
                mean=mean,
                var=float(std) ** 2,
            )
        )
    if issues:
        raise InvalidInputError("The prior matrix is invalid; see `errors`.", errors=issues)
    return cells


def _cell_positions(shape: _Shape) -> list[tuple[int, int, str]]:
    if shape.matrix:
        return [(i, j, f"[{i}][{j}]") for i in range(shape.n) for j in range(shape.n) if i != j]
    return [(j, j, f"[{j}]") for j in range(shape.n)]


def _cell(
    values: list[list[float | None]] | list[float | None], i: int, j: int, matrix: bool
) -> float | None:
    if matrix:
        row = values[i]
        assert isinstance(row, list)
        return row[j]
    cell = values[j]
    assert not isinstance(cell, list)
    return cell


# --- estimates ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _EffectPosterior:
    """Posterior of one effect over all cells: ``(n, n)`` arrays (vectors use the diagonal)."""

    mean: FloatMatrix
    std: FloatMatrix
    count: npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class ProjectEstimates:
    """The project's tasks in index order and the posteriors of every effect over them."""

    task_ids: tuple[str, ...]
    keys: tuple[str, ...]
    kinds: tuple[str, ...]  # each task's kind as stored (structured, open_ended, other)
    weights: FloatMatrix
    estimates: EffectEstimates
    imported: dict[EffectKey, PriorSpec]
    version: int  # the estimates version these posteriors come from (folded + deltas)


_TASK_KINDS = {"structured": TaskKind.STRUCTURED, "open_ended": TaskKind.OPEN_ENDED}


def estimation_config(settings: ProjectSettings) -> EstimationConfig:
    """The estimation rules with the project's defaults: every effect ``N(0, prior_std^2)``."""
    prior = PriorSpec(0.0, settings.default_prior_std)
    return EstimationConfig(
        default_priors=dict.fromkeys(EffectKind, prior), noise_sd=settings.default_noise_std
    )


def stats_table(
    cells: Sequence[EstimateStats], levels: Sequence[LevelSums], index: dict[str, int]
) -> StatsTable:
    """The stored statistics as the estimation core's table (tasks by index)."""
    table_cells: dict[EffectKey, SufficientStats] = {}
    for cell in cells:
        if cell.count > 0:
            key = (EffectKind(cell.effect), index[cell.src_task_id], index[cell.dst_task_id])
            table_cells[key] = SufficientStats(cell.count, cell.sum_x, cell.sum_x2)
    table_levels = {
        index[level.task_id]: level_regression_stats(level) for level in levels if level.count
    }
    return StatsTable(table_cells, table_levels)


def level_regression_stats(level: LevelSums) -> LevelRegressionStats:
    """Stored level sums (LEVEL_SUMS order) as the estimation core's statistics."""
    u, h, uu, uh, hh, y, uy, hy, y2 = level.sums
    return LevelRegressionStats(level.count, (u, h), (uu, uh, hh), y, (uy, hy), y2)


def _imported(cells: Sequence[EstimateStats], index: dict[str, int]) -> dict[EffectKey, PriorSpec]:
    return {
        (EffectKind(c.effect), index[c.src_task_id], index[c.dst_task_id]): PriorSpec(
            c.prior_mean, float(np.sqrt(c.prior_var))
        )
        for c in cells
        if c.prior_source == "imported" and c.prior_mean is not None and c.prior_var is not None
    }


def project_estimates(session: Session, context: ProjectContext) -> ProjectEstimates:
    """Posteriors of every effect from the stored statistics (solver.estimation rules).

    Priors: imported, then empirical Bayes by kind pair, then the project default; tasks of
    kind ``other`` are classified from their entropy drift.
    """
    tasks = task_repo.list_tasks(session, context.id)
    index = {task.id: position for position, task in enumerate(tasks)}
    cells, levels = stat_service.current_statistics(session, context.id)
    # Read after the statistics (under their lock or on their snapshot): the same version.
    version = stat_repo.estimates_version(session, context.id)
    imported = _imported(cells, index)
    estimates = estimate_effects(
        stats_table(cells, levels, index),
        kinds=[_TASK_KINDS.get(task.kind) for task in tasks],
        imported=imported,
        config=estimation_config(context.settings),
    )
    return ProjectEstimates(
        task_ids=tuple(task.id for task in tasks),
        keys=tuple(task.key for task in tasks),
        kinds=tuple(task.kind for task in tasks),
        weights=np.array([task.weight for task in tasks], dtype=np.float64),
        estimates=estimates,
        imported=imported,
        version=version,
    )


def _as_cells(posterior: Posterior, count: FloatMatrix) -> _EffectPosterior:
    """A posterior as ``(n, n)`` arrays; per-task effects go on the diagonal."""
    if posterior.mean.ndim == 1:
        return _EffectPosterior(
            mean=np.diag(posterior.mean),
            std=np.diag(posterior.std),
            count=np.diag(count).astype(np.int64),
        )
    return _EffectPosterior(mean=posterior.mean, std=posterior.std, count=count.astype(np.int64))


def _load(
    session: Session, context: ProjectContext
) -> tuple[list[str], dict[Effect, _EffectPosterior], int]:
    current = project_estimates(session, context)
    e = current.estimates
    posteriors = {
        Effect.F: (e.forward, EffectKind.FORWARD),
        Effect.B: (e.backward, EffectKind.BACKWARD),
        Effect.L: (e.level, EffectKind.LEVEL),
        Effect.G: (e.gain, EffectKind.GAIN),
        Effect.D: (e.drift, EffectKind.DRIFT),
    }
    cells = {
        effect: _as_cells(posterior, e.counts[kind])
        for effect, (posterior, kind) in posteriors.items()
    }
    # Without observations the posterior is the imported prior, exactly (no rounding via 1/v).
    for (kind, i, j), prior in current.imported.items():
        cell = cells[Effect(kind.value)]
        if cell.count[i, j] == 0:
            cell.mean[i, j], cell.std[i, j] = prior.mean, prior.std
    return list(current.keys), cells, current.version


def _matrix(p: _EffectPosterior) -> MatrixEstimate:
    n = p.mean.shape[0]

    def off_diagonal(values: npt.NDArray[np.generic]) -> list[list[Any]]:
        rows: list[list[Any]] = values.tolist()
        for i in range(n):
            rows[i][i] = None
        return rows

    return MatrixEstimate(
        mean=off_diagonal(p.mean), std=off_diagonal(p.std), count=off_diagonal(p.count)
    )


def _vector(p: _EffectPosterior) -> VectorEstimate:
    return VectorEstimate(
        mean=np.diagonal(p.mean).tolist(),
        std=np.diagonal(p.std).tolist(),
        count=np.diagonal(p.count).tolist(),
    )


def get_estimates(session: Session, context: ProjectContext) -> EstimatesRead:
    """Posterior mean, std and count of every effect, with the estimates version."""
    keys, posteriors, version = _load(session, context)
    return EstimatesRead(
        version=version,
        tasks=keys,
        F=_matrix(posteriors[Effect.F]),
        B=_matrix(posteriors[Effect.B]),
        L=_vector(posteriors[Effect.L]),
        G=_vector(posteriors[Effect.G]),
        D=_vector(posteriors[Effect.D]),
    )


def estimates_csv(session: Session, context: ProjectContext) -> str:
    """The estimates in long form: ``effect,src,dst,mean,std,count`` (src empty per task)."""
    keys, posteriors, _ = _load(session, context)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    n = len(keys)
    for effect in Effect:
        p = posteriors[effect]
        pair = effect in PAIR_EFFECTS
        for i in range(n):
            for j in range(n) if pair else [i]:
                if pair and i == j:
                    continue
                src = keys[i] if pair else ""
                row = (
                    effect.value,
                    src,
                    keys[j],
                    repr(float(p.mean[i, j])),
                    repr(float(p.std[i, j])),
                    int(p.count[i, j]),
                )
                writer.writerow(row)
    return out.getvalue()
