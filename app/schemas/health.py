"""Health and readiness models."""

from __future__ import annotations

from pydantic import ConfigDict, JsonValue

from ordo_server.app.schemas.common import OutputModel

_HEALTH_EXAMPLE: dict[str, JsonValue] = {"status": "ok"}


class Health(OutputModel):
    """Liveness: the process answers."""

    model_config = ConfigDict(json_schema_extra={"examples": [_HEALTH_EXAMPLE]})

    status: str = "ok"


_READINESS_EXAMPLE: dict[str, JsonValue] = {
    "status": "ok",
    "checks": {"database": "ok", "schema": "ok"},
}


class Readiness(OutputModel):
    """Readiness: the database answers and its schema is at the migration head."""

    model_config = ConfigDict(json_schema_extra={"examples": [_READINESS_EXAMPLE]})

    status: str
    checks: dict[str, str]
