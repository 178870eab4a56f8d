"""Error shapes: problem+json for 404, 405, 413, 422, 401 and 503 (database down)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ordo_server.app.main import create_app
from ordo_server.app.settings import Settings
from tests.conftest import ADMIN_TOKEN, free_port
from tests.factories import ProjectKeys, bearer

PROBLEM = "application/problem+json"


def test_unknown_route_is_problem_json(client: TestClient) -> None:
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "No such resource.",
        "code": "not_found",
    }


def test_wrong_method_is_405_with_allow(client: TestClient) -> None:
    response = client.put("/v1/projects")
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["allow"] in {"GET", "POST", "GET, POST", "POST, GET"}


def test_malformed_json_is_422(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.post(
        "/v1/projects",
        content=b'{"name": ',
        headers={**admin_headers, "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["reason"].startswith("JSON decode error")


def test_missing_field_is_named(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.post("/v1/projects", json={}, headers=admin_headers)
    assert response.json()["errors"] == [{"field": "name", "reason": "Field required"}]


def test_body_over_the_limit_is_413_before_auth(client: TestClient, project: ProjectKeys) -> None:
    big = b'{"tasks": [' + b" " * (1024 * 1024) + b"]}"
    response = client.post(
        f"/v1/projects/{project.id}/tasks",
        content=big,
        headers={"content-type": "application/json"},  # no key: the limit answers first
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == "content_too_large"


def test_streamed_body_over_the_limit_is_413(client: TestClient, project: ProjectKeys) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"tasks": ['
        for _ in range(20):
            yield b" " * 65536
        yield b"]}"

    response = client.post(
        f"/v1/projects/{project.id}/tasks",
        content=chunks(),
        headers={**project.admin, "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM


def test_body_just_under_the_limit_is_parsed(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    body = b'{"name": "padded"' + b" " * (1024 * 1024 - 100) + b"}"
    response = client.post(
        "/v1/projects", content=body, headers={**admin_headers, "content-type": "application/json"}
    )
    assert response.status_code == 201


def _down_urls(tmp_path: Path) -> list[str]:
    return [
        f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/ordo",  # nothing listens there
        f"sqlite:///{tmp_path}/missing-dir/ordo.sqlite",  # cannot be opened
    ]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_database_down_is_503_with_retry_after(tmp_path: Path, kind: str) -> None:
    url = _down_urls(tmp_path)[0 if kind == "postgresql" else 1]
    app = create_app(Settings(database_url=url, admin_token=ADMIN_TOKEN, db_connect_timeout_s=2))
    with TestClient(app, raise_server_exceptions=False) as client:
        for headers in (bearer(ADMIN_TOKEN), bearer("ordo_0123456789abcdef_" + "x" * 43)):
            response = client.get("/v1/projects", headers=headers)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "2"
            assert response.headers["content-type"] == PROBLEM
            assert response.json()["code"] == "database_unavailable"
            assert "Traceback" not in response.text
            assert "psycopg" not in response.text
            assert "sqlite" not in response.text.lower()
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "unreachable"
        # The configured admin token is accepted without the database.
        metrics = client.get("/metrics", headers=bearer(ADMIN_TOKEN)).text
        assert "ordo_db_unavailable_total 2.0" in metrics
