"""Effect estimates (additive sufficient statistics) and the raw observations behind them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, Double, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from ordo_server.models.base import Base, BigIntPK, UTCDateTime, utcnow

EFFECTS = ("F", "B", "L", "G", "D")
PAIR_EFFECTS = ("F", "B")
TASK_EFFECTS = ("L", "G", "D")
_EFFECT_CHECK = "effect IN ('F', 'B', 'L', 'G', 'D')"


class Estimate(Base):
    """Folded sufficient statistics ``(count, sum_x, sum_x2)`` and prior of one effect cell.

    ``F`` and ``B`` cells are ordered pairs ``src != dst``; ``L``, ``G`` and ``D`` are per task
    with ``src_task_id == dst_task_id``. Reports do not write here: they append a ``StatDelta``,
    and a fold adds the deltas in id order. The current statistics are these rows plus the
    project's unfolded deltas. A NULL prior means "use the project default".
    """

    __tablename__ = "ordo_estimates"
    __table_args__ = (
        CheckConstraint(_EFFECT_CHECK, name="effect"),
        CheckConstraint(
            "prior_source IN ('imported', 'empirical', 'default')", name="prior_source"
        ),
        CheckConstraint("prior_var IS NULL OR prior_var > 0", name="prior_var_positive"),
        CheckConstraint("noise_var IS NULL OR noise_var > 0", name="noise_var_positive"),
    )

    project_id: Mapped[str] = mapped_column(
        ForeignKey("ordo_projects.id", ondelete="CASCADE"), primary_key=True
    )
    effect: Mapped[str] = mapped_column(String(1), primary_key=True)
    src_task_id: Mapped[str] = mapped_column(
        ForeignKey("ordo_tasks.id", ondelete="CASCADE"), primary_key=True
    )
    dst_task_id: Mapped[str] = mapped_column(
        ForeignKey("ordo_tasks.id", ondelete="CASCADE"), primary_key=True
    )
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    sum_x: Mapped[float] = mapped_column(Double, default=0.0)
    sum_x2: Mapped[float] = mapped_column(Double, default=0.0)
    prior_mean: Mapped[float | None] = mapped_column(Double)
    prior_var: Mapped[float | None] = mapped_column(Double)
    prior_source: Mapped[str] = mapped_column(String(16), default="default")
    noise_var: Mapped[float | None] = mapped_column(Double)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Observation(Base):
    """One raw measurement of an effect, append-only: estimates can always be recomputed."""

    __tablename__ = "ordo_observations"
    __table_args__ = (CheckConstraint(_EFFECT_CHECK, name="effect"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("ordo_projects.id", ondelete="CASCADE"), index=True
    )
    run_id: Mapped[str | None] = mapped_column(
        ForeignKey("ordo_runs.id", ondelete="CASCADE"), index=True
    )
    report_id: Mapped[str | None] = mapped_column(
        ForeignKey("ordo_stage_reports.id", ondelete="CASCADE"), index=True
    )
    effect: Mapped[str] = mapped_column(String(1))
    src_task_id: Mapped[str] = mapped_column(ForeignKey("ordo_tasks.id", ondelete="CASCADE"))
    dst_task_id: Mapped[str] = mapped_column(ForeignKey("ordo_tasks.id", ondelete="CASCADE"))
    value: Mapped[float] = mapped_column(Double)
    # Covariates of an ``L`` observation (solver.estimation.Observation); NULL otherwise.
    uplift: Mapped[float | None] = mapped_column(Double)
    entropy_shift: Mapped[float | None] = mapped_column(Double)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LevelStats(Base):
    """Additive statistics of one task's ``L`` observations against their covariates.

    ``y`` is the level, ``u`` the uplift and ``h`` the entropy shift of each observation that
    carries both covariates (``solver.estimation.LevelRegressionStats``); like ``Estimate`` they
    are folded from ``StatDelta`` rows.
    """

    __tablename__ = "ordo_level_stats"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("ordo_projects.id", ondelete="CASCADE"), primary_key=True
    )
    task_id: Mapped[str] = mapped_column(
        ForeignKey("ordo_tasks.id", ondelete="CASCADE"), primary_key=True
    )
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    sum_u: Mapped[float] = mapped_column(Double, default=0.0)
    sum_h: Mapped[float] = mapped_column(Double, default=0.0)
    sum_uu: Mapped[float] = mapped_column(Double, default=0.0)
    sum_uh: Mapped[float] = mapped_column(Double, default=0.0)
    sum_hh: Mapped[float] = mapped_column(Double, default=0.0)
    sum_y: Mapped[float] = mapped_column(Double, default=0.0)
    sum_uy: Mapped[float] = mapped_column(Double, default=0.0)
    sum_hy: Mapped[float] = mapped_column(Double, default=0.0)
    sum_y2: Mapped[float] = mapped_column(Double, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class StatDelta(Base):
    """The statistics one observing report adds, appended in the report's transaction.

    ``cells`` holds ``[effect, src_task_id, dst_task_id, count, sum_x, sum_x2]`` rows and
    ``levels`` ``[task_id, count, *LEVEL_SUMS]`` rows. A report inserts one row and updates no
    shared row, so reports of one project never wait for each other. A fold
    (``app.services.statistics``) deletes deltas, adds them to ``Estimate`` and ``LevelStats``
    in id order and adds their number to the project's ``estimates_version``: the version a
    reader sees is that column plus the number of unfolded deltas.
    """

    __tablename__ = "ordo_stat_deltas"
    __table_args__ = (Index("ix_ordo_stat_deltas_project_id_id", "project_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("ordo_projects.id", ondelete="CASCADE"))
    cells: Mapped[list[Any]] = mapped_column(JSON)
    levels: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
