"""Wake-ups between jobs and the requests that wait for them, within and across processes.

- A committed job wakes this process's embedded worker (:func:`wake_workers`).
- A finished plan job wakes the requests of this process waiting for that run
  (:func:`plan_done`); on PostgreSQL it also NOTIFYs ``ordo_plans`` and each API process's
  listener thread (``app.worker.notification_listener``) relays it here, so a plan stored by an
  ``ordo worker`` on another machine wakes the waiting request at once. While the listener
  listens (:func:`relay_live`) a waiter looks at the database only when it starts; while it
  does not (not started, reconnecting), waiters look every quarter second; each change wakes
  every waiter to look once (a notification sent meanwhile was lost).

A request waits in the event loop (:func:`async_plan_waiter`): a waiting request then holds
neither a database connection nor one of the process's worker threads, which the requests that
hold a connection need to finish (a thread pool full of waiters starved them until their pooled
connections timed out: 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_wake = threading.Event()
_waiters: dict[str, set[Callable[[], None]]] = {}
_lock = threading.Lock()
_relay = threading.Event()


def wake_workers() -> None:
    """Wake this process's embedded worker: a job was committed."""
    _wake.set()


def wait_for_work(timeout_s: float) -> None:
    """Sleep until :func:`wake_workers` is called or ``timeout_s`` seconds pass."""
    _wake.wait(timeout_s)
    _wake.clear()


@contextmanager
def _registered(key: str, wake: Callable[[], None]) -> Iterator[None]:
    with _lock:
        _waiters.setdefault(key, set()).add(wake)
    try:
        yield
    finally:
        with _lock:
            wakers = _waiters.get(key)
            if wakers is not None:
                wakers.discard(wake)
                if not wakers:
                    del _waiters[key]


@contextmanager
def async_plan_waiter(key: str) -> Iterator[asyncio.Event]:
    """An event of the running loop, set from any thread when the job of ``key`` ends (a run's
    plan job: the run's id; any other job: ``jobs.waiter_key``), for the block's duration."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()

    def wake() -> None:
        # A closed loop raises RuntimeError: nobody waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(event.set)

    with _registered(key, wake):
        yield event


def plan_done(run_id: str) -> None:
    """Wake every request of this process waiting for ``run_id``'s plan."""
    with _lock:
        wakers = list(_waiters.get(run_id, ()))
    for wake in wakers:
        wake()


def relay_live() -> bool:
    """Whether this process's listener relays every job's end now (PostgreSQL, listening)."""
    return _relay.is_set()


def set_relay_live(live: bool) -> None:
    """The listener listens (``True``) or lost its connection (``False``). Either change wakes
    every waiter of this process to look at the database once: a job that ended meanwhile sent
    a notification nobody got, and while nothing relays, waiters look every quarter second."""
    if live == _relay.is_set():
        return
    if live:
        _relay.set()
    else:
        _relay.clear()
    with _lock:
        wakers = [wake for wakes in _waiters.values() for wake in wakes]
    for wake in wakers:
        wake()
