"""Runs planned on the whole-run model (``level_model: run_model``, solver.learning)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from models import Schedule, Task
from solver.estimation import TaskKind
from solver.learning import RunRecord, fit_run_model, predicted_objective
from tests.factories import ProjectKeys, create_project_with_keys

KINDS = {"math": "structured", "code": "structured", "poetry": "open_ended", "chat": "open_ended"}
KEYS = tuple(KINDS)
# A small additive world: what training the row task does to the column task's utility.
EFFECT = np.array(
    [
        [0.00, 0.03, -0.04, -0.02],
        [0.02, 0.00, -0.05, -0.01],
        [-0.01, 0.00, 0.00, 0.03],
        [0.00, -0.02, 0.02, 0.00],
    ]
)
GAIN = np.array([0.30, 0.25, 0.20, 0.15])


@pytest.fixture
def project(session: Session) -> ProjectKeys:
    """A project with two structured and two open-ended tasks."""
    keys = create_project_with_keys(session)
    session.add_all(
        Task(project_id=keys.id, key=key, index=i, name=key, meta={}, kind=kind)
        for i, (key, kind) in enumerate(KINDS.items())
    )
    session.commit()
    return keys


def _runs(project: ProjectKeys) -> str:
    return f"/v1/projects/{project.id}/runs"


def _evaluation(trained: list[str]) -> list[dict[str, Any]]:
    """Every task's utility and the policy entropy after training ``trained`` in order."""
    index = [KEYS.index(key) for key in trained]
    utility = 0.2 + EFFECT[index].sum(axis=0)
    utility[index] += GAIN[index]
    entropy = 1.0 + 0.1 * sum(1 if KINDS[key] == "open_ended" else -1 for key in trained)
    return [
        {"task": key, "value": float(utility[j]), "entropy": entropy} for j, key in enumerate(KEYS)
    ]


def _report(client: TestClient, project: ProjectKeys, run: dict[str, Any], stage: int) -> Any:
    view = client.get(f"{_runs(project)}/{run['id']}", headers=project.trainer).json()
    trained = [s["task"] for s in view["stages"][:stage]]
    body = {"evaluations": _evaluation(trained)}
    response = client.put(
        f"{_runs(project)}/{run['id']}/reports/{stage}", json=body, headers=project.trainer
    )
    assert response.status_code == 200, response.text
    return response.json()


def _train(client: TestClient, project: ProjectKeys, body: dict[str, Any]) -> dict[str, Any]:
    """Create a run, report every stage, complete it; the final view."""
    run = client.post(_runs(project), json=body, headers=project.trainer).json()
    for stage in range(len(KEYS) + 1):
        _report(client, project, run, stage)
    done = client.post(f"{_runs(project)}/{run['id']}/complete", headers=project.trainer)
    assert done.status_code == 200, done.text
    view: dict[str, Any] = done.json()
    return view


def _order(view: dict[str, Any]) -> list[str]:
    return [stage["task"] for stage in view["stages"]]


def _records(client: TestClient, project: ProjectKeys) -> list[RunRecord]:
    """Every run's record rebuilt from the API's view (task indexes in project order)."""
    records = []
    for summary in client.get(_runs(project), headers=project.trainer).json()["items"][::-1]:
        view = client.get(f"{_runs(project)}/{summary['id']}", headers=project.trainer).json()
        utilities = [
            {KEYS.index(e["task"]): e["utility"] for e in report["evaluations"]}
            for report in view["reports"]
        ]
        entropies = [
            {KEYS.index(e["task"]): e["entropy"] for e in report["evaluations"]}
            for report in view["reports"]
        ]
        trained = tuple(KEYS.index(task) for task in _order(view)[: len(utilities) - 1])
        records.append(RunRecord(trained, utilities, entropies))
    return records


def test_adaptive_exploit_runs_default_to_the_run_model(
    client: TestClient, project: ProjectKeys
) -> None:
    cases = [
        ({"adaptive": True}, "run_model"),
        ({"adaptive": False}, "constant"),
        ({"adaptive": True, "strategy": "thompson"}, "constant"),
        ({"adaptive": False, "level_model": "run_model"}, "run_model"),
    ]
    for body, expected in cases:
        response = client.post(_runs(project), json=body, headers=project.trainer)
        assert response.status_code == 201, response.text
        assert response.json()["level_model"] == expected


@pytest.mark.parametrize("strategy", ["thompson", "mean_variance"])
def test_run_model_plans_exploit_only(
    client: TestClient, project: ProjectKeys, strategy: str
) -> None:
    body = {"adaptive": True, "strategy": strategy, "level_model": "run_model"}
    response = client.post(_runs(project), json=body, headers=project.trainer)
    assert response.status_code == 422, response.text
    assert "exploit" in response.json()["detail"] + str(response.json()["errors"])


