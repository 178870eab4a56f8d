"""Prometheus metrics: default HTTP metrics plus Ordo's own counters, one registry per app."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter
from prometheus_fastapi_instrumentator import Instrumentator, metrics

UNMEASURED_PATHS = ["/healthz", "/readyz", "/metrics"]
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class AppMetrics:
    """Ordo's own metrics (the HTTP ones belong to the instrumentator)."""

    registry: CollectorRegistry
    db_unavailable: Counter


def install_metrics(app: FastAPI) -> AppMetrics:
    """Instrument ``app`` and expose ``/metrics``.

    Each app gets its own registry so that several apps in one process (tests) do not collide.
    """
    registry = CollectorRegistry()
    instrumentator = Instrumentator(
        should_group_status_codes=True,
        should_ignore_untemplated=True,
        excluded_handlers=UNMEASURED_PATHS,
        registry=registry,
    )
    instrumentator.add(metrics.default(latency_lowr_buckets=LATENCY_BUCKETS_S, registry=registry))
    instrumentator.instrument(app).expose(app, include_in_schema=False)
    db_unavailable = Counter(
        "ordo_db_unavailable_total",
        "Requests answered 503 because the database was unreachable.",
        registry=registry,
    )
    return AppMetrics(registry=registry, db_unavailable=db_unavailable)
