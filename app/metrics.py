"""Prometheus metrics: HTTP metrics, Ordo's domain metrics, and ``/metrics`` behind a token.

HTTP metrics (:class:`HttpMetricsMiddleware`'s) and ``ordo_db_unavailable_total`` live in one
registry per app, so that several apps in one process (tests) do not collide. The domain
metrics are process-wide (services record them without an app at hand); every app's registry
includes them.

Several worker processes: with ``PROMETHEUS_MULTIPROC_DIR`` set (``ordo serve --workers N``
sets a temporary one), every process writes its values to files there and ``/metrics`` sums
them over all workers, whichever worker answers. The variable must be set before the workers
start, and the directory should be empty at start.

``/metrics`` answers the metrics token (``ORDO_METRICS_TOKEN``) or a global admin key as
``Authorization: Bearer``; anything else is a 401 problem+json.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import FastAPI, Request, Response, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.telemetry import TelemetryConfig
from opentelemetry import trace
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
    multiprocess,
)
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ordo_server.app.db import unit_of_work
from ordo_server.app.deps import bearer, database_of
from ordo_server.app.errors import UnauthorizedError
from ordo_server.app.middleware import content_length
from ordo_server.app.repositories import jobs as job_repo
from ordo_server.app.retry import DB_RETRIES
from ordo_server.app.security import token_matches
from ordo_server.app.services.auth import Principal, authenticate
from ordo_server.app.settings import Settings

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
UNMEASURED_PATHS = frozenset({"/healthz", "/readyz", METRICS_PATH})
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# http_request_duration_highr_seconds: many buckets, no labels (for percentiles).
LATENCY_HIGHR_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0,
    7.5, 10.0, 30.0, 60.0,
)  # fmt: skip
SOLVE_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# --- domain metrics (process-wide) ---------------------------------------------------------------

REPORTS_STORED = Counter(
    "ordo_reports_stored_total",
    "Stage reports stored (committed); replays of a stored report are not counted.",
    registry=None,
)
REPLANS = Counter(
    "ordo_replans_total",
    "Adaptive re-plans after a report, by outcome: replanned (a new plan is current) or kept "
    "(the solver could not answer; the run keeps its plan).",
    ["outcome"],
    registry=None,
)
SOLVE_DURATION = Histogram(
    "ordo_solve_duration_seconds",
    "Wall time of successful solves, by the plan's method (the solver's path, or the planner "
    "over it, e.g. ensemble:explore) and kind: schedule (POST .../schedules), run (a run's "
    "first plan) or replan.",
    ["method", "kind"],
    buckets=SOLVE_BUCKETS_S,
    registry=None,
)
STALE_RUNS = Counter(
    "ordo_stale_runs_observed_total",
    "Lease expiries: writes that found a run stale (its lease expired), by what the write was: "
    "report, heartbeat or reclaim (POST .../runs with the run's client_id).",
    ["event"],
    registry=None,
)
RATE_LIMITED = Counter(
    "ordo_rate_limited_requests_total",
    "Requests answered 429: over a per-key or per-address rate limit, or after too many "
    "failed sign-ins from one address.",
    registry=None,
)
REPORT_BATCH_SIZE = Histogram(
    "ordo_report_batch_size",
    "Stage reports stored in one transaction by an API process (app.report_batches): 1 when "
    "reports arrive one at a time, more under load.",
    buckets=(1, 2, 4, 8, 16, 32, 64),
    registry=None,
)
QUEUE_DEPTH = Gauge(
    "ordo_queue_depth",
    "Plan jobs waiting or running (every project), read from the database at each scrape.",
    registry=None,
    multiprocess_mode="mostrecent",
)
DOMAIN_METRICS = (
    REPORTS_STORED,
    REPLANS,
    SOLVE_DURATION,
    STALE_RUNS,
    RATE_LIMITED,
    DB_RETRIES,
    REPORT_BATCH_SIZE,
    QUEUE_DEPTH,
)


def _preset_labels() -> None:
    """Export every known series at 0, so that dashboards and rate() see them from the start."""
    for outcome in ("replanned", "kept"):
        REPLANS.labels(outcome=outcome)
    for name in ("report", "heartbeat", "reclaim"):
        STALE_RUNS.labels(event=name)
    QUEUE_DEPTH.set(0)


_preset_labels()


def solve_kind(*, run_id: str | None, parent_id: str | None) -> str:
    """The ``kind`` label of a solve: ``replan``, ``run`` or ``schedule``."""
    if parent_id is not None:
        return "replan"
    return "run" if run_id is not None else "schedule"


@contextmanager
def timed_solve(*, kind: str) -> Iterator[Callable[[str], None]]:
    """Time a solve; call the yielded function with the solver's method once it succeeded."""
    start = time.perf_counter()

    def done(method: str) -> None:
        SOLVE_DURATION.labels(method=method, kind=kind).observe(time.perf_counter() - start)

    yield done


# --- per-app metrics and the endpoint ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppMetrics:
    """The app's registry (HTTP and domain metrics) and its own counters."""

    registry: CollectorRegistry
    db_unavailable: Counter


def fastapi_telemetry() -> TelemetryConfig:
    """FastAPI's own OpenTelemetry hooks: on when a tracer provider is installed by the time the
    app is built (``opentelemetry-instrument ordo serve``, or an application that sets one), off
    otherwise.

    Ordo's own telemetry is ``/metrics`` and its JSON log lines. Left on with no provider, FastAPI
    asks the global providers on every request whether one has appeared since: a tenth of the
    event loop's time per report under load.
    """
    configured = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return {"tracing": configured, "metrics": configured, "logs": configured}


