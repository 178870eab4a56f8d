"""The per-process cache of signed-in keys (``app.services.key_cache``).

A cached key costs no statement; a revocation stops it at once in the revoking process, within
milliseconds in another API process on PostgreSQL (NOTIFY ``ordo_keys``), and within the time to
live on SQLite, where nothing relays.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, event

from ordo_server.app.security import Role
from ordo_server.app.services.auth import Principal
from ordo_server.app.services.key_cache import MAX_ENTRIES, KeyCache, forget_all, forget_keys
from ordo_server.models.base import utcnow
from tests.conftest import (
    ADMIN_TOKEN,
    migrated_sqlite_url,
    postgres_database,
    require_postgres,
    run_live_server,
)
from tests.factories import ProjectKeys, bearer


def _principal(key_id: str = "k1", *, expires_at: datetime | None = None) -> Principal:
    return Principal(key_id=key_id, role=Role.TRAINER, project_id="p", expires_at=expires_at)


# --- the cache alone -----------------------------------------------------------------------------


def test_a_hit_within_the_time_to_live_and_a_miss_after_it() -> None:
    cache = KeyCache(ttl_s=0.2)
    cache.put("ordo_k1_secret", _principal())
    assert cache.get("ordo_k1_secret") == _principal()
    assert cache.get("ordo_k1_other-secret") is None  # only the very token
    time.sleep(0.25)
    assert cache.get("ordo_k1_secret") is None
    assert len(cache) == 0


def test_an_expired_key_is_not_taken_from_the_cache() -> None:
    cache = KeyCache(ttl_s=60)
    soon = utcnow() + timedelta(milliseconds=100)
    cache.put("token", _principal(expires_at=soon))
    assert cache.get("token") is not None
    time.sleep(0.15)
    assert cache.get("token") is None


def test_forgetting_a_key_drops_each_of_its_tokens_in_every_cache() -> None:
    first, second = KeyCache(ttl_s=60), KeyCache(ttl_s=60)
    for cache in (first, second):
        cache.put("token-a", _principal("a"))
        cache.put("token-b", _principal("b"))
    forget_keys(["a"])
    for cache in (first, second):
        assert cache.get("token-a") is None
        assert cache.get("token-b") == _principal("b")
    forget_all()
    assert len(first) == len(second) == 0


def test_a_recorded_use_updates_the_cached_principal() -> None:
    cache = KeyCache(ttl_s=60)
    cache.put("token", _principal())
    at = utcnow()
    cache.used("k1", at)
    hit = cache.get("token")
    assert hit is not None
    assert hit.last_used_at == at


def test_a_time_to_live_of_zero_remembers_nothing_and_size_is_bounded() -> None:
    off = KeyCache(ttl_s=0)
    off.put("token", _principal())
    assert off.get("token") is None
    cache = KeyCache(ttl_s=60)
    for i in range(MAX_ENTRIES + 5):
        cache.put(f"token-{i}", _principal(f"k{i}"))
    assert len(cache) == MAX_ENTRIES
    assert cache.get("token-0") is None  # the oldest went first
    assert cache.get(f"token-{MAX_ENTRIES + 4}") is not None


# --- in the app ----------------------------------------------------------------------------------


def test_a_cached_key_costs_no_statement_and_a_revoked_one_answers_401_at_once(
    client: TestClient, project: ProjectKeys, connection: Connection
) -> None:
    created = client.post(
        f"/v1/projects/{project.id}/keys", json={"role": "trainer"}, headers=project.admin
    ).json()
    trainer = bearer(str(created["key"]))
    lookups: list[str] = []

    def watch(_conn: Connection, _cursor: object, statement: str, *_args: object) -> None:
        if "FROM ordo_api_keys" in statement:
            lookups.append(statement)

    event.listen(connection, "before_cursor_execute", watch)
    try:
        for _ in range(3):
            assert client.get(f"/v1/projects/{project.id}", headers=trainer).status_code == 200
        assert len(lookups) == 1  # the first sign-in only
    finally:
        event.remove(connection, "before_cursor_execute", watch)
    path = f"/v1/projects/{project.id}/keys/{created['key_id']}"
    assert client.delete(path, headers=project.admin).status_code == 204
    assert client.get(f"/v1/projects/{project.id}", headers=trainer).status_code == 401


# --- across processes ----------------------------------------------------------------------------


def _project_key(base_url: str, admin_token: str) -> tuple[str, str, str]:
    """A new project, a trainer key of it: (project id, key id, token)."""
    with httpx.Client(base_url=base_url, headers=bearer(admin_token)) as admin:
        project = admin.post("/v1/projects", json={"name": "key-cache"}).json()["id"]
        key = admin.post(f"/v1/projects/{project}/keys", json={"role": "trainer"}).json()
    return project, key["key_id"], key["key"]


def _statuses_until_401(url: str, token: str, within_s: float) -> tuple[int, float]:
    """Poll ``url`` with ``token`` until it answers 401: (last status, seconds it took)."""
    started = time.monotonic()
    status = 0
    while time.monotonic() - started < within_s:
        status = httpx.get(url, headers=bearer(token)).status_code
        if status == 401:
            break
        time.sleep(0.02)
    return status, time.monotonic() - started


@pytest.fixture
def two_servers_on_postgresql() -> Iterator[tuple[str, str]]:
    """Two API processes on one PostgreSQL database, each caching keys for a minute."""
    env = {"ORDO_KEY_CACHE_TTL_S": "60"}
    with ExitStack() as stack:
        url = stack.enter_context(postgres_database(require_postgres()))
        first = stack.enter_context(run_live_server(url, env=env))
        second = stack.enter_context(run_live_server(url, env=env))
        yield first.base_url, second.base_url


@pytest.mark.postgres
def test_a_revocation_in_one_process_reaches_the_cache_of_another_on_postgresql(
    two_servers_on_postgresql: tuple[str, str],
) -> None:
    first, second = two_servers_on_postgresql
    project, key_id, token = _project_key(first, ADMIN_TOKEN)
    url = f"{second}/v1/projects/{project}"
    assert httpx.get(url, headers=bearer(token)).status_code == 200  # cached in the second
    revoked = httpx.delete(
        f"{first}/v1/projects/{project}/keys/{key_id}", headers=bearer(ADMIN_TOKEN)
    )
    assert revoked.status_code == 204
    status, took_s = _statuses_until_401(url, token, within_s=10.0)
    assert status == 401
    assert took_s < 2.0  # not the minute the second process would have kept it


def test_on_sqlite_another_process_s_revocation_takes_effect_within_the_time_to_live(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    url = migrated_sqlite_url(tmp_path_factory.mktemp("keys") / "ordo.sqlite")
    env = {"ORDO_KEY_CACHE_TTL_S": "1"}
    with run_live_server(url, env=env) as first, run_live_server(url, env=env) as second:
        project, key_id, token = _project_key(first.base_url, ADMIN_TOKEN)
        project_url = f"{second.base_url}/v1/projects/{project}"
        assert httpx.get(project_url, headers=bearer(token)).status_code == 200
        revoked = httpx.delete(
            f"{first.base_url}/v1/projects/{project}/keys/{key_id}", headers=bearer(ADMIN_TOKEN)
        )
        assert revoked.status_code == 204
        status, took_s = _statuses_until_401(project_url, token, within_s=10.0)
        assert status == 401
        assert took_s < 3.0  # its time to live (1 s), with room for a slow machine
