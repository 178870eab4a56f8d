"""The global admin token: a minimum length, `ordo admin rotate`, ORDO_ADMIN_TOKEN revoking.

The generated token is an ``ordo_api_keys`` row with no project; ``ORDO_ADMIN_TOKEN`` is only
compared, never stored.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from ordo_server.app.cli import cli
from ordo_server.app.main import create_app
from ordo_server.app.server_process import free_port, ordo_command
from ordo_server.app.services.auth import rotate_global_admin
from ordo_server.app.settings import ADMIN_TOKEN_MIN_CHARS, Settings, get_settings
from tests.conftest import migrated_sqlite_url, postgres_database, require_postgres
from tests.factories import ProjectKeys, bearer

SHORT_TOKEN = "change-me"
SERVE_OUTPUT_TIMEOUT_S = 60


def long_token() -> str:
    return secrets.token_urlsafe(32)


# --- the minimum length ------------------------------------------------------------------------


def test_settings_refuse_a_short_admin_token_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(admin_token="x" * (ADMIN_TOKEN_MIN_CHARS - 1))
    message = str(raised.value)
    assert "ORDO_ADMIN_TOKEN must be at least 32 characters (it has 31)" in message
    assert "x" * (ADMIN_TOKEN_MIN_CHARS - 1) not in message


def test_settings_accept_a_token_of_the_minimum_length() -> None:
    token = "y" * ADMIN_TOKEN_MIN_CHARS
    settings = Settings(admin_token=token)
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == token


def test_cli_serve_refuses_a_short_admin_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDO_DATABASE_URL", migrated_sqlite_url(tmp_path / "short.sqlite"))
    monkeypatch.setenv("ORDO_ADMIN_TOKEN", SHORT_TOKEN)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["serve", "--port", str(free_port())])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "ORDO_ADMIN_TOKEN must be at least 32 characters (it has 9)" in result.output
    assert SHORT_TOKEN not in result.output


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["serve"], id="ordo-serve"),
        pytest.param(["uvicorn"], id="uvicorn-factory"),
    ],
)
def test_a_server_process_refuses_a_short_admin_token(tmp_path: Path, command: list[str]) -> None:
    port = str(free_port())
    if command == ["serve"]:
        args = ordo_command("serve", "--port", port)
    else:
        args = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "ordo_server.app.main:create_app",
            "--port",
            port,
        ]
    env = {
        **os.environ,
        "ORDO_DATABASE_URL": migrated_sqlite_url(tmp_path / "short.sqlite"),
        "ORDO_ADMIN_TOKEN": SHORT_TOKEN,
    }
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "ORDO_ADMIN_TOKEN must be at least 32 characters" in output
    assert SHORT_TOKEN not in output


# --- rotation ----------------------------------------------------------------------------------


def test_rotation_revokes_the_generated_token_and_the_new_one_works(
    client: TestClient, session: Session, global_admin_key: str, project: ProjectKeys
) -> None:
    assert client.get("/v1/projects", headers=bearer(global_admin_key)).status_code == 200
    rotated = rotate_global_admin(session)
    session.commit()
    assert rotated.revoked_key_ids == (global_admin_key.split("_")[1],)
    assert client.get("/v1/projects", headers=bearer(global_admin_key)).status_code == 401
    assert client.get("/v1/projects", headers=bearer(rotated.token)).status_code == 200
    # Project keys are not global admins: rotation leaves them alone.
    assert client.get(f"/v1/projects/{project.id}", headers=project.admin).status_code == 200


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_database_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A new migrated database of its own (the CLI commits), named by ORDO_DATABASE_URL."""
    monkeypatch.delenv("ORDO_ADMIN_TOKEN", raising=False)
    get_settings.cache_clear()
    try:
        if request.param == "sqlite":
            url = migrated_sqlite_url(tmp_path / "admin.sqlite")
            monkeypatch.setenv("ORDO_DATABASE_URL", url)
            yield url
        else:
            with postgres_database(require_postgres()) as url:
                monkeypatch.setenv("ORDO_DATABASE_URL", url)
                yield url
    finally:
        get_settings.cache_clear()


def _token_in(output: str) -> str:
    tokens = [line.strip() for line in output.splitlines() if line.strip().startswith("ordo_")]
    assert len(tokens) == 1, output
    return tokens[0]


def _status(database_url: str, token: str, *, admin_token: str | None = None) -> int:
    settings = Settings(database_url=database_url, admin_token=admin_token)
    with TestClient(create_app(settings)) as client:
        status: int = client.get("/v1/projects", headers=bearer(token)).status_code
        return status


def test_admin_rotate_command(fresh_database_url: str) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["admin", "rotate"])
    assert first.exit_code == 0, first.output
    assert "no generated global admin token to revoke" in first.output
    first_token = _token_in(first.output)
    assert _status(fresh_database_url, first_token) == 200

    second = runner.invoke(cli, ["admin", "rotate"])
    assert second.exit_code == 0, second.output
    second_token = _token_in(second.output)
    assert f"key id {first_token.split('_')[1]}" in second.output
    assert first_token.split("_", 2)[2] not in second.output
    assert _status(fresh_database_url, first_token) == 401
    assert _status(fresh_database_url, second_token) == 200


def test_admin_rotate_refuses_while_the_env_token_is_set(
    fresh_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDO_ADMIN_TOKEN", long_token())
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["admin", "rotate"])
    assert result.exit_code == 1
    assert "ORDO_ADMIN_TOKEN is set" in result.output


# --- ORDO_ADMIN_TOKEN replaces the generated token ---------------------------------------------


def _serve_until_listening(database_url: str, admin_token: str | None) -> str:
    """Run `ordo serve` until it announces its docs; return what it printed before."""
    env = {**os.environ, "ORDO_DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
    env.pop("ORDO_ADMIN_TOKEN", None)
    if admin_token is not None:
        env["ORDO_ADMIN_TOKEN"] = admin_token
    args = ordo_command("serve", "--port", str(free_port()))
    lines: list[str] = []
    with subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        try:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                if "Ordo API docs" in line:
                    break
        finally:
            process.terminate()
            process.wait(timeout=SERVE_OUTPUT_TIMEOUT_S)
    output = "".join(lines)
    assert "Ordo API docs" in output, output
    return output


@pytest.mark.slow
@pytest.mark.timeout(3 * SERVE_OUTPUT_TIMEOUT_S)
def test_setting_the_env_token_revokes_the_generated_one(fresh_database_url: str) -> None:
    first = _serve_until_listening(fresh_database_url, None)
    generated = _token_in(first)
    assert _status(fresh_database_url, generated) == 200

    configured = long_token()
    second = _serve_until_listening(fresh_database_url, configured)
    assert "revoked 1 generated global admin token(s)" in second
    assert configured not in second
    assert generated.split("_", 2)[2] not in second
    assert _status(fresh_database_url, generated, admin_token=configured) == 401
    assert _status(fresh_database_url, configured, admin_token=configured) == 200

    # Unset again: the next start generates a new token, shown once.
    third = _serve_until_listening(fresh_database_url, None)
    regenerated = _token_in(third)
    assert regenerated != generated
    assert _status(fresh_database_url, regenerated) == 200
