"""The clients follow a schedule solve that the server answers with 202 (a job) to its end.

A live server that never waits for a solve (``ORDO_SCHEDULE_WAIT_S=0``): every
``POST .../schedules`` is a 202, and its embedded worker thread solves the job.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import httpx
import pytest

from ordo_client import AsyncClient, BadRequestError, Client
from tests.conftest import LiveServer, live_server_on

TASKS = ("math", "code", "poetry")
NEVER_WAIT = {"ORDO_SCHEDULE_WAIT_S": "0"}
CYCLE = [
    {"type": "precedence", "before": "math", "after": "code"},
    {"type": "precedence", "before": "code", "after": "math"},
]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def impatient(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A live server whose schedule solves always answer 202."""
    with live_server_on(request.param, tmp_path_factory, env=NEVER_WAIT) as live:
        yield live


@pytest.fixture
def project_id(impatient: LiveServer) -> str:
    with Client(impatient.base_url, impatient.admin_token) as admin:
        project = admin.create_project(f"jobs-{secrets.token_hex(4)}")
        admin.create_tasks(project.id, [{"key": key} for key in TASKS])
    return project.id


def test_the_server_answers_202_and_the_client_follows_the_job(
    impatient: LiveServer, project_id: str
) -> None:
    url = f"{impatient.base_url}/v1/projects/{project_id}/schedules"
    raw = httpx.post(url, json={}, headers=impatient.admin_headers, timeout=30)
    assert raw.status_code == 202, raw.text
    with Client(impatient.base_url, impatient.admin_token) as client:
        job = client.get_schedule_job(project_id, raw.json()["id"])
        assert job.status in ("queued", "running", "succeeded")
        schedule = client.solve_schedule(project_id, label="followed")
        assert schedule.label == "followed"
        assert sorted(schedule.order) == sorted(TASKS)
        with pytest.raises(BadRequestError) as refused:
            client.solve_schedule(project_id, constraints=CYCLE)
        assert refused.value.code == "infeasible"
        assert refused.value.status == 422


def test_the_async_client_follows_the_job_too(impatient: LiveServer, project_id: str) -> None:
    async def solve() -> tuple[str, list[str]]:
        async with AsyncClient(impatient.base_url, impatient.admin_token) as client:
            schedule = await client.solve_schedule(project_id, label="async")
            with pytest.raises(BadRequestError):
                await client.solve_schedule(project_id, constraints=CYCLE)
            return schedule.label, schedule.order

    label, order = asyncio.run(solve())
    assert label == "async"
    assert sorted(order) == sorted(TASKS)
