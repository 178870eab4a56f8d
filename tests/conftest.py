"""Shared fixtures: databases (SQLite and PostgreSQL), the app, its client, live servers.

Database fixtures
    ``database_url`` is parametrized over ``sqlite`` and ``postgresql``. Each pytest session
    (each xdist worker) migrates its own SQLite file and its own PostgreSQL database
    ``ordo_test_<random>`` with ``alembic upgrade head``, and drops it at the end, so parallel
    sessions never share tables. ``connection`` wraps each test in one transaction that is rolled
    back; the app's commits become savepoints inside it.

PostgreSQL comes from ``ORDO_TEST_DATABASE_URL``. When it is unset or unreachable the
``postgresql`` cases are skipped (one line in the terminal summary says why), except under ``CI``
where they fail.

Live servers
    ``live_server`` (SQLite) and ``live_server_pg`` start ``uvicorn`` in a subprocess on a free
    port against a freshly migrated database and yield a ``LiveServer``; ``run_live_server`` does
    the same for tests that need their own settings.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi import FastAPI
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import StarletteDeprecationWarning

from ordo_server.app.db import Database, alembic_config, build_engine, make_database
from ordo_server.app.main import create_app
from ordo_server.app.server_process import ServerProcess, serve_subprocess
from ordo_server.app.server_process import free_port as free_port
from ordo_server.app.settings import Settings
from tests.factories import ProjectKeys, bearer, create_key, create_project_with_keys

with warnings.catch_warnings():
    # Starlette 1.10 asks for the `httpx2` fork; httpx still works. Importing here, once, keeps
    # `filterwarnings = error` from failing every module that imports the TestClient.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

REPO_ROOT = Path(__file__).resolve().parents[1]
PG_URL_ENV = "ORDO_TEST_DATABASE_URL"
ADMIN_TOKEN = "test-admin-token-" + secrets.token_hex(16)
SERVER_START_TIMEOUT_S = 30.0


# --- PostgreSQL availability -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PostgresAvailability:
    """The admin URL of the test server, or why there is none."""

    url: str | None
    reason: str


def _probe_postgres() -> PostgresAvailability:
    url = os.environ.get(PG_URL_ENV)
    if not url:
        return PostgresAvailability(None, f"{PG_URL_ENV} is not set")
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not reachable"; the reason is reported
        return PostgresAvailability(None, f"PostgreSQL at {PG_URL_ENV} is unreachable: {exc}")
    finally:
        engine.dispose()
    return PostgresAvailability(url, "available")


_postgres: PostgresAvailability | None = None


def postgres_availability() -> PostgresAvailability:
    """Probe once per session."""
    global _postgres
    if _postgres is None:
        _postgres = _probe_postgres()
    return _postgres


def require_postgres() -> str:
    """The admin URL, or skip (fail under CI) with the reason."""
    availability = postgres_availability()
    if availability.url is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs PostgreSQL: {availability.reason}")
        pytest.skip(f"PostgreSQL not available: {availability.reason}")
    return availability.url


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say plainly when the PostgreSQL cases were skipped."""
    if _postgres is not None and _postgres.url is None:
        terminalreporter.write_line(
            f"NOTE: PostgreSQL tests were skipped: {_postgres.reason}", yellow=True
        )


@contextmanager
def postgres_database(admin_url: str, *, migrate: bool = True) -> Iterator[str]:
    """A new, uniquely named database on the test server (dropped afterwards)."""
    name = f"ordo_test_{secrets.token_hex(6)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        if migrate:
            command.upgrade(alembic_config(url), "head")
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{path}"


def migrated_sqlite_url(path: Path) -> str:
    """A SQLite file at ``path`` upgraded to head."""
    url = sqlite_url(path)
    command.upgrade(alembic_config(url), "head")
    return url


# --- databases ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """This session's migrated SQLite file."""
    return migrated_sqlite_url(tmp_path_factory.mktemp("sqlite") / "ordo.sqlite")


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """This session's migrated PostgreSQL database."""
    with postgres_database(require_postgres()) as url:
        yield url


