"""What-if predictions: given orders and a random order over the current estimates."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from ordo_server.solver.predict import predict_order, predict_random_order
from ordo_server.solver.types import EffectModel
from tests.app.test_schedules import BACKWARD, LEVELS, STD, setup_worked_example
from tests.factories import ProjectKeys

KEYS = ("math", "code", "poetry")
DEFAULT_STD = 0.1  # the project's default prior std: F was never imported


def _worked_example_model() -> EffectModel:
    """The estimates the API holds after ``setup_worked_example``, as the solver's model."""
    n = len(KEYS)
    backward = np.zeros((n, n))
    for (src, dst), mean in BACKWARD.items():
        backward[KEYS.index(src), KEYS.index(dst)] = mean
    off_diagonal = np.full((n, n), 1.0) - np.eye(n)
    return EffectModel(
        level_mean=np.array([LEVELS[k] for k in KEYS]),
        level_var=np.full(n, STD**2),
        forward_mean=np.zeros((n, n)),
        forward_var=off_diagonal * DEFAULT_STD**2,
        backward_mean=backward,
        backward_var=off_diagonal * STD**2,
        weights=np.ones(n),
    )


@pytest.fixture
def example(client: TestClient, project: ProjectKeys) -> ProjectKeys:
    """``project`` with the worked example's tasks and priors."""
    setup_worked_example(client, project)
    return project


def _predict(client: TestClient, project: ProjectKeys, **body: Any) -> Any:
    return client.post(f"/v1/projects/{project.id}/predictions", json=body, headers=project.trainer)


def test_predictions_match_the_solver_on_the_same_model(
    client: TestClient, example: ProjectKeys
) -> None:
    orders = [["math", "code", "poetry"], ["poetry", "math", "code"]]
    rho = 0.5
    response = _predict(client, example, orders=orders, rho=rho)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["tasks"], body["rho"], body["estimates_version"]) == (list(KEYS), rho, 1)
    model = _worked_example_model()
    for order, result in zip(orders, body["orders"], strict=True):
        expected = predict_order(model, tuple(KEYS.index(k) for k in order), rho=rho)
        assert result["order"] == order
        assert [t["task"] for t in result["tasks"]] == order
        for task in result["tasks"]:
            i = KEYS.index(task["task"])
            assert task["mean"] == pytest.approx(expected.mean[i])
            assert task["std"] == pytest.approx(expected.std[i])
            assert task["lower"] == pytest.approx(expected.mean[i] - 1.959964 * expected.std[i])
            assert task["upper"] == pytest.approx(expected.mean[i] + 1.959964 * expected.std[i])
        assert result["objective"]["mean"] == pytest.approx(expected.objective_mean)
        assert result["objective"]["std"] == pytest.approx(expected.objective_std)
        assert result["score"] == pytest.approx(expected.objective_mean)
    random = predict_random_order(model, rho=rho)
    assert [t["mean"] for t in body["random_order"]["tasks"]] == pytest.approx(list(random.mean))
    assert [t["std"] for t in body["random_order"]["tasks"]] == pytest.approx(list(random.std))
    assert body["random_order"]["objective"]["mean"] == pytest.approx(random.objective_mean)
    assert body["random_order"]["objective"]["std"] == pytest.approx(random.objective_std)


def test_worked_example_totals(client: TestClient, example: ProjectKeys) -> None:
    orders = [["math", "code", "poetry"], ["poetry", "math", "code"]]
    body = _predict(client, example, orders=orders).json()
    assert [o["objective"]["mean"] for o in body["orders"]] == pytest.approx([1.51, 1.35])
    poetry_first = {t["task"]: t["mean"] for t in body["orders"][1]["tasks"]}
    assert poetry_first == pytest.approx({"poetry": 0.32, "math": 0.63, "code": 0.40})
    # A random order: each B[i][j] counts with probability 1/2.
    assert body["random_order"]["objective"]["mean"] == pytest.approx(
        sum(LEVELS.values()) + sum(BACKWARD.values()) / 2
    )


def test_scores_of_each_objective(client: TestClient, example: ProjectKeys) -> None:
    orders = [["math", "code", "poetry"]]
    maximin = _predict(client, example, orders=orders, objective="maximin").json()
    assert maximin["orders"][0]["score"] == pytest.approx(0.40)
    risky = _predict(client, example, orders=orders, objective="mean_variance", kappa=2.0).json()
    std = risky["orders"][0]["objective"]["std"]
    assert risky["orders"][0]["score"] == pytest.approx(1.51 - 2.0 * std**2)


def test_a_subset_is_permuted(client: TestClient, example: ProjectKeys) -> None:
    body = _predict(client, example, orders=[["code", "poetry"]], tasks=["poetry", "code"]).json()
    assert body["tasks"] == ["poetry", "code"]
    assert body["orders"][0]["objective"]["mean"] == pytest.approx(0.90)


def test_non_permutations_are_422_naming_the_order(
    client: TestClient, example: ProjectKeys
) -> None:
    orders = [
        ["math", "code", "poetry"],
        ["math", "math", "poetry"],
        ["math", "code"],
        ["math", "code", "poetry", "haiku"],
    ]
    response = _predict(client, example, orders=orders)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"] == [
        {
            "field": "orders[1]",
            "reason": "Not a permutation of the 3 scheduled tasks: missing code; repeated math",
        },
        {
            "field": "orders[2]",
            "reason": "Not a permutation of the 3 scheduled tasks: missing poetry",
        },
        {
            "field": "orders[3]",
            "reason": "Not a permutation of the 3 scheduled tasks: not scheduled haiku",
        },
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"orders": []}, "orders"),
        ({"orders": [["math", "code", "poetry"]] * 101}, "orders"),
        ({"orders": [["math", "code", "poetry"]], "rho": -0.1}, "rho"),
        ({"orders": [["math", "code", "poetry"]], "tasks": ["math", "math"]}, "tasks[1]"),
        ({"orders": [["math", "bad key"]]}, "orders[0][1]"),
    ],
)
def test_invalid_prediction_input(
    client: TestClient, example: ProjectKeys, body: dict[str, Any], field: str
) -> None:
    response = _predict(client, example, **body)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_predictions_change_nothing(client: TestClient, example: ProjectKeys) -> None:
    url = f"/v1/projects/{example.id}"
    before = client.get(f"{url}/estimates", headers=example.trainer).json()
    _predict(client, example, orders=[list(KEYS)])
    assert client.get(f"{url}/estimates", headers=example.trainer).json() == before
    assert client.get(f"{url}/schedules", headers=example.trainer).json()["items"] == []
