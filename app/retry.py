"""Bounded server-side retries of a request whose transaction lost a race (reliability.md R5).

Under contention PostgreSQL aborts a transaction with a serialization failure (SQLSTATE 40001),
a deadlock (40P01) or a lock timeout (55P03, ``lock_timeout``); SQLite answers "database is
locked" when its busy timeout runs out. A check-then-insert race ends in a unique or foreign-key
violation (class 23) in the slower of two transactions. Each of these rolled back everything the
request did, so the request can simply run again: a fresh transaction sees what the winner
committed and takes the path written for it (a replay, a 409, a 404) instead of a 500 or a 503.

:class:`RetryingRoute` runs an endpoint, its dependencies (and so its session) included, up to
``Settings.db_retry_attempts`` times, sleeping a jittered, doubling backoff between tries. It
never retries a request that committed anything: a route that commits early and then fails
answers the error as it is.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import sqlite3
import sys
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from prometheus_client import Counter
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

# SQLSTATEs of a transaction PostgreSQL rolled back because of another one.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
_INTEGRITY_SQLSTATE_CLASS = "23"
_SQLITE_BUSY_MESSAGES = ("database is locked", "database table is locked")
# First backoff (seconds): the next try waits base * 2**attempt, jittered by x0.5 .. x1.5.
RETRY_BASE_S = 0.02
_REQUEST_STATE_KEY = "ordo_request_state"
_COMMITTED_FLAG = "ordo_committed"

DB_RETRIES = Counter(  # exported by app.metrics
    "ordo_db_retries_total",
    "Requests run again after their transaction lost a race, by reason: transient "
    "(serialization failure, deadlock, lock timeout, SQLite busy) or integrity (a concurrent "
    "insert of the same key).",
    ["reason"],
    registry=None,
)


def retry_reason(error: BaseException) -> str | None:
    """Why ``error`` may be retried (``"transient"`` or ``"integrity"``), or ``None``."""
    if not isinstance(error, DBAPIError):
        return None
    driver_error = error.orig
    sqlstate = getattr(driver_error, "sqlstate", None)
    if isinstance(error, IntegrityError) or (
        isinstance(sqlstate, str) and sqlstate.startswith(_INTEGRITY_SQLSTATE_CLASS)
    ):
        return "integrity"
    if sqlstate in TRANSIENT_SQLSTATES:
        return "transient"
    if isinstance(driver_error, sqlite3.OperationalError) and str(driver_error).startswith(
        _SQLITE_BUSY_MESSAGES
    ):
        return "transient"
    return None


def track_commits(request: Request, session: Session) -> None:
    """Remember on ``request`` when ``session`` commits (such a request is never run again)."""
    # One listener for every session (below): a listener per session costs a request ~1 ms.
    session.info[_REQUEST_STATE_KEY] = request.state


@event.listens_for(Session, "after_commit")
def _mark_committed(session: Session) -> None:
    state = session.info.get(_REQUEST_STATE_KEY)
    if state is not None:
        setattr(state, _COMMITTED_FLAG, True)


def has_committed(request: Request) -> bool:
    """Whether a session of this request committed."""
    return bool(getattr(request.state, _COMMITTED_FLAG, False))


def backoff_s(attempt: int, rng: random.Random) -> float:
    """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 0)."""
    return float(RETRY_BASE_S * 2**attempt * rng.uniform(0.5, 1.5))


Handler = Callable[[Request], Coroutine[Any, Any, Response]]
# Where FastAPI keeps the exit stacks of a request's dependencies (request and function scope).
_REQUEST_STACK = "fastapi_inner_astack"
_FUNCTION_STACK = "fastapi_function_astack"


async def run_once(handler: Handler, request: Request) -> Response:
    """Run ``handler`` with exit stacks of its own, so a failed try leaves nothing open.

    FastAPI closes a request's dependencies (its session: the commit) after the handler returns,
    outside this route. Here the function-scoped ones (the session, the write gate) close before
    this returns, so a failed commit is seen (and retried) here, and a failed try has rolled back
    and let the next writer in before the next try. Request-scoped dependencies of the try that
    answers close with the request, as usual.
    """
    scope = request.scope
    outer_request_stack, outer_function_stack = scope[_REQUEST_STACK], scope[_FUNCTION_STACK]
    request_stack = AsyncExitStack()
    try:
        async with AsyncExitStack() as function_stack:
            scope[_REQUEST_STACK], scope[_FUNCTION_STACK] = request_stack, function_stack
            response = await handler(request)
    except BaseException:
        await request_stack.__aexit__(*sys.exc_info())
        raise
    finally:
        scope[_REQUEST_STACK], scope[_FUNCTION_STACK] = outer_request_stack, outer_function_stack
    outer_request_stack.push_async_exit(request_stack)
    return response


def commits_in_its_thread(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint``, a plain ``def``, made to commit its session on its own worker thread.

    FastAPI runs a plain endpoint on a worker thread and the session dependency's end (the
    commit) on another trip to one after it; committing at the end of the endpoint's own trip
    saves that trip (``get_session`` then only closes a session with no transaction, in the
    event loop). An endpoint that raises commits nothing: the dependency rolls back, as before.
    Coroutine endpoints are returned as they are.
    """
    if inspect.iscoroutinefunction(endpoint):
        return endpoint

    @functools.wraps(endpoint)
    def run_and_commit(*args: Any, **kwargs: Any) -> Any:
        result = endpoint(*args, **kwargs)
        for value in kwargs.values():
            if isinstance(value, Session) and value.in_transaction():
                value.commit()
        return result

    return run_and_commit


class RetryingRoute(APIRoute):
    """An API route that runs its endpoint again when its transaction lost a race; a plain
    ``def`` endpoint commits on its own worker thread (:func:`commits_in_its_thread`)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, commits_in_its_thread(endpoint), **kwargs)

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        rng = random.Random()

        async def run_with_retries(request: Request) -> Response:
            attempts = max(1, int(request.app.state.settings.db_retry_attempts))
            for attempt in range(attempts):
                try:
                    return await run_once(handler, request)
                except DBAPIError as error:
                    reason = retry_reason(error)
                    if reason is None or attempt + 1 >= attempts or has_committed(request):
                        raise
                    DB_RETRIES.labels(reason=reason).inc()
                    logger.info(
                        "retrying %s %s after a %s error (try %d of %d)",
                        request.method,
                        request.url.path,
                        reason,
                        attempt + 2,
                        attempts,
                    )
                    await asyncio.sleep(backoff_s(attempt, rng))
            raise AssertionError("unreachable: the last try returns or raises")

        return run_with_retries
