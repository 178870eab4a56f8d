"""Group commit of stage reports: the reports an API process receives at once share a transaction.

A report's own work is small (a run row, a few inserts); what it cost under load was the rest
of a transaction per request: a worker-thread trip, a session and a pooled connection, a
COMMIT and its WAL flush, and, worst, up to the write gate's width of threads contending for
the GIL with every statement's round trip. Here every report of a process goes through one
queue (:class:`GroupCommit`): while a batch is being stored the next requests wait in the
event loop, and the next batch takes them all (at most ``MAX_BATCH``), on one worker-thread
trip, in one transaction (:func:`store_reports`), holding a connection of their own
(:func:`write_gates`).

A report alone waits for nobody: with nothing in flight its batch is itself, so a quiet
server answers as before. Each request still gets its own answer or its own error: the
errors a report answers (404, 409, 422, 428) are raised before it writes anything and do not
touch the others; a batch that fails for a reason of its own (not a lost race and not the
database going away) is stored again one request at a time, so only the culprit fails. A
lost race (deadlock, serialization failure, SQLite busy) fails the whole batch, and each
request is run again by :class:`app.retry.RetryingRoute`, in whatever batch it then joins.

Lock order of a batch: the statistics locks of its stage reports' projects (shared), the run
rows (project then run id order), then the signing keys' rows (key id order; skipped when
another transaction holds one, never waited for); see ``reports.put_reports`` and
docs/jobs.md, "Locks".
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from ordo_server.app.commit_hooks import after_commit
from ordo_server.app.db import Database, is_sqlite, unit_of_work
from ordo_server.app.deps import WRITE_QUEUE_TIMEOUT_S
from ordo_server.app.errors import DATABASE_UNAVAILABLE_ERRORS, UnavailableError
from ordo_server.app.metrics import REPORT_BATCH_SIZE
from ordo_server.app.retry import retry_reason
from ordo_server.app.schemas.report import ReportAccepted
from ordo_server.app.services.key_cache import KeyCache
from ordo_server.app.services.reports import (
    ReportOutcome,
    ReportRequest,
    put_reports,
)
from ordo_server.app.settings import Settings

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
OutcomeT = TypeVar("OutcomeT")
# At most this many reports in one transaction (the rest wait for the next batch).
MAX_BATCH = 64
# Batches stored at once by one process: a batch waiting for a run row another transaction
# holds (a plan store) does not hold up every report behind it.
IN_FLIGHT = 2


class GroupCommit(Generic[ItemT, OutcomeT]):
    """Items submitted from the event loop, stored in batches by ``store`` on a worker thread.

    ``store`` gets a batch and returns one outcome per item, in order: a value, or an exception
    that item's submitter raises; an exception of ``store`` itself is every item's. At most
    ``in_flight`` batches are stored at once, each holding one slot of ``gate`` (the app's
    report gate, waited for at most ``gate_timeout_s``: a 503 after that, as for any write).
    Bound to the event loop of its first use; a new loop (a test client's next portal) starts
    afresh.
    """

    def __init__(
        self,
        store: Callable[[Sequence[ItemT]], Sequence[OutcomeT | BaseException]],
        *,
        gate: asyncio.Semaphore | None,
        gate_timeout_s: float,
        max_batch: int = MAX_BATCH,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        self._store = store
        self._gate = gate
        self._gate_timeout_s = gate_timeout_s
        self._max_batch = max_batch
        self._in_flight = in_flight
        self._waiting: list[tuple[ItemT, asyncio.Future[OutcomeT]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drainers: set[asyncio.Task[None]] = set()

    async def submit(self, item: ItemT) -> OutcomeT:
        """Store ``item`` with whatever else is waiting; its outcome (or its error, raised)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._waiting, self._drainers = loop, [], set()
        future: asyncio.Future[OutcomeT] = loop.create_future()
        self._waiting.append((item, future))
        if len(self._drainers) < self._in_flight:
            # A context of its own: a drainer serves many requests, it inherits none of their
            # context variables (the request id of the one that started it).
            drainer = loop.create_task(self._drain(), context=contextvars.Context())
            self._drainers.add(drainer)
            drainer.add_done_callback(self._drainers.discard)
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            try:
                outcomes = await self._store_batch([item for item, _ in batch])
            except BaseException as error:  # the whole batch's: every submitter raises it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(_for_submitter(error))
                if not isinstance(error, Exception):  # cancelled (shutdown): stop draining
                    raise
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # its request was cancelled; the item was stored all the same
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def _store_batch(self, items: list[ItemT]) -> Sequence[OutcomeT | BaseException]:
        if self._gate is None:
            return await run_in_threadpool(self._store, items)
        try:
            await asyncio.wait_for(self._gate.acquire(), timeout=self._gate_timeout_s)
        except TimeoutError as error:
            raise UnavailableError("The server is busy; retry later.") from error
        try:
            return await run_in_threadpool(self._store, items)
        finally:
            self._gate.release()


def _for_submitter(error: BaseException) -> BaseException:
    """What a submitter raises when its batch ended with ``error``: a cancelled drainer (the
    server stopping) is a 503 to the request, not a cancellation of it."""
    if isinstance(error, Exception):
        return error
    return UnavailableError("The server is stopping; retry later.")


def store_reports(
    database: Database,
    settings: Settings,
    cache: KeyCache | None,
    requests: Sequence[ReportRequest],
) -> list[ReportOutcome | BaseException]:
    """Store ``requests`` in one transaction; one by one if the batch fails on its own.

    A lost race or an unavailable database is raised (every request answers it, or is retried);
    any other failure of a batch of several is retried request by request in transactions of
    their own, so the request that caused it gets the error and the others their answers.
    """
    REPORT_BATCH_SIZE.observe(len(requests))
    try:
        return list(_store_together(database, settings, cache, requests))
    except Exception as error:
        if len(requests) == 1 or _whole_batch(error):
            raise
        failure = error
    logger.warning(
        "a batch of %d reports failed (%s); storing them one by one",
        len(requests),
        type(failure).__name__,
    )
    return [_store_alone(database, settings, cache, request) for request in requests]


def _store_together(
    database: Database,
    settings: Settings,
    cache: KeyCache | None,
    requests: Sequence[ReportRequest],
) -> list[ReportOutcome]:
    with unit_of_work(database.sessions) as session:
        batch = put_reports(session, requests, settings=settings)
        if cache is not None:
            for use in batch.key_uses:
                after_commit(session, functools.partial(cache.used, use.key_id, use.at))
    return batch.outcomes


def _store_alone(
    database: Database, settings: Settings, cache: KeyCache | None, request: ReportRequest
) -> ReportOutcome | BaseException:
    try:
        return _store_together(database, settings, cache, [request])[0]
    except Exception as error:
        return error


def _whole_batch(error: Exception) -> bool:
    """A lost race or an unavailable database: nothing one request of the batch caused."""
    return retry_reason(error) is not None or isinstance(error, DATABASE_UNAVAILABLE_ERRORS)


def write_gates(settings: Settings) -> tuple[asyncio.Semaphore, asyncio.Semaphore]:
    """The write gate of single writing requests and the report batches' own gate.

    SQLite has one writer: both are the same one-slot gate. On PostgreSQL the batches get
    ``IN_FLIGHT`` of the pool's connections to themselves and the other writers the rest: a
    batch carries many reports, so it must not queue behind a burst of single writes (run
    creations), each of which it would make all of its reports wait for. A pool too small to
    share (a single connection) is one gate again.
    """
    if is_sqlite(settings.database_url):
        gate = asyncio.Semaphore(1)
        return gate, gate
    connections = settings.db_pool_size + settings.db_max_overflow
    reserved = min(IN_FLIGHT, connections - 1)
    if reserved < 1:
        gate = asyncio.Semaphore(connections)
        return gate, gate
    return asyncio.Semaphore(connections - reserved), asyncio.Semaphore(reserved)


def report_batches(request: Request) -> GroupCommit[ReportRequest, ReportAccepted]:
    """The app's report queue, made on first use (from its database, settings and report gate)."""
    state = request.app.state
    batches: GroupCommit[ReportRequest, ReportAccepted] | None = getattr(
        state, "report_batches", None
    )
    if batches is None:
        cache: KeyCache | None = getattr(state, "key_cache", None)
        store = functools.partial(store_reports, state.database, state.settings, cache)
        batches = GroupCommit(
            store,
            gate=getattr(state, "report_gate", None),
            gate_timeout_s=WRITE_QUEUE_TIMEOUT_S,
        )
        state.report_batches = batches
    return batches
