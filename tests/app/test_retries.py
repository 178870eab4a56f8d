"""Requests whose transaction lost a race run again (app/retry.py), on real databases.

The races are made to happen, not simulated: a competing connection commits the same key
between a request's check and its insert; two requests lock two rows in opposite orders until
PostgreSQL breaks the deadlock; a second SQLite connection holds the write lock past the busy
timeout. Then, end to end: eight clients create one project name at once through a real server
on PostgreSQL and get one 201 and seven 409s, never a 500.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from ordo_server.app.db import build_engine, make_database
from ordo_server.app.deps import SessionDep
from ordo_server.app.errors import install_error_handlers
from ordo_server.app.retry import DB_RETRIES, RetryingRoute, retry_reason
from ordo_server.app.settings import Settings
from tests.conftest import LiveServer, migrated_sqlite_url

PG = pytest.param("postgresql", marks=pytest.mark.postgres)


def retries(reason: str) -> float:
    """The process-wide retry counter's value for ``reason``."""
    return float(DB_RETRIES.labels(reason=reason)._value.get())


class RaceApp:
    """A small app on the real session dependency, with routes that lose races on purpose."""

    def __init__(self, settings: Settings, table: str) -> None:
        self.settings = settings
        self.table = table
        self.engine = build_engine(settings)
        self.attempts: Counter[str] = Counter()
        self.barrier = threading.Barrier(2, timeout=10)
        self.app = self._build()

    def _build(self) -> FastAPI:
        app = FastAPI()
        app.state.settings = self.settings
        app.state.database = make_database(self.engine)
        install_error_handlers(app, retry_after_s=1)
        router = APIRouter(route_class=RetryingRoute)
        router.add_api_route("/claim/{key}", self.claim, methods=["POST"])
        router.add_api_route("/commit-then-fail/{key}", self.commit_then_fail, methods=["POST"])
        router.add_api_route("/lock/{first}/{second}", self.lock_both, methods=["POST"])
        router.add_api_route("/write/{key}", self.write, methods=["POST"])
        app.include_router(router)
        return app

    def _exists(self, session: SessionDep, key: str) -> bool:
        found = session.execute(text(f"SELECT 1 FROM {self.table} WHERE k = :k"), {"k": key})
        return found.first() is not None

    def _insert(self, session: SessionDep, key: str) -> None:
        session.execute(text(f"INSERT INTO {self.table} (k) VALUES (:k)"), {"k": key})

    def claim(self, key: str, session: SessionDep) -> dict[str, Any]:
        """Check, then insert; on the first try a competitor commits the key in between."""
        self.attempts[key] += 1
        if self._exists(session, key):
            return {"created": False, "attempts": self.attempts[key]}
        if self.attempts[key] == 1:
            with self.engine.begin() as competitor:
                competitor.execute(text(f"INSERT INTO {self.table} (k) VALUES (:k)"), {"k": key})
        self._insert(session, key)
        return {"created": True, "attempts": self.attempts[key]}

    def commit_then_fail(self, key: str, session: SessionDep) -> dict[str, Any]:
        """Commit a row, then insert it again: the request must not run a second time."""
        self.attempts[key] += 1
        self._insert(session, f"{key}-{self.attempts[key]}")
        session.commit()
        self._insert(session, f"{key}-{self.attempts[key]}")
        return {}

    def lock_both(self, first: str, second: str, session: SessionDep) -> dict[str, Any]:
        """Lock ``first``, wait for the other request to lock its first, then lock ``second``."""
        self.attempts[first] += 1
        lock = f"SELECT k FROM {self.table} WHERE k = :k FOR UPDATE"
        session.execute(text(lock), {"k": first})
        if self.attempts[first] == 1:
            self.barrier.wait()
        session.execute(text(lock), {"k": second})
        return {"attempts": self.attempts[first]}

    def write(self, key: str, session: SessionDep) -> dict[str, Any]:
        """Insert one row (SQLite: after the write lock, BEGIN IMMEDIATE)."""
        self.attempts[key] += 1
        self._insert(session, key)
        return {"attempts": self.attempts[key]}


@contextmanager
def probe_table(url: str, rows: tuple[str, ...] = ()) -> Iterator[str]:
    """A fresh table ``(k PRIMARY KEY)`` holding ``rows``, dropped afterwards."""
    table = f"retry_probe_{secrets.token_hex(4)}"
    engine = build_engine(Settings(database_url=url))
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {table} (k VARCHAR(64) PRIMARY KEY)"))
        for row in rows:
            connection.execute(text(f"INSERT INTO {table} (k) VALUES (:k)"), {"k": row})
    try:
        yield table
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE {table}"))
        engine.dispose()


@pytest.fixture(params=["sqlite", PG])
def race_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database: a fresh SQLite file, or this session's PostgreSQL database."""
    if request.param == "sqlite":
        return migrated_sqlite_url(tmp_path / "race.sqlite")
    url: str = request.getfixturevalue("postgres_database_url")
    return url


