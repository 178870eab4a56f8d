"""The `ordo` CLI: db upgrade/current, serve refusing a schema that is behind, admin bootstrap,
and help that loads none of the server's heavy modules."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from ordo_server.app.cli import cli
from ordo_server.app.db import build_engine, make_database, session_scope
from ordo_server.app.services.auth import authenticate, ensure_global_admin
from ordo_server.app.settings import Settings, get_settings
from tests.conftest import migrated_sqlite_url, sqlite_url


@pytest.fixture
def runner_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = sqlite_url(tmp_path / "cli.sqlite")
    monkeypatch.setenv("ORDO_DATABASE_URL", url)
    monkeypatch.delenv("ORDO_ADMIN_TOKEN", raising=False)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_serve_refuses_a_database_that_is_behind(runner_env: str) -> None:
    result = CliRunner().invoke(cli, ["serve", "--port", "1"])
    assert result.exit_code == 1
    assert "ordo db upgrade" in result.output
    assert "behind" in result.output


def test_db_upgrade_then_current(runner_env: str) -> None:
    runner = CliRunner()
    before = runner.invoke(cli, ["db", "current"])
    assert "empty" in before.output
    upgraded = runner.invoke(cli, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert "(at head)" in upgraded.output
    assert "(at head)" in runner.invoke(cli, ["db", "current"]).output


def test_serve_refuses_many_workers_on_sqlite(runner_env: str) -> None:
    result = CliRunner().invoke(cli, ["serve", "--workers", "2"])
    assert result.exit_code == 1
    assert "one writer" in result.output


def test_first_start_generates_one_admin_key(tmp_path: Path) -> None:
    url = migrated_sqlite_url(tmp_path / "boot.sqlite")
    database = make_database(build_engine(Settings(database_url=url)))
    try:
        with session_scope(database) as session:
            token = ensure_global_admin(session)
        with session_scope(database) as session:
            assert ensure_global_admin(session) is None  # only at first start
        assert token is not None
        with database.sessions() as session:
            principal = authenticate(session, token, admin_token=None, touch=False)
            assert principal.is_global_admin
            _assert_token_not_stored(session, token)
    finally:
        database.engine.dispose()


def _assert_token_not_stored(session: Session, token: str) -> None:
    connection = session.connection().connection.driver_connection
    assert connection is not None
    dump = "\n".join(connection.iterdump())
    assert token.split("_", 2)[2] not in dump


# The solver (OR-Tools, scipy) and the server's web and database stack: `ordo --help` needs none
# of them, and each costs tenths of a second to import. (The command lives in ordo_client, whose
# package imports httpx and pydantic: about 0.15 s of the 0.3 s `ordo --help` takes.)
HEAVY_MODULES = ("ortools", "scipy", "numpy", "pandas", "sqlalchemy", "alembic", "fastapi",
                 "uvicorn", "ordo_server.solver", "ordo_server.app.settings")  # fmt: skip
SHOW_HELP_AND_LIST_MODULES = """
import sys
from ordo_client.cli import main
sys.argv = ["ordo", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    assert exit.code == 0, exit.code
print(" ".join(sorted(sys.modules)))
"""


@pytest.mark.parametrize("command", [["--help"], ["runs", "--help"], ["schedule", "--help"]])
def test_help_imports_no_heavy_module(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SHOW_HELP_AND_LIST_MODULES, *command],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(result.stdout.splitlines()[-1].split())
    assert {"typer", "ordo_server.app.cli"} <= loaded  # the check ran, with the server's commands
    heavy = {name for name in loaded if name.partition(".")[0] in HEAVY_MODULES}
    heavy |= loaded.intersection(HEAVY_MODULES)
    assert not heavy, sorted(heavy)
