"""Retries against real servers: one not up yet, and one whose database is down (503)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ordo_client import NO_RETRY, Client, OrdoConnectionError, RetryPolicy, UnavailableError
from ordo_server.app.db import alembic_config
from tests.conftest import (
    REPO_ROOT,
    free_port,
    postgres_database,
    require_postgres,
    run_live_server,
    sqlite_url,
)

FAST_RETRY = RetryPolicy(max_attempts=40, backoff_base_s=0.1, backoff_max_s=0.5)
RETRY_ENV = {"ORDO_RETRY_AFTER_S": "1"}


def retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The client's 'retrying' log lines."""
    return [r.getMessage() for r in caplog.records if r.name == "ordo_client"]


@contextmanager
def later(delay_s: float, action: Callable[[], object]) -> Iterator[threading.Thread]:
    """Run ``action()`` in a thread after ``delay_s``; joined when the block ends."""
    timer = threading.Timer(delay_s, action)
    timer.start()
    try:
        yield timer
    finally:
        timer.join()


class _ActOnce(logging.Handler):
    """Runs ``action()`` at the first record whose message contains ``needle``."""

    def __init__(self, needle: str, action: Callable[[], object]) -> None:
        super().__init__(logging.WARNING)
        self.needle = needle
        self.action: Callable[[], object] | None = action

    def emit(self, record: logging.LogRecord) -> None:
        if self.action is not None and self.needle in record.getMessage():
            action, self.action = self.action, None
            action()


@contextmanager
def once_logged(needle: str, action: Callable[[], object]) -> Iterator[None]:
    """Run ``action()`` when the client first logs ``needle`` (say, that it retries a 503)."""
    handler = _ActOnce(needle, action)
    logger = logging.getLogger("ordo_client")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def test_reads_wait_for_a_server_that_is_not_up_yet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = sqlite_url(tmp_path / "ordo.sqlite")
    command.upgrade(alembic_config(url), "head")
    port = free_port()
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        args = [sys.executable, "-m", "uvicorn", "--factory", "ordo_server.app.main:create_app",
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
        env = {**os.environ, "ORDO_DATABASE_URL": url}
        processes.append(subprocess.Popen(args, cwd=REPO_ROOT, env=env))

    caplog.set_level(logging.WARNING, logger="ordo_client")
    base_url = f"http://127.0.0.1:{port}"
    try:
        with Client(base_url, "t", retry=NO_RETRY) as client, pytest.raises(OrdoConnectionError):
            client.health()
        with later(0.5, start), Client(base_url, "t", retry=FAST_RETRY) as client:
            assert client.ready().status == "ok"
        assert any("ConnectError" in line for line in retry_warnings(caplog))
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def test_plain_posts_are_never_repeated(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ordo_client")
    base_url = f"http://127.0.0.1:{free_port()}"
    with (
        Client(base_url, "t", retry=FAST_RETRY) as client,
        pytest.raises(OrdoConnectionError, match=r"after 1 attempt\(s\)"),
    ):
        client.create_project("nobody-listens")
    assert retry_warnings(caplog) == []


def check_database_down_then_up(
    url: str, make_ready: Callable[[], object], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ordo_client")
    with run_live_server(url, env=RETRY_ENV) as server:
        with (
            Client(server.base_url, server.admin_token, retry=NO_RETRY) as client,
            pytest.raises(UnavailableError) as caught,
        ):
            client.list_projects()
        assert caught.value.status == 503
        assert caught.value.code == "database_unavailable"
        assert caught.value.retry_after_s == 1.0
        # The database comes back once the client has met its 503: whatever the machine's load,
        # the client must have retried it to succeed.
        with (
            once_logged(" 503 on attempt ", make_ready),
            Client(server.base_url, server.admin_token, retry=FAST_RETRY) as client,
        ):
            assert client.list_projects() == []
    assert any(" 503 on attempt " in line for line in retry_warnings(caplog))


def test_reads_ride_out_a_sqlite_database_that_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "not-mounted-yet"
    staging = tmp_path / "staging"
    staging.mkdir()
    command.upgrade(alembic_config(sqlite_url(staging / "ordo.sqlite")), "head")
    # The migrated file appears at once (a rename), as when a volume is mounted.
    check_database_down_then_up(
        sqlite_url(folder / "ordo.sqlite"), lambda: staging.rename(folder), caplog
    )


@pytest.mark.postgres
def test_reads_ride_out_a_postgres_database_that_is_down(caplog: pytest.LogCaptureFixture) -> None:
    admin_url = require_postgres()
    with postgres_database(admin_url) as url:
        name = make_url(url).database
        engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")

        def allow_connections(allowed: bool) -> None:
            with engine.connect() as connection:
                connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {allowed}'))

        allow_connections(False)
        try:
            check_database_down_then_up(url, lambda: allow_connections(True), caplog)
        finally:
            engine.dispose()
