"""Wake-ups of this process's embedded job worker (jobs committed by this process)."""

from __future__ import annotations

import threading

_wake = threading.Event()


def wake_workers() -> None:
    """Wake this process's embedded worker: a job was committed."""
    _wake.set()


def wait_for_work(timeout_s: float) -> None:
    """Sleep until :func:`wake_workers` is called or ``timeout_s`` seconds pass."""
    _wake.wait(timeout_s)
    _wake.clear()
