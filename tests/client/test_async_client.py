"""The async client against a live server process (SQLite and PostgreSQL), no mocked transport.

No asyncio plugin for pytest is installed: each test is a plain function running its coroutine
with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from ordo_client import (
    NO_RETRY,
    AsyncClient,
    AsyncRun,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    LeaseLostError,
    NotFoundError,
    OrdoConnectionError,
    RetryPolicy,
)
from ordo_client.models import PriorEntry, TaskSpec
from tests.conftest import REPO_ROOT, LiveServer, free_port, migrated_sqlite_url

T = TypeVar("T")
FAST_RETRY = RetryPolicy(max_attempts=40, backoff_base_s=0.1, backoff_max_s=0.5)
TASKS = [
    TaskSpec(key="math", kind="structured", reward="verifiable"),
    TaskSpec(key="code", kind="structured", reward="verifiable"),
    TaskSpec(key="writing", kind="open_ended", reward="preference"),
    TaskSpec(key="dialogue", kind="open_ended", reward="preference"),
]
KEYS = [spec.key for spec in TASKS]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a test's coroutine in a fresh event loop."""
    return asyncio.run(coroutine)


async def new_project(server: LiveServer) -> tuple[str, str, str]:
    """A fresh project with the four tasks and two priors: (id, admin key, trainer key)."""
    async with AsyncClient(server.base_url, server.admin_token) as admin:
        project = await admin.create_project(f"async-{secrets.token_hex(4)}")
        admin_key = await admin.create_api_key(project.id, name="admin", role="admin")
        trainer_key = await admin.create_api_key(project.id, name="trainer", role="trainer")
        await admin.create_tasks(project.id, TASKS)
        await admin.import_priors(
            project.id,
            [
                {"effect": "B", "src": "code", "dst": "writing", "mean": -0.2, "std": 0.01},
                {"effect": "B", "src": "math", "dst": "writing", "mean": -0.15, "std": 0.01},
            ],
        )
    return project.id, admin_key.key, trainer_key.key