def install_metrics(app: FastAPI) -> AppMetrics:
    """Instrument ``app`` and serve ``/metrics`` (token or global admin key; not in the spec)."""
    registry = CollectorRegistry()
    app.add_middleware(HttpMetricsMiddleware, metrics=HttpMetrics.in_registry(registry))
    db_unavailable = Counter(
        "ordo_db_unavailable_total",
        "Requests answered 503 because the database was unreachable.",
        registry=registry,
    )
    for collector in DOMAIN_METRICS:
        registry.register(collector)
    app_metrics = AppMetrics(registry=registry, db_unavailable=db_unavailable)
    app.add_api_route(METRICS_PATH, _metrics_endpoint, methods=["GET"], include_in_schema=False)
    return app_metrics


@dataclass(frozen=True, slots=True)
class HttpMetrics:
    """The HTTP series (the names, labels and buckets Prometheus' FastAPI instrumentator gives
    by default, so dashboards built on it keep working)."""

    requests: Counter
    request_size: Summary
    response_size: Summary
    latency_highr: Histogram
    latency: Histogram

    @classmethod
    def in_registry(cls, registry: CollectorRegistry) -> HttpMetrics:
        """The series, registered in ``registry``."""
        return cls(
            requests=Counter(
                "http_requests_total",
                "Total number of requests by method, status and handler.",
                ["method", "status", "handler"],
                registry=registry,
            ),
            request_size=Summary(
                "http_request_size_bytes",
                "Content length of incoming requests by handler (the Content-Length header).",
                ["handler"],
                registry=registry,
            ),
            response_size=Summary(
                "http_response_size_bytes",
                "Content length of outgoing responses by handler (the Content-Length header).",
                ["handler"],
                registry=registry,
            ),
            latency_highr=Histogram(
                "http_request_duration_highr_seconds",
                "Latency with many buckets but no API specific labels.",
                buckets=LATENCY_HIGHR_BUCKETS_S,
                registry=registry,
            ),
            latency=Histogram(
                "http_request_duration_seconds",
                "Latency with only few buckets by handler.",
                ["method", "handler"],
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
        )

    def record(self, scope: Scope, status: int, response_bytes: int, duration_s: float) -> None:
        """One answered request: ``scope``'s route template, method and declared body size."""
        handler = getattr(scope.get("route"), "path", None)
        if handler is None or handler in UNMEASURED_PATHS:
            return
        method = scope["method"]
        self.requests.labels(method, f"{status // 100}xx", handler).inc()
        self.request_size.labels(handler).observe(content_length(scope["headers"]))
        self.response_size.labels(handler).observe(response_bytes)
        self.latency_highr.observe(duration_s)
        self.latency.labels(method, handler).observe(duration_s)


class HttpMetricsMiddleware:
    """Count, size and time each HTTP request under the template of the route that answered it.

    The template is the route the router chose (``scope["route"]``, set while routing), read
    once the app has answered: no second match of the path against every route (what the
    instrumentator this replaces did for each request, before the app ran: with the recording
    of its series, an eighth of an API process's time on `GET next`). A request no route took
    (a 404 of an unknown path) and :data:`UNMEASURED_PATHS` are not recorded, so the labels
    stay as few as the routes. A request whose app raised counts as a 500, the answer
    :class:`starlette.middleware.errors.ServerErrorMiddleware` then sends.
    """

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status, response_bytes = 500, 0

        async def send_recording_status(message: Message) -> None:
            nonlocal status, response_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
                response_bytes = content_length(message.get("headers", ()))
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            duration_s = time.perf_counter() - start
            self.metrics.record(scope, status, response_bytes, duration_s)


async def _metrics_endpoint(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Response:
    """Prometheus metrics (metrics token or global admin key)."""
    settings: Settings = request.app.state.settings
    token = credentials.credentials if credentials is not None else None
    await _authorize(request, settings, token)
    await run_in_threadpool(_read_queue_depth, request)
    app_metrics: AppMetrics = request.app.state.metrics
    return Response(content=render(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)


def render(registry: CollectorRegistry) -> bytes:
    """The exposition text: this registry, or every worker's files in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


async def _authorize(request: Request, settings: Settings, token: str | None) -> None:
    """The metrics token, the configured admin token (no database), then a stored admin key."""
    if not token:
        raise UnauthorizedError()
    metrics_token = settings.metrics_token
    if metrics_token is not None and token_matches(token, metrics_token.get_secret_value()):
        return
    principal = await run_in_threadpool(_stored_principal, request, settings, token)
    if not principal.is_global_admin:
        raise UnauthorizedError("/metrics needs the metrics token or a global admin key.")


def _read_queue_depth(request: Request) -> None:
    """Refresh the queue depth; with the database away, keep the last value (and count it)."""
    try:
        with unit_of_work(database_of(request).read_sessions) as session:
            QUEUE_DEPTH.set(sum(job_repo.queue_depth(session).values()))
    except DBAPIError:
        logger.warning("/metrics: the database is unavailable; ordo_queue_depth not refreshed")


def _stored_principal(request: Request, settings: Settings, token: str) -> Principal:
    with unit_of_work(database_of(request).read_sessions) as session:
        return authenticate(session, token, admin_token=settings.admin_token, touch=False)
