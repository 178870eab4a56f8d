"""The deployment files agree with each other and with the code they deploy.

There is no Docker engine to run them here, so these tests read ``docker-compose.yml``,
``Dockerfile`` and ``.dockerignore`` and check what would otherwise only break at deploy time:
service ordering, health checks, credentials that match between services, ports (published on
loopback unless told otherwise), the image's contents, volume and user, and that the commands
they run exist in the real ``ordo`` CLI. The image's entrypoint script runs for real: it migrates
a fresh SQLite file and then serves it. The README's list of ``ORDO_*`` variables is checked
against ``Settings`` both ways.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy.engine import make_url

from ordo_server.app.db import VERSION_TABLE
from ordo_server.app.server_process import free_port
from ordo_server.app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
ORDO_CLI = Path(sys.executable).with_name("ordo")
COMPOSE_SERVICES = {"db", "migrate", "api", "worker"}
CONTAINER_PORT = 8000
ENTRYPOINT_SCRIPT = REPO_ROOT / "deploy" / "docker-entrypoint.sh"
# `${VAR:-default}` in a compose value: the variable and what compose uses when it is unset.
COMPOSE_DEFAULT = re.compile(r"^\$\{(?P<name>\w+):-(?P<default>[^}]*)\}$")
SERVE_START_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    pairs = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            instruction, _, arguments = stripped.partition(" ")
            pairs.append((instruction.upper(), arguments.strip()))
    return pairs


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _instructions((REPO_ROOT / "Dockerfile").read_text())


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_compose_defines_db_migrate_and_api(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == COMPOSE_SERVICES


def test_compose_worker_runs_the_jobs_the_api_leaves_to_it(
    services: dict[str, dict[str, Any]],
) -> None:
    worker, api = services["worker"], services["api"]
    assert worker["command"] == ["ordo", "worker"]
    assert worker["environment"]["ORDO_DATABASE_URL"] == api["environment"]["ORDO_DATABASE_URL"]
    assert api["environment"]["ORDO_JOB_RUNNER"] == "external"
    assert worker["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert "ports" not in worker


def test_db_is_postgres_15_with_a_pg_isready_healthcheck_on_its_own_database(
    services: dict[str, dict[str, Any]],
) -> None:
    db = services["db"]
    env = db["environment"]
    check = db["healthcheck"]["test"]

    assert db["image"] == "postgres:15"
    assert check[0] == "CMD-SHELL"
    assert check[1] == f"pg_isready -U {env['POSTGRES_USER']} -d {env['POSTGRES_DB']}"
    assert db["healthcheck"]["retries"] >= 1


def test_migrate_runs_ordo_db_upgrade_once_db_is_healthy(
    services: dict[str, dict[str, Any]],
) -> None:
    migrate = services["migrate"]

    assert migrate["command"] == ["ordo", "db", "upgrade"]
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    # A one-shot job: restarting it would loop after success.
    assert migrate["restart"] == "no"


def test_api_starts_only_after_a_successful_migration(
    services: dict[str, dict[str, Any]],
) -> None:
    depends_on = services["api"]["depends_on"]

    assert depends_on["migrate"] == {"condition": "service_completed_successfully"}
    assert depends_on["db"] == {"condition": "service_healthy"}


@pytest.mark.parametrize("service", ["migrate", "api"])
def test_database_url_points_at_the_db_service_with_its_credentials(
    services: dict[str, dict[str, Any]], service: str
) -> None:
    url = make_url(services[service]["environment"]["ORDO_DATABASE_URL"])
    db_env = services["db"]["environment"]

    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port) == ("db", 5432)
    assert url.username == db_env["POSTGRES_USER"]
    assert url.password == db_env["POSTGRES_PASSWORD"]
    assert url.database == db_env["POSTGRES_DB"]


def test_admin_token_is_passed_through_from_the_environment_not_hardcoded(
    services: dict[str, dict[str, Any]],
) -> None:
    # A key with no value makes compose copy it from the shell (or leave it unset).
    environment = services["api"]["environment"]

    assert "ORDO_ADMIN_TOKEN" in environment
    assert environment["ORDO_ADMIN_TOKEN"] is None


def test_api_serves_on_the_published_port_and_healthchecks_healthz(
    services: dict[str, dict[str, Any]],
) -> None:
    api = services["api"]
    command = api["command"]
    check = api["healthcheck"]["test"]

    assert command[:2] == ["ordo", "serve"]
    assert _option(command, "--host") == "0.0.0.0"
    assert int(_option(command, "--port")) == CONTAINER_PORT
    assert api["ports"] == [f"${{ORDO_BIND:-127.0.0.1}}:{CONTAINER_PORT}:{CONTAINER_PORT}"]
    assert check[0] == "CMD"
    assert f"http://127.0.0.1:{CONTAINER_PORT}/healthz" in check[-1]


def _published_host(mapping: str) -> tuple[str | None, str]:
    """``(variable, default host)`` of a ``HOST:PUBLISHED:CONTAINER`` port mapping."""
    host, published, container = mapping.rsplit(":", 2)
    assert published.isdigit(), mapping
    assert container.isdigit(), mapping
    match = COMPOSE_DEFAULT.match(host)
    if match is None:
        return None, host
    return match["name"], match["default"]


def test_every_published_port_binds_to_loopback_unless_told_otherwise(
    services: dict[str, dict[str, Any]],
) -> None:
    """A bare ``8000:8000`` would publish on every interface of the host."""
    published = [mapping for service in services.values() for mapping in service.get("ports", [])]

    assert published
    for mapping in published:
        assert isinstance(mapping, str), "the short syntax, so the host address is visible"
        variable, host = _published_host(mapping)
        assert host == "127.0.0.1", mapping
        assert variable in {None, "ORDO_BIND"}, mapping


def test_readme_says_how_to_publish_on_every_interface() -> None:
    readme = (REPO_ROOT / "README.md").read_text()

    assert "ORDO_BIND=0.0.0.0 docker compose up" in readme


def test_services_running_ordo_build_the_repository_image(
    services: dict[str, dict[str, Any]],
) -> None:
    images = {services[name]["image"] for name in ("migrate", "api")}

    assert services["migrate"]["build"] == services["api"]["build"] == "."
    assert len(images) == 1


class _HealthHandler(BaseHTTPRequestHandler):
    """Answers ``/healthz`` with the status code the server was built with."""

    server: _HealthServer

    def do_GET(self) -> None:
        self.send_response(self.server.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


class _HealthServer(ThreadingHTTPServer):
    def __init__(self, status: int) -> None:
        super().__init__(("127.0.0.1", 0), _HealthHandler)
        self.status = status


def _run_healthcheck(services: dict[str, dict[str, Any]], *, port: int) -> int:
    check = services["api"]["healthcheck"]["test"]
    assert check[1:3] == ["python", "-c"]
    code = check[3].replace(f":{CONTAINER_PORT}/", f":{port}/")
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_api_healthcheck_passes_only_on_a_2xx_healthz(
    services: dict[str, dict[str, Any]], status: int, healthy: bool
) -> None:
    """Run the healthcheck's one-liner for real against a stand-in server on loopback."""
    server = _HealthServer(status)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        returncode = _run_healthcheck(services, port=server.server_address[1])
    finally:
        server.shutdown()
        thread.join()
        server.server_close()

    assert (returncode == 0) is healthy


