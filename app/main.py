"""The FastAPI application factory: ``create_app(settings)``; the engine opens in the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ordo_server import __version__
from ordo_server.app.db import build_engine, make_database
from ordo_server.app.docs import STATIC_URL, install_redoc
from ordo_server.app.errors import (
    ERROR_DESCRIPTIONS,
    PROBLEM_MEDIA_TYPE,
    Problem,
    install_error_handlers,
    problem_content,
)
from ordo_server.app.metrics import fastapi_telemetry, install_metrics
from ordo_server.app.middleware import BodyLimitMiddleware, RequestContextMiddleware
from ordo_server.app.problem_examples import problem_examples
from ordo_server.app.rate_limits import UNLIMITED_PATHS, RateLimitMiddleware, build_rate_limits
from ordo_server.app.report_batches import write_gates
from ordo_server.app.routes import (
    calibration,
    dashboard,
    estimates,
    health,
    predictions,
    projects,
    runs,
    schedules,
    tasks,
)
from ordo_server.app.runtime import settle_heap
from ordo_server.app.services.key_cache import KeyCache
from ordo_server.app.settings import Settings, get_settings
from ordo_server.app.worker import embedded_worker, notification_listener

logger = logging.getLogger(__name__)

API_TITLE = "Ordo"
API_VERSION = __version__  # one version: the package, its API and the client
API_DESCRIPTION = (
    "Curriculum scheduling optimizer: in which order should a training job train its tasks? "
    "Authenticate with `Authorization: Bearer <key>`; errors are RFC 9457 problem+json."
)
OPENAPI_TAGS = [
    {"name": "projects", "description": "Projects: a set of tasks with its own estimates."},
    {"name": "keys", "description": "API keys: admin (manage) or trainer (read and report)."},
    {"name": "tasks", "description": "Tasks: the items a schedule orders."},
    {"name": "estimates", "description": "Priors in, posterior effect estimates out."},
    {"name": "schedules", "description": "Solved orders: an immutable, versioned history."},
    {"name": "predictions", "description": "What-if: predicted utilities of given orders."},
    {"name": "runs", "description": "Training runs: stages, leases, reports, calibration."},
    {"name": "health", "description": "Liveness and readiness probes."},
]
# Requests are matched against the routers in this order, each route in turn (and again by the
# metrics middleware, for the route's name): the trainers' routes (runs: next, heartbeat,
# reports), most of the traffic, come first. No two routers' paths overlap, so the order
# decides no match; the docs pages list operations by tag, in OPENAPI_TAGS order.
ROUTERS = (
    health.router,
    runs.router,
    projects.router,
    tasks.router,
    estimates.router,
    schedules.router,
    predictions.router,
    calibration.router,
    dashboard.router,
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the database for the app's lifetime (connections are made lazily)."""
    settings: Settings = app.state.settings
    engine = build_engine(settings)
    app.state.database = make_database(engine)
    app.state.write_gate, app.state.report_gate = write_gates(settings)
    # Built here, in the server's event loop (the asyncio storage binds its locks to it).
    app.state.rate_limits = build_rate_limits(settings)
    logger.info("ordo started on %s", engine.url.render_as_string(hide_password=True))
    with ExitStack() as stack:
        stack.enter_context(notification_listener(settings.database_url))
        if settings.job_runner == "embedded" and settings.job_thread:
            stack.enter_context(embedded_worker(app.state.database, settings))
        try:
            yield
        finally:
            stack.close()
            engine.dispose()


def create_served_app() -> FastAPI:
    """The app of a serving process (``ordo serve``'s factory): :func:`create_app` from the
    environment, with the process's heap settled (:func:`ordo_server.app.runtime.settle_heap`)."""
    app = create_app()
    settle_heap()
    return app


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; nothing connects to the database until the first request."""
    settings = settings or get_settings()
    app = FastAPIOffline(
        title=API_TITLE,
        version=API_VERSION,
        description=API_DESCRIPTION,
        openapi_tags=OPENAPI_TAGS,
        lifespan=lifespan,
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url=None,
        static_url=STATIC_URL,
        # Swagger UI would send the spec to validator.swagger.io otherwise.
        swagger_ui_parameters={"validatorUrl": None},
        telemetry=fastapi_telemetry(),
    )
    if settings.docs_enabled:
        install_redoc(app)
    app.state.settings = settings
    app.state.key_cache = KeyCache(settings.key_cache_ttl_s)
    for router in ROUTERS:
        app.include_router(router)
    install_error_handlers(app, retry_after_s=settings.retry_after_s)
    app.state.metrics = install_metrics(app)
    if settings.allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    # Oversized bodies never reach routing or auth.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    # Outside the body limit: an address over its budget is answered before its body is read.
    app.add_middleware(RateLimitMiddleware)
    # Outside Starlette's ServerErrorMiddleware too, so that every answer (a 413, a 500) has a
    # request id and an access line.
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: RequestContextMiddleware(build_stack())  # type: ignore[method-assign]
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


_RATE_LIMITED_RESPONSE = {
    "description": ERROR_DESCRIPTIONS[429],
    "headers": {
        "Retry-After": {
            "description": "Seconds until the limit lets the next request in.",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
    "content": problem_content(429),
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The spec, with every error response as problem+json (FastAPI's 422 schema replaced)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    spec = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem_schema.pop("$defs", {}))
    schemas["Problem"] = problem_schema
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path, path_item in spec.get("paths", {}).items():
        for operation in path_item.values():
            if path not in UNLIMITED_PATHS:  # app.rate_limits answers 429 anywhere else
                operation.setdefault("responses", {}).setdefault("429", _RATE_LIMITED_RESPONSE)
            for code, response in operation.get("responses", {}).items():
                if code.isdigit() and int(code) >= 400:
                    content = response.get("content", {})
                    examples = content.get(PROBLEM_MEDIA_TYPE, {}).get("examples")
                    if examples is None and code == "422" and "application/json" in content:
                        examples = problem_examples(422)  # FastAPI's own, for parameters
                    # A response declared without examples stays so (tests/app/test_openapi.py
                    # refuses it): declare errors with error_responses or problem_content.
                    response["content"] = {
                        PROBLEM_MEDIA_TYPE: {"schema": problem_ref}
                        | ({"examples": examples} if examples else {})
                    }
                    if code == "422":  # FastAPI adds its own to operations with parameters
                        response["description"] = ERROR_DESCRIPTIONS[422]
    app.openapi_schema = spec
    return spec
