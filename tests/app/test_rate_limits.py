"""Rate limits: per key, per address, failed sign-ins per address; never holding a write slot.

In-process tests run on SQLite and PostgreSQL (the key lookup is real); the burst tests run
against a real server process.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.errors import ConfigurationError
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from ordo_server.app.db import Database
from ordo_server.app.main import create_app
from ordo_server.app.rate_limits import open_storage
from ordo_server.app.settings import Settings
from tests.app.route_cases import ROUTE_CASES, SUBJECT_TASKS, Subject, create_subject_run
from tests.conftest import (
    ADMIN_TOKEN,
    migrated_sqlite_url,
    postgres_database,
    require_postgres,
    run_live_server,
)
from tests.factories import ProjectKeys, bearer, create_project_with_keys

PROBLEM = "application/problem+json"
BAD_TOKEN = "ordo_0123456789abcdef_" + "x" * 43
MakeClient = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture
def make_client(settings: Settings, database: Database) -> MakeClient:
    """``make_client(**settings)``: a TestClient of an app with rate limits as given."""

    @contextmanager
    def make(**overrides: Any) -> Iterator[TestClient]:
        limited = settings.model_copy(update={"rate_limit_enabled": True, **overrides})
        app = create_app(limited)
        with TestClient(app) as client:
            app.state.database = database
            yield client

    return make


def _assert_rate_limited(response: httpx.Response) -> int:
    """The response is the 429 problem; its Retry-After (seconds)."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == "rate_limited"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    return retry_after


def _rate_limited_total(client: TestClient) -> float:
    text = client.get("/metrics", headers=bearer(ADMIN_TOKEN)).text
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == "ordo_rate_limited_requests_total":
                return float(found.value)
    return 0.0


# --- defaults ------------------------------------------------------------------------------------


def test_defaults_limit_a_real_deployment() -> None:
    defaults = Settings()
    assert defaults.rate_limit_enabled is True
    assert defaults.auth_failure_limit == "20/minute"
    assert defaults.rate_limit_per_key == "1200/minute"
    assert defaults.rate_limit_per_address == "2400/minute"
    assert defaults.rate_limit_storage_url == "memory://"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rate_limit_per_key", "lots"),
        ("rate_limit_per_address", "10 per fortnight"),
        ("auth_failure_limit", ""),
        ("rate_limit_storage_url", "postgresql://localhost/db"),
    ],
)
def test_bad_limit_settings_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        Settings.model_validate({field: value})


def test_the_storage_url_chooses_where_counters_live() -> None:
    assert isinstance(open_storage("memory://"), MemoryStorage)
    # redis:// reaches limits' Redis storage (through redis-py, the `redis` extra).
    if importlib.util.find_spec("redis") is None:
        with pytest.raises(ConfigurationError, match="'redis' prerequisite"):
            open_storage("redis://127.0.0.1:6379/0")
    else:
        assert isinstance(open_storage("redis://127.0.0.1:6379/0"), RedisStorage)


# --- per key and per address ---------------------------------------------------------------------


def test_a_key_over_its_budget_gets_429_with_retry_after(
    make_client: MakeClient, project: ProjectKeys
) -> None:
    with make_client(rate_limit_per_key="3/minute") as client:
        path = f"/v1/projects/{project.id}/tasks"
        for _ in range(3):
            assert client.get(path, headers=project.trainer).status_code == 200
        before = _rate_limited_total(client)
        _assert_rate_limited(client.get(path, headers=project.trainer))
        assert _rate_limited_total(client) == before + 1
        # Another key from the same address has its own budget.
        assert client.get(path, headers=project.admin).status_code == 200


def test_an_address_over_its_budget_gets_429_whatever_the_key(
    make_client: MakeClient, project: ProjectKeys
) -> None:
    with make_client(rate_limit_per_address="4/minute") as client:
        path = f"/v1/projects/{project.id}/tasks"
        for _ in range(2):
            assert client.get(path, headers=project.trainer).status_code == 200
            assert client.get(path, headers=project.admin).status_code == 200
        _assert_rate_limited(client.get(path, headers=project.admin))
        _assert_rate_limited(client.get("/v1/nothing-here"))
        # Probes are never limited.
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


def test_limits_can_be_turned_off(make_client: MakeClient, project: ProjectKeys) -> None:
    with make_client(rate_limit_enabled=False, rate_limit_per_key="1/minute") as client:
        for _ in range(30):
            assert client.get("/v1/projects", headers=bearer(BAD_TOKEN)).status_code == 401
        path = f"/v1/projects/{project.id}/tasks"
        for _ in range(3):
            assert client.get(path, headers=project.trainer).status_code == 200


# --- failed sign-ins -----------------------------------------------------------------------------


def test_failed_sign_ins_are_throttled_per_address_before_the_key_is_checked(
    make_client: MakeClient, project: ProjectKeys
) -> None:
    with make_client(auth_failure_limit="5/minute") as client:
        path = f"/v1/projects/{project.id}/tasks"
        assert client.get(path, headers=project.trainer).status_code == 200  # not a failure
        for headers in [bearer(BAD_TOKEN), {}, bearer("nonsense"), bearer(BAD_TOKEN)]:
            assert client.get(path, headers=headers).status_code == 401
        assert client.post(path, json={"tasks": []}, headers=bearer(BAD_TOKEN)).status_code == 401
        _assert_rate_limited(client.get(path, headers=bearer(BAD_TOKEN)))
        # The address is blocked now: a valid key is refused too, without being looked at.
        _assert_rate_limited(client.get(path, headers=project.trainer))
        assert client.get("/healthz").status_code == 200


