"""Plan jobs: queued with the run or the report, coalesced, idempotent, fenced, crash-safe.

The first tests play the worker themselves (``ORDO_JOB_RUNNER=external``: no request runs a
job), so every step is visible: what a trainer sees while a plan is pending, how a burst of
reports coalesces, what a second run of a job stores, and what happens to a claim whose worker
died. The last test drives trainers through two API processes and two ``ordo worker``
processes on PostgreSQL, and kills one worker with SIGKILL on the way.
"""

from __future__ import annotations

import io
import json
import logging
import signal
import threading
import time
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ordo_server.app.db import Database, unit_of_work
from ordo_server.app.logging_config import REQUEST_ID, JsonFormatter
from ordo_server.app.repositories import jobs as job_repo
from ordo_server.app.repositories import schedules as schedule_repo
from ordo_server.app.repositories.runs import db_now
from ordo_server.app.services import planning
from ordo_server.app.services import runs as run_service
from ordo_server.app.settings import Settings
from ordo_server.models import Job, Run, Schedule
from tests.conftest import (
    live_server_on,
    postgres_database,
    require_postgres,
    run_live_server,
    worker_less_settings,
    worker_process,
)
from tests.factories import ProjectKeys, bearer, create_project_with_keys

TASKS = ("math", "code", "poetry", "chat")
PLAN_WAIT_S = 0.2


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Jobs are left to a worker the test plays; waits are short."""
    return worker_less_settings(database_url, plan_wait_s=PLAN_WAIT_S)


@pytest.fixture
def tasked(session: Session) -> ProjectKeys:
    keys = create_project_with_keys(session, task_keys=TASKS)
    session.commit()
    return keys


def _runs(project: ProjectKeys) -> str:
    return f"/v1/projects/{project.id}/runs"


def _next(client: TestClient, project: ProjectKeys, run_id: str) -> dict[str, Any]:
    response = client.get(f"{_runs(project)}/{run_id}/next", headers=project.trainer)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _report(client: TestClient, project: ProjectKeys, run_id: str, stage: int) -> Any:
    body = {"evaluations": [{"task": key, "value": 0.3 + 0.1 * stage} for key in TASKS]}
    return client.put(
        f"{_runs(project)}/{run_id}/reports/{stage}",
        json=body,
        headers={**project.trainer, "Ordo-Lease-Token": "1"},  # the run's first holder
    )


def _jobs(session: Session, run_id: str) -> list[Job]:
    session.expire_all()
    return list(session.scalars(select(Job).where(Job.run_id == run_id).order_by(Job.id)))


def _plans(session: Session, run_id: str) -> list[Schedule]:
    session.expire_all()
    query = select(Schedule).where(Schedule.run_id == run_id).order_by(Schedule.version)
    return list(session.scalars(query))


def test_a_trainer_waits_for_the_first_plan_and_a_burst_of_reports_makes_one_replan(
    client: TestClient,
    tasked: ProjectKeys,
    database: Database,
    settings: Settings,
    session: Session,
) -> None:
    created = client.post(_runs(tasked), json={"adaptive": True}, headers=tasked.trainer)
    assert created.status_code == 201, created.text
    run = created.json()
    # Stored at once; no worker ran, so after waiting plan_wait_s it has no plan yet.
    assert (run["plan_pending"], run["schedule_id"], run["stages"]) == (True, None, [])
    # The baseline needs no plan: answered at once.
    assert _next(client, tasked, run["id"])["stage"] == 0
    assert _report(client, tasked, run["id"], 0).status_code == 200
    started = time.monotonic()
    waiting = _next(client, tasked, run["id"])
    assert time.monotonic() - started >= PLAN_WAIT_S
    assert waiting == {**waiting, "done": False, "stage": None, "plan_pending": True}
    early = _report(client, tasked, run["id"], 1)
    assert early.status_code == 409
    assert early.json()["code"] == "plan_pending"

    assert planning.run_next_job(database, settings)  # the worker makes the first plan
    first = _next(client, tasked, run["id"])
    [plan] = _plans(session, run["id"])
    assert (first["stage"], first["task"], first["plan_pending"]) == (1, plan.order[0], False)
    assert plan.run_stage == 0

    # Two reports before any worker gets to the re-plan: one waiting job, planned for stage 2.
    for stage in (1, 2):
        answer = _report(client, tasked, run["id"], stage).json()
        assert (answer["plan_pending"], answer["schedule_id"]) == (True, plan.id)
        assert answer["next"] == {"done": False, "stage": stage + 1, "task": plan.order[stage]}
    assert [job.status for job in _jobs(session, run["id"])] == ["done", "todo"]
    assert planning.run_next_job(database, settings)
    assert not planning.run_next_job(database, settings)  # nothing left
    plans = _plans(session, run["id"])
    assert [p.run_stage for p in plans] == [0, 2]
    assert plans[1].order[:2] == plan.order[:2]
    assert plans[1].parent_id == plan.id
    following = _next(client, tasked, run["id"])
    assert (following["stage"], following["task"]) == (3, plans[1].order[2])
    assert [job.outcome for job in _jobs(session, run["id"])] == ["planned", "planned"]


def _adaptive_run_at_stage_one(
    client: TestClient, project: ProjectKeys, database: Database, settings: Settings
) -> str:
    run_id: str = client.post(
        _runs(project), json={"adaptive": True}, headers=project.trainer
    ).json()["id"]
    assert planning.run_next_job(database, settings)
    for stage in (0, 1):
        assert _report(client, project, run_id, stage).status_code == 200
    return run_id


def test_a_job_run_again_stores_nothing_new(
    client: TestClient,
    tasked: ProjectKeys,
    database: Database,
    settings: Settings,
    session: Session,
) -> None:
    run_id = _adaptive_run_at_stage_one(client, tasked, database, settings)
    assert planning.run_next_job(database, settings)
    before = _plans(session, run_id)
    # The same job again (a retry, a second worker): the plan for this state exists.
    with unit_of_work(database.sessions) as writer:
        run = writer.get(Run, run_id)
        assert run is not None
        assert run_service.request_plan(writer, run, at=db_now(writer), request_id=None)
    assert planning.run_next_job(database, settings)
    assert _plans(session, run_id) == before
    assert _jobs(session, run_id)[-1].outcome == "noop"
    # And the index behind it: one plan per (run, stage), whoever stores it.
    latest = before[-1]
    twin = {
        column: getattr(latest, column)
        for column in (
            "parent_id", "run_id", "estimates_version", "request", "order", "objective",
            "bound", "gap", "status", "method", "wall_time_s", "predicted", "run_stage",
        )
    }  # fmt: skip
    # A free version: only the (run, stage) index can refuse it.
    twin["version"] = schedule_repo.next_version(session, tasked.id)
    with pytest.raises(IntegrityError), unit_of_work(database.sessions) as writer:
        schedule_repo.add_schedule(writer, tasked.id, twin)


def test_a_claim_whose_worker_died_is_taken_again_and_the_dead_one_is_fenced(
    client: TestClient,
    tasked: ProjectKeys,
    database: Database,
    settings: Settings,
    session: Session,
) -> None:
    run_id = _adaptive_run_at_stage_one(client, tasked, database, settings)
    # A worker claims the re-plan with a short lease and dies (SIGKILL mid-solve leaves this).
    with unit_of_work(database.sessions) as writer:
        claimed = job_repo.claim(writer, now=db_now(writer), lease_s=1.0, run_id=run_id)
        assert claimed is not None
        dead = (claimed.id, claimed.attempts)
    # Before the lease ends nobody may take it.
    assert not planning.run_next_job(database, settings)
    time.sleep(1.1)
    assert planning.run_next_job(database, settings)
    [*_, job] = _jobs(session, run_id)
    assert (job.status, job.outcome, job.attempts) == ("done", "planned", 2)
    assert [p.run_stage for p in _plans(session, run_id)] == [0, 1]
    # The dead worker's late answer is refused: its claim (attempt 1) no longer holds.
    with unit_of_work(database.sessions) as writer:
        assert not job_repo.finish(writer, *dead, outcome="planned", at=db_now(writer))


def _solve(database: Database, claim: planning._Claim, settings: Settings) -> planning._Plan | None:
    """Steps 1 and 2 of the claimed job alone (read and solve), nothing stored."""
    solved: list[planning._Solved] = []
    planning._read_and_solve(database, [claim], settings, then=lambda _, plan: solved.append(plan))
    [plan] = solved
    assert not isinstance(plan, Exception), plan
    return plan


def test_a_first_plan_stores_although_the_baseline_was_reported_while_it_solved(
    client: TestClient,
    tasked: ProjectKeys,
    database: Database,
    settings: Settings,
    session: Session,
) -> None:
    created = client.post(_runs(tasked), json={"adaptive": True}, headers=tasked.trainer)
    run_id = created.json()["id"]
    # A worker claims the first plan and reads its snapshot (next_stage 0) ...
    with unit_of_work(database.sessions) as writer:
        job = job_repo.claim(writer, now=db_now(writer), lease_s=60.0, run_id=run_id)
        assert job is not None
        claim = planning._Claim.of(job)
    plan = _solve(database, claim, settings)
    assert plan is not None
    assert plan.seen == (0, None)
    # ... the trainer reports the baseline while it solves (that queues no plan) ...
    assert _report(client, tasked, run_id, 0).status_code == 200
    assert [job.status for job in _jobs(session, run_id)] == ["doing"]
    # ... and the first plan is stored all the same: the run would otherwise never get one.
    assert planning._store(database, claim, plan) == "planned"
    [stored] = _plans(session, run_id)
    following = _next(client, tasked, run_id)
    assert (following["done"], following["stage"]) == (False, 1)
    assert following["task"] == stored.order[0]


def test_a_first_plan_whose_constraints_admit_no_order_fails_the_run_with_the_reason(
    client: TestClient, tasked: ProjectKeys, database: Database, settings: Settings
) -> None:
    cycle = [
        {"type": "precedence", "before": "math", "after": "code"},
        {"type": "precedence", "before": "code", "after": "math"},
    ]
    body = {"schedule": {"constraints": cycle}}
    run = client.post(_runs(tasked), json=body, headers=tasked.trainer).json()
    assert planning.run_next_job(database, settings)
    view = client.get(f"{_runs(tasked)}/{run['id']}", headers=tasked.trainer).json()
    assert view["status"] == "failed"
    assert view["fail_reason"].startswith("No plan could be made:")
    assert _next(client, tasked, run["id"])["done"] is True


def test_unknown_keys_in_a_runs_schedule_are_422_before_anything_is_stored(
    client: TestClient, tasked: ProjectKeys, session: Session
) -> None:
    body = {"schedule": {"constraints": [{"type": "pinned", "task": "nope", "position": 1}]}}
    response = client.post(_runs(tasked), json=body, headers=tasked.trainer)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "schedule.constraints[0].task"
    assert session.scalar(select(func.count()).select_from(Run)) == 0


def test_a_jobs_log_lines_carry_the_request_id_that_queued_it(
    client: TestClient, tasked: ProjectKeys, database: Database, settings: Settings
) -> None:
    headers = {**tasked.trainer, "X-Request-ID": "trace-job-7"}
    assert client.post(_runs(tasked), json={"adaptive": True}, headers=headers).status_code == 201
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    planning_logger = logging.getLogger(planning.__name__)
    previous_level = planning_logger.level
    planning_logger.setLevel(logging.INFO)
    planning_logger.addHandler(handler)
    try:
        with unit_of_work(database.sessions) as writer:
            job_id = writer.scalar(select(func.max(Job.id)))
        assert planning.run_next_job(database, settings)  # the worker, outside any request
    finally:
        planning_logger.removeHandler(handler)
        planning_logger.setLevel(previous_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(r["message"], r.get("request_id")) for r in lines] == [
        (f"job {job_id}: planned", "trace-job-7")
    ]
    assert REQUEST_ID.get() is None  # set for the job only


# --- replicas and workers in their own processes -------------------------------------------------


def _trainers_project(http: httpx.Client, name: str) -> tuple[dict[str, Any], str]:
    """A project with TASKS (``http`` signs in as an admin) and a trainer key's token."""
    project: dict[str, Any] = http.post("/v1/projects", json={"name": name}).json()
    tasks = {"tasks": [{"key": key} for key in TASKS]}
    assert http.post(f"/v1/projects/{project['id']}/tasks", json=tasks).is_success
    key = http.post(f"/v1/projects/{project['id']}/keys", json={"role": "trainer", "name": "t"})
    token: str = key.json()["key"]
    return project, token


