"""Schedules: an immutable, versioned history of solved orders per project."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ordo_server.models.base import Base, UTCDateTime, new_id, utcnow


class Schedule(Base):
    """One solve's answer; never updated. ``version`` is a per-project sequence."""

    __tablename__ = "ordo_schedules"
    __table_args__ = (
        UniqueConstraint("project_id", "version"),
        # One plan per (run, stage): a job run twice, or by two workers, stores one schedule.
        # An index, not a constraint: SQLite adds it without rebuilding the table.
        Index("ux_ordo_schedules_run_stage", "run_id", "run_stage", unique=True),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("ordo_projects.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("ordo_schedules.id", ondelete="SET NULL")
    )
    # Runs point at their current schedule and schedules at the run that asked for them: a
    # cycle, so this side is added after both tables exist (use_alter).
    run_id: Mapped[str | None] = mapped_column(
        ForeignKey("ordo_runs.id", ondelete="SET NULL", use_alter=True), index=True
    )
    # The stage after which the run asked for this plan (0: its first plan); None: no run's.
    run_stage: Mapped[int | None] = mapped_column(Integer)
    estimates_version: Mapped[int] = mapped_column(BigInteger)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    order: Mapped[list[str]] = mapped_column(JSON)
    objective: Mapped[float] = mapped_column(Double)
    bound: Mapped[float | None] = mapped_column(Double)
    gap: Mapped[float | None] = mapped_column(Double)
    status: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(32))
    wall_time_s: Mapped[float] = mapped_column(Double)
    predicted: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
