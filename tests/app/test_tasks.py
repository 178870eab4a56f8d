"""Tasks: batch create, list, get, patch; validation with field and reason."""

from __future__ import annotations

import math
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import ProjectKeys


def _tasks_url(project: ProjectKeys) -> str:
    return f"/v1/projects/{project.id}/tasks"


def _create(client: TestClient, project: ProjectKeys, tasks: list[dict[str, Any]]) -> Any:
    return client.post(_tasks_url(project), json={"tasks": tasks}, headers=project.admin)


def test_batch_create_assigns_consecutive_indexes(client: TestClient, project: ProjectKeys) -> None:
    first = _create(client, project, [{"key": "math", "kind": "structured"}, {"key": "code"}])
    assert first.status_code == 201
    assert [(t["key"], t["index"]) for t in first.json()] == [("math", 0), ("code", 1)]
    second = _create(client, project, [{"key": "poetry", "kind": "open_ended", "goal": "minimize"}])
    assert [(t["key"], t["index"]) for t in second.json()] == [("poetry", 2)]
    listed = client.get(_tasks_url(project), headers=project.trainer).json()
    assert [t["key"] for t in listed] == ["math", "code", "poetry"]
    assert listed[0]["kind"] == "structured"
    assert listed[2]["goal"] == "minimize"


def test_get_and_patch_a_task(client: TestClient, project: ProjectKeys) -> None:
    _create(client, project, [{"key": "math", "metadata": {"suite": "MATH"}}])
    url = f"{_tasks_url(project)}/math"
    got = client.get(url, headers=project.trainer).json()
    assert got["metadata"] == {"suite": "MATH"}
    assert got["weight"] == 1.0
    patched = client.patch(url, json={"weight": 2.5, "scale": 100}, headers=project.admin)
    assert patched.status_code == 200
    assert (patched.json()["weight"], patched.json()["scale"], patched.json()["index"]) == (
        2.5,
        100.0,
        0,
    )
    renamed = client.patch(url, json={"key": "algebra"}, headers=project.admin)
    assert renamed.json()["key"] == "algebra"
    assert client.get(url, headers=project.trainer).status_code == 404
    assert client.get(f"{_tasks_url(project)}/algebra", headers=project.trainer).status_code == 200


def test_patch_to_a_taken_key_is_409(client: TestClient, project: ProjectKeys) -> None:
    _create(client, project, [{"key": "a"}, {"key": "b"}])
    response = client.patch(f"{_tasks_url(project)}/a", json={"key": "b"}, headers=project.admin)
    assert response.status_code == 409


def test_patch_null_and_unknown_fields_are_422(client: TestClient, project: ProjectKeys) -> None:
    _create(client, project, [{"key": "a"}])
    url = f"{_tasks_url(project)}/a"
    null = client.patch(url, json={"weight": None}, headers=project.admin)
    assert null.status_code == 422
    assert null.json()["errors"] == [{"field": "weight", "reason": "May not be null"}]
    unknown = client.patch(url, json={"index": 5}, headers=project.admin)
    assert unknown.json()["errors"] == [
        {"field": "index", "reason": "Extra inputs are not permitted"}
    ]


def test_duplicate_keys_in_a_batch_are_422(client: TestClient, project: ProjectKeys) -> None:
    response = _create(client, project, [{"key": "a"}, {"key": "b"}, {"key": "a"}])
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "tasks[2].key", "reason": "Duplicate key 'a' in this request"}
    ]
    assert client.get(_tasks_url(project), headers=project.admin).json() == []


def test_existing_key_is_409_and_nothing_is_added(client: TestClient, project: ProjectKeys) -> None:
    _create(client, project, [{"key": "a"}])
    response = _create(client, project, [{"key": "b"}, {"key": "a"}])
    assert response.status_code == 409
    assert "a" in response.json()["detail"]
    assert len(client.get(_tasks_url(project), headers=project.admin).json()) == 1


def test_invalid_task_fields_are_named(client: TestClient, project: ProjectKeys) -> None:
    body = (
        b'{"tasks": [{"key": "ok", "scale": 0}, {"key": "bad key", "weight": NaN},'
        b' {"key": "c", "kind": "poem", "extra": 1}]}'
    )
    response = client.post(
        _tasks_url(project),
        content=body,
        headers={**project.admin, "content-type": "application/json"},
    )
    assert response.status_code == 422
    errors = {e["field"]: e["reason"] for e in response.json()["errors"]}
    assert set(errors) == {
        "tasks[0].scale",
        "tasks[1].key",
        "tasks[1].weight",
        "tasks[2].kind",
        "tasks[2].extra",
    }
    assert errors["tasks[1].weight"] == "Input should be a finite number"
    assert errors["tasks[0].scale"] == "Input should be greater than or equal to 0.000001"


@pytest.mark.parametrize(
    ("field", "value"),
    [("weight", 1e300), ("weight", 1e6 * 1.01), ("scale", 1e-300), ("scale", 1e13)],
)
def test_weights_and_scales_past_their_bounds_are_422(
    client: TestClient, project: ProjectKeys, field: str, value: float
) -> None:
    """Found by schemathesis: a weight of 1e300 made every schedule's objective std inf (null)."""
    response = _create(client, project, [{"key": "a", field: value}])
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [f"tasks[0].{field}"]
    created = _create(client, project, [{"key": "a"}])
    assert created.status_code == 201
    patched = client.patch(f"{_tasks_url(project)}/a", json={field: value}, headers=project.admin)
    assert patched.status_code == 422
    assert [e["field"] for e in patched.json()["errors"]] == [field]


def test_the_largest_weight_and_smallest_scale_predict_a_finite_std(
    client: TestClient, project: ProjectKeys
) -> None:
    """Found by schemathesis too: a Thompson schedule over a weight of 1e300 answered 500."""
    tasks = [{"key": "a", "weight": 1e6, "scale": 1e-6}, {"key": "b", "scale": 1e12}]
    assert _create(client, project, tasks).status_code == 201
    url = f"/v1/projects/{project.id}/schedules"
    for objective_name in ("expected", "thompson", "maximin", "mean_variance"):
        body = {"objective": objective_name, "kappa": 1.0}
        response = client.post(url, json=body, headers=project.admin)
        assert response.status_code == 201, response.text
        objective = response.json()["predicted"]["objective"]
        assert math.isfinite(objective["mean"])
        assert math.isfinite(objective["std"])
        assert objective["std"] > 0


def test_empty_and_oversized_batches_are_422(client: TestClient, project: ProjectKeys) -> None:
    assert _create(client, project, []).status_code == 422
    many = [{"key": f"t{i}"} for i in range(1001)]
    response = _create(client, project, many)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "tasks"
