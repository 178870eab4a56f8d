"""FastAPI dependencies: the per-request session, the caller, the project they act on."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from ordo_server.app.commit_hooks import after_commit
from ordo_server.app.db import Database, unit_of_work
from ordo_server.app.errors import RateLimitedError, UnavailableError
from ordo_server.app.retry import track_commits
from ordo_server.app.schemas.common import StorableText
from ordo_server.app.services.auth import (
    Principal,
    ProjectContext,
    authenticate,
    authorize_project,
    record_key_use,
)
from ordo_server.app.services.key_cache import KeyCache
from ordo_server.app.settings import Settings

if TYPE_CHECKING:
    from ordo_server.app.rate_limits import RateLimits

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Longest wait of a write request for its turn (then 503): the database's statement timeout.
WRITE_QUEUE_TIMEOUT_S = 30.0

bearer = HTTPBearer(
    auto_error=False,
    description="An Ordo API key: `Authorization: Bearer ordo_<key_id>_<secret>`.",
)


def settings_of(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def database_of(request: Request) -> Database:
    """The database opened in the lifespan (or the one a test put in its place)."""
    database: Database = request.app.state.database
    return database


# Dependencies that touch no I/O are coroutines: FastAPI runs a plain `def` dependency on a
# worker thread, and each hop costs the event loop more than the dependency's own work.


async def get_settings_dep(request: Request) -> Settings:
    """The settings the app was created with."""
    return settings_of(request)


async def get_database(request: Request) -> Database:
    """The database opened in the lifespan (or the one a test put in its place)."""
    return database_of(request)


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Principal:
    """The authenticated caller (401 otherwise), within its key's rate limit (429 otherwise).

    Runs before :func:`write_gate`, in a read-only unit of work of its own: a request with a bad
    token never waits for a write slot, takes one or opens a write transaction. A 401 counts as a
    failed sign-in of the client's address (:class:`app.rate_limits.RateLimitMiddleware`). A
    token signed in less than ``ORDO_KEY_CACHE_TTL_S`` ago is taken from the process's
    :class:`app.services.key_cache.KeyCache`, in the event loop, with no statement.
    """
    token = credentials.credentials if credentials is not None else None
    cache: KeyCache | None = getattr(request.app.state, "key_cache", None)
    principal = cache.get(token) if cache is not None and token else None
    if principal is None:
        settings = settings_of(request)
        database = database_of(request)
        principal = await run_in_threadpool(_authenticate, database, token, settings)
        if cache is not None and token:
            cache.put(token, principal)
    limits: RateLimits | None = getattr(request.app.state, "rate_limits", None)
    # A request run again after a lost race (app.retry) resolves this again: count it once.
    if limits is not None and not getattr(request.state, "key_rate_counted", False):
        request.state.key_rate_counted = True
        wait_s = await limits.hit_key(principal.key_id)
        if wait_s is not None:
            raise RateLimitedError(
                "Too many requests with this API key; retry later.", retry_after_s=wait_s
            )
    return principal


def _authenticate(database: Database, token: str | None, settings: Settings) -> Principal:
    with unit_of_work(database.read_sessions) as session:
        return authenticate(session, token, admin_token=settings.admin_token, touch=False)


# The caller, authenticated but not yet holding a session (use PrincipalDep in routes).
AuthenticatedDep = Annotated[Principal, Depends(get_principal)]


async def write_gate(request: Request) -> AsyncIterator[None]:
    """Queue writing requests in the event loop, at most as many at once as can hold a connection.

    Routes authenticate first: their project or principal parameter comes before the session,
    and :func:`current_principal` resolves the caller before the session, so a rejected key is
    answered before it queues here (``tests/app/test_rate_limits.py`` holds every slot and checks
    each write route).

    SQLite: one at a time (one writer). PostgreSQL: the pool's size, less the connections the
    report batches keep for themselves (``app.report_batches.write_gates``). Waiting anywhere else
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


