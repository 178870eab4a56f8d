"""Priors (long and wide form) and estimates (JSON matrices and CSV)."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from ordo_server.app.repositories.estimates import StatIncrement, add_statistics, list_estimates
from ordo_server.models import Task
from ordo_server.models.base import utcnow
from tests.factories import ProjectKeys, create_project_with_keys

TASKS = ("math", "code", "poetry")


@pytest.fixture
def tasked(session: Session) -> ProjectKeys:
    """A project with tasks math, code and poetry (indexes 0, 1, 2)."""
    keys = create_project_with_keys(session, task_keys=TASKS)
    session.commit()
    return keys


def _priors(client: TestClient, project: ProjectKeys, body: Any) -> Any:
    return client.post(f"/v1/projects/{project.id}/priors", json=body, headers=project.admin)


def _estimates(client: TestClient, project: ProjectKeys) -> Any:
    response = client.get(f"/v1/projects/{project.id}/estimates", headers=project.trainer)
    assert response.status_code == 200
    return response.json()


def test_defaults_without_data(client: TestClient, tasked: ProjectKeys) -> None:
    body = _estimates(client, tasked)
    assert body["version"] == 0
    assert body["tasks"] == list(TASKS)
    assert body["F"]["mean"] == [[None, 0.0, 0.0], [0.0, None, 0.0], [0.0, 0.0, None]]
    assert body["B"]["std"][0] == [None, 0.1, 0.1]
    assert body["B"]["count"][2] == [0, 0, None]
    assert body["L"] == {"mean": [0.0] * 3, "std": [0.1] * 3, "count": [0] * 3}


def test_empty_project_has_empty_matrices(client: TestClient, project: ProjectKeys) -> None:
    body = _estimates(client, project)
    assert body["tasks"] == []
    assert body["F"] == {"mean": [], "std": [], "count": []}


def test_long_form_priors_set_the_posterior(client: TestClient, tasked: ProjectKeys) -> None:
    response = _priors(
        client,
        tasked,
        [
            {"effect": "B", "src": "code", "dst": "poetry", "mean": -0.1, "std": 0.05},
            {"effect": "L", "dst": "math", "mean": 0.6, "std": 0.2},
        ],
    )
    assert response.status_code == 200
    assert response.json() == {"imported": 2, "estimates_version": 1}
    body = _estimates(client, tasked)
    assert body["version"] == 1
    assert body["B"]["mean"][1][2] == -0.1
    assert body["B"]["std"][1][2] == 0.05
    assert body["B"]["mean"][2][1] == 0.0
    assert body["L"]["mean"] == [0.6, 0.0, 0.0]
    assert body["L"]["std"][0] == pytest.approx(0.2)


def test_wide_form_priors_skip_diagonal_and_nulls(client: TestClient, tasked: ProjectKeys) -> None:
    matrix = [[9.0, 0.01, -0.08], [0.03, None, -0.1], [-0.02, 0.0, 5.0]]
    response = _priors(
        client,
        tasked,
        {"effect": "B", "tasks": ["math", "code", "poetry"], "mean": matrix, "std": 0.05},
    )
    assert response.status_code == 200
    assert response.json()["imported"] == 6
    mean = _estimates(client, tasked)["B"]["mean"]
    assert mean == [[None, 0.01, -0.08], [0.03, None, -0.1], [-0.02, 0.0, None]]


def test_wide_form_in_another_task_order(client: TestClient, tasked: ProjectKeys) -> None:
    body = {"effect": "F", "tasks": ["poetry", "math"], "mean": [[None, 0.2], [0.0, None]],
            "std": [[None, 0.3], [0.1, None]]}  # fmt: skip
    assert _priors(client, tasked, body).status_code == 200
    estimates = _estimates(client, tasked)
    assert estimates["F"]["mean"][2][0] == 0.2  # poetry -> math
    assert estimates["F"]["std"][2][0] == pytest.approx(0.3)


def test_wide_form_vector_for_levels(client: TestClient, tasked: ProjectKeys) -> None:
    body = {"effect": "L", "tasks": list(TASKS), "mean": [0.6, 0.4, None], "std": [0.1, 0.1, None]}
    assert _priors(client, tasked, body).json()["imported"] == 2
    assert _estimates(client, tasked)["L"]["mean"] == [0.6, 0.4, 0.0]


def test_statistics_update_the_posterior(
    client: TestClient, tasked: ProjectKeys, session: Session
) -> None:
    ids = {t.key: t.id for t in session.scalars(select(Task).where(Task.project_id == tasked.id))}
    increment = StatIncrement("B", ids["math"], ids["code"], count=2, sum_x=0.2, sum_x2=0.025)
    add_statistics(session, tasked.id, [increment], at=utcnow())
    add_statistics(session, tasked.id, [increment], at=utcnow())  # x = x + delta, twice
    session.commit()
    [cell] = list_estimates(session, tasked.id)
    assert cell.count == 4
    assert (cell.sum_x, cell.sum_x2) == pytest.approx((0.4, 0.05))
    body = _estimates(client, tasked)
    # solver.estimation's rules: a difference has variance 2 sigma^2, sigma^2 of the target
    # pooled from the cell's residuals with 4 pseudo-dof of the default 0.05^2 (SSR = 0.01).
    prior_var, noise_var = 0.1**2, 2 * (4 * 0.05**2 + 0.01 / 2) / (4 + 3)
    var = 1 / (1 / prior_var + 4 / noise_var)
    assert body["B"]["count"][0][1] == 4
    assert body["B"]["mean"][0][1] == pytest.approx(var * 0.4 / noise_var)
    assert body["B"]["std"][0][1] == pytest.approx(math.sqrt(var))


def test_csv_is_long_form(client: TestClient, tasked: ProjectKeys) -> None:
    _priors(
        client, tasked, [{"effect": "F", "src": "math", "dst": "code", "mean": 0.5, "std": 0.1}]
    )
    response = client.get(f"/v1/projects/{tasked.id}/estimates?format=csv", headers=tasked.trainer)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 2 * 6 + 3 * 3
    first = rows[0]
    assert first == {"effect": "F", "src": "math", "dst": "code", "mean": "0.5", "std": "0.1",
                     "count": "0"}  # fmt: skip
    levels = [r for r in rows if r["effect"] == "L"]
    assert [(r["src"], r["dst"]) for r in levels] == [("", "math"), ("", "code"), ("", "poetry")]


def _errors(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return {e["field"]: e["reason"] for e in response.json()["errors"]}


def test_unknown_task_keys_are_named(client: TestClient, tasked: ProjectKeys) -> None:
    response = _priors(
        client,
        tasked,
        [
            {"effect": "F", "src": "math", "dst": "chess", "mean": 0.1, "std": 0.1},
            {"effect": "L", "dst": "go", "mean": 0.1, "std": 0.1},
        ],
    )
    assert _errors(response) == {
        "[0].dst": "Unknown task key 'chess'",
        "[1].dst": "Unknown task key 'go'",
    }
    assert response.json()["detail"] == "Unknown task keys: chess, go."
    wide = {"effect": "B", "tasks": ["math", "chess"], "mean": [[None, 1], [1, None]], "std": 1}
    assert _errors(_priors(client, tasked, wide)) == {"tasks[1]": "Unknown task key 'chess'"}


def test_long_form_semantic_errors(client: TestClient, tasked: ProjectKeys) -> None:
    entry = {"effect": "F", "src": "math", "dst": "code", "mean": 0.1, "std": 0.1}
    response = _priors(
        client,
        tasked,
        [
            entry,
            entry,
            {"effect": "B", "dst": "code", "mean": 0.1, "std": 0.1},
            {"effect": "B", "src": "code", "dst": "code", "mean": 0.1, "std": 0.1},
            {"effect": "L", "src": "math", "dst": "code", "mean": 0.1, "std": 0.1},
        ],
    )
    assert _errors(response) == {
        "[1]": "Duplicate prior for F/math/code",
        "[2].src": "Required for effect B",
        "[3].dst": "Must differ from src",
        "[4].src": "Omit src for effect L",
    }


def test_non_finite_and_non_positive_values(client: TestClient, tasked: ProjectKeys) -> None:
    body = (
        b'[{"effect": "F", "src": "math", "dst": "code", "mean": Infinity, "std": 0.1},'
        b' {"effect": "L", "dst": "math", "mean": 0.1, "std": 0},'
        b' {"effect": "X", "dst": "math", "mean": 0.1, "std": NaN, "note": 1}]'
    )
    response = client.post(
        f"/v1/projects/{tasked.id}/priors",
        content=body,
        headers={**tasked.admin, "content-type": "application/json"},
    )
    errors = _errors(response)
    assert errors["[0].mean"] == "Input should be a finite number"
    assert errors["[1].std"] == "Input should be greater than or equal to 0.000001"
    assert errors["[2].std"] == "Input should be a finite number"
    assert errors["[2].note"] == "Extra inputs are not permitted"
    assert "[2].effect" in errors
    wide = b'{"effect": "B", "tasks": ["math", "code"], "mean": [[null, NaN], [0, null]], "std": 1}'
    response = client.post(
        f"/v1/projects/{tasked.id}/priors",
        content=wide,
        headers={**tasked.admin, "content-type": "application/json"},
    )
    assert _errors(response) == {"mean[0][1]": "Input should be a finite number"}


@pytest.mark.parametrize(
    ("mean", "std", "expected"),
    [
        ([[None, 1], [1]], 1, {"mean[1]": "Expected 2 columns, got 1"}),
        ([[None, 1]], 1, {"mean": "Expected 2 rows, got 1"}),
        ([1, 2], 1, {"mean": "Expected a matrix of shape (2, 2)"}),
        ([[None, 1], [1, None]], [1, 1], {"std": "Expected a matrix of shape (2, 2)"}),
        ([[None, 1], [1, None]], [[None, None], [1, None]],
         {"std[0][1]": "Missing std for a given mean"}),
        (3, 1, {"mean": "Input should be a list (vector) or a list of lists (matrix)"}),
    ],
)  # fmt: skip
def test_wide_form_shape_errors(
    client: TestClient, tasked: ProjectKeys, mean: Any, std: Any, expected: dict[str, str]
) -> None:
    body = {"effect": "B", "tasks": ["math", "code"], "mean": mean, "std": std}
    assert _errors(_priors(client, tasked, body)) == expected


def test_wide_form_duplicate_tasks(client: TestClient, tasked: ProjectKeys) -> None:
    body = {"effect": "L", "tasks": ["math", "math"], "mean": [1, 1], "std": 1}
    assert _errors(_priors(client, tasked, body)) == {"tasks[1]": "Duplicate key 'math'"}


def test_failed_import_changes_nothing(client: TestClient, tasked: ProjectKeys) -> None:
    _priors(client, tasked, [{"effect": "L", "dst": "nope", "mean": 1, "std": 1}])
    assert _estimates(client, tasked)["version"] == 0


def test_trainer_cannot_import_priors(client: TestClient, tasked: ProjectKeys) -> None:
    body = [{"effect": "L", "dst": "math", "mean": 1, "std": 1}]
    response = client.post(f"/v1/projects/{tasked.id}/priors", json=body, headers=tasked.trainer)
    assert response.status_code == 403
