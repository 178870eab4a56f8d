"""Tasks: the items a schedule orders."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Double, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ordo_server.models.base import Base, UTCDateTime, new_id, utcnow


class Task(Base):
    """One trainable task; ``index`` is its stable row/column in every matrix (0..n-1)."""

    __tablename__ = "ordo_tasks"
    __table_args__ = (
        UniqueConstraint("project_id", "key"),
        UniqueConstraint("project_id", "index"),
        CheckConstraint("kind IN ('structured', 'open_ended', 'other')", name="kind"),
        CheckConstraint("reward IN ('verifiable', 'preference', 'other')", name="reward"),
        CheckConstraint("goal IN ('maximize', 'minimize')", name="goal"),
        CheckConstraint("scale > 0", name="scale_positive"),
        CheckConstraint("weight >= 0", name="weight_non_negative"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("ordo_projects.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(100))
    index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(16), default="other")
    reward: Mapped[str] = mapped_column(String(16), default="other")
    goal: Mapped[str] = mapped_column(String(16), default="maximize")
    scale: Mapped[float] = mapped_column(Double, default=1.0)
    weight: Mapped[float] = mapped_column(Double, default=1.0)
    # `metadata` is reserved by the declarative base, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
