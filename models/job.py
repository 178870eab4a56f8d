"""Background jobs: plans of runs solved off the request path, by any worker, exactly once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from ordo_server.models.base import Base, BigIntPK, UTCDateTime, utcnow

JOB_STATUSES = ("todo", "doing", "done", "failed")
OPEN = "status IN ('todo', 'doing')"
"""SQL: a job that has not ended (waiting, or claimed and perhaps stalled)."""


class Job(Base):
    """One unit of background work (a run's plan, a long schedule solve), claimed by one worker.

    Lifecycle: ``todo`` -> ``doing`` (claimed; ``locked_until`` is the claim's lease) ->
    ``done`` or ``failed``. A ``doing`` job past ``locked_until`` is claimable again: its worker
    died, or it failed and waits out its retry backoff. At most one ``todo`` job exists per
    run (the partial unique index): a report that finds one pending adds nothing, and the job
    plans for the run's state when it runs (coalescing).
    """

    __tablename__ = "ordo_jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('todo', 'doing', 'done', 'failed')",
            name="status",
        ),
        Index(
            "ux_ordo_jobs_run_todo",
            "run_id",
            unique=True,
            sqlite_where=text("status = 'todo'"),
            postgresql_where=text("status = 'todo'"),
        ),
        # A run's jobs: whether one is pending (every report and ``GET .../next`` asks), and
        # the cascade when a run is deleted. Without it each of those read every job row.
        Index("ix_ordo_jobs_run_id", "run_id"),
        # The open jobs in id order: a claim walks these, not every job ever run (a job stays
        # in the table when it ends). Claims name the predicate literally (``OPEN``), so that
        # a prepared statement's generic plan can use the index too.
        Index(
            "ix_ordo_jobs_open",
            "id",
            sqlite_where=text(OPEN),
            postgresql_where=text(OPEN),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("ordo_projects.id", ondelete="CASCADE"), index=True
    )
    run_id: Mapped[str | None] = mapped_column(ForeignKey("ordo_runs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="todo")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # What the job decided: "planned", "kept", "noop", "superseded" (or the error when failed).
    outcome: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(String(2000))
    request_id: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # A schedule job's answer: {"schedule_id": ...}, or the problem document it failed with.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
