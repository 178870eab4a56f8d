"""Fixtures of the client tests: live servers on SQLite and PostgreSQL, and clients of them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ordo_client import Client
from tests.conftest import LiveServer


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def server(request: pytest.FixtureRequest) -> LiveServer:
    """A live server process: once on SQLite, once on PostgreSQL."""
    name = "live_server" if request.param == "sqlite" else "live_server_pg"
    live: LiveServer = request.getfixturevalue(name)
    return live


@pytest.fixture
def admin(server: LiveServer) -> Iterator[Client]:
    """A client holding the server's global admin token."""
    with Client(server.base_url, server.admin_token) as client:
        yield client


@dataclass(frozen=True, slots=True)
class ProjectAccess:
    """A project made through the API, with an admin and a trainer key."""

    id: str
    base_url: str
    admin_token: str
    trainer_token: str

    def admin(self) -> Client:
        """A new client holding the project's admin key."""
        return Client(self.base_url, self.admin_token)

    def trainer(self) -> Client:
        """A new client holding the project's trainer key."""
        return Client(self.base_url, self.trainer_token)


def new_project(admin: Client, *, name: str | None = None) -> ProjectAccess:
    """A fresh project with its two keys."""
    project = admin.create_project(name or f"proj-{secrets.token_hex(4)}")
    admin_key = admin.create_api_key(project.id, name="admin", role="admin")
    trainer_key = admin.create_api_key(project.id, name="trainer", role="trainer")
    return ProjectAccess(project.id, admin.url, admin_key.key, trainer_key.key)


@pytest.fixture
def access(admin: Client) -> ProjectAccess:
    """A fresh project on the live server."""
    return new_project(admin)