def _trainer(base_url: str, token: str, project_id: str, results: list[Any]) -> None:
    """A trainer's whole run: create, then next -> report to the end; every answer recorded."""
    runs = f"/v1/projects/{project_id}/runs"
    with httpx.Client(base_url=base_url, headers=bearer(token), timeout=60) as http:
        created = http.post(runs, json={"adaptive": True})
        results.append(created.status_code)
        run_id = created.json()["id"]
        lease = {"Ordo-Lease-Token": str(created.json()["lease"]["token"])}
        while True:
            following = http.get(f"{runs}/{run_id}/next")
            results.append(following.status_code)
            body = following.json()
            if body["done"]:
                break
            if body["stage"] is None:
                continue
            values = {"evaluations": [{"task": k, "value": 0.5} for k in TASKS]}
            url = f"{runs}/{run_id}/reports/{body['stage']}"
            report = http.put(url, json=values, headers=lease)
            results.append(report.status_code)
        results.append(http.post(f"{runs}/{run_id}/complete", headers=lease).status_code)


@pytest.mark.postgres
def test_trainers_through_two_api_processes_and_two_workers_one_killed() -> None:
    env = {"ORDO_JOB_RUNNER": "external", "ORDO_JOB_LEASE_S": "2", "ORDO_JOB_POLL_S": "0.2"}
    with ExitStack() as stack:
        url = stack.enter_context(postgres_database(require_postgres()))
        servers = [stack.enter_context(run_live_server(url, env=env)) for _ in range(2)]
        victim = stack.enter_context(worker_process(url, env))
        stack.enter_context(worker_process(url, env))
        with httpx.Client(base_url=servers[0].base_url, headers=servers[0].admin_headers) as http:
            project, token = _trainers_project(http, "replicas")
        results: list[Any] = []
        trainers = [
            threading.Thread(
                target=_trainer,
                args=(servers[i % 2].base_url, token, project["id"], results),
            )
            for i in range(8)
        ]
        for thread in trainers:
            thread.start()
        time.sleep(0.5)
        victim.send_signal(signal.SIGKILL)  # whatever it held is claimed again after its lease
        for thread in trainers:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in trainers)
        assert results
        assert all(200 <= status < 300 for status in results), results
        engine = create_engine(url)
        with engine.connect() as connection:
            duplicates = connection.execute(
                select(Schedule.run_id, Schedule.run_stage, func.count())
                .where(Schedule.run_id.is_not(None))
                .group_by(Schedule.run_id, Schedule.run_stage)
                .having(func.count() > 1)
            ).all()
            runs = connection.execute(select(Run.status, Run.next_stage)).all()
            replans = connection.scalar(
                select(func.count()).select_from(Schedule).where(Schedule.run_stage >= 1)
            )
        engine.dispose()
        assert duplicates == []
        assert sorted(runs) == [("completed", len(TASKS) + 1)] * 8
        assert replans is not None
        assert replans >= 8  # adaptive runs were re-planned