def race_app(url: str, table: str, **settings: Any) -> RaceApp:
    return RaceApp(Settings(database_url=url, **settings), table)


@pytest.mark.postgres
def test_a_lost_check_then_insert_runs_again_and_sees_the_winner(
    postgres_database_url: str,
) -> None:
    # (On SQLite, BEGIN IMMEDIATE serializes writers: no competitor commits in between.)
    before = retries("integrity")
    with probe_table(postgres_database_url) as table:
        races = race_app(postgres_database_url, table)
        with TestClient(races.app) as client:
            answer = client.post("/claim/math")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"created": False, "attempts": 2}
    assert retries("integrity") == before + 1


@pytest.mark.postgres
def test_a_race_lost_on_every_try_answers_409_not_500(postgres_database_url: str) -> None:
    with probe_table(postgres_database_url) as table:
        races = race_app(postgres_database_url, table, db_retry_attempts=1)
        with TestClient(races.app) as client:
            answer = client.post("/claim/code")
    assert answer.status_code == 409, answer.text
    assert answer.json()["code"] == "conflict"
    assert races.attempts["code"] == 1


def test_a_request_that_committed_is_never_run_again(race_url: str) -> None:
    with probe_table(race_url) as table:
        races = race_app(race_url, table)
        with TestClient(races.app) as client:
            answer = client.post("/commit-then-fail/qa")
        with races.engine.connect() as connection:
            stored = connection.execute(text(f"SELECT k FROM {table}")).scalars().all()
    assert answer.status_code == 409, answer.text
    assert races.attempts["qa"] == 1
    assert stored == ["qa-1"]


@pytest.mark.postgres
def test_both_sides_of_a_deadlock_succeed(postgres_database_url: str) -> None:
    before = retries("transient")
    with probe_table(postgres_database_url, rows=("a", "b")) as table:
        races = race_app(postgres_database_url, table)
        with TestClient(races.app) as client, ThreadPoolExecutor(2) as pool:
            one = pool.submit(client.post, "/lock/a/b")
            other = pool.submit(client.post, "/lock/b/a")
            answers = [one.result(timeout=30), other.result(timeout=30)]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert sorted(a.json()["attempts"] for a in answers) == [1, 2]
    assert retries("transient") == before + 1


def test_sqlite_busy_runs_again_once_the_writer_is_gone(tmp_path: Path) -> None:
    url = migrated_sqlite_url(tmp_path / "busy.sqlite")
    probe = build_engine(Settings(database_url=url))
    with probe.begin() as connection:
        connection.execute(text("CREATE TABLE retry_probe (k VARCHAR(64) PRIMARY KEY)"))
    races = race_app(url, "retry_probe", sqlite_busy_timeout_ms=50, db_retry_attempts=8)
    before = retries("transient")
    holding = threading.Event()
    release = threading.Event()

    def hold_write_lock(engine: Engine) -> None:
        with engine.begin() as connection:  # BEGIN IMMEDIATE: the write lock
            connection.execute(text("INSERT INTO retry_probe (k) VALUES ('holder')"))
            holding.set()
            release.wait(timeout=10)

    holder = threading.Thread(target=hold_write_lock, args=(probe,))
    holder.start()
    assert holding.wait(timeout=10)
    threading.Timer(0.3, release.set).start()
    with TestClient(races.app) as client:
        answer = client.post("/write/poetry")
    holder.join(timeout=10)
    probe.dispose()
    assert answer.status_code == 200, answer.text
    assert answer.json()["attempts"] >= 2
    assert retries("transient") >= before + 1


def test_only_races_are_retried(tmp_path: Path) -> None:
    """Real errors of a real database: a duplicate key is a race, a bad query is not."""
    engine = build_engine(Settings(database_url=migrated_sqlite_url(tmp_path / "kinds.sqlite")))
    caught: list[BaseException] = []
    statements = (
        "CREATE TABLE kinds (k VARCHAR(8) PRIMARY KEY)",
        "INSERT INTO kinds (k) VALUES ('a')",
        "INSERT INTO kinds (k) VALUES ('a')",  # unique violation
        "SELECT nope FROM kinds",  # no such column
    )
    for statement in statements:
        try:
            with engine.begin() as connection:
                connection.execute(text(statement))
        except DBAPIError as error:
            caught.append(error)
    engine.dispose()
    assert [retry_reason(error) for error in caught] == ["integrity", None]
    assert retry_reason(ValueError("not a database error")) is None


@pytest.mark.postgres
def test_concurrent_creations_of_one_project_name_answer_201_or_409(
    live_server_pg: LiveServer,
) -> None:
    name = f"race-{secrets.token_hex(4)}"
    barrier = threading.Barrier(8, timeout=10)

    def create() -> int:
        with httpx.Client(base_url=live_server_pg.base_url, timeout=30) as http:
            barrier.wait()
            answer = http.post(
                "/v1/projects", json={"name": name}, headers=live_server_pg.admin_headers
            )
            return answer.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = Counter(pool.map(lambda _: create(), range(8)))
    assert statuses == Counter({201: 1, 409: 7})