@pytest.fixture(
    scope="session",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated database: once SQLite, once PostgreSQL."""
    name = "sqlite_database_url" if request.param == "sqlite" else "postgres_database_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    """The engine of ``database_url``, configured as the app configures it."""
    engine = build_engine(Settings(database_url=database_url))
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """One connection in one transaction, rolled back after the test."""
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            transaction.rollback()


@pytest.fixture
def database(connection: Connection) -> Database:
    """Session factories bound to the test transaction: commits become savepoints."""
    factory = sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    return Database(
        engine=connection.engine,
        sessions=factory,
        read_sessions=factory,
        statement_reads=factory,
    )


@pytest.fixture
def session(database: Database) -> Iterator[Session]:
    """A session inside the test transaction, for setting up data."""
    with database.sessions() as session:
        yield session


# --- the app -----------------------------------------------------------------------------------


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings pointing at the test database, with a known global admin token.

    No embedded worker thread: the test's requests share one connection, so a plan job runs in
    the request that waits for it (``GET .../next``, ``POST .../runs``), as it can in production.
    No rate limits: tests send many requests from one address with one key
    (tests/app/test_rate_limits.py sets its own).
    """
    return Settings(
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        job_thread=False,
        rate_limit_enabled=False,
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """A fresh app."""
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI, database: Database) -> Iterator[TestClient]:
    """A TestClient whose requests run inside the test transaction."""
    with TestClient(app) as test_client:
        app.state.database = database
        yield test_client


@pytest.fixture
def admin_headers() -> dict[str, str]:
    """Headers of the configured global admin token."""
    return bearer(ADMIN_TOKEN)


@pytest.fixture
def project(session: Session) -> ProjectKeys:
    """A project with admin, trainer and revoked keys and no tasks."""
    keys = create_project_with_keys(session)
    session.commit()
    return keys


@pytest.fixture
def other_project(session: Session) -> ProjectKeys:
    """A second project, to check isolation."""
    keys = create_project_with_keys(session)
    session.commit()
    return keys


@pytest.fixture
def global_admin_key(session: Session) -> str:
    """A stored global admin key (as generated at first start)."""
    token = create_key(session, None)
    session.commit()
    return token


# --- live servers ------------------------------------------------------------------------------


LiveServer = ServerProcess
"""A uvicorn subprocess serving the app (``base_url``, ``admin_token``, ``admin_headers``...)."""


def worker_less_settings(database_url: str, **overrides: Any) -> Settings:
    """The app's settings with jobs left to a worker the test plays (``job_runner`` external)."""
    return Settings(
        database_url=database_url, admin_token=ADMIN_TOKEN, job_runner="external", **overrides
    )


def recorded_statements(engine: Engine) -> list[str]:
    """The SQL statements ``engine`` runs from now on (a list that grows; clear it between
    steps to count a step's own)."""
    statements: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _record(_c: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    return statements


@contextmanager
def worker_process(
    database_url: str, env: dict[str, str] | None = None, *, ready: bool = False
) -> Iterator[subprocess.Popen[str]]:
    """An ``ordo worker`` process on ``database_url`` (``env`` added to this process's) until
    the block ends (SIGTERM, SIGKILL if it lingers). ``ready``: entered once the worker printed
    that it waits for jobs (its set-up done); otherwise its output is discarded."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ordo_server.app.cli", "worker"],
        env={**os.environ, **(env or {}), "ORDO_DATABASE_URL": database_url},
        stdout=subprocess.PIPE if ready else subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        if process.stdout is not None:
            first = process.stdout.readline()
            assert "waiting for jobs" in first, first
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


@contextmanager
def run_live_server(
    database_url: str, *, env: dict[str, str] | None = None, workers: int = 1
) -> Iterator[LiveServer]:
    """Serve the app with uvicorn in a subprocess until the block ends (the URL is migrated).

    Rate limits are off unless ``env`` turns them on: tests send bursts from one address.
    """
    with serve_subprocess(
        database_url,
        admin_token=ADMIN_TOKEN,
        workers=workers,
        env={"ORDO_RATE_LIMIT_ENABLED": "false", **(env or {})},
        migrate=False,
        start_timeout_s=SERVER_START_TIMEOUT_S,
    ) as server:
        yield server


@contextmanager
def live_server_on(
    backend: str,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    env: dict[str, str] | None = None,
    workers: int = 1,
) -> Iterator[LiveServer]:
    """A live server on a fresh, migrated database: ``backend`` is "sqlite" or "postgresql"."""
    if backend == "sqlite":
        url = migrated_sqlite_url(tmp_path_factory.mktemp("live") / "ordo.sqlite")
        with run_live_server(url, env=env, workers=workers) as server:
            yield server
    else:
        with (
            postgres_database(require_postgres()) as url,
            run_live_server(url, env=env, workers=workers) as server,
        ):
            yield server


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real server process on a fresh, migrated SQLite file."""
    url = migrated_sqlite_url(tmp_path_factory.mktemp("live") / "ordo.sqlite")
    with run_live_server(url) as server:
        yield server


@pytest.fixture(scope="module")
def live_server_pg() -> Iterator[LiveServer]:
    """A real server process on a fresh, migrated PostgreSQL database."""
    with postgres_database(require_postgres()) as url, run_live_server(url) as server:
        yield server


# --- a project with runs, on a database of its own ----------------------------------------------


@dataclass(frozen=True)
class ProjectWithRuns:
    """A project on its own database, with runs that follow one schedule of its tasks."""

    settings: Settings
    database: Database
    project_id: str
    runs: list[str]
    order: list[str]


@contextmanager
def project_with_runs(
    url: str, task_keys: tuple[str, ...], *, runs: int = 4, adaptive: bool = False
) -> Iterator[ProjectWithRuns]:
    """Make the project, its tasks, a schedule and ``runs`` runs (lease token 1) through the API
    on the migrated database ``url``; then yield it with an engine of its own."""
    settings = Settings(
        database_url=url, admin_token=ADMIN_TOKEN, job_thread=False, rate_limit_enabled=False
    )
    admin = bearer(ADMIN_TOKEN)
    with TestClient(create_app(settings)) as client:
        made = client.post("/v1/projects", json={"name": "p"}, headers=admin).json()
        prefix = f"/v1/projects/{made['id']}"
        tasks = {"tasks": [{"key": k} for k in task_keys]}
        client.post(f"{prefix}/tasks", json=tasks, headers=admin).raise_for_status()
        schedule = client.post(f"{prefix}/schedules", json={}, headers=admin).json()
        body = {"schedule_id": schedule["id"], "adaptive": adaptive}
        run_ids = [
            client.post(f"{prefix}/runs", json=body, headers=admin).json()["id"]
            for _ in range(runs)
        ]
    engine = build_engine(settings)
    try:
        yield ProjectWithRuns(
            settings, make_database(engine), made["id"], run_ids, schedule["order"]
        )
    finally:
        engine.dispose()