def test_api_healthcheck_fails_when_nothing_listens(services: dict[str, dict[str, Any]]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port: int = sock.getsockname()[1]

    assert _run_healthcheck(services, port=closed_port) != 0


def test_dockerfile_uses_python_311_slim(dockerfile: list[tuple[str, str]]) -> None:
    assert dockerfile[0] == ("FROM", "python:3.11-slim")


def _arguments(dockerfile: list[tuple[str, str]], instruction: str) -> list[str]:
    return [arguments for name, arguments in dockerfile if name == instruction]


def _image_env(dockerfile: list[tuple[str, str]]) -> dict[str, str]:
    """The image's ``ENV KEY=VALUE`` settings (the ``KEY=VALUE`` form only)."""
    env: dict[str, str] = {}
    for arguments in _arguments(dockerfile, "ENV"):
        for word in shlex.split(arguments):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def _volumes(dockerfile: list[tuple[str, str]]) -> set[str]:
    volumes: set[str] = set()
    for arguments in _arguments(dockerfile, "VOLUME"):
        parsed = json.loads(arguments) if arguments.startswith("[") else arguments.split()
        volumes.update(parsed)
    return volumes


def test_image_keeps_its_sqlite_database_in_a_declared_volume(
    dockerfile: list[tuple[str, str]],
) -> None:
    url = make_url(_image_env(dockerfile)["ORDO_DATABASE_URL"])

    assert url.drivername == "sqlite"
    assert url.database is not None
    assert str(Path(url.database).parent) in _volumes(dockerfile)


def test_image_volume_belongs_to_the_user_the_service_runs_as(
    dockerfile: list[tuple[str, str]],
) -> None:
    """A named volume copies the directory's owner: the non-root user can write its database."""
    user = _arguments(dockerfile, "USER")[-1]
    (volume,) = _volumes(dockerfile)
    runs = " ".join(_arguments(dockerfile, "RUN"))

    assert re.search(rf"install -d -o {user} -g {user} (\S+ )*{re.escape(volume)}\b", runs)
    assert _arguments(dockerfile, "WORKDIR")[-1] == volume


def test_image_entrypoint_is_the_migrating_script(dockerfile: list[tuple[str, str]]) -> None:
    (entrypoint,) = (json.loads(arguments) for arguments in _arguments(dockerfile, "ENTRYPOINT"))
    copies = [arguments.split() for arguments in _arguments(dockerfile, "COPY")]
    script_copy = next(words for words in copies if words[-1] == entrypoint[0])

    assert entrypoint == [script_copy[-1]], "exec form, so CMD arrives as its arguments"
    assert "--chmod=0755" in script_copy
    assert REPO_ROOT / script_copy[-2] == ENTRYPOINT_SCRIPT
    assert "ordo db upgrade" in ENTRYPOINT_SCRIPT.read_text()
    assert not _dockerignored(script_copy[-2])


def test_dockerfile_installs_client_and_service(dockerfile: list[tuple[str, str]]) -> None:
    runs = [arguments for instruction, arguments in dockerfile if instruction == "RUN"]

    assert any(re.search(r"pip install \"?\./client\b", run) for run in runs)
    assert any(re.search(r"pip install \.(\s|$)", run) for run in runs)


def _copied_sources(dockerfile: list[tuple[str, str]]) -> set[str]:
    sources: set[str] = set()
    for instruction, arguments in dockerfile:
        if instruction == "COPY":
            words = [word for word in arguments.split() if not word.startswith("--")]
            sources.update(part.rstrip("/") for part in words[:-1])
    return sources


def _dockerignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return any(fnmatch.fnmatch(path, pattern) for pattern in patterns)


def test_image_gets_every_package_the_build_needs(dockerfile: list[tuple[str, str]]) -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    package_dirs = pyproject["tool"]["setuptools"]["package-dir"].values()
    needed = {*package_dirs, "client", "LICENSE", "pyproject.toml", pyproject["project"]["readme"]}

    copied = _copied_sources(dockerfile)

    assert needed <= copied
    assert [path for path in needed if _dockerignored(path)] == []
    assert all((REPO_ROOT / path).exists() for path in copied)


def test_image_runs_as_a_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    users = [arguments for instruction, arguments in dockerfile if instruction == "USER"]
    cmd_index = max(i for i, (instruction, _) in enumerate(dockerfile) if instruction == "CMD")
    last_user_index = max(
        i for i, (instruction, _) in enumerate(dockerfile) if instruction == "USER"
    )

    assert users
    assert users[-1] not in {"root", "0"}
    assert last_user_index < cmd_index


def test_image_serves_ordo_on_all_interfaces(dockerfile: list[tuple[str, str]]) -> None:
    cmd = json.loads(
        next(arguments for instruction, arguments in dockerfile if instruction == "CMD")
    )
    exposed = {arguments for instruction, arguments in dockerfile if instruction == "EXPOSE"}

    assert cmd[:2] == ["ordo", "serve"]
    assert _option(cmd, "--host") == "0.0.0.0"
    assert exposed == {_option(cmd, "--port")}


def _cli_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORDO_")}
    env["ORDO_DATABASE_URL"] = f"sqlite:///{tmp_path / 'ordo.sqlite'}"
    return env


def test_compose_migrate_command_migrates_a_real_database(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The exact argv of the migrate service, run against SQLite instead of the db service."""
    _, *arguments = services["migrate"]["command"]

    result = subprocess.run(
        [ORDO_CLI, *arguments], env=_cli_env(tmp_path), capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    with closing(sqlite3.connect(tmp_path / "ordo.sqlite")) as connection:
        versions = connection.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall()
    assert len(versions) == 1


def _entrypoint_env(tmp_path: Path) -> dict[str, str]:
    """The CLI's environment with the ``ordo`` console script first on ``PATH``, as in the image."""
    env = _cli_env(tmp_path)
    env["PATH"] = os.pathsep.join([str(ORDO_CLI.parent), env.get("PATH", "")])
    return env


def _version_rows(database: Path) -> list[tuple[str]]:
    with closing(sqlite3.connect(database)) as connection:
        tables = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,)
        ).fetchall()
        if not tables:
            return []
        rows: list[tuple[str]] = connection.execute(
            f"SELECT version_num FROM {VERSION_TABLE}"
        ).fetchall()
        return rows