async def get_session(
    request: Request, _gate: Annotated[None, Depends(write_gate, scope="function")]
) -> AsyncIterator[Session]:
    """One unit of work per request: commit on success, roll back on error.

    Reads get a read-only session (a deferred BEGIN on SQLite), everything else a writing one
    (BEGIN IMMEDIATE on SQLite), after :func:`write_gate`. The session is made in the event loop
    (no I/O: it connects on its first statement, on the route's worker thread). A plain
    ``def`` endpoint commits it at the end of its own worker-thread trip
    (``app.retry.commits_in_its_thread``), and it is only closed here; otherwise its end, commit
    or rollback, takes one worker thread.
    """
    database = database_of(request)
    factory = database.read_sessions if request.method in READ_METHODS else database.sessions
    session = factory()
    track_commits(request, session)
    try:
        yield session
    except BaseException:
        await run_in_threadpool(_end, session, commit=False)
        raise
    if session.in_transaction():
        await run_in_threadpool(_end, session, commit=True)
    else:
        # Committed already (a plain endpoint commits on its own thread: app.retry): no I/O left.
        session.close()


def _end(session: Session, *, commit: bool) -> None:
    """Commit (or roll back) and close ``session``; a failed commit rolls back and raises."""
    with session:
        if not commit:
            session.rollback()
            return
        try:
            session.commit()
        except BaseException:
            session.rollback()
            raise


# "function" scope: the commit happens before the response is sent, so a failed commit becomes
# an error response instead of a 200 for data that was never stored.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database, Depends(get_database)]


def current_principal(
    request: Request, principal: AuthenticatedDep, session: SessionDep
) -> Principal:
    """The authenticated caller; a write records the key's use in the request's transaction.

    ``principal`` comes before ``session``: the key is checked before the write gate.
    """
    _record_use(request, session, principal)
    return principal


def _record_use(request: Request, session: Session, principal: Principal) -> None:
    """A write records the key's use (at most once a minute), and its cache entry learns it."""
    if request.method in READ_METHODS:
        return
    recorded = record_key_use(session, principal)
    cache: KeyCache | None = getattr(request.app.state, "key_cache", None)
    if recorded is not None and cache is not None:
        after_commit(session, functools.partial(cache.used, principal.key_id, recorded))


PrincipalDep = Annotated[Principal, Depends(current_principal)]
ProjectIdPath = Annotated[str, Path(max_length=64, description="The project's id."), StorableText]
# Errors of every route under /v1/projects/{project_id}: 422 answers a malformed `project_id`
# (or another path parameter).
PROJECT_ROUTE_ERRORS = (401, 404, 422, 503)


def project_reader(
    request: Request, project_id: ProjectIdPath, principal: AuthenticatedDep, session: SessionDep
) -> ProjectContext:
    """The project, for any key of it (trainer or admin); a write records the key's use."""
    return _project(request, session, principal, project_id, admin=False)


def project_admin(
    request: Request, project_id: ProjectIdPath, principal: AuthenticatedDep, session: SessionDep
) -> ProjectContext:
    """The project, for an admin key of it only (403 for trainers); a write records the use."""
    return _project(request, session, principal, project_id, admin=True)


def _project(
    request: Request, session: Session, principal: Principal, project_id: str, *, admin: bool
) -> ProjectContext:
    # One worker thread for both steps (what current_principal does, then the project):
    # ``principal`` comes before ``session``, so the key is checked before the write gate.
    _record_use(request, session, principal)
    return authorize_project(session, principal, project_id, admin=admin)


ProjectReader = Annotated[ProjectContext, Depends(project_reader)]
ProjectAdmin = Annotated[ProjectContext, Depends(project_admin)]


@dataclass(frozen=True, slots=True)
class ProjectClaim:
    """A signed-in caller and the project their path names, not yet checked in the database.

    The trainers' hot write routes (a report, a heartbeat) check it on their own worker thread,
    first thing (``claim.check(session)``): one trip to a worker thread less than
    :data:`ProjectReader`, whose check is a dependency with a trip of its own.
    """

    request: Request
    principal: Principal
    project_id: str

    def check(self, session: Session) -> ProjectContext:
        """The project, for any key of it (as :func:`project_reader`); a write records the use."""
        return _project(self.request, session, self.principal, self.project_id, admin=False)


async def project_claim(
    request: Request, project_id: ProjectIdPath, principal: AuthenticatedDep
) -> ProjectClaim:
    """The caller's claim on the project in the path (the key is checked, the project not yet)."""
    return ProjectClaim(request, principal, project_id)


ProjectClaimDep = Annotated[ProjectClaim, Depends(project_claim)]