def test_a_process_runs_at_most_a_few_jobs_for_requests_at_once(
    client: TestClient,
    session: Session,
    database: Database,
    settings: Settings,
    tasked: ProjectKeys,
) -> None:
    """Each plan job holds its snapshot's connection while it stores on another: a process
    runs at most REQUEST_RUNNERS of them for requests, and one more finds "none free" (the job
    stays queued) instead of taking connections until the pool has none left."""
    run = client.post(_runs(tasked), json={"adaptive": True}, headers=tasked.trainer).json()
    assert [job.status for job in _jobs(session, run["id"])] == ["todo"]
    taken = 0
    while planning._request_runners.acquire(blocking=False):  # as many as run jobs now
        taken += 1
    try:
        assert taken == planning.REQUEST_RUNNERS
        assert not planning.run_job_for_request(database, settings, run_id=run["id"])
        assert [job.status for job in _jobs(session, run["id"])] == ["todo"]
    finally:
        for _ in range(taken):
            planning._request_runners.release()
    assert planning.run_job_for_request(database, settings, run_id=run["id"])
    assert [job.status for job in _jobs(session, run["id"])] == ["done"]


def test_a_fleet_on_sqlite_with_one_process_gets_every_answer(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """40 adaptive trainers at once against one process on SQLite running its own jobs: reports
    stored in batches start many re-plans at once, and none of them may take the pool down."""
    with (
        live_server_on("sqlite", tmp_path_factory) as server,
        httpx.Client(base_url=server.base_url, headers=server.admin_headers) as http,
    ):
        project, token = _trainers_project(http, "fleet")
        results: list[Any] = []
        trainers = [
            threading.Thread(target=_trainer, args=(server.base_url, token, project["id"], results))
            for _ in range(40)
        ]
        for thread in trainers:
            thread.start()
        for thread in trainers:
            thread.join(timeout=120)
        runs = http.get(f"/v1/projects/{project['id']}/runs", params={"limit": 100}).json()
    assert not any(thread.is_alive() for thread in trainers)
    assert all(200 <= status < 300 for status in results), sorted(set(results))
    assert sorted(run["status"] for run in runs["items"]) == ["completed"] * 40
