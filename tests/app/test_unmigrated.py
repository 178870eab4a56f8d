"""A database that answers but was never migrated: 503 naming ``ordo db upgrade``, not 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic import command

from ordo_server.app.db import alembic_config
from ordo_server.app.server_process import ServerProcess, serve_subprocess
from tests.conftest import ADMIN_TOKEN, postgres_database, require_postgres, sqlite_url

PROBLEM = "application/problem+json"
RETRY_AFTER_S = "7"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A reachable database with no tables at all."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "empty.sqlite")
        return
    with postgres_database(require_postgres(), migrate=False) as url:
        yield url


@pytest.fixture
def server(empty_database_url: str) -> Iterator[ServerProcess]:
    """A real server process on the empty database (not migrated on purpose)."""
    with serve_subprocess(
        empty_database_url,
        admin_token=ADMIN_TOKEN,
        env={"ORDO_RETRY_AFTER_S": RETRY_AFTER_S},
        migrate=False,
    ) as live:
        yield live


def _assert_schema_missing(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["retry-after"] == RETRY_AFTER_S
    assert response.json() == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "The database schema is not migrated; run `ordo db upgrade`.",
        "code": "schema_not_migrated",
    }


def test_requests_answer_503_until_the_schema_is_migrated(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url, headers=server.admin_headers) as http:
        _assert_schema_missing(http.get("/v1/projects"))
        _assert_schema_missing(http.post("/v1/projects", json={"name": "early"}))
        # An unknown project key is looked up in the missing keys table: same answer.
        unknown_key = {"Authorization": "Bearer ordo_0123456789abcdef_" + "x" * 43}
        _assert_schema_missing(http.get("/v1/projects", headers=unknown_key))
        assert http.get("/healthz").status_code == 200
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert "run `ordo db upgrade`" in ready.json()["checks"]["schema"]

        command.upgrade(alembic_config(server.database_url), "head")

        assert http.get("/readyz").status_code == 200
        created = http.post("/v1/projects", json={"name": "after-upgrade"})
        assert created.status_code == 201, created.text
        assert [p["name"] for p in http.get("/v1/projects").json()] == ["after-upgrade"]


def test_serve_subprocess_migrates_by_default(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "fresh.sqlite")
    with serve_subprocess(url, admin_token=ADMIN_TOKEN) as live:
        assert httpx.get(f"{live.base_url}/readyz").status_code == 200
        listed = httpx.get(f"{live.base_url}/v1/projects", headers=live.admin_headers)
        assert listed.status_code == 200
    assert live.process.returncode is not None
