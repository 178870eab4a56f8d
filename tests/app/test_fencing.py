"""Fencing: every write on a run carries the holder's lease token; a ``client_id`` one request.

A run silent past its grace period is re-claimed by its ``client_id`` with a new lease token;
from then on the old holder's report, heartbeat, complete and fail answer 409 ``lease_lost`` and
store nothing, a write with no ``Ordo-Lease-Token`` answers 428 ``lease_token_required``. The same
``client_id`` with a different request answers 409 ``client_id_conflict``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ordo_server.app.settings import Settings
from ordo_server.models import Run, StageReport
from tests.conftest import ADMIN_TOKEN
from tests.factories import ProjectKeys, create_project_with_keys

TASKS = ("math", "code", "poetry")
GRACE_S = 0.8
HEADER = "Ordo-Lease-Token"


@pytest.fixture
def settings(database_url: str) -> Settings:
    """A short grace period, so that a run turns stale and can be re-claimed."""
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


def _create(client: TestClient, project: ProjectKeys, body: dict[str, Any]) -> Any:
    return client.post(_runs(project), json=body, headers=project.trainer)


def _with_token(auth: dict[str, str], token: int | None) -> dict[str, str]:
    return auth if token is None else {**auth, HEADER: str(token)}


def _report_body(stage: int) -> dict[str, Any]:
    return {"evaluations": [{"task": key, "value": 0.5 + 0.01 * stage} for key in TASKS]}


def _write(
    client: TestClient,
    project: ProjectKeys,
    run_id: str,
    write: str,
    token: int | None,
    *,
    auth: dict[str, str] | None = None,
    stage: int = 1,
) -> Any:
    """One write on the run: ``report`` (of ``stage``), ``heartbeat``, ``complete``, ``fail``."""
    headers = _with_token(auth or project.trainer, token)
    run = f"{_runs(project)}/{run_id}"
    if write == "report":
        return client.put(f"{run}/reports/{stage}", json=_report_body(stage), headers=headers)
    body = {"reason": "stale holder"} if write == "fail" else None
    return client.post(f"{run}/{write}", json=body, headers=headers)


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


def _view(client: TestClient, project: ProjectKeys, run_id: str) -> dict[str, Any]:
    response = client.get(f"{_runs(project)}/{run_id}", headers=project.trainer)
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


def _without_status(view: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in view.items() if key != "status"}


def _reclaimed_run(client: TestClient, project: ProjectKeys) -> dict[str, Any]:
    """A run whose first holder (token 1) reported its baseline, then went silent and lost it."""
    run = _create(client, project, {"client_id": "job-1"}).json()
    assert run["lease"]["token"] == 1
    assert _write(client, project, run["id"], "report", 1, stage=0).status_code == 200
    time.sleep(GRACE_S + 0.2)
    reclaimed = _create(client, project, {"client_id": "job-1"})
    assert reclaimed.status_code == 200, reclaimed.text
    assert reclaimed.json()["id"] == run["id"]
    assert reclaimed.json()["lease"]["token"] == 2
    view: dict[str, Any] = reclaimed.json()
    return view


# --- the stale holder ----------------------------------------------------------------------------


@pytest.mark.parametrize("write", ["report", "heartbeat", "complete", "fail"])
def test_the_stale_holder_is_fenced_off_and_stores_nothing(
    client: TestClient, tasked: ProjectKeys, session: Session, write: str
) -> None:
    run = _reclaimed_run(client, tasked)
    before = _view(client, tasked, run["id"])

    problem = _problem(_write(client, tasked, run["id"], write, 1), 409, "lease_lost")
    assert "token 2 holds it now" in problem["detail"]
    assert problem["errors"] == [{"field": f"header.{HEADER}", "reason": "Current token is 2"}]

    after = _view(client, tasked, run["id"])
    # Next stage, reports, lease token and expiry: all unchanged. The status is derived from the
    # stored expiry at read time, so on a slow machine the clock alone may have turned the run
    # stale since `before`; the unchanged expiry says the write did not touch it.
    assert _without_status(after) == _without_status(before)
    assert after["status"] in {"active", "stale"}
    assert (after["next_stage"], after["fail_reason"]) == (1, None)
    reports = session.scalar(
        select(func.count()).select_from(StageReport).where(StageReport.run_id == run["id"])
    )
    assert reports == 1
    # The current holder goes on: the same write succeeds with its token.
    assert _write(client, tasked, run["id"], write, 2).status_code == 200


def test_a_replay_of_a_stored_report_by_the_stale_holder_is_fenced_too(
    client: TestClient, tasked: ProjectKeys
) -> None:
    run = _reclaimed_run(client, tasked)
    _problem(_write(client, tasked, run["id"], "report", 1, stage=0), 409, "lease_lost")
    assert _write(client, tasked, run["id"], "report", 2, stage=0).status_code == 200


def test_a_token_from_the_future_is_not_the_holders(
    client: TestClient, tasked: ProjectKeys
) -> None:
    run = _create(client, tasked, {}).json()
    _problem(_write(client, tasked, run["id"], "report", 7, stage=0), 409, "lease_lost")
    assert _write(client, tasked, run["id"], "report", 1, stage=0).status_code == 200


def test_a_silent_holder_that_was_not_replaced_keeps_its_lease(
    client: TestClient, tasked: ProjectKeys
) -> None:
    run = _create(client, tasked, {"client_id": "job-1"}).json()
    time.sleep(GRACE_S + 0.2)
    late = _write(client, tasked, run["id"], "report", 1, stage=0)
    assert late.status_code == 200, late.text
    assert late.json()["report"]["late"] is True


# --- the header ----------------------------------------------------------------------------------


@pytest.mark.parametrize("write", ["report", "heartbeat", "complete", "fail"])
def test_a_write_without_the_header_is_428(
    client: TestClient, tasked: ProjectKeys, write: str
) -> None:
    run = _create(client, tasked, {}).json()
    problem = _problem(
        _write(client, tasked, run["id"], write, None, stage=0), 428, "lease_token_required"
    )
    assert problem["errors"] == [{"field": f"header.{HEADER}", "reason": "Field required"}]
    view = _view(client, tasked, run["id"])
    assert (view["status"], view["next_stage"], view["reports"]) == ("active", 0, [])


@pytest.mark.parametrize("write", ["complete", "fail"])
def test_an_admin_may_end_a_run_without_the_token_but_not_with_a_stale_one(
    client: TestClient, tasked: ProjectKeys, write: str
) -> None:
    run = _reclaimed_run(client, tasked)
    stale = _write(client, tasked, run["id"], write, 1, auth=tasked.admin)
    _problem(stale, 409, "lease_lost")
    ended = _write(client, tasked, run["id"], write, None, auth=tasked.admin)
    assert ended.status_code == 200, ended.text
    assert ended.json()["status"] == ("completed" if write == "complete" else "failed")


@pytest.mark.parametrize("write", ["report", "heartbeat"])
def test_an_admin_reports_and_heartbeats_with_the_token_like_anyone(
    client: TestClient, tasked: ProjectKeys, write: str
) -> None:
    run = _create(client, tasked, {}).json()
    response = _write(client, tasked, run["id"], write, None, auth=tasked.admin, stage=0)
    _problem(response, 428, "lease_token_required")
    assert _write(client, tasked, run["id"], write, 1, auth=tasked.admin, stage=0).is_success


def test_a_token_that_is_not_an_integer_is_422(client: TestClient, tasked: ProjectKeys) -> None:
    run = _create(client, tasked, {}).json()
    headers = {**tasked.trainer, HEADER: "one"}
    response = client.post(f"{_runs(tasked)}/{run['id']}/heartbeat", headers=headers)
    problem = _problem(response, 422, "validation_failed")
    assert [e["field"] for e in problem["errors"]] == [f"header.{HEADER}"]


def test_the_heartbeat_body_token_still_works_and_must_agree_with_the_header(
    client: TestClient, tasked: ProjectKeys
) -> None:
    run = _reclaimed_run(client, tasked)
    beat = f"{_runs(tasked)}/{run['id']}/heartbeat"
    old = client.post(beat, json={"lease_token": 1}, headers=tasked.trainer)
    problem = _problem(old, 409, "lease_lost")
    assert problem["errors"] == [{"field": "lease_token", "reason": "Current token is 2"}]
    assert client.post(beat, json={"lease_token": 2}, headers=tasked.trainer).status_code == 200
    both = client.post(beat, json={"lease_token": 1}, headers=_with_token(tasked.trainer, 2))
    assert [e["field"] for e in _problem(both, 422, "validation_failed")["errors"]] == [
        "lease_token"
    ]


def test_the_spec_declares_the_header_and_its_answers(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    runs = "/v1/projects/{project_id}/runs/{run_id}"
    writes = [
        ("put", f"{runs}/reports/{{stage}}"),
        ("post", f"{runs}/heartbeat"),
        ("post", f"{runs}/complete"),
        ("post", f"{runs}/fail"),
    ]
    for method, path in writes:
        operation = spec["paths"][path][method]
        headers = [p["name"] for p in operation["parameters"] if p["in"] == "header"]
        assert headers == [HEADER], path
        assert {"409", "428"} <= set(operation["responses"]), path
    create = spec["paths"]["/v1/projects/{project_id}/runs"]["post"]
    assert "client_id_conflict" in create["responses"]["409"]["description"]


# --- client_id -----------------------------------------------------------------------------------


def _run_count(session: Session, project: ProjectKeys) -> int:
    count = session.scalar(
        select(func.count()).select_from(Run).where(Run.project_id == project.id)
    )
    return int(count or 0)


def test_the_same_client_id_with_another_request_is_409(
    client: TestClient, tasked: ProjectKeys, session: Session
) -> None:
    first = _create(client, tasked, {"client_id": "job-1"})
    assert first.status_code == 201
    other = _create(client, tasked, {"client_id": "job-1", "adaptive": True})
    problem = _problem(other, 409, "client_id_conflict")
    assert first.json()["id"] in problem["detail"]
    # adaptive, and the strategy whose default follows it, differ from the stored request.
    assert [e["field"] for e in problem["errors"]] == ["client_id", "adaptive", "strategy"]
    schedule = _create(client, tasked, {"client_id": "job-1", "schedule": {"rho": 0.5}})
    fields = [e["field"] for e in _problem(schedule, 409, "client_id_conflict")["errors"]]
    assert fields == ["client_id", "schedule.rho"]
    view = _view(client, tasked, first.json()["id"])
    assert (view["adaptive"], view["strategy"]) == (False, "exploit")
    assert _run_count(session, tasked) == 1


def test_the_same_request_again_is_idempotent_defaults_included(
    client: TestClient, tasked: ProjectKeys, session: Session
) -> None:
    first = _create(client, tasked, {"client_id": "job-1"})
    assert first.status_code == 201
    spelled_out = {
        "client_id": "job-1",
        "adaptive": False,
        "strategy": "exploit",
        "level_model": "run_model",
        "schedule": {},
    }
    again = _create(client, tasked, spelled_out)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert _run_count(session, tasked) == 1


def test_a_stale_run_is_not_reclaimed_by_another_request(
    client: TestClient, tasked: ProjectKeys
) -> None:
    run = _create(client, tasked, {"client_id": "job-1"}).json()
    time.sleep(GRACE_S + 0.2)
    _problem(_create(client, tasked, {"client_id": "job-1", "adaptive": True}), 409,
             "client_id_conflict")  # fmt: skip
    assert _view(client, tasked, run["id"])["lease"]["token"] == 1
    assert _write(client, tasked, run["id"], "report", 1, stage=0).status_code == 200