def test_twenty_failed_sign_ins_a_minute_by_default(make_client: MakeClient) -> None:
    with make_client() as client:
        for _ in range(20):
            assert client.get("/v1/projects", headers=bearer(BAD_TOKEN)).status_code == 401
        _assert_rate_limited(client.get("/v1/projects", headers=bearer(BAD_TOKEN)))
        _assert_rate_limited(client.get("/v1/projects", headers=bearer(ADMIN_TOKEN)))


# --- authentication comes before the write slot --------------------------------------------------


def test_bad_tokens_are_answered_while_every_write_slot_is_taken(
    settings: Settings, database: Database, project: ProjectKeys
) -> None:
    """60 bad-token writes answer at once although no write slot is free (no 503, no wait)."""
    limited = settings.model_copy(update={"rate_limit_enabled": True})
    app = create_app(limited)
    with TestClient(app) as client:
        app.state.database = database
        gate: asyncio.Semaphore = app.state.write_gate
        portal = client.portal
        assert portal is not None
        while not gate.locked():  # take every slot, as long writes would
            portal.call(gate.acquire)
        started = time.monotonic()
        statuses = [
            client.post(
                f"/v1/projects/{project.id}/tasks",
                json={"tasks": [{"key": f"t{i}"}]},
                headers=bearer(BAD_TOKEN),
            ).status_code
            for i in range(60)
        ]
        elapsed_s = time.monotonic() - started
    assert statuses == [401] * 20 + [429] * 40
    assert elapsed_s < 10.0  # a request queued for the gate would wait 30 s, then 503


WRITE_ROUTES = sorted(key for key in ROUTE_CASES if key[0] not in {"GET", "HEAD", "OPTIONS"})


@pytest.mark.parametrize(("method", "path"), WRITE_ROUTES)
def test_every_write_route_checks_the_key_before_the_write_gate(
    app: FastAPI, client: TestClient, session: Session, method: str, path: str
) -> None:
    """With every write slot taken, a bad, a revoked or no key is still answered 401 at once."""
    case = ROUTE_CASES[(method, path)]
    project = create_project_with_keys(session, task_keys=SUBJECT_TASKS)
    run_id = create_subject_run(session, project.id)
    session.commit()
    key_id = project.trainer_token.split("_")[1]
    subject = Subject(project=project, trainer_key_id=key_id, run_id=run_id)
    gate: asyncio.Semaphore = app.state.write_gate
    assert client.portal is not None
    while not gate.locked():
        client.portal.call(gate.acquire)
    for headers in [bearer(BAD_TOKEN), bearer(project.revoked_token), {}]:
        started = time.monotonic()
        response = client.request(
            method,
            case.path(subject),
            json=case.body(subject) if case.body else None,
            params=case.query,
            headers={**case.headers, **headers},
        )
        assert response.status_code == 401, response.text
        assert time.monotonic() - started < 5.0  # the gate's queue gives up after 30 s


# --- a real server -------------------------------------------------------------------------------


def _burst_of_bad_tokens(base_url: str) -> list[httpx.Response]:
    """60 bad-token writes in a row from one address."""
    with httpx.Client(base_url=base_url, timeout=10.0) as http:
        return [
            http.post(
                "/v1/projects/p/tasks", json={"tasks": [{"key": "a"}]}, headers=bearer(BAD_TOKEN)
            )
            for _ in range(60)
        ]


def _assert_burst_meets_429(responses: list[httpx.Response], admin_token: str, url: str) -> None:
    statuses = [r.status_code for r in responses]
    assert statuses == [401] * 20 + [429] * 40
    for response in responses[20:]:
        _assert_rate_limited(response)
    # The address is blocked: even the admin token is refused before it is checked.
    _assert_rate_limited(httpx.get(f"{url}/v1/projects", headers=bearer(admin_token)))
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_a_burst_of_bad_tokens_meets_429_on_a_server_with_a_locked_sqlite(
    tmp_path: Path,
) -> None:
    """SQLite: another process holds the write lock; bad tokens are answered at once anyway."""
    url = migrated_sqlite_url(tmp_path / "ordo.sqlite")
    with run_live_server(url, env={"ORDO_RATE_LIMIT_ENABLED": "true"}) as server:
        database_path = make_url(url).database
        assert database_path is not None
        locker = sqlite3.connect(database_path, isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")  # a long write transaction elsewhere
            started = time.monotonic()
            responses = _burst_of_bad_tokens(server.base_url)
            elapsed_s = time.monotonic() - started
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        _assert_burst_meets_429(responses, server.admin_token, server.base_url)
    assert elapsed_s < 10.0  # the busy timeout is 30 s: no request waited for the lock


@pytest.mark.postgres
def test_a_burst_of_bad_tokens_meets_429_on_a_server_on_postgresql() -> None:
    with (
        postgres_database(require_postgres()) as url,
        run_live_server(url, env={"ORDO_RATE_LIMIT_ENABLED": "true"}) as server,
    ):
        responses = _burst_of_bad_tokens(server.base_url)
        _assert_burst_meets_429(responses, server.admin_token, server.base_url)
