"""A real uvicorn process: the HTTP behaviour the TestClient cannot show (SQLite, PostgreSQL)."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.conftest import LiveServer


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest) -> LiveServer:
    name = "live_server" if request.param == "sqlite" else "live_server_pg"
    live: LiveServer = request.getfixturevalue(name)
    return live


def test_round_trip_over_http(server: LiveServer) -> None:
    with httpx.Client(base_url=server.base_url, headers=server.admin_headers) as http:
        assert http.get("/readyz").status_code == 200
        name = f"live-{server.process.pid}-{id(server)}"
        project = http.post("/v1/projects", json={"name": name})
        assert project.status_code == 201
        project_id = project.json()["id"]
        created = http.post(
            f"/v1/projects/{project_id}/tasks", json={"tasks": [{"key": "a"}, {"key": "b"}]}
        )
        assert created.status_code == 201
        estimates = http.get(f"/v1/projects/{project_id}/estimates").json()
        assert estimates["tasks"] == ["a", "b"]
        assert http.get("/docs").status_code == 200


def test_oversized_body_is_refused_by_the_server(server: LiveServer) -> None:
    # Declare 2 MiB and send none of it: the 413 must come from the header alone.
    request = (
        "POST /v1/projects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {2 * 1024 * 1024}\r\n\r\n"
    )
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request.encode())
        head = sock.recv(4096).decode()
    assert head.startswith("HTTP/1.1 413")
    assert "application/problem+json" in head
