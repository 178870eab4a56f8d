"""Projects: create, list, get; on SQLite and PostgreSQL."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.factories import ProjectKeys, bearer

DEFAULT_SETTINGS = {
    "default_prior_std": 0.1,
    "default_noise_std": 0.05,
    "rho": 0.0,
    "max_time_limit_s": 60.0,
    "max_constraints": 100,
    "max_tasks": 100,
}


def test_create_project_returns_it_with_defaults(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    response = client.post("/v1/projects", json={"name": "omni"}, headers=admin_headers)
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "omni"
    assert body["estimates_version"] == 0
    assert body["settings"] == DEFAULT_SETTINGS
    fetched = client.get(f"/v1/projects/{body['id']}", headers=admin_headers)
    assert fetched.json() == body


def test_global_admin_lists_exactly_the_projects(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    for name in ("a", "b", "c"):
        client.post("/v1/projects", json={"name": name}, headers=admin_headers)
    names = [p["name"] for p in client.get("/v1/projects", headers=admin_headers).json()]
    assert names == ["a", "b", "c"]
    page = client.get("/v1/projects?limit=2&offset=1", headers=admin_headers).json()
    assert [p["name"] for p in page] == ["b", "c"]


def test_project_key_lists_only_its_project(
    client: TestClient, project: ProjectKeys, other_project: ProjectKeys
) -> None:
    listed = client.get("/v1/projects", headers=project.trainer).json()
    assert [p["id"] for p in listed] == [project.id]


def test_duplicate_name_is_409(client: TestClient, admin_headers: dict[str, str]) -> None:
    assert client.post("/v1/projects", json={"name": "x"}, headers=admin_headers).status_code == 201
    response = client.post("/v1/projects", json={"name": "x"}, headers=admin_headers)
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"


def test_project_admin_key_cannot_create_projects(client: TestClient, project: ProjectKeys) -> None:
    response = client.post("/v1/projects", json={"name": "y"}, headers=project.admin)
    assert response.status_code == 403


def test_stored_global_admin_key_creates_projects(
    client: TestClient, global_admin_key: str
) -> None:
    response = client.post("/v1/projects", json={"name": "z"}, headers=bearer(global_admin_key))
    assert response.status_code == 201


def test_invalid_project_input_names_field_and_reason(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    body = {"name": "bad/name", "colour": "red", "settings": {"rho": 2}}
    response = client.post("/v1/projects", json=body, headers=admin_headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    fields = {e["field"]: e["reason"] for e in response.json()["errors"]}
    assert set(fields) == {"name", "colour", "settings.rho"}
    assert fields["colour"] == "Extra inputs are not permitted"
    assert "less than or equal to 1" in fields["settings.rho"]


def test_limit_is_capped(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.get("/v1/projects?limit=1001", headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.limit"


def test_project_admin_changes_the_solve_policy_field_by_field(
    client: TestClient, project: ProjectKeys
) -> None:
    url = f"/v1/projects/{project.id}"
    defaults = client.get(url, headers=project.trainer).json()["settings"]
    assert defaults == DEFAULT_SETTINGS
    changed = client.patch(
        url, json={"settings": {"max_tasks": 40, "max_time_limit_s": 5}}, headers=project.admin
    )
    assert changed.status_code == 200, changed.text
    expected = {**defaults, "max_tasks": 40, "max_time_limit_s": 5.0}
    assert changed.json()["settings"] == expected
    assert client.get(url, headers=project.trainer).json()["settings"] == expected
    again = client.patch(url, json={"description": "policy set"}, headers=project.admin)
    assert again.json()["settings"] == expected
    assert again.json()["description"] == "policy set"


def test_trainer_cannot_change_the_policy_and_bad_bounds_are_422(
    client: TestClient, project: ProjectKeys
) -> None:
    url = f"/v1/projects/{project.id}"
    refused = client.patch(url, json={"settings": {"max_tasks": 1000}}, headers=project.trainer)
    assert refused.status_code == 403
    for policy, field in [
        ({"max_tasks": 0}, "settings.max_tasks"),
        ({"max_constraints": 1001}, "settings.max_constraints"),
        ({"max_time_limit_s": 3601}, "settings.max_time_limit_s"),
    ]:
        bad = client.patch(url, json={"settings": policy}, headers=project.admin)
        assert bad.status_code == 422, bad.text
        assert [e["field"] for e in bad.json()["errors"]] == [field]
    assert client.get(url, headers=project.admin).json()["settings"]["max_tasks"] == 100