def _wait_until_ready(base_url: str, process: subprocess.Popen[bytes]) -> httpx.Response:
    """``/readyz``'s first 200 (database reachable, schema at head); fail if the process exits."""
    deadline = time.monotonic() + SERVE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the entrypoint exited with {process.returncode}"
        try:
            response = httpx.get(f"{base_url}/readyz", timeout=1.0)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.2)
    pytest.fail(f"nothing ready on {base_url} within {SERVE_START_TIMEOUT_S} s")


def test_entrypoint_migrates_a_fresh_database_and_then_serves_it(tmp_path: Path) -> None:
    """The image's start, minus Docker: the script with the CMD's argv on an empty SQLite file.

    ``ordo serve`` alone refuses an unmigrated database (exit 1), so an answer from ``/readyz``,
    which checks that the schema is at head, shows the script migrated before serving.
    """
    port = free_port()
    argv = ["ordo", "serve", "--host", "127.0.0.1", "--port", str(port)]
    output = tmp_path / "entrypoint.log"
    with output.open("wb") as log:
        process = subprocess.Popen(
            ["sh", str(ENTRYPOINT_SCRIPT), *argv],
            env=_entrypoint_env(tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            ready = _wait_until_ready(f"http://127.0.0.1:{port}", process)
        finally:
            process.terminate()
            process.wait(timeout=30)

    assert ready.json()["status"] == "ok"
    assert len(_version_rows(tmp_path / "ordo.sqlite")) == 1
    log_text = output.read_text()
    # `ordo db upgrade` reports the revision before `ordo serve` prints its docs address.
    assert log_text.index("head") < log_text.index("Ordo API docs:")


def test_entrypoint_runs_other_commands_without_migrating(tmp_path: Path) -> None:
    result = subprocess.run(
        ["sh", str(ENTRYPOINT_SCRIPT), "ordo", "db", "current"],
        env=_entrypoint_env(tmp_path),
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    assert _version_rows(tmp_path / "ordo.sqlite") == []


def test_serve_accepts_the_options_compose_and_the_image_pass(tmp_path: Path) -> None:
    result = subprocess.run(
        [ORDO_CLI, "serve", "--help"], env=_cli_env(tmp_path), capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert "--host" in result.stdout
    assert "--port" in result.stdout


# Variables the README may name besides the server's settings: the client's and the tooling's.
NON_SETTING_VARIABLES = {
    "ORDO_BIND",  # docker-compose.yml: the host address the API port is published on
    "ORDO_URL",
    "ORDO_TOKEN",
    "ORDO_PROJECT",
    "ORDO_TEST_DATABASE_URL",
    "ORDO_LOP_INSTANCES",
}


def _readme_variables() -> set[str]:
    return set(re.findall(r"\bORDO_[A-Z0-9_]+\b", (REPO_ROOT / "README.md").read_text()))


def test_readme_documents_every_server_setting() -> None:
    settings_variables = {f"ORDO_{name.upper()}" for name in Settings.model_fields}

    assert settings_variables - _readme_variables() == set()


def test_readme_names_no_variable_that_nothing_reads() -> None:
    settings_variables = {f"ORDO_{name.upper()}" for name in Settings.model_fields}

    assert _readme_variables() - settings_variables - NON_SETTING_VARIABLES == set()
