"""Stage reports: observations and statistics on a hand-computed case, idempotency, errors."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ordo_server.app.db import Database
from ordo_server.app.repositories.statistics import count_deltas, estimates_version
from ordo_server.app.services import statistics
from ordo_server.app.services.statistics import fold_now
from ordo_server.app.settings import Settings
from ordo_server.app.worker import work
from ordo_server.models import Estimate, Observation, Project, StageReport, Task
from ordo_server.models.estimate import LevelStats
from tests.factories import ProjectKeys, create_project_with_keys

TASKS = ("math", "code", "poetry")
# math first, code second: the order of the hand-computed case.
PINNED = [
    {"type": "pinned", "task": "math", "position": "first"},
    {"type": "pinned", "task": "code", "position": 2},
]


@pytest.fixture
def tasked(session: Session) -> ProjectKeys:
    """math (structured), code (structured, scored in percent), poetry (open-ended, a loss)."""
    keys = create_project_with_keys(session, task_keys=TASKS)
    tasks = {t.key: t for t in session.scalars(select(Task).where(Task.project_id == keys.id))}
    tasks["math"].kind = "structured"
    tasks["code"].kind, tasks["code"].scale = "structured", 100.0
    tasks["poetry"].kind, tasks["poetry"].goal = "open_ended", "minimize"
    session.commit()
    return keys


@pytest.fixture
def run_id(client: TestClient, tasked: ProjectKeys) -> str:
    """A fixed run training math, code, poetry in that order."""
    body = {"schedule": {"constraints": PINNED}}
    response = client.post(f"/v1/projects/{tasked.id}/runs", json=body, headers=tasked.trainer)
    assert response.status_code == 201, response.text
    assert [s["task"] for s in response.json()["stages"]] == list(TASKS)
    run: str = response.json()["id"]
    return run


# Raw values per stage (code in percent, poetry a loss) and policy entropies.
VALUES = [
    {"math": 0.50, "code": 40.0, "poetry": 0.30},
    {"math": 0.70, "code": 45.0, "poetry": 0.25},
    {"math": 0.65, "code": 60.0, "poetry": 0.35},
]
ENTROPY = [
    {"math": 1.0, "code": 1.0, "poetry": 1.0},
    {"math": 0.8, "code": 0.8, "poetry": 0.9},
    {"math": 0.6, "code": 0.6, "poetry": 0.7},
]


def _body(stage: int) -> dict[str, Any]:
    return {
        "evaluations": [
            {"task": key, "value": VALUES[stage][key], "entropy": ENTROPY[stage][key]}
            for key in TASKS
        ],
        "steps": 100 * stage,
        "tokens": 1000 * stage,
        "wall_time_s": 1.5 * stage,
    }


# Every run here keeps its first holder: lease token 1.
LEASE = {"Ordo-Lease-Token": "1"}


def _put(client: TestClient, project: ProjectKeys, run_id: str, stage: int, body: Any) -> Any:
    return client.put(
        f"/v1/projects/{project.id}/runs/{run_id}/reports/{stage}",
        json=body,
        headers={**project.trainer, **LEASE},
    )


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


def _observations(session: Session, project_id: str) -> list[tuple[str, str, str, float]]:
    keys = {t.id: t.key for t in session.scalars(select(Task))}
    rows = session.scalars(
        select(Observation).where(Observation.project_id == project_id).order_by(Observation.id)
    )
    return [(o.effect, keys[o.src_task_id], keys[o.dst_task_id], o.value) for o in rows]


# Hand-computed from VALUES and ENTROPY: u = value for math, value / 100 for code, -value for
# poetry. Stage 1 trains math, stage 2 trains code.
STAGE_1 = [
    ("G", "math", "math", 0.20),
    ("L", "math", "math", 0.70),
    ("F", "math", "code", 0.05),
    ("F", "math", "poetry", 0.05),
    ("D", "math", "math", -0.5 / 3),  # mean of -0.2, -0.2, -0.1
]
STAGE_2 = [
    ("B", "code", "math", -0.05),
    ("G", "code", "code", 0.15),
    ("L", "code", "code", 0.60),
    ("F", "code", "poetry", -0.10),
    ("D", "code", "code", -0.2),
]


def _approx(rows: list[tuple[str, str, str, float]]) -> list[Any]:
    return [(e, s, d, pytest.approx(v, abs=1e-12)) for e, s, d, v in rows]


def test_reports_become_hand_computed_observations(
    client: TestClient, tasked: ProjectKeys, run_id: str, session: Session
) -> None:
    baseline = _put(client, tasked, run_id, 0, _body(0))
    assert baseline.status_code == 200, baseline.text
    assert baseline.json()["observations"] == 0
    assert baseline.json()["report"]["task"] is None
    utilities = {e["task"]: e["utility"] for e in baseline.json()["report"]["evaluations"]}
    assert utilities == {"math": 0.5, "code": 0.4, "poetry": -0.3}
    first = _put(client, tasked, run_id, 1, _body(1)).json()
    assert (first["observations"], first["report"]["task"]) == (5, "math")
    assert first["next"] == {"done": False, "stage": 2, "task": "code"}
    assert _observations(session, tasked.id) == _approx(STAGE_1)
    second = _put(client, tasked, run_id, 2, _body(2)).json()
    assert second["observations"] == 5
    assert _observations(session, tasked.id) == _approx(STAGE_1 + STAGE_2)


def test_statistics_are_the_sums_of_the_observations(
    client: TestClient, tasked: ProjectKeys, run_id: str, session: Session
) -> None:
    for stage in range(3):
        _put(client, tasked, run_id, stage, _body(stage))
    assert fold_now(session, tasked.id) == 2  # one delta per observing report
    session.commit()
    keys = {t.id: t.key for t in session.scalars(select(Task))}
    cells = {
        (c.effect, keys[c.src_task_id], keys[c.dst_task_id]): (c.count, c.sum_x, c.sum_x2)
        for c in session.scalars(select(Estimate).where(Estimate.project_id == tasked.id))
    }
    expected = {(e, s, d): (1, v, v * v) for e, s, d, v in STAGE_1 + STAGE_2}
    assert cells.keys() == expected.keys()
    for key, (count, sum_x, sum_x2) in expected.items():
        assert cells[key] == pytest.approx((count, sum_x, sum_x2)), key
    levels = {
        keys[row.task_id]: row
        for row in session.scalars(select(LevelStats).where(LevelStats.project_id == tasked.id))
    }
    # code's level 0.60 came with uplift 0.45 - 0.40 and entropy shift mean(-0.2, -0.2, -0.1).
    code = levels["code"]
    assert code.count == 1
    assert (code.sum_u, code.sum_h, code.sum_y) == pytest.approx((0.05, -0.5 / 3, 0.60))
    assert code.sum_uy == pytest.approx(0.05 * 0.60)
    assert (levels["math"].count, levels["math"].sum_u, levels["math"].sum_h) == (1, 0.0, 0.0)


def test_each_observing_report_bumps_the_estimates_version_once(
    client: TestClient, tasked: ProjectKeys, run_id: str, session: Session
) -> None:
    versions = [
        _put(client, tasked, run_id, k, _body(k)).json()["estimates_version"] for k in (0, 1, 2)
    ]
    assert versions == [0, 1, 2]  # the baseline observes nothing
    assert _put(client, tasked, run_id, 1, _body(1)).json()["estimates_version"] == 1
    project = session.get(Project, tasked.id)
    assert project is not None
    session.refresh(project)
    assert project.estimates_version == 0  # the two deltas are not folded yet
    fold_now(session, tasked.id)
    session.commit()
    session.refresh(project)
    assert project.estimates_version == 2
    assert (
        client.get(f"/v1/projects/{tasked.id}", headers=tasked.trainer).json()["estimates_version"]
        == 2
    )


def test_same_body_replays_the_stored_response(
    client: TestClient, tasked: ProjectKeys, run_id: str, session: Session
) -> None:
    _put(client, tasked, run_id, 0, _body(0))
    first = _put(client, tasked, run_id, 1, _body(1))
    _put(client, tasked, run_id, 2, _body(2))
    again = client.put(
        f"/v1/projects/{tasked.id}/runs/{run_id}/reports/1",
        json=_body(1),
        headers={**tasked.admin, **LEASE},
    )
    assert again.status_code == first.status_code == 200
    assert again.content == first.content  # stored answer, though the run has moved on
    reports = session.scalar(select(func.count()).select_from(StageReport).where(
        StageReport.run_id == run_id))  # fmt: skip
    assert reports == 3
    assert len(_observations(session, tasked.id)) == 10


def test_different_body_for_a_stored_stage_is_409(
    client: TestClient, tasked: ProjectKeys, run_id: str
) -> None:
    _put(client, tasked, run_id, 0, _body(0))
    changed = _body(0)
    changed["evaluations"][0]["value"] = 0.51
    body = _problem(_put(client, tasked, run_id, 0, changed), 409, "report_mismatch")
    assert "Stage 0" in body["detail"]


def test_stage_out_of_turn_names_the_expected_stage(
    client: TestClient, tasked: ProjectKeys, run_id: str
) -> None:
    body = _problem(_put(client, tasked, run_id, 2, _body(2)), 409, "stage_out_of_turn")
    assert body["detail"] == "Stage 2 is out of turn: the run expects stage 0."
    assert body["errors"] == [{"field": "stage", "reason": "Expected stage 0"}]
    for stage in range(3):
        _put(client, tasked, run_id, stage, _body(stage))
    _put(client, tasked, run_id, 3, _body(2))
    beyond = _problem(_put(client, tasked, run_id, 4, _body(2)), 409, "stage_out_of_turn")
    assert beyond["detail"] == "All 3 stages were reported; complete the run."


def test_unknown_task_keys_are_named(client: TestClient, tasked: ProjectKeys, run_id: str) -> None:
    body = {"evaluations": [{"task": "math", "value": 1}, {"task": "chess", "value": 1},
                            {"task": "go", "value": 1}]}  # fmt: skip
    problem = _problem(_put(client, tasked, run_id, 0, body), 422, "validation_failed")
    assert problem["detail"] == "Unknown task keys: chess, go."
    assert problem["errors"] == [
        {"field": "evaluations[1].task", "reason": "Unknown task key 'chess'"},
        {"field": "evaluations[2].task", "reason": "Unknown task key 'go'"},
    ]


def test_repeated_task_is_422(client: TestClient, tasked: ProjectKeys, run_id: str) -> None:
    body = {"evaluations": [{"task": "math", "value": 1}, {"task": "math", "value": 2}]}
    problem = _problem(_put(client, tasked, run_id, 0, body), 422, "validation_failed")
    assert problem["errors"] == [{"field": "evaluations[1].task", "reason": "Duplicate key 'math'"}]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values_are_422(
    client: TestClient, tasked: ProjectKeys, run_id: str, literal: str
) -> None:
    response = client.put(
        f"/v1/projects/{tasked.id}/runs/{run_id}/reports/0",
        content=f'{{"evaluations": [{{"task": "math", "value": {literal}}}]}}',
        headers={**tasked.trainer, **LEASE, "Content-Type": "application/json"},
    )
    problem = _problem(response, 422, "validation_failed")
    assert problem["errors"][0]["field"] == "evaluations[0].value"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"evaluations": []}, "evaluations"),
        ({"evaluations": [{"task": "math", "value": 1, "stderr": -1}]}, "evaluations[0].stderr"),
        ({"evaluations": [{"task": "math", "value": 1}], "steps": -1}, "steps"),
        ({"evaluations": [{"task": "math"}]}, "evaluations[0].value"),
        ({"evaluations": [{"task": "math", "value": 1, "extra": 1}]}, "evaluations[0].extra"),
    ],
)
def test_invalid_bodies_are_422(
    client: TestClient, tasked: ProjectKeys, run_id: str, body: Any, field: str
) -> None:
    problem = _problem(_put(client, tasked, run_id, 0, body), 422, "validation_failed")
    assert field in [error["field"] for error in problem["errors"]]


def test_negative_stage_is_422(client: TestClient, tasked: ProjectKeys, run_id: str) -> None:
    _problem(_put(client, tasked, run_id, -1, _body(0)), 422, "validation_failed")


def test_unknown_run_is_404(client: TestClient, tasked: ProjectKeys) -> None:
    _problem(_put(client, tasked, "missing", 0, _body(0)), 404, "not_found")


def test_partial_evaluations_give_partial_observations(
    client: TestClient, tasked: ProjectKeys, run_id: str, session: Session
) -> None:
    before = [{"task": "math", "value": 0.5}, {"task": "code", "value": 40}]
    after = [{"task": "math", "value": 0.7}, {"task": "poetry", "value": 0.2}]
    _put(client, tasked, run_id, 0, {"evaluations": before})
    answer = _put(client, tasked, run_id, 1, {"evaluations": after})
    # math: G and L; poetry has no stage-0 value and code no stage-1 value; no entropy, no D.
    assert answer.json()["observations"] == 2
    assert _observations(session, tasked.id) == _approx(
        [("G", "math", "math", 0.2), ("L", "math", "math", 0.7)]
    )


def _sorted_statistics(session: Session, project_id: str) -> tuple[list[str], list[str]]:
    cells, levels = statistics.current_statistics(session, project_id)
    session.expire_all()
    return sorted(map(repr, cells)), sorted(map(repr, levels))


def test_a_worker_folds_a_project_that_no_job_plans(
    client: TestClient,
    tasked: ProjectKeys,
    run_id: str,
    session: Session,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fixed run asks for no plan, so no job folds its project: the worker's sweep does."""
    monkeypatch.setattr(statistics, "FOLD_AFTER", 2)
    for stage in range(3):
        _put(client, tasked, run_id, stage, _body(stage))
    before = _sorted_statistics(session, tasked.id)
    assert count_deltas(session, tasked.id) == 2
    stop = threading.Event()
    # One turn of the worker's loop: the sweep, no job to run, then its idle wait stops it.
    work(database, settings, stop=stop, wait=lambda timeout_s: stop.set())
    assert count_deltas(session, tasked.id) == 0
    assert _sorted_statistics(session, tasked.id) == before
    assert estimates_version(session, tasked.id) == 2


def test_a_job_folds_the_deltas_once_enough_wait(
    client: TestClient,
    tasked: ProjectKeys,
    run_id: str,
    session: Session,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(statistics, "FOLD_AFTER", 2)
    _put(client, tasked, run_id, 0, _body(0))
    _put(client, tasked, run_id, 1, _body(1))
    assert statistics.fold_if_due(database, tasked.id) == 0  # one delta waits
    seen = _sorted_statistics(session, tasked.id)
    _put(client, tasked, run_id, 2, _body(2))
    before = _sorted_statistics(session, tasked.id)
    assert before != seen
    assert statistics.fold_if_due(database, tasked.id) == 2
    assert count_deltas(session, tasked.id) == 0
    assert _sorted_statistics(session, tasked.id) == before  # bit for bit
    assert estimates_version(session, tasked.id) == 2