def test_url_token_health_projects_and_keys(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDO_URL", server.base_url + "/")
    monkeypatch.setenv("ORDO_TOKEN", "wrong-token")

    async def scenario() -> None:
        async with AsyncClient() as from_env:
            assert from_env.url == server.base_url
            assert (await from_env.health()).status == "ok"
            with pytest.raises(AuthenticationError) as caught:
                await from_env.list_projects()
            assert caught.value.status == 401
        async with AsyncClient(token=server.admin_token) as admin:  # the flag wins
            ready = await admin.ready()
            assert ready.checks == {"database": "ok", "schema": "ok"}
            names = [f"apage-{secrets.token_hex(3)}-{i}" for i in range(3)]
            ids = {(await admin.create_project(name)).id for name in names}
            seen = [project.id async for project in admin.iter_projects(page_size=2)]
            assert ids <= set(seen)
            assert len(seen) == len(set(seen))
            project_id = next(iter(ids))
            assert (await admin.get_project(project_id)).id == project_id
            key = await admin.create_api_key(project_id, name="ci")
            assert [k.key_id for k in await admin.list_api_keys(project_id)] == [key.key_id]
            await admin.revoke_api_key(project_id, key.key_id)
        async with AsyncClient(server.base_url, key.key) as revoked:
            with pytest.raises(AuthenticationError):
                await revoked.get_project(project_id)

    run(scenario())


def test_tasks_priors_estimates_and_schedules(server: LiveServer) -> None:
    async def scenario() -> None:
        project_id, admin_key, _ = await new_project(server)
        async with AsyncClient(server.base_url, admin_key) as client:
            assert [t.key for t in await client.list_tasks(project_id)] == KEYS
            updated = await client.update_task(project_id, "code", weight=2.0)
            assert updated.weight == 2.0
            assert (await client.get_task(project_id, "code")).weight == 2.0
            with pytest.raises(NotFoundError):
                await client.get_task(project_id, "nope")
            with pytest.raises(BadRequestError) as invalid:
                await client.create_tasks(project_id, [{"key": "bad key!"}])
            assert [e.field for e in invalid.value.errors] == ["tasks[0].key"]
            long_form = await client.import_priors(
                project_id, [PriorEntry(effect="L", dst="math", mean=0.6, std=0.05)]
            )
            f_mean: list[list[float | None]] = [[None, 0.02], [0.03, None]]
            wide = await client.import_prior_matrix(
                project_id, effect="F", tasks=["math", "code"], mean=f_mean, std=0.01
            )
            assert (long_form.imported, wide.imported) == (1, 2)
            estimates = await client.get_estimates(project_id)
            assert estimates.version == wide.estimates_version
            assert list(estimates.pair("B", "code", "writing")) == pytest.approx([-0.2, 0.01])
            csv_lines = (await client.get_estimates_csv(project_id)).splitlines()
            assert csv_lines[0] == "effect,src,dst,mean,std,count"

            first = await client.solve_schedule(project_id, label="first")
            assert first.order.index("writing") > max(
                first.order.index(k) for k in ("code", "math")
            )
            pinned = await client.solve_schedule(
                project_id,
                {"constraints": [{"type": "pinned", "task": "writing", "position": "first"}]},
            )
            assert pinned.order[0] == "writing"
            history = [s.id async for s in client.iter_schedules(project_id, page_size=1)]
            assert history == [pinned.id, first.id]
            assert (await client.get_schedule(project_id, first.id)).order == first.order
            predictions = await client.predict(project_id, [first.order, pinned.order])
            best, worse = predictions.orders
            assert best.objective.mean == pytest.approx(first.objective, abs=1e-6)
            assert worse.objective.mean < best.objective.mean

    run(scenario())


def values_at(stage: int) -> dict[str, float]:
    return {key: 0.5 + 0.01 * stage + 0.001 * i for i, key in enumerate(KEYS)}


def test_a_run_from_start_to_finish(server: LiveServer) -> None:
    async def scenario() -> None:
        project_id, _, trainer_key = await new_project(server)
        async with AsyncClient(server.base_url, trainer_key) as client:
            run_ = await client.start_run(project_id, adaptive=True, client_id="async-job")
            again = await client.start_run(project_id, adaptive=True, client_id="async-job")
            assert again.id == run_.id
            trained: list[str] = []
            async with client.lease(run_, interval_s=0.05) as lease:
                async for stage in run_.stages():
                    if stage.task is not None:
                        trained.append(stage.task)
                        await asyncio.sleep(0.06)  # "training" leaves the loop free to beat
                    assert stage.stage == len(trained)
                    accepted = await run_.report(len(trained), values_at(len(trained)))
                    assert accepted.report.stage == len(trained)
                    assert await run_.report(len(trained), values_at(len(trained))) == accepted
            assert lease.beats >= 2
            assert not lease.lost
            assert asyncio.all_tasks() == {asyncio.current_task()}  # the beat task is gone
            assert sorted(trained) == sorted(KEYS)
            with pytest.raises(ConflictError) as conflict:
                await run_.report(1, {KEYS[0]: 0.0})
            assert conflict.value.status == 409
            info = await run_.refresh()
            assert [r.stage for r in info.reports] == list(range(len(KEYS) + 1))
            assert (await run_.complete()).status == "completed"
            assert [r.id for r in (await client.list_runs(project_id)).items] == [run_.id]
            attached = await client.run(project_id, run_.id)
            assert attached.info.status == "completed"

    run(scenario())


class _CountingTransport(httpx.AsyncBaseTransport):
    """The client's real transport, counting ``GET .../next`` and its answers with no stage."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.asked_next = 0
        self.no_stage_yet = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "GET" and request.url.path.endswith("/next"):
            self.asked_next += 1
            answer = json.loads(await response.aread())
            self.no_stage_yet += answer["plan_pending"] and answer["stage"] is None
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_stages_take_the_next_stage_from_a_report_with_no_replan_pending(
    server: LiveServer,
) -> None:
    async def scenario() -> None:
        project_id, _, trainer_key = await new_project(server)
        transport = _CountingTransport()
        async with AsyncClient(server.base_url, trainer_key, transport=transport) as client:
            run_ = await client.start_run(project_id)  # fixed: no re-plan
            trained: list[str] = []
            pending = 0
            async for stage in run_.stages():
                if stage.task is not None:
                    trained.append(stage.task)
                accepted = await run_.report(len(trained), values_at(len(trained)))
                pending += accepted.plan_pending
            info = await run_.refresh()
        assert [s.task for s in info.stages] == trained
        assert sorted(trained) == sorted(KEYS)
        assert transport.asked_next == 1 + pending + transport.no_stage_yet
        assert pending <= 1  # the first plan, if still being made at the baseline

    run(scenario())


async def lose_the_lease(
    client: AsyncClient, project_id: str, run_: AsyncRun, lost: list[LeaseLostError]
) -> None:
    async with client.lease(run_, interval_s=0.05, on_lost=lost.append) as lease:
        other = await client.run(project_id, run_.id)
        assert (await other.fail("taken down by the operator")).fail_reason is not None
        for _ in range(200):
            if lease.lost:
                break
            await asyncio.sleep(0.02)
        with pytest.raises(LeaseLostError):
            lease.check()


def test_a_lost_lease_is_surfaced(server: LiveServer) -> None:
    lost: list[LeaseLostError] = []

    async def scenario() -> None:
        project_id, _, trainer_key = await new_project(server)
        async with AsyncClient(server.base_url, trainer_key) as client:
            run_ = await client.start_run(project_id, client_id="async-lost")
            with pytest.raises(LeaseLostError, match="refused"):
                await lose_the_lease(client, project_id, run_, lost)
            assert asyncio.all_tasks() == {asyncio.current_task()}

    run(scenario())
    assert len(lost) == 1


def test_reads_wait_for_a_server_that_is_not_up_yet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = migrated_sqlite_url(tmp_path / "ordo.sqlite")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        args = [sys.executable, "-m", "uvicorn", "--factory", "ordo_server.app.main:create_app",
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
        env = {**os.environ, "ORDO_DATABASE_URL": url}
        processes.append(subprocess.Popen(args, cwd=REPO_ROOT, env=env))

    async def scenario() -> None:
        async with AsyncClient(base_url, "t", retry=FAST_RETRY) as client:
            with pytest.raises(OrdoConnectionError, match=r"after 1 attempt\(s\)"):
                await client.create_project("a plain POST is never repeated")
            asyncio.get_running_loop().call_later(0.3, start)
            assert (await client.ready()).status == "ok"
        async with AsyncClient(base_url, "t", retry=NO_RETRY) as client:
            assert (await client.health()).status == "ok"

    caplog.set_level(logging.WARNING, logger="ordo_client")
    try:
        run(scenario())
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
    retries = [r.getMessage() for r in caplog.records if r.name == "ordo_client"]
    assert retries
    assert all("GET /readyz: ConnectError" in line for line in retries)
