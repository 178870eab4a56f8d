"""Health and readiness models."""

from __future__ import annotations

from app.schemas.common import OutputModel


class Health(OutputModel):
    """Liveness: the process answers."""

    status: str = "ok"


class Readiness(OutputModel):
    """Readiness: the database answers and its schema is at the migration head."""

    status: str
    checks: dict[str, str]
