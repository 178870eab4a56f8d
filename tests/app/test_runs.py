"""Runs: creation (idempotent by client_id), stages, lease, staleness, end, re-planning."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, event, func, select
from sqlalchemy.orm import Session

from ordo_server.app.main import create_app
from ordo_server.app.settings import Settings
from ordo_server.models import Project, Run, Schedule
from ordo_server.solver.recommend import plan_seed
from tests.conftest import (
    ADMIN_TOKEN,
    migrated_sqlite_url,
    postgres_database,
    recorded_statements,
    require_postgres,
)
from tests.factories import ProjectKeys, create_project_with_keys

TASKS = ("math", "code", "poetry")
GRACE_S = 0.8  # short enough to wait for; long enough for a few requests on a loaded machine


@pytest.fixture
def settings(database_url: str) -> Settings:
    """A short grace period, so staleness can be waited for."""
    return Settings(
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        heartbeat_grace_s=GRACE_S,
        lease_seconds=GRACE_S / 2,
        job_thread=False,
    )


@pytest.fixture
def tasked(session: Session) -> ProjectKeys:
    """A project with tasks math, code and poetry."""
    keys = create_project_with_keys(session, task_keys=TASKS)
    session.commit()
    return keys


def _runs(project: ProjectKeys) -> str:
    return f"/v1/projects/{project.id}/runs"


def _create(client: TestClient, project: ProjectKeys, body: Any = None) -> Any:
    return client.post(_runs(project), json=body or {}, headers=project.trainer)


def _holder(project: ProjectKeys, token: int = 1) -> dict[str, str]:
    """The trainer's headers with the lease token of the run's first holder."""
    return {**project.trainer, "Ordo-Lease-Token": str(token)}


def _report(
    client: TestClient, project: ProjectKeys, run_id: str, stage: int, value: float = 0.5
) -> Any:
    body = {"evaluations": [{"task": key, "value": value + 0.01 * stage} for key in TASKS]}
    return client.put(
        f"{_runs(project)}/{run_id}/reports/{stage}", json=body, headers=_holder(project)
    )


def _next(client: TestClient, project: ProjectKeys, run_id: str) -> Any:
    response = client.get(f"{_runs(project)}/{run_id}/next", headers=project.trainer)
    assert response.status_code == 200, response.text
    return response.json()


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


# --- creation ------------------------------------------------------------------------------------


def test_create_solves_and_starts_the_lease(client: TestClient, tasked: ProjectKeys) -> None:
    response = _create(client, tasked)
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["status"] == "active"
    assert run["next_stage"] == 0
    assert run["stage_count"] == 3
    assert sorted(stage["task"] for stage in run["stages"]) == sorted(TASKS)
    assert [stage["index"] for stage in run["stages"]] == [1, 2, 3]
    assert {stage["status"] for stage in run["stages"]} == {"planned"}
    [schedule] = run["schedules"]
    assert schedule["id"] == run["schedule_id"]
    assert run["reports"] == []
    assert run["lease"]["token"] == 1
    assert run["lease"]["heartbeat_interval_s"] == GRACE_S / 2


def _reading_reports_of_a_run(statements: list[str]) -> list[str]:
    """The reads of one run's reports (by ``run_id``; a plan job reads the project's history)."""
    return [s for s in statements if "WHERE ordo_stage_reports.run_id = " in s]


def test_a_run_is_read_once_with_only_what_it_has(
    client: TestClient, tasked: ProjectKeys, connection: Connection
) -> None:
    """The creation answers the run as read after its plan (not also before), a run before its
    baseline reads no reports, and a view reads the run with its plan, the clock and whether a
    plan job is pending in one statement."""
    statements = recorded_statements(connection.engine)
    created = _create(client, tasked, {"adaptive": True}).json()
    assert created["plan_pending"] is False
    assert _reading_reports_of_a_run(statements) == []
    statements.clear()
    run_url = f"{_runs(tasked)}/{created['id']}"
    assert client.get(run_url, headers=tasked.trainer).json() == created
    assert _reading_reports_of_a_run(statements) == []
    reads = [s for s in statements if s.startswith("SELECT")]
    # The project (the key's check), the run with its plan, the clock and its pending job,
    # the project's tasks, the plans made for the run: 7 statements before.
    assert len(reads) == 4, reads
    [run_read] = [s for s in reads if "FROM ordo_runs" in s]
    assert "JOIN ordo_schedules" in run_read
    assert "ordo_jobs" in run_read
    assert _report(client, tasked, created["id"], 0).status_code == 200
    statements.clear()
    viewed = client.get(run_url, headers=tasked.trainer).json()
    assert [report["stage"] for report in viewed["reports"]] == [0]
    assert len(viewed["reports"][0]["evaluations"]) == len(TASKS)
    assert len(_reading_reports_of_a_run(statements)) == 2  # the reports, their evaluations


def test_create_from_a_stored_schedule(
    client: TestClient, tasked: ProjectKeys, session: Session
) -> None:
    first = _create(client, tasked).json()
    response = _create(client, tasked, {"schedule_id": first["schedule_id"]})
    assert response.status_code == 201
    run = response.json()
    assert run["schedule_id"] == first["schedule_id"]
    assert [s["task"] for s in run["stages"]] == [s["task"] for s in first["stages"]]
    count = session.scalar(select(func.count()).select_from(Schedule).where(
        Schedule.project_id == tasked.id))  # fmt: skip
    assert count == 1


def test_unknown_schedule_is_404(client: TestClient, tasked: ProjectKeys) -> None:
    _problem(_create(client, tasked, {"schedule_id": "nope"}), 404, "not_found")


def test_schedule_and_schedule_id_together_are_422(client: TestClient, tasked: ProjectKeys) -> None:
    response = _create(client, tasked, {"schedule_id": "x", "schedule": {}})
    _problem(response, 422, "validation_failed")


def test_client_id_makes_creation_idempotent(
    client: TestClient, tasked: ProjectKeys, session: Session
) -> None:
    first = _create(client, tasked, {"client_id": "job-1"})
    again = _create(client, tasked, {"client_id": "job-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    other = _create(client, tasked, {"client_id": "job-2"})
    assert other.status_code == 201
    assert other.json()["id"] != first.json()["id"]
    count = session.scalar(select(func.count()).select_from(Run).where(
        Run.project_id == tasked.id))  # fmt: skip
    assert count == 2


def test_another_projects_run_is_404(
    client: TestClient, tasked: ProjectKeys, other_project: ProjectKeys
) -> None:
    run_id = _create(client, tasked).json()["id"]
    response = client.get(f"{_runs(other_project)}/{run_id}", headers=other_project.admin)
    _problem(response, 404, "not_found")
    _problem(client.get(f"{_runs(tasked)}/missing", headers=tasked.admin), 404, "not_found")


def test_next_of_a_missing_project_or_run_says_which(
    client: TestClient, tasked: ProjectKeys, other_project: ProjectKeys
) -> None:
    """``GET .../next`` reads the project and the run in one statement and still answers as
    the other routes do: the project first, then the run."""
    run_id = _create(client, tasked).json()["id"]
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    cases = [
        (f"{_runs(tasked)}/missing/next", tasked.trainer, "Run not found."),
        (f"{_runs(other_project)}/{run_id}/next", other_project.trainer, "Run not found."),
        (f"{_runs(tasked)}/{run_id}/next", other_project.trainer, "Project not found."),
        (f"/v1/projects/missing/runs/{run_id}/next", admin, "Project not found."),
    ]
    for url, headers, detail in cases:
        assert _problem(client.get(url, headers=headers), 404, "not_found")["detail"] == detail
    # the global admin token and the project's admin key read it too
    for headers in (admin, tasked.admin):
        answer = client.get(f"{_runs(tasked)}/{run_id}/next", headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["stage"] == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_next_is_one_statement_outside_a_transaction_on_postgresql(
    backend: str, tmp_path: Path
) -> None:
    """A trainer's ``GET .../next`` is one statement; on PostgreSQL it runs in autocommit (no
    ``BEGIN``, no ``COMMIT``), on SQLite in the read sessions' transaction."""
    with ExitStack() as stack:
        if backend == "postgresql":
            url = stack.enter_context(postgres_database(require_postgres()))
        else:
            url = migrated_sqlite_url(tmp_path / "next.db")
        settings = Settings(database_url=url, admin_token=ADMIN_TOKEN, job_thread=False)
        client = stack.enter_context(TestClient(create_app(settings)))
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        project = client.post("/v1/projects", json={"name": "next"}, headers=admin).json()
        runs = f"/v1/projects/{project['id']}/runs"
        tasks = {"tasks": [{"key": key} for key in TASKS]}
        client.post(f"/v1/projects/{project['id']}/tasks", json=tasks, headers=admin)
        run_id = client.post(runs, json={}, headers=admin).json()["id"]
        engine = client.app.state.database.engine  # type: ignore[attr-defined]
        seen: list[tuple[str, bool | None]] = []

        @event.listens_for(engine, "before_cursor_execute")
        def _record(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            dbapi = conn.connection.dbapi_connection
            seen.append((statement, getattr(dbapi, "autocommit", None)))

        answer = client.get(f"{runs}/{run_id}/next", headers=admin)
        assert answer.status_code == 200, answer.text
        assert answer.json()["stage"] == 0
        reads = [(sql, autocommit) for sql, autocommit in seen if sql.lstrip().startswith("SELECT")]
        assert len(reads) == 1, seen
        assert "ordo_projects" in reads[0][0]
        assert "ordo_runs" in reads[0][0]
        if backend == "postgresql":
            assert reads[0][1] is True
        else:
            assert [sql for sql, _ in seen if sql.startswith("BEGIN")] == ["BEGIN"]


# --- stages --------------------------------------------------------------------------------------


def test_next_walks_the_plan_then_says_done(client: TestClient, tasked: ProjectKeys) -> None:
    run = _create(client, tasked).json()
    order = [stage["task"] for stage in run["stages"]]
    first = _next(client, tasked, run["id"])
    assert (first["done"], first["stage"], first["task"]) == (False, 0, None)
    assert first["lease"]["token"] == 1
    for stage in range(4):
        assert _report(client, tasked, run["id"], stage).status_code == 200
        step = _next(client, tasked, run["id"])
        if stage < 3:
            assert (step["stage"], step["task"]) == (stage + 1, order[stage])
    assert step["done"] is True
    assert step["stage"] is None
    view = client.get(f"{_runs(tasked)}/{run['id']}", headers=tasked.trainer).json()
    assert [s["status"] for s in view["stages"]] == ["reported"] * 3
    assert [r["stage"] for r in view["reports"]] == [0, 1, 2, 3]
    assert [r["task"] for r in view["reports"]] == [None, *order]
    client.post(f"{_runs(tasked)}/{run['id']}/complete", headers=_holder(tasked))
    done = _next(client, tasked, run["id"])
    assert (done["done"], done["status"], done["lease"]) == (True, "completed", None)


def test_stage_statuses_mark_the_next_one(client: TestClient, tasked: ProjectKeys) -> None:
    run = _create(client, tasked).json()
    _report(client, tasked, run["id"], 0)
    _report(client, tasked, run["id"], 1)
    view = client.get(f"{_runs(tasked)}/{run['id']}", headers=tasked.trainer).json()
    assert [s["status"] for s in view["stages"]] == ["reported", "next", "planned"]
    assert view["next_stage"] == 2


# --- lease ---------------------------------------------------------------------------------------


def _heartbeat(client: TestClient, project: ProjectKeys, run_id: str, token: int) -> Any:
    url = f"{_runs(project)}/{run_id}/heartbeat"
    return client.post(url, headers=_holder(project, token))


def test_heartbeat_renews_the_lease(client: TestClient, tasked: ProjectKeys) -> None:
    run = _create(client, tasked).json()
    time.sleep(0.05)
    response = _heartbeat(client, tasked, run["id"], 1)
    assert response.status_code == 200, response.text
    lease = response.json()
    assert lease["token"] == 1
    assert lease["expires_at"] > run["lease"]["expires_at"]
    # The token in the body (the older way) is still taken.
    url = f"{_runs(tasked)}/{run['id']}/heartbeat"
    assert client.post(url, json={"lease_token": 1}, headers=tasked.trainer).status_code == 200


def test_silent_run_turns_stale_and_late_reports_are_kept(
    client: TestClient, tasked: ProjectKeys
) -> None:
    run = _create(client, tasked).json()
    assert _report(client, tasked, run["id"], 0).json()["report"]["late"] is False
    time.sleep(GRACE_S + 0.2)
    view = client.get(f"{_runs(tasked)}/{run['id']}", headers=tasked.trainer).json()
    assert view["status"] == "stale"
    assert _next(client, tasked, run["id"])["status"] == "stale"
    late = _report(client, tasked, run["id"], 1)
    assert late.status_code == 200, late.text
    assert late.json()["report"]["late"] is True
    assert late.json()["observations"] > 0
    view = client.get(f"{_runs(tasked)}/{run['id']}", headers=tasked.trainer).json()
    assert view["status"] == "active"
    assert [r["late"] for r in view["reports"]] == [False, True]


def test_heartbeat_revives_a_stale_run(client: TestClient, tasked: ProjectKeys) -> None:
    run = _create(client, tasked).json()
    time.sleep(GRACE_S + 0.2)
    assert _next(client, tasked, run["id"])["status"] == "stale"
    assert _heartbeat(client, tasked, run["id"], 1).json()["token"] == 1
    assert _next(client, tasked, run["id"])["status"] == "active"


def test_reclaiming_a_stale_run_fences_the_old_holder(
    client: TestClient, tasked: ProjectKeys
) -> None:
    run = _create(client, tasked, {"client_id": "job-1"}).json()
    fresh = _create(client, tasked, {"client_id": "job-1"}).json()
    assert fresh["lease"]["token"] == 1  # still active: no new holder
    time.sleep(GRACE_S + 0.2)
    reclaimed = _create(client, tasked, {"client_id": "job-1"})
    assert reclaimed.status_code == 200
    assert reclaimed.json()["id"] == run["id"]
    assert reclaimed.json()["lease"]["token"] == 2
    assert reclaimed.json()["status"] == "active"
    body = _problem(_heartbeat(client, tasked, run["id"], 1), 409, "lease_lost")
    assert body["errors"] == [{"field": "header.Ordo-Lease-Token", "reason": "Current token is 2"}]
    assert _heartbeat(client, tasked, run["id"], 2).status_code == 200


# --- end -----------------------------------------------------------------------------------------


def _end(client: TestClient, project: ProjectKeys, run_id: str, how: str) -> Any:
    body = {"reason": "out of memory"} if how == "fail" else None
    return client.post(f"{_runs(project)}/{run_id}/{how}", json=body, headers=_holder(project))


def test_complete_is_idempotent_and_final(client: TestClient, tasked: ProjectKeys) -> None:
    run_id = _create(client, tasked).json()["id"]
    first = _end(client, tasked, run_id, "complete")
    assert first.status_code == 200
    assert first.json()["status"] == "completed"
    assert first.json()["finished_at"] is not None
    again = _end(client, tasked, run_id, "complete")
    assert again.status_code == 200
    assert again.json()["finished_at"] == first.json()["finished_at"]
    _problem(_end(client, tasked, run_id, "fail"), 409, "run_finished")
    _problem(_heartbeat(client, tasked, run_id, 1), 409, "run_finished")
    _problem(_report(client, tasked, run_id, 0), 409, "run_finished")


def test_fail_keeps_the_reason(client: TestClient, tasked: ProjectKeys) -> None:
    run_id = _create(client, tasked).json()["id"]
    failed = _end(client, tasked, run_id, "fail")
    assert failed.status_code == 200
    assert (failed.json()["status"], failed.json()["fail_reason"]) == ("failed", "out of memory")
    assert _end(client, tasked, run_id, "fail").status_code == 200
    _problem(_end(client, tasked, run_id, "complete"), 409, "run_finished")
    missing = client.post(f"{_runs(tasked)}/{run_id}/fail", json={}, headers=_holder(tasked))
    assert missing.status_code == 422


# --- listing -------------------------------------------------------------------------------------


def test_list_pages_newest_first(client: TestClient, tasked: ProjectKeys) -> None:
    created = [_create(client, tasked).json()["id"] for _ in range(3)]
    _end(client, tasked, created[0], "complete")
    first = client.get(_runs(tasked), params={"page_size": 2}, headers=tasked.trainer).json()
    assert len(first["items"]) == 2
    assert first["next_page_token"]
    second = client.get(
        _runs(tasked),
        params={"page_size": 2, "page_token": first["next_page_token"]},
        headers=tasked.trainer,
    ).json()
    assert second["next_page_token"] is None
    listed = [run["id"] for run in first["items"] + second["items"]]
    assert listed == created[::-1]
    completed = client.get(_runs(tasked), params={"status": "completed"}, headers=tasked.trainer)
    assert [run["id"] for run in completed.json()["items"]] == [created[0]]
    bad = client.get(_runs(tasked), params={"page_token": "%%%"}, headers=tasked.trainer)
    assert _problem(bad, 422, "validation_failed")["errors"][0]["field"] == "page_token"


def test_a_page_of_runs_reads_their_plans_in_one_statement(
    client: TestClient, tasked: ProjectKeys, connection: Connection
) -> None:
    # Adaptive runs follow plans of their own: one read a run before (an N + 1 query).
    created = [_create(client, tasked, {"adaptive": True}).json() for _ in range(4)]
    statements = recorded_statements(connection.engine)
    listed = client.get(_runs(tasked), headers=tasked.trainer).json()["items"]
    assert [run["id"] for run in listed] == [run["id"] for run in created[::-1]]
    assert all(run["stage_count"] == len(TASKS) for run in listed)
    assert len([s for s in statements if "FROM ordo_schedules" in s]) == 1


# --- adaptive re-planning ------------------------------------------------------------------------


def _first_run_seed(session: Session, project: ProjectKeys) -> int:
    """The sampling seed of a project's first run without ``client_id``."""
    stored = session.get(Project, project.id)
    assert stored is not None
    return plan_seed(stored.name, "#1")


def test_adaptive_run_replans_into_a_linked_chain(
    client: TestClient, tasked: ProjectKeys, session: Session
) -> None:
    # The pairwise estimates' Thompson draws (the ensemble's: tests/app/test_run_model.py).
    body = {"adaptive": True, "strategy": "thompson", "level_model": "constant"}
    run = _create(client, tasked, body).json()
    initial = run["schedule_id"]
    first_task = run["stages"][0]["task"]
    assert _report(client, tasked, run["id"], 0).json()["plan_pending"] is False
    answer = _report(client, tasked, run["id"], 1).json()
    # The report queues the re-plan (a job) and answers at once, with the plan it had.
    assert (answer["plan_pending"], answer["replanned"]) == (True, False)
    assert answer["schedule_id"] == initial
    following = _next(client, tasked, run["id"])  # waits for the job (here: runs it)
    assert following["plan_pending"] is False
    current = client.get(f"{_runs(tasked)}/{run['id']}", headers=tasked.trainer).json()
    assert current["schedule_id"] != initial
    replan = session.get(Schedule, current["schedule_id"])
    assert replan is not None
    assert (replan.parent_id, replan.run_id) == (initial, run["id"])
    assert replan.order[0] == first_task
    assert replan.request["prefix"] == [first_task]
    assert replan.request["objective"] == "thompson"
    # Seeded by the project's name and the run's sequence number (no client_id): stable names.
    assert replan.request["seed"] == _first_run_seed(session, tasked)
    assert (following["stage"], following["task"]) == (2, replan.order[1])
    assert replan.run_stage == 1
    # One stage left after stage 2: nothing to choose, no new plan.
    assert _report(client, tasked, run["id"], 2).json()["plan_pending"] is False
    view = client.get(f"{_runs(tasked)}/{run['id']}", headers=tasked.trainer).json()
    assert [s["id"] for s in view["schedules"]] == [initial, replan.id]
    assert [s["parent_id"] for s in view["schedules"]] == [None, initial]
    assert view["schedules"][1]["version"] == view["schedules"][0]["version"] + 1


def test_fixed_run_never_replans(client: TestClient, tasked: ProjectKeys) -> None:
    run = _create(client, tasked, {"strategy": "mean_variance"}).json()
    for stage in range(4):
        assert _report(client, tasked, run["id"], stage).json()["plan_pending"] is False
    view = client.get(f"{_runs(tasked)}/{run['id']}", headers=tasked.trainer).json()
    assert len(view["schedules"]) == 1


def test_replan_of_a_run_started_from_a_stored_schedule(
    client: TestClient, tasked: ProjectKeys
) -> None:
    stored = _create(client, tasked).json()["schedule_id"]
    run = _create(client, tasked, {"schedule_id": stored, "adaptive": True}).json()
    _report(client, tasked, run["id"], 0)
    _report(client, tasked, run["id"], 1)
    _next(client, tasked, run["id"])
    view = client.get(f"{_runs(tasked)}/{run['id']}", headers=tasked.trainer).json()
    assert [s["id"] for s in view["schedules"]] == [stored, view["schedule_id"]]
    assert view["schedule_id"] != stored


@pytest.mark.parametrize("level_model", ["entropy", "state"])
def test_state_aware_runs_plan_on_their_level_model(
    client: TestClient, tasked: ProjectKeys, session: Session, level_model: str
) -> None:
    body = {"adaptive": True, "strategy": "thompson", "level_model": level_model}
    run = _create(client, tasked, body).json()
    assert run["level_model"] == level_model
    for stage in range(3):
        _next(client, tasked, run["id"])
        assert _report(client, tasked, run["id"], stage).status_code == 200
    view = client.get(f"{_runs(tasked)}/{run['id']}", headers=tasked.trainer).json()
    assert len(view["schedules"]) == 2
    replan = session.get(Schedule, view["schedules"][1]["id"])
    assert replan is not None
    # The level terms are folded into the model: solved with rho = 1 on one sample (seeded).
    assert (replan.request["rho"], replan.request["objective"]) == (1.0, "expected")
    assert replan.request["seed"] == _first_run_seed(session, tasked)


def test_unknown_level_model_is_422(client: TestClient, tasked: ProjectKeys) -> None:
    problem = _problem(_create(client, tasked, {"level_model": "magic"}), 422, "validation_failed")
    assert problem["errors"][0]["field"] == "level_model"


def test_a_replan_on_tied_estimates_keeps_the_plans_tie_break(
    client: TestClient, tasked: ProjectKeys
) -> None:
    # Every task moves by the same amount: all effects tie, so only the tie-break decides. The
    # re-plan lists the tasks in project order (not plan order), so it breaks ties the same way.
    run = _create(client, tasked, {"adaptive": True, "level_model": "constant"}).json()
    planned = [stage["task"] for stage in run["stages"]]
    _report(client, tasked, run["id"], 0)
    assert _report(client, tasked, run["id"], 1).json()["plan_pending"] is True
    _next(client, tasked, run["id"])
    view = client.get(f"{_runs(tasked)}/{run['id']}", headers=tasked.trainer).json()
    assert len(view["schedules"]) == 2
    assert [stage["task"] for stage in view["stages"]] == planned


# --- the project's solve policy ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "field", "reason"),
    [
        ({"time_limit_s": 3, "tasks": ["math", "code"]}, "schedule.time_limit_s",
         "At most 2 seconds by the project's policy (settings.max_time_limit_s)"),
        ({"tasks": ["math", "code"],
          "constraints": [{"type": "precedence", "before": "math", "after": "code"}] * 2},
         "schedule.constraints",
         "At most 1 constraints by the project's policy (settings.max_constraints), got 2"),
        ({"objective": "maximin"}, "schedule.tasks",
         "At most 2 tasks per schedule by the project's policy (settings.max_tasks), got 3"),
        (None, "schedule.tasks",
         "At most 2 tasks per schedule by the project's policy (settings.max_tasks), got 3"),
    ],
)  # fmt: skip
def test_run_schedule_past_the_project_policy_is_422(
    client: TestClient,
    tasked: ProjectKeys,
    schedule: dict[str, Any] | None,
    field: str,
    reason: str,
) -> None:
    policy = {"max_time_limit_s": 2, "max_constraints": 1, "max_tasks": 2}
    patched = client.patch(
        f"/v1/projects/{tasked.id}", json={"settings": policy}, headers=tasked.admin
    )
    assert patched.status_code == 200, patched.text
    body = {} if schedule is None else {"schedule": schedule}
    problem = _problem(_create(client, tasked, body), 422, "validation_failed")
    assert problem["errors"] == [{"field": field, "reason": reason}]
    assert client.get(_runs(tasked), headers=tasked.trainer).json()["items"] == []
    within = {"schedule": {"tasks": ["math", "code"], "time_limit_s": 2}}
    created = _create(client, tasked, within)
    assert created.status_code == 201, created.text


def test_ending_a_run_reads_it_once_with_its_plan_and_the_clock(
    client: TestClient, tasked: ProjectKeys, connection: Connection
) -> None:
    run = _create(client, tasked).json()
    statements = recorded_statements(connection.engine)
    ended = _end(client, tasked, run["id"], "complete").json()
    assert ended["status"] == "completed"
    assert ended["finished_at"] is not None
    run_reads = [s for s in statements if s.startswith("SELECT") and "FROM ordo_runs" in s]
    # The run locked with its plan, the clock and its pending job; then its view reads nothing
    # of it again (three reads before: the run, the clock, the run with its plan).
    assert len(run_reads) == 1, run_reads
    assert "JOIN ordo_schedules" in run_reads[0]
    assert not [
        s
        for s in statements
        if s.startswith("SELECT")
        and "FROM ordo_runs" not in s
        and ("now" in s or "clock_timestamp" in s)
    ]
    statements.clear()
    assert _end(client, tasked, run["id"], "complete").json() == ended
