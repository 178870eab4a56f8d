"""Requests that wait for a plan hold no worker thread and no pooled connection.

A live server with no worker (``ORDO_JOB_RUNNER=external``) keeps a run's first plan pending,
so every ``GET .../next`` past the baseline waits the whole ``plan_wait_s``. More waiters than
the server has worker threads (anyio's 40) and a pool of two connections: other requests still
answer at once, and every waiter answers 200 with ``plan_pending``. When the wait held a thread
(before), the waiters took every thread for ``plan_wait_s`` and the requests holding a pooled
connection could not finish: at 100 trainers they timed out on the pool (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from ordo_server.app.services import job_events, planning
from tests.conftest import LiveServer, live_server_on

WAITERS = 60  # more than anyio's 40 worker threads
PLAN_WAIT_S = 6.0
TASKS = ("math", "code", "poetry")
# Nobody runs jobs, and two pooled connections: a wait holding one would starve the rest.
NO_WORKER_SMALL_POOL = {
    "ORDO_JOB_RUNNER": "external",
    "ORDO_DB_POOL_SIZE": "2",
    "ORDO_DB_MAX_OVERFLOW": "0",
    "ORDO_DB_POOL_TIMEOUT_S": "2",
}


def _admin(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers=server.admin_headers, timeout=60)


def _project_with_tasks(server: LiveServer, name: str) -> str:
    """A new project of TASKS; its path."""
    with _admin(server) as http:
        project = f"/v1/projects/{http.post('/v1/projects', json={'name': name}).json()['id']}"
        tasks = {"tasks": [{"key": key} for key in TASKS]}
        assert http.post(f"{project}/tasks", json=tasks).is_success
    return project


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_waiting_trainers_hold_no_thread_and_no_connection(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {**NO_WORKER_SMALL_POOL, "ORDO_PLAN_WAIT_S": str(PLAN_WAIT_S)}
    with live_server_on(backend, tmp_path_factory, env=env) as server:
        runs = f"{_project_with_tasks(server, 'waits')}/runs"
        with _admin(server) as http:
            run = http.post(runs, json={"adaptive": True}).json()
            assert run["plan_pending"] is True  # nobody runs jobs here
            lease = {"Ordo-Lease-Token": str(run["lease"]["token"])}
            baseline = {"evaluations": [{"task": key, "value": 0.5} for key in TASKS]}
            assert http.put(
                f"{runs}/{run['id']}/reports/0", json=baseline, headers=lease
            ).is_success

        def wait_for_next(_: int) -> tuple[int, bool, float]:
            started = time.monotonic()
            with _admin(server) as client:
                answer = client.get(f"{runs}/{run['id']}/next")
            return answer.status_code, answer.json().get("plan_pending"), time.monotonic() - started

        with ThreadPoolExecutor(WAITERS) as pool:
            waiting = pool.map(wait_for_next, range(WAITERS))
            time.sleep(1.0)  # every waiter is in its wait now
            with _admin(server) as http:
                started = time.monotonic()
                answers = [http.get(f"{runs}/{run['id']}").status_code for _ in range(5)]
                answers.append(http.get(f"{runs}/{run['id']}/next").status_code)  # a waiter too
                probe_s = time.monotonic() - started - PLAN_WAIT_S
            waited = list(waiting)
    assert answers == [200] * 6
    # Five reads answer while 60 trainers wait: well under the wait they would otherwise queue for.
    assert probe_s < PLAN_WAIT_S / 2, probe_s
    assert [status for status, _, _ in waited] == [200] * WAITERS
    assert all(pending for _, pending, _ in waited)
    assert all(seconds >= PLAN_WAIT_S - 0.5 for _, _, seconds in waited)


SCHEDULE_WAIT_S = 4.0


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_waiting_schedule_requests_hold_no_thread_and_no_connection(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The same for ``POST .../schedules``: no worker solves, so each request waits the whole
    ``schedule_wait_s`` and answers 202 with its job, while other requests answer at once."""
    env = {
        **NO_WORKER_SMALL_POOL,
        "ORDO_SCHEDULE_WAIT_S": str(SCHEDULE_WAIT_S),
        "ORDO_RATE_LIMIT_ENABLED": "false",
    }
    with live_server_on(backend, tmp_path_factory, env=env) as server:
        schedules = f"{_project_with_tasks(server, 'schedule-waits')}/schedules"

        def solve(_: int) -> tuple[int, float]:
            started = time.monotonic()
            with _admin(server) as client:
                answer = client.post(schedules, json={})
            return answer.status_code, time.monotonic() - started

        with ThreadPoolExecutor(WAITERS) as pool:
            waiting = pool.map(solve, range(WAITERS))
            time.sleep(1.0)  # every request is in its wait now
            with _admin(server) as http:
                started = time.monotonic()
                answers = [http.get(schedules).status_code for _ in range(5)]
                probe_s = time.monotonic() - started
            waited = list(waiting)
    assert answers == [200] * 5
    # Five reads answer while 60 requests wait: well under the wait they would otherwise queue for.
    assert probe_s < SCHEDULE_WAIT_S / 2, probe_s
    assert [status for status, _ in waited] == [202] * WAITERS
    assert all(seconds >= SCHEDULE_WAIT_S - 0.5 for _, seconds in waited)


