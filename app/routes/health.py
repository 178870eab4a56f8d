"""Liveness and readiness probes (no auth; excluded from metrics)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from ordo_server.app.db import Database, schema_status
from ordo_server.app.errors import ErrorCode, problem_content, problem_response
from ordo_server.app.retry import RetryingRoute
from ordo_server.app.schemas.health import Health, Readiness

logger = logging.getLogger(__name__)
router = APIRouter(route_class=RetryingRoute, tags=["health"])


@router.get("/healthz", operation_id="healthz", summary="Check that the server is alive")
def healthz() -> Health:
    """Liveness: answers without touching the database."""
    return Health()


@router.get(
    "/readyz",
    operation_id="readyz",
    summary="Check that the server can serve requests",
    response_model=Readiness,
    responses={
        503: {
            "description": "The database is unreachable or its schema is not at head.",
            "content": problem_content(503, ["not_ready"]),
        }
    },
)
async def readyz(request: Request) -> Readiness | JSONResponse:
    """Readiness: the database answers and its schema is at the migration head."""
    database: Database = request.app.state.database
    checks = await run_in_threadpool(_checks, database)
    if all(value == "ok" for value in checks.values()):
        return Readiness(status="ok", checks=checks)
    return problem_response(
        503,
        "Not ready: " + "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok"),
        code=ErrorCode.NOT_READY,
        headers={"Retry-After": str(request.app.state.settings.retry_after_s)},
        extra={"checks": checks},
    )


def _checks(database: Database) -> dict[str, str]:
    try:
        status = schema_status(database.engine)
    except SQLAlchemyError as exc:
        logger.warning("readiness: database unreachable: %s", exc.__class__.__name__)
        return {"database": "unreachable", "schema": "unknown"}
    if status.at_head:
        return {"database": "ok", "schema": "ok"}
    current = ",".join(status.current) or "empty"
    head = ",".join(status.head)
    return {"database": "ok", "schema": f"at {current}, head is {head}: run `ordo db upgrade`"}
