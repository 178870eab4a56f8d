"""The API served by a child process on a free loopback port: for tests, benchmarks and scripts.

:func:`serve_subprocess` migrates the database (``ordo db upgrade``, unless told not to), starts
uvicorn with the app factory in a subprocess, waits until ``/healthz`` answers, yields a
:class:`ServerProcess`, and on exit terminates the process and waits for it, so that no child
or open file outlives the block. uvicorn runs directly rather than through ``ordo serve``,
because ``ordo serve`` refuses a database whose schema is behind and callers may want one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import httpx

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_POLL_INTERVAL_S = 0.1
_OUTPUT_TAIL_CHARS = 4000


@dataclass(frozen=True, slots=True)
class ServerProcess:
    """A running server: where it answers, its global admin token, its database, its process."""

    base_url: str
    admin_token: str
    database_url: str
    process: subprocess.Popen[bytes]

    @property
    def admin_headers(self) -> dict[str, str]:
        """``Authorization`` header of the global admin token."""
        return {"Authorization": f"Bearer {self.admin_token}"}


class ServerStartError(RuntimeError):
    """The server process exited, or did not answer ``/healthz`` in time."""


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def ordo_command(*args: str) -> list[str]:
    """``ordo ARGS...`` run by this interpreter (no reliance on the console script's PATH)."""
    return [sys.executable, "-c", "from app.cli import main; main()", *args]


def migrate_database(database_url: str, *, env: Mapping[str, str] | None = None) -> None:
    """Run ``ordo db upgrade`` on ``database_url`` in a subprocess; raise with its output."""
    result = subprocess.run(
        ordo_command("db", "upgrade"),
        env={**os.environ, **(env or {}), "ORDO_DATABASE_URL": database_url},
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace")
        raise RuntimeError(f"ordo db upgrade exited with {result.returncode}:\n{output}")


@contextmanager
def serve_subprocess(
    database_url: str,
    *,
    admin_token: str,
    port: int | None = None,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    migrate: bool = True,
    log_level: str = "warning",
    start_timeout_s: float = START_TIMEOUT_S,
) -> Iterator[ServerProcess]:
    """Serve the app on ``127.0.0.1:port`` (a free port by default) until the block ends.

    ``env`` is added to this process's environment after ``ORDO_DATABASE_URL`` and
    ``ORDO_ADMIN_TOKEN``, so it may override them. The server's output goes to a temporary
    file, quoted in the :class:`ServerStartError` when it does not come up.
    """
    server_env = {
        **os.environ,
        "ORDO_DATABASE_URL": database_url,
        "ORDO_ADMIN_TOKEN": admin_token,
        **(env or {}),
    }
    if migrate:
        migrate_database(database_url, env=server_env)
    port = port or free_port()
    args = [
        sys.executable, "-m", "uvicorn", "--factory", "ordo_server.app.main:create_served_app",
        "--host", LOOPBACK, "--port", str(port), "--workers", str(workers),
        "--log-level", log_level,
    ]  # fmt: skip
    base_url = f"http://{LOOPBACK}:{port}"
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(args, env=server_env, stdout=output, stderr=subprocess.STDOUT)
        try:
            _wait_until_up(base_url, process, output, timeout_s=start_timeout_s)
            yield ServerProcess(base_url, server_env["ORDO_ADMIN_TOKEN"], database_url, process)
        finally:
            _stop(process)


def _wait_until_up(
    base_url: str, process: subprocess.Popen[bytes], output: IO[bytes], *, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartError(f"the server exited with {process.returncode}:\n{_tail(output)}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(_POLL_INTERVAL_S)
    raise ServerStartError(
        f"the server did not answer on {base_url} within {timeout_s:g} s:\n{_tail(output)}"
    )


def _tail(output: IO[bytes]) -> str:
    output.flush()
    output.seek(0)
    return output.read().decode(errors="replace")[-_OUTPUT_TAIL_CHARS:]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (uvicorn shuts down gracefully), SIGKILL if it lingers; always reaped."""
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
