"""/healthz, /readyz and /metrics."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from ordo_server.app.main import create_app
from ordo_server.app.settings import Settings
from tests.conftest import sqlite_url
from tests.factories import ProjectKeys


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_when_schema_is_at_head(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "schema": "ok"}}


def test_readyz_is_503_when_schema_is_behind(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=sqlite_url(tmp_path / "empty.sqlite")))
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["checks"]["database"] == "ok"
    assert "ordo db upgrade" in response.json()["checks"]["schema"]


def test_metrics_count_requests_by_route_template(
    client: TestClient, project: ProjectKeys, admin_headers: dict[str, str]
) -> None:
    for _ in range(3):
        client.get(f"/v1/projects/{project.id}", headers=project.trainer)
    client.get("/healthz")
    text = client.get("/metrics", headers=admin_headers).text
    line = 'http_requests_total{handler="/v1/projects/{project_id}",method="GET",status="2xx"} 3.0'
    assert line in text
    assert 'handler="/healthz"' not in text
    assert "http_request_duration_seconds_bucket" in text
    assert 'le="0.005"' in text
    # The instrumentator's default series, same names (dashboards built on them keep working).
    for name in ("http_request_size_bytes", "http_response_size_bytes"):
        assert f'{name}_count{{handler="/v1/projects/{{project_id}}"}} 3.0' in text
    assert "http_request_duration_highr_seconds_bucket" in text
