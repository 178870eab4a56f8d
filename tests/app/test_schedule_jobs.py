"""``POST .../schedules`` solves in a job: inline when short, 202 and a job to poll when long.

In process on SQLite and PostgreSQL (the test plays the worker where the runner is external),
then on PostgreSQL through a real server and a real ``ordo worker`` process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from ordo_server.app.db import Database
from ordo_server.app.services.planning import run_next_job
from ordo_server.app.settings import Settings
from ordo_server.models import Job
from tests.conftest import (
    ADMIN_TOKEN,
    postgres_database,
    require_postgres,
    run_live_server,
    worker_process,
)
from tests.factories import ProjectKeys, bearer, create_project_with_keys

TASKS = ("math", "code", "poetry", "chat")
ASYNC = {"Prefer": "respond-async"}
# Constraints no order meets: math before code and code before math.
CYCLE = [
    {"type": "precedence", "before": "math", "after": "code"},
    {"type": "precedence", "before": "code", "after": "math"},
]


@pytest.fixture
def tasked(session: Session) -> ProjectKeys:
    keys = create_project_with_keys(session, task_keys=TASKS)
    session.commit()
    return keys


def _schedules(project: ProjectKeys) -> str:
    return f"/v1/projects/{project.id}/schedules"


def _post(
    client: TestClient, project: ProjectKeys, body: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    answer: httpx.Response = client.post(
        _schedules(project), json=body, headers={**bearer(project.admin_token), **headers}
    )
    return answer


def _get(client: TestClient, project: ProjectKeys, path: str) -> httpx.Response:
    answer: httpx.Response = client.get(path, headers=bearer(project.admin_token))
    return answer


def test_a_short_solve_answers_inline_and_its_job_keeps_the_result(
    client: TestClient, tasked: ProjectKeys, session: Session
) -> None:
    answer = _post(client, tasked, {"time_limit_s": 5}, {})
    assert answer.status_code == 201, answer.text
    schedule = answer.json()
    assert answer.headers["location"] == f"{_schedules(tasked)}/{schedule['id']}"
    assert sorted(schedule["order"]) == sorted(TASKS)
    jobs = session.scalars(select(Job).where(Job.project_id == tasked.id)).all()
    assert [(j.kind, j.status, j.result) for j in jobs] == [
        ("schedule", "done", {"schedule_id": schedule["id"]})
    ]


def test_respond_async_answers_202_and_the_job_is_polled_to_its_schedule(
    client: TestClient, tasked: ProjectKeys
) -> None:
    accepted = _post(client, tasked, {"time_limit_s": 5, "label": "async"}, ASYNC)
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert job["status"] == "queued"
    assert job["schedule_id"] is None
    assert accepted.headers["location"] == f"{_schedules(tasked)}/jobs/{job['id']}"
    assert int(accepted.headers["retry-after"]) >= 1
    # No worker thread in these tests: the poll runs the job, as a waiting request does.
    polled = _get(client, tasked, accepted.headers["location"])
    assert polled.status_code == 200, polled.text
    done = polled.json()
    assert (done["status"], done["problem"], done["attempts"]) == ("succeeded", None, 1)
    schedule = _get(client, tasked, f"{_schedules(tasked)}/{done['schedule_id']}").json()
    assert schedule["label"] == "async"


def test_a_job_the_solver_refuses_fails_with_the_problem_the_route_answers(
    client: TestClient, tasked: ProjectKeys
) -> None:
    inline = _post(client, tasked, {"constraints": CYCLE}, {})
    assert inline.status_code == 422, inline.text
    assert inline.json()["code"] == "infeasible"
    accepted = _post(client, tasked, {"constraints": CYCLE}, ASYNC)
    assert accepted.status_code == 202, accepted.text
    failed = _get(client, tasked, accepted.headers["location"]).json()
    assert failed["status"] == "failed"
    assert failed["schedule_id"] is None
    assert failed["problem"]["status"] == 422
    assert failed["problem"]["code"] == "infeasible"
    assert failed["problem"]["detail"] == inline.json()["detail"]


def test_bad_requests_are_422_before_anything_is_queued(
    client: TestClient, tasked: ProjectKeys, session: Session
) -> None:
    answer = _post(client, tasked, {"tasks": ["math", "nope"]}, ASYNC)
    assert answer.status_code == 422, answer.text
    assert session.scalars(select(Job).where(Job.project_id == tasked.id)).all() == []


def test_a_job_is_found_only_in_its_own_project(
    client: TestClient, tasked: ProjectKeys, session: Session
) -> None:
    other = create_project_with_keys(session, task_keys=TASKS)
    session.commit()
    accepted = _post(client, tasked, {}, ASYNC)
    job_id = accepted.json()["id"]
    for path in (
        f"{_schedules(other)}/jobs/{job_id}",
        f"{_schedules(other)}/jobs/not-a-number",
        f"{_schedules(other)}/jobs/99999999999999999999",
    ):
        answer = client.get(path, headers=bearer(other.admin_token))
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["code"] == "not_found"


class TestExternalWorkers:
    """``job_runner=external``: the request never solves; past its wait it answers 202."""

    @pytest.fixture
    def settings(self, database_url: str) -> Settings:
        return Settings(
            database_url=database_url,
            admin_token=ADMIN_TOKEN,
            job_runner="external",
            schedule_wait_s=0.2,
        )

    def test_past_the_wait_a_solve_is_202_until_a_worker_runs_it(
        self, client: TestClient, tasked: ProjectKeys, database: Database, settings: Settings
    ) -> None:
        started = time.monotonic()
        accepted = _post(client, tasked, {}, {})
        assert accepted.status_code == 202, accepted.text
        assert time.monotonic() - started >= settings.schedule_wait_s
        location = accepted.headers["location"]
        assert _get(client, tasked, location).json()["status"] == "queued"
        assert run_next_job(database, settings)  # the worker
        done = _get(client, tasked, location).json()
        assert done["status"] == "succeeded"
        assert _get(client, tasked, f"{_schedules(tasked)}/{done['schedule_id']}").is_success


# --- a real server and a real worker ---------------------------------------------------------


@pytest.fixture
def replicas() -> Iterator[tuple[str, dict[str, str]]]:
    env = {"ORDO_JOB_RUNNER": "external", "ORDO_SCHEDULE_WAIT_S": "10", "ORDO_JOB_POLL_S": "5"}
    with ExitStack() as stack:
        url = stack.enter_context(postgres_database(require_postgres()))
        server = stack.enter_context(run_live_server(url, env=env))
        stack.enter_context(worker_process(url, env, ready=True))
        yield server.base_url, server.admin_headers


@pytest.mark.postgres
def test_a_worker_process_solves_and_wakes_the_waiting_request(
    replicas: tuple[str, dict[str, str]],
) -> None:
    base_url, admin = replicas
    with httpx.Client(base_url=base_url, headers=admin, timeout=30) as http:
        project = http.post("/v1/projects", json={"name": "schedule-jobs"}).json()
        tasks = {"tasks": [{"key": key} for key in TASKS]}
        assert http.post(f"/v1/projects/{project['id']}/tasks", json=tasks).is_success
        schedules = f"/v1/projects/{project['id']}/schedules"
        # The worker sleeps on LISTEN (its poll is 5 s): NOTIFY wakes it, and the worker's
        # NOTIFY wakes the request, well within the 10 s wait. (The fixture waits until the
        # worker is set up: on a slow machine its imports alone took longer than 5 s.)
        started = time.monotonic()
        created = http.post(schedules, json={"time_limit_s": 5})
        assert created.status_code == 201, created.text
        assert time.monotonic() - started < 5
        accepted = http.post(schedules, json={"label": "later"}, headers=ASYNC)
        assert accepted.status_code == 202, accepted.text
        deadline = time.monotonic() + 20
        job = accepted.json()
        while job["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.1)
            job = http.get(accepted.headers["location"]).json()
        assert job["status"] == "succeeded", job
        assert http.get(f"{schedules}/{job['schedule_id']}").json()["label"] == "later"
