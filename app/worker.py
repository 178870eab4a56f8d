"""Job workers: the loop of `ordo worker`, and the embedded thread of `ordo serve`.

Any number of workers, in any number of processes on any machine with the database URL, take
jobs from ``ordo_jobs`` (``app.services.planning.run_next_job``: claims skip rows other
workers hold, finishes are fenced by the claim). An idle worker sleeps until a job is committed:
on PostgreSQL it LISTENs on ``ordo_jobs`` (every enqueue NOTIFYs); in the embedded thread, this
process's enqueues wake it directly; either way it looks again every ``job_poll_s``. At most
once per ``job_poll_s`` a worker also folds the statistics deltas of the projects where enough
wait (``statistics.fold_due``): those whose runs never ask for a plan have no job to do it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from ordo_server.app.db import Database, is_sqlite
from ordo_server.app.repositories.jobs import NOTIFY_CHANNEL, PLANS_CHANNEL
from ordo_server.app.repositories.keys import KEYS_CHANNEL
from ordo_server.app.services import statistics as stat_service
from ordo_server.app.services.job_events import plan_done, set_relay_live, wait_for_work
from ordo_server.app.services.key_cache import forget_all, forget_keys
from ordo_server.app.services.planning import run_next_job
from ordo_server.app.settings import Settings

logger = logging.getLogger(__name__)


def work(
    database: Database,
    settings: Settings,
    *,
    stop: threading.Event,
    wait: Callable[[float], None] | None = None,
) -> None:
    """Run jobs until ``stop`` is set; sleep with ``wait`` (default: this process's wake-ups)."""
    idle_wait = wait or wait_for_work
    next_sweep = time.monotonic()
    while not stop.is_set():
        if time.monotonic() >= next_sweep:
            next_sweep = time.monotonic() + settings.job_poll_s
            _fold_due(database)
        try:
            ran = run_next_job(database, settings)
        except DBAPIError:
            # The database is away (restart, failover): the job stays claimable; try later.
            logger.warning("worker: the database is unavailable; retrying", exc_info=True)
            stop.wait(settings.job_poll_s)
            continue
        if not ran:
            idle_wait(settings.job_poll_s)


def _fold_due(database: Database) -> None:
    """Fold the projects' waiting statistics deltas; a failure is logged, the loop goes on (the
    next sweep folds them)."""
    try:
        stat_service.fold_due(database)
    except Exception:
        logger.warning("worker: folding statistics deltas failed; retrying later", exc_info=True)


@contextmanager
def embedded_worker(database: Database, settings: Settings) -> Iterator[None]:
    """A worker thread for the lifetime of the block (``ordo serve`` with the embedded runner)."""
    stop = threading.Event()
    thread = threading.Thread(
        target=work, args=(database, settings), kwargs={"stop": stop}, name="ordo-jobs", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=settings.job_poll_s + 5)


def run_worker(database: Database, settings: Settings, *, stop: threading.Event) -> None:
    """The loop of ``ordo worker``: LISTEN/NOTIFY on PostgreSQL, polling on SQLite."""
    if is_sqlite(settings.database_url):
        work(database, settings, stop=stop, wait=lambda timeout_s: _sleep(stop, timeout_s))
        return
    with _listener(settings.database_url) as wait:
        work(database, settings, stop=stop, wait=wait)


def _sleep(stop: threading.Event, timeout_s: float) -> None:
    stop.wait(timeout_s)


def _conninfo(database_url: str) -> str:
    """The SQLAlchemy URL as a libpq URI for a plain psycopg connection (LISTEN)."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@contextmanager
def _listener(database_url: str) -> Iterator[Callable[[float], None]]:
    """A LISTENing connection; yields ``wait(timeout_s)``, which returns on a notification."""
    with psycopg.connect(_conninfo(database_url), autocommit=True) as connection:
        connection.execute(f"LISTEN {NOTIFY_CHANNEL}")

        def wait(timeout_s: float) -> None:
            for _ in connection.notifies(timeout=timeout_s, stop_after=1):
                pass

        yield wait


@contextmanager
def notification_listener(database_url: str) -> Iterator[None]:
    """PostgreSQL: relay ``NOTIFY ordo_plans`` to this process's waiting requests and ``NOTIFY
    ordo_keys`` (revocations) to its key caches, from a thread.

    Nothing on SQLite: there, waiting requests look at the database every quarter second and a
    cached key lives its time to live.
    """
    if is_sqlite(database_url):
        yield
        return
    stop = threading.Event()
    thread = threading.Thread(
        target=_relay, args=(database_url, stop), name="ordo-notifications", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _relay(database_url: str, stop: threading.Event) -> None:
    conninfo = _conninfo(database_url)
    while not stop.is_set():
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as connection:
                connection.execute(f"LISTEN {PLANS_CHANNEL}")
                connection.execute(f"LISTEN {KEYS_CHANNEL}")
                # A revocation sent while nobody listened was missed: sign every key in again.
                forget_all()
                set_relay_live(True)
                while not stop.is_set():
                    for notification in connection.notifies(timeout=1.0):
                        if notification.channel == KEYS_CHANNEL:
                            forget_keys([notification.payload])
                        else:
                            plan_done(notification.payload)
        except psycopg.Error:
            logger.warning("notification listener: the database is unavailable; retrying")
            stop.wait(1.0)
        finally:
            set_relay_live(False)
