"""The set-up of serving processes: a settled heap, and FastAPI's telemetry hooks."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from opentelemetry import trace

from ordo_server.app.metrics import fastapi_telemetry
from ordo_server.app.runtime import YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def collector_restored() -> Iterator[None]:
    """This test process's collector as it was: thresholds, and nothing left frozen."""
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.mark.usefixtures("collector_restored")
def test_a_settled_heap_is_frozen_and_its_young_threshold_set() -> None:
    _, middle, old = gc.get_threshold()
    settle_heap()
    assert gc.get_freeze_count() > 10_000  # the modules and what they hold
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)


@pytest.mark.usefixtures("collector_restored")
def test_cycles_made_after_settling_are_still_collected_on_their_own() -> None:
    settle_heap()
    frozen = gc.get_freeze_count()
    cycle = _Cycle()
    alive = weakref.ref(cycle)
    del cycle
    assert alive() is not None  # a cycle: reference counting alone never frees it
    # Enough new tracked objects for an automatic collection of the young generation.
    kept: list[list[int]] = [[] for _ in range(3 * YOUNG_THRESHOLD)]
    assert alive() is None
    assert gc.get_freeze_count() == frozen
    del kept


def test_fastapi_telemetry_is_off_without_a_tracer_provider() -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert fastapi_telemetry() == {"tracing": False, "metrics": False, "logs": False}


def test_fastapi_telemetry_is_on_with_an_installed_tracer_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", trace.NoOpTracerProvider)
    assert fastapi_telemetry() == {"tracing": True, "metrics": True, "logs": True}
