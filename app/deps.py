"""FastAPI dependencies: the per-request session, the caller, the project they act on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.db import Database, unit_of_work
from app.errors import UnavailableError
from app.retry import track_commits
from app.schemas.common import StorableText
from app.services.auth import Principal, ProjectContext, authenticate, authorize_project
from app.settings import Settings

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Longest wait of a write request for its turn (then 503): the database's statement timeout.
WRITE_QUEUE_TIMEOUT_S = 30.0

bearer = HTTPBearer(
    auto_error=False,
    description="An Ordo API key: `Authorization: Bearer ordo_<key_id>_<secret>`.",
)


def get_settings_dep(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    """The database opened in the lifespan (or the one a test put in its place)."""
    database: Database = request.app.state.database
    return database


async def write_gate(request: Request) -> AsyncIterator[None]:
    """Queue writing requests in the event loop, at most as many at once as can hold a connection.

    SQLite: one at a time (one writer). PostgreSQL: the pool's size. Waiting anywhere else
    fails under a burst: a request parked in SQLite's busy handler holds a worker thread, and
    with enough writers every thread waits while the lock holder needs one to finish; a request
    waiting for a pooled connection gives up after ``db_pool_timeout_s`` (503) although the
    queue is moving. The semaphore serves in arrival order; a wait past WRITE_QUEUE_TIMEOUT_S
    is a 503 with ``Retry-After``.
    """
    gate: asyncio.Semaphore | None = getattr(request.app.state, "write_gate", None)
    if gate is None or request.method in READ_METHODS:
        yield
        return
    try:
        await asyncio.wait_for(gate.acquire(), timeout=WRITE_QUEUE_TIMEOUT_S)
    except TimeoutError as error:
        raise UnavailableError("The server is busy; retry later.") from error
    loop = asyncio.get_running_loop()
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            gate.release()

    # A route that has committed and then waits (for a plan job) lets the next writer in.
    request.state.release_write_gate = lambda: loop.call_soon_threadsafe(release)
    try:
        yield
    finally:
        release()


def release_write_gate(request: Request) -> None:
    """Let the next writing request in now (call only after this request's commit)."""
    release = getattr(request.state, "release_write_gate", None)
    if release is not None:
        release()


def get_session(
    request: Request, _gate: Annotated[None, Depends(write_gate, scope="function")]
) -> Iterator[Session]:
    """One unit of work per request: commit on success, roll back on error.

    Reads get a read-only session (a deferred BEGIN on SQLite), everything else a writing one
    (BEGIN IMMEDIATE on SQLite), after :func:`write_gate`.
    """
    database = get_database(request)
    factory = database.read_sessions if request.method in READ_METHODS else database.sessions
    with unit_of_work(factory) as session:
        track_commits(request, session)
        yield session


# "function" scope: the commit happens before the response is sent, so a failed commit becomes
# an error response instead of a 200 for data that was never stored.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database, Depends(get_database)]


def get_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Principal:
    """The authenticated caller (401 otherwise)."""
    token = credentials.credentials if credentials is not None else None
    return authenticate(
        session,
        token,
        admin_token=settings.admin_token,
        touch=request.method not in READ_METHODS,
    )


PrincipalDep = Annotated[Principal, Depends(get_principal)]
ProjectIdPath = Annotated[str, Path(max_length=64, description="The project's id."), StorableText]
# Errors of every route under /v1/projects/{project_id}: 422 answers a malformed `project_id`
# (or another path parameter).
PROJECT_ROUTE_ERRORS = (401, 404, 422, 503)


def project_reader(
    project_id: ProjectIdPath, principal: PrincipalDep, session: SessionDep
) -> ProjectContext:
    """The project, for any key of it (trainer or admin)."""
    return authorize_project(session, principal, project_id, admin=False)


def project_admin(
    project_id: ProjectIdPath, principal: PrincipalDep, session: SessionDep
) -> ProjectContext:
    """The project, for an admin key of it only (403 for trainers)."""
    return authorize_project(session, principal, project_id, admin=True)


ProjectReader = Annotated[ProjectContext, Depends(project_reader)]
ProjectAdmin = Annotated[ProjectContext, Depends(project_admin)]
