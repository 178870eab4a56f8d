"""Training runs, their stage reports and the per-task evaluations in each report."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ordo_server.models.base import Base, BigIntPK, UTCDateTime, new_id, utcnow


class Run(Base):
    """One training job following a schedule; holds a lease with a fencing token."""

    __tablename__ = "ordo_runs"
    __table_args__ = (
        UniqueConstraint("project_id", "client_id"),
        CheckConstraint("status IN ('active', 'stale', 'completed', 'failed')", name="status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("ordo_projects.id", ondelete="CASCADE"))
    client_id: Mapped[str | None] = mapped_column(String(200))
    schedule_id: Mapped[str | None] = mapped_column(
        ForeignKey("ordo_schedules.id", ondelete="SET NULL")
    )
    adaptive: Mapped[bool] = mapped_column(Boolean, default=False)
    strategy: Mapped[str] = mapped_column(String(32), default="expected")
    # Outcome model of the run's plans (solver.planning): constant, entropy or state.
    level_model: Mapped[str] = mapped_column(
        String(16), default="constant", server_default="constant"
    )
    status: Mapped[str] = mapped_column(String(16), default="active")
    next_stage: Mapped[int] = mapped_column(Integer, default=0)
    lease_token: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    fail_reason: Mapped[str | None] = mapped_column(String(2000))
    # The creation request, defaults resolved (app.services.runs.creation_request): the same
    # client_id must come with the same request. NULL for runs made before it was kept.
    request: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class StageReport(Base):
    """The evaluations a run reported after stage ``stage`` (0 = baseline); idempotent."""

    __tablename__ = "ordo_stage_reports"
    __table_args__ = (UniqueConstraint("run_id", "stage"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("ordo_projects.id", ondelete="CASCADE"), index=True
    )
    run_id: Mapped[str] = mapped_column(ForeignKey("ordo_runs.id", ondelete="CASCADE"))
    stage: Mapped[int] = mapped_column(Integer)
    task_id: Mapped[str | None] = mapped_column(ForeignKey("ordo_tasks.id", ondelete="CASCADE"))
    body_hash: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    steps: Mapped[int | None] = mapped_column(BigInteger)
    tokens: Mapped[int | None] = mapped_column(BigInteger)
    wall_time_s: Mapped[float | None] = mapped_column(Double)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class StageEvaluation(Base):
    """One task's score in one stage report (raw value and its utility)."""

    __tablename__ = "ordo_stage_evaluations"
    __table_args__ = (UniqueConstraint("report_id", "task_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    report_id: Mapped[str] = mapped_column(ForeignKey("ordo_stage_reports.id", ondelete="CASCADE"))
    # The report's project, repeated (no key of its own: the report's cascade deletes the row),
    # so that a project's history reads its own evaluations by index, not every project's.
    project_id: Mapped[str] = mapped_column(String(36), index=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("ordo_tasks.id", ondelete="CASCADE"))
    value: Mapped[float] = mapped_column(Double)
    utility: Mapped[float] = mapped_column(Double)
    stderr: Mapped[float | None] = mapped_column(Double)
    entropy: Mapped[float | None] = mapped_column(Double)
