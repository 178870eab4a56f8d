"""Where the examples find an Ordo server: ``ORDO_URL`` and ``ORDO_TOKEN``, or one in-process.

With ``ORDO_URL`` set, the examples use that server; ``ORDO_TOKEN`` must then be a global admin
token (they create their own project). Without it they migrate a temporary SQLite database and
serve Ordo in a thread, as ``ordo demo`` does, so that they run with nothing else set up.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command

from ordo_client.demo import serve_in_thread
from ordo_server.app.db import alembic_config
from ordo_server.app.settings import Settings


@contextmanager
def ordo_server(url: str | None = None, token: str | None = None) -> Iterator[tuple[str, str]]:
    """Yield ``(base_url, admin_token)`` of the server to use."""
    url = url or os.environ.get("ORDO_URL")
    if url:
        token = token or os.environ.get("ORDO_TOKEN")
        if not token:
            raise SystemExit("ORDO_URL is set: set ORDO_TOKEN to a global admin token too")
        yield url, token
        return
    admin_token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="ordo-example-") as folder:
        database_url = f"sqlite:///{Path(folder) / 'ordo.sqlite'}"
        command.upgrade(alembic_config(database_url), "head")
        settings = Settings(
            database_url=database_url,
            admin_token=admin_token,
            sqlite_synchronous="NORMAL",
            rate_limit_enabled=False,  # a throwaway server for one local caller
        )
        with serve_in_thread(settings) as base_url:
            yield base_url, admin_token