def test_a_replan_comes_from_the_run_model_fitted_to_every_report(
    client: TestClient, project: ProjectKeys, session: Session
) -> None:
    _train(client, project, {"adaptive": True})
    run = client.post(_runs(project), json={"adaptive": True}, headers=project.trainer).json()
    assert run["adaptive"] is False  # the designed second run
    answers = [_report(client, project, run, stage) for stage in range(len(KEYS) + 1)]
    assert not any(answer["replanned"] for answer in answers)
    client.post(f"{_runs(project)}/{run['id']}/complete", headers=project.trainer)
    third = client.post(_runs(project), json={"adaptive": True}, headers=project.trainer).json()
    assert third["adaptive"] is True
    _report(client, project, third, 0)
    answer = _report(client, project, third, 1)
    assert answer["replanned"] is True
    replan = session.get(Schedule, answer["schedule_id"])
    assert replan is not None
    assert (replan.status, replan.bound, replan.gap) == ("feasible", None, None)
    assert replan.method.startswith("run_model")
    assert replan.request["rho"] == 1.0
    # The stored objective is the run model's prediction of the stored order, from the
    # entropy the last report gave (all three runs are the data, the current one included).
    records = _records(client, project)
    assert [len(r.utilities) for r in records] == [5, 5, 2]
    model = fit_run_model(records, kinds=[TaskKind(KINDS[key]) for key in KEYS])
    order = [KEYS.index(key) for key in replan.order]
    entropy_now = float(np.mean(list(records[-1].entropies[1].values())))
    expected = predicted_objective(model, np.ones(4), order, entropy_now=entropy_now, trained=1)
    assert replan.objective == pytest.approx(float(expected[0]), rel=1e-9)


def test_the_second_run_is_the_reverse_of_the_first_completed_run(
    client: TestClient, project: ProjectKeys, session: Session
) -> None:
    first = _train(client, project, {"adaptive": True})
    second = client.post(_runs(project), json={"adaptive": True}, headers=project.trainer)
    assert second.status_code == 201, second.text
    designed = second.json()
    assert _order(designed) == _order(first)[::-1]
    schedule = session.get(Schedule, designed["schedule_id"])
    assert schedule is not None
    assert schedule.request["prefix"] == _order(designed)
    assert schedule.request["label"].startswith("designed exploration")
    assert _report(client, project, designed, 0)["replanned"] is False
    assert _report(client, project, designed, 1)["replanned"] is False


def test_a_designed_order_that_breaks_the_constraints_is_planned_instead(
    client: TestClient, project: ProjectKeys
) -> None:
    first = _order(_train(client, project, {"adaptive": True}))
    # The reverse trains first[-1] before first[0]; this request forbids exactly that.
    constraint = {"type": "precedence", "before": first[0], "after": first[-1]}
    body = {"adaptive": True, "schedule": {"constraints": [constraint]}}
    run = client.post(_runs(project), json=body, headers=project.trainer).json()
    assert run["adaptive"] is True
    order = _order(run)
    assert order != first[::-1]
    assert order.index(first[0]) < order.index(first[-1])


def test_a_run_model_replan_keeps_the_prefix_and_respects_the_constraints(
    client: TestClient, project: ProjectKeys, session: Session
) -> None:
    _train(client, project, {"adaptive": True})
    _train(client, project, {"adaptive": True})
    constraints = [
        {"type": "precedence", "before": "chat", "after": "math"},
        {"type": "pinned", "task": "code", "position": "last"},
    ]
    body = {"adaptive": True, "schedule": {"constraints": constraints}}
    run = client.post(_runs(project), json=body, headers=project.trainer).json()
    for stage in range(3):
        answer = _report(client, project, run, stage)
    view = client.get(f"{_runs(project)}/{run['id']}", headers=project.trainer).json()
    assert len(view["schedules"]) == 3  # the first plan and two re-plans
    plans = [session.get(Schedule, s["id"]) for s in view["schedules"]]
    trained = [report["task"] for report in view["reports"][1:]]
    for k, plan in enumerate(plans):
        assert plan is not None
        assert plan.order[:k] == trained[:k]
        assert plan.order.index("chat") < plan.order.index("math")
        assert plan.order[-1] == "code"
        assert plan.method.startswith("run_model")
    current = plans[-1]
    assert current is not None
    assert [stage["task"] for stage in view["stages"]] == current.order
    assert answer["next"]["task"] == current.order[2]
