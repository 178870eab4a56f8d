"""API keys: create (shown once), list (prefix only), revoke; secrets never stored."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection, delete, event, select, text, update
from sqlalchemy.orm import Session

from ordo_server.app.db import build_engine
from ordo_server.app.repositories.keys import touch_key
from ordo_server.app.settings import Settings
from ordo_server.models import ApiKey, Project
from tests.factories import ProjectKeys, bearer, create_project_with_keys


def _create(client: TestClient, project: ProjectKeys, **body: object) -> dict[str, object]:
    response = client.post(f"/v1/projects/{project.id}/keys", json=body, headers=project.admin)
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


def test_created_key_works_and_is_listed_by_prefix_only(
    client: TestClient, project: ProjectKeys
) -> None:
    created = _create(client, project, name="cluster-a", role="trainer")
    token = str(created["key"])
    assert token.startswith(f"ordo_{created['key_id']}_")
    assert client.get(f"/v1/projects/{project.id}", headers=bearer(token)).status_code == 200
    listed = client.get(f"/v1/projects/{project.id}/keys", headers=project.admin)
    assert listed.status_code == 200
    assert len(listed.json()) == 4  # admin, trainer, revoked (fixture) + the new one
    assert token not in listed.text
    mine = [k for k in listed.json() if k["key_id"] == created["key_id"]]
    assert mine[0]["prefix"] == str(created["prefix"])
    assert token.startswith(mine[0]["prefix"])
    assert len(mine[0]["prefix"]) < len(token) - 32


def test_no_secret_is_stored(client: TestClient, project: ProjectKeys, session: Session) -> None:
    token = str(_create(client, project, role="admin")["key"])
    secret = token.split("_", 2)[2]
    for row in session.scalars(select(ApiKey)).all():
        for column in ApiKey.__table__.columns:
            assert secret not in str(getattr(row, column.key))


def test_revoked_key_answers_401(client: TestClient, project: ProjectKeys) -> None:
    created = _create(client, project, role="trainer")
    path = f"/v1/projects/{project.id}/keys/{created['key_id']}"
    assert client.delete(path, headers=project.admin).status_code == 204
    assert client.delete(path, headers=project.admin).status_code == 204  # idempotent
    response = client.get(f"/v1/projects/{project.id}", headers=bearer(str(created["key"])))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    listed = client.get(f"/v1/projects/{project.id}/keys", headers=project.admin).json()
    assert [k["revoked_at"] is not None for k in listed if k["key_id"] == created["key_id"]] == [
        True
    ]


def test_revoking_another_projects_key_is_404(
    client: TestClient, project: ProjectKeys, other_project: ProjectKeys
) -> None:
    other_key_id = other_project.trainer_token.split("_")[1]
    path = f"/v1/projects/{project.id}/keys/{other_key_id}"
    response = client.delete(path, headers=project.admin)
    assert response.status_code == 404
    unknown = client.delete(
        f"/v1/projects/{project.id}/keys/0000000000000000", headers=project.admin
    )
    assert response.content == unknown.content
    assert (
        client.get(f"/v1/projects/{other_project.id}", headers=other_project.trainer).status_code
        == 200
    )


def test_expired_key_answers_401(
    client: TestClient, project: ProjectKeys, session: Session
) -> None:
    created = _create(client, project, role="trainer")
    session.execute(
        update(ApiKey)
        .where(ApiKey.key_id == created["key_id"])
        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    session.commit()
    response = client.get(f"/v1/projects/{project.id}", headers=bearer(str(created["key"])))
    assert response.status_code == 401


def test_expiry_in_the_past_is_422(client: TestClient, project: ProjectKeys) -> None:
    body = {"role": "trainer", "expires_at": "2001-01-01T00:00:00Z"}
    response = client.post(f"/v1/projects/{project.id}/keys", json=body, headers=project.admin)
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "expires_at", "reason": "Must be in the future"}]


def test_unknown_role_is_422(client: TestClient, project: ProjectKeys) -> None:
    response = client.post(
        f"/v1/projects/{project.id}/keys", json={"role": "root"}, headers=project.admin
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "role"


def test_use_of_a_key_is_recorded_on_writes(
    client: TestClient, project: ProjectKeys, session: Session
) -> None:
    _create(client, project, role="trainer")
    admin_key_id = project.admin_token.split("_")[1]
    session.expire_all()
    used = session.scalar(select(ApiKey.last_used_at).where(ApiKey.key_id == admin_key_id))
    assert used is not None


def test_a_use_recorded_within_the_minute_costs_no_statement_and_an_older_one_is_renewed(
    client: TestClient,
    app: FastAPI,
    project: ProjectKeys,
    session: Session,
    connection: Connection,
) -> None:
    admin_key_id = project.admin_token.split("_")[1]
    _create(client, project, role="trainer")  # a write: its use is recorded now
    key_updates: list[str] = []

    def watch(_conn: Connection, _cursor: object, statement: str, *_args: object) -> None:
        # The recording of a use (the test's own UPDATE below sets the column plainly).
        if statement.startswith("UPDATE ordo_api_keys") and "last_used_at IS NULL" in statement:
            key_updates.append(statement)

    event.listen(connection, "before_cursor_execute", watch)
    try:
        _create(client, project, role="trainer")
        assert key_updates == []  # recorded a moment ago: nothing to write
        two_minutes_ago = datetime.now(UTC) - timedelta(minutes=2)
        session.execute(
            update(ApiKey).where(ApiKey.key_id == admin_key_id).values(last_used_at=two_minutes_ago)
        )
        session.commit()
        # The process's key cache remembers the use it recorded; a fresh sign-in reads the row.
        app.state.key_cache.clear()
        _create(client, project, role="trainer")
        assert len(key_updates) == 1
    finally:
        event.remove(connection, "before_cursor_execute", watch)
    session.expire_all()
    used = session.scalar(select(ApiKey.last_used_at).where(ApiKey.key_id == admin_key_id))
    assert used is not None
    assert used > two_minutes_ago + timedelta(minutes=1)


@pytest.mark.postgres
def test_recording_a_use_never_waits_for_another_transaction_on_the_key(
    postgres_database_url: str,
) -> None:
    """Two transactions record a use of one key at once: the second skips the row the first
    holds instead of waiting for its commit (without the skip it waits out the lock timeout)."""
    engine = build_engine(Settings(database_url=postgres_database_url))
    try:
        with Session(engine) as setup:
            project = create_project_with_keys(setup)
            setup.commit()
        key_id = project.trainer_token.split("_")[1]
        first_at = datetime(2026, 1, 1, tzinfo=UTC)
        with Session(engine) as first, Session(engine) as second:
            touch_key(first, key_id, first_at)  # holds the key row until it commits
            second.execute(text("SET LOCAL lock_timeout = '2s'"))
            started = time.monotonic()
            touch_key(second, key_id, first_at + timedelta(minutes=5))
            assert time.monotonic() - started < 1.0
            second.commit()
            first.commit()
        with Session(engine) as reader:
            stored = reader.scalar(select(ApiKey.last_used_at).where(ApiKey.key_id == key_id))
            assert stored == first_at
            reader.execute(delete(Project).where(Project.id == project.id))
            reader.commit()
    finally:
        engine.dispose()
