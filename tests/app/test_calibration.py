"""Calibration: predicted (first and last plan) against observed final utilities."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from tests.conftest import recorded_statements
from tests.factories import ProjectKeys, create_project_with_keys

TASKS = ("math", "code", "poetry")
LEVELS = {"math": 0.6, "code": 0.4, "poetry": 0.5}
PINNED = [{"type": "pinned", "task": key, "position": k + 1} for k, key in enumerate(TASKS)]
FINAL = {"math": 0.7, "code": 0.35, "poetry": 0.5}


@pytest.fixture
def tasked(client: TestClient, session: Session) -> ProjectKeys:
    """Three tasks whose levels are known and whose transfers are zero (tight priors)."""
    keys = create_project_with_keys(session, task_keys=TASKS)
    session.commit()
    priors = [{"effect": "L", "dst": k, "mean": v, "std": 0.001} for k, v in LEVELS.items()]
    priors += [
        {"effect": effect, "src": src, "dst": dst, "mean": 0.0, "std": 0.001}
        for effect in ("F", "B")
        for src in TASKS
        for dst in TASKS
        if src != dst
    ]
    response = client.post(f"/v1/projects/{keys.id}/priors", json=priors, headers=keys.admin)
    assert response.status_code == 200
    return keys


def _run(
    client: TestClient,
    project: ProjectKeys,
    *,
    adaptive: bool,
    end: str | None,
    level_model: str | None = None,
    schedule_id: str | None = None,
) -> Any:
    """A run over TASKS in order (``schedule_id``: from that stored schedule) whose last report
    is FINAL."""
    runs = f"/v1/projects/{project.id}/runs"
    body: dict[str, Any] = {"schedule": {"constraints": PINNED}, "adaptive": adaptive}
    if schedule_id is not None:
        body = {"schedule_id": schedule_id, "adaptive": adaptive}
    if level_model is not None:
        body["level_model"] = level_model
    run = client.post(runs, json=body, headers=project.trainer).json()
    holder = {**project.trainer, "Ordo-Lease-Token": str(run["lease"]["token"])}
    for stage in range(4):
        values = FINAL if stage == 3 else dict.fromkeys(TASKS, 0.3 + 0.1 * stage)
        evaluations = [{"task": k, "value": v} for k, v in values.items()]
        response = client.put(
            f"{runs}/{run['id']}/reports/{stage}",
            json={"evaluations": evaluations},
            headers=holder,
        )
        assert response.status_code == 200, response.text
    if end == "fail":
        client.post(f"{runs}/{run['id']}/fail", json={"reason": "x"}, headers=holder)
    elif end == "complete":
        client.post(f"{runs}/{run['id']}/complete", headers=holder)
    return client.get(f"{runs}/{run['id']}", headers=project.trainer).json()


def _calibration(client: TestClient, project: ProjectKeys) -> Any:
    response = client.get(f"/v1/projects/{project.id}/calibration", headers=project.trainer)
    assert response.status_code == 200, response.text
    return response.json()


def _predicted(client: TestClient, project: ProjectKeys, schedule_id: str) -> dict[str, float]:
    response = client.get(
        f"/v1/projects/{project.id}/schedules/{schedule_id}", headers=project.trainer
    )
    assert response.status_code == 200, response.text
    return {t["task"]: t["mean"] for t in response.json()["predicted"]["tasks"]}


def test_no_finished_run_no_figures(client: TestClient, tasked: ProjectKeys) -> None:
    _run(client, tasked, adaptive=False, end=None)
    _run(client, tasked, adaptive=False, end="fail")
    assert _calibration(client, tasked) == {
        "runs": [],
        "count": 0,
        "mae_initial": None,
        "mae_final": None,
        "coverage_initial": None,
        "coverage_final": None,
    }


def test_fixed_run_hand_computed(client: TestClient, tasked: ProjectKeys) -> None:
    # Planned on the pairwise estimates (the tight priors), not on the run model's default.
    run = _run(client, tasked, adaptive=False, end="complete", level_model="constant")
    body = _calibration(client, tasked)
    [item] = body["runs"]
    assert item["run_id"] == run["id"]
    assert item["initial_schedule_id"] == item["final_schedule_id"] == run["schedule_id"]
    assert item["stages_reported"] == 3
    observed = {t["task"]: t["observed"] for t in item["tasks"]}
    assert observed == pytest.approx(FINAL)
    # Zero transfers: each predicted final utility is the task's level.
    for task in item["tasks"]:
        assert task["predicted_initial"] == pytest.approx(LEVELS[task["task"]], abs=1e-6)
        assert task["predicted_final"] == task["predicted_initial"]
    assert item["mae_initial"] == pytest.approx((0.1 + 0.05 + 0.0) / 3, abs=1e-6)
    assert body["count"] == 3
    assert body["mae_initial"] == pytest.approx(item["mae_initial"])
    # Tight intervals around the levels: only poetry (observed at its level) is inside.
    inside = {t["task"]: t["inside_initial"] for t in item["tasks"]}
    assert inside == {"math": False, "code": False, "poetry": True}
    assert item["coverage_initial"] == body["coverage_initial"] == pytest.approx(1 / 3)


def test_adaptive_run_uses_its_first_and_last_plan(client: TestClient, tasked: ProjectKeys) -> None:
    run = _run(client, tasked, adaptive=True, end="complete")
    first, last = run["schedules"][0]["id"], run["schedules"][-1]["id"]
    assert first != last
    [item] = _calibration(client, tasked)["runs"]
    assert (item["initial_schedule_id"], item["final_schedule_id"]) == (first, last)
    initial, final = _predicted(client, tasked, first), _predicted(client, tasked, last)
    for task in item["tasks"]:
        assert task["predicted_initial"] == initial[task["task"]]
        assert task["predicted_final"] == final[task["task"]]
    errors = [abs(final[k] - v) for k, v in FINAL.items()]
    assert item["mae_final"] == pytest.approx(sum(errors) / 3)


def test_mean_over_runs(client: TestClient, tasked: ProjectKeys) -> None:
    _run(client, tasked, adaptive=False, end="complete")
    _run(client, tasked, adaptive=True, end="complete")
    body = _calibration(client, tasked)
    assert len(body["runs"]) == 2
    assert body["count"] == 6
    errors = [abs(t["predicted_final"] - t["observed"]) for r in body["runs"] for t in r["tasks"]]
    assert body["mae_final"] == pytest.approx(sum(errors) / 6)
    limited = client.get(
        f"/v1/projects/{tasked.id}/calibration", params={"limit": 1}, headers=tasked.trainer
    )
    assert len(limited.json()["runs"]) == 1


def test_the_runs_are_read_together_whatever_their_number(
    client: TestClient, tasked: ProjectKeys, connection: Connection
) -> None:
    """Four statements (the runs, the tasks, the plans, the last reports' evaluations) for one
    run or five; four a run before. Each run's first and last plan are its view's, a run that
    started from another's stored plan included."""
    runs = [_run(client, tasked, adaptive=True, end="complete")]
    statements = recorded_statements(connection.engine)
    _calibration(client, tasked)
    one = len([s for s in statements if s.startswith("SELECT")])
    runs.append(_run(client, tasked, adaptive=False, end="complete"))
    for _ in range(2):
        runs.append(_run(client, tasked, adaptive=True, end="complete"))
    started_from = runs[0]["schedules"][0]["id"]
    runs.append(_run(client, tasked, adaptive=True, end="complete", schedule_id=started_from))
    statements.clear()
    body = _calibration(client, tasked)
    assert len([s for s in statements if s.startswith("SELECT")]) == one
    by_run = {item["run_id"]: item for item in body["runs"]}
    assert len(by_run) == len(runs)
    for run in runs:
        item = by_run[run["id"]]
        chain = run["schedules"]
        assert (item["initial_schedule_id"], item["final_schedule_id"]) == (
            chain[0]["id"],
            chain[-1]["id"],
        )
        assert {task["task"]: task["observed"] for task in item["tasks"]} == FINAL
    assert by_run[runs[-1]["id"]]["initial_schedule_id"] == started_from
