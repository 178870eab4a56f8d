"""Wake-ups between jobs and the requests that wait for them, within and across processes.

- A committed job wakes this process's embedded worker (:func:`wake_workers`).
- A finished plan job wakes the requests of this process waiting for that run
  (:func:`plan_done`); on PostgreSQL it also NOTIFYs ``ordo_plans`` and each API process's
  listener thread (``app.worker.plan_listener``) relays it here, so a plan stored by an
  ``ordo worker`` on another machine wakes the waiting request at once. Waiters still look at
  the database now and then: a lost notification costs latency, never correctness.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_wake = threading.Event()
_waiters: dict[str, set[threading.Event]] = {}
_lock = threading.Lock()


def wake_workers() -> None:
    """Wake this process's embedded worker: a job was committed."""
    _wake.set()


def wait_for_work(timeout_s: float) -> None:
    """Sleep until :func:`wake_workers` is called or ``timeout_s`` seconds pass."""
    _wake.wait(timeout_s)
    _wake.clear()


@contextmanager
def plan_waiter(run_id: str) -> Iterator[threading.Event]:
    """An event set when a plan job of ``run_id`` finishes, for the block's duration."""
    event = threading.Event()
    with _lock:
        _waiters.setdefault(run_id, set()).add(event)
    try:
        yield event
    finally:
        with _lock:
            events = _waiters.get(run_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del _waiters[run_id]


def plan_done(run_id: str) -> None:
    """Wake every request of this process waiting for ``run_id``'s plan."""
    with _lock:
        events = list(_waiters.get(run_id, ()))
    for event in events:
        event.set()