def test_a_change_of_the_relay_wakes_every_waiter_of_the_process_to_look_again() -> None:
    """While the listener relays job ends a waiter looks only when it starts, so a lost relay
    (or one listening again, which missed what ended meanwhile) must wake every waiter."""
    previous = job_events.relay_live()

    async def woken_by(change: bool) -> bool:
        with (
            job_events.async_plan_waiter("run-a") as first,
            job_events.async_plan_waiter("job:7") as second,
        ):
            await asyncio.to_thread(job_events.set_relay_live, change)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(first.wait(), second.wait()), 2.0)
            return first.is_set() and second.is_set()

    try:
        job_events.set_relay_live(False)
        assert asyncio.run(woken_by(True))  # listening again
        assert job_events.relay_live()
        assert not asyncio.run(woken_by(True))  # no change, no wake-up
        assert asyncio.run(woken_by(False))  # the relay is lost
        assert not job_events.relay_live()
    finally:
        job_events.set_relay_live(previous)


@dataclass(frozen=True)
class _Answer:
    plan_pending: bool


def test_a_waiting_next_reads_once_per_wake_up_and_once_at_its_deadline() -> None:
    """``planning.reread_until_planned`` (external runners): with the relay live, the wait is
    one read after the plan's end, or one read at the deadline; without it, a read every
    ``RECHECK_S``. The waiter is registered before the first read, so an end between that read
    and the wait is not missed."""
    previous = job_events.relay_live()
    reads: list[float] = []

    async def wait_for(ends_after_s: float | None, wait_s: float) -> tuple[_Answer, int]:
        reads.clear()
        ended = asyncio.Event()
        loop = asyncio.get_running_loop()
        if ends_after_s is not None:
            loop.call_later(ends_after_s, ended.set)

        def read() -> _Answer:
            reads.append(time.monotonic())
            return _Answer(plan_pending=not ended.is_set())

        with job_events.async_plan_waiter("run-r") as planned:
            if ends_after_s is not None:
                loop.call_later(ends_after_s, job_events.plan_done, "run-r")
            answer = await planning.reread_until_planned(read, planned, wait_s=wait_s)
        return answer, len(reads)

    try:
        job_events.set_relay_live(True)
        assert asyncio.run(wait_for(0.2, wait_s=5.0)) == (_Answer(False), 1)
        assert asyncio.run(wait_for(None, wait_s=0.3)) == (_Answer(True), 1)
        assert asyncio.run(wait_for(0.0, wait_s=5.0)) == (_Answer(False), 1)  # ended already
        job_events.set_relay_live(False)
        answer, count = asyncio.run(wait_for(None, wait_s=1.0))
        assert answer == _Answer(True)
        assert 3 <= count <= 5  # every RECHECK_S (0.25 s), then the deadline
    finally:
        job_events.set_relay_live(previous)
