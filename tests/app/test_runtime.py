"""The set-up of serving processes: a settled heap, FastAPI's telemetry hooks, and the job
worker's lower CPU priority (a real ``ordo worker`` process)."""

from __future__ import annotations

import gc
import os
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from pydantic import ValidationError

from ordo_server.app.metrics import fastapi_telemetry
from ordo_server.app.runtime import YOUNG_THRESHOLD, settle_heap
from ordo_server.app.settings import Settings
from tests.conftest import migrated_sqlite_url, worker_process


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


# --- the job worker's CPU priority ----------------------------------------------------------------

PROC = Path("/proc")


def _niceness_of_threads(pid: int) -> set[int]:
    """The niceness of each thread of process ``pid`` (``/proc/<pid>/task/*/stat``, field 19)."""
    values = set()
    for task in (PROC / str(pid) / "task").iterdir():
        stat = (task / "stat").read_text()
        values.add(int(stat[stat.rindex(")") + 2 :].split()[16]))
    return values


@pytest.mark.skipif(not (PROC / "self" / "task").is_dir(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("nice", [0, 7])
def test_a_job_worker_runs_every_thread_at_the_configured_lower_priority(
    tmp_path: Path, nice: int
) -> None:
    url = migrated_sqlite_url(tmp_path / "worker.sqlite")
    own = os.nice(0)  # this process's niceness: the worker starts at it
    with worker_process(url, {"ORDO_WORKER_NICE": str(nice)}, ready=True) as worker:
        time.sleep(0.3)  # its threads started
        threads = _niceness_of_threads(worker.pid)
    assert threads == {min(own + nice, 19)}


def test_a_niceness_outside_0_to_19_is_refused() -> None:
    for wrong in (-1, 20):
        with pytest.raises(ValidationError, match="worker_nice"):
            Settings(worker_nice=wrong)
