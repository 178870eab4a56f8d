"""Keep a run's lease from a background thread while the trainer trains.

``with client.lease(run):`` starts a daemon thread that heartbeats every
``interval_s`` (default: the server's advice, else a third of the lease). A heartbeat that fails
for a transient reason (no connection, 5xx) is tried again at the next beat; the lease counts
as lost when the server refuses it (404, 409, 410: the run finished, went stale and was taken
over, or the token was fenced off) or when no heartbeat succeeded for ``lost_after_s``. A lost
lease is surfaced: ``lease.lost`` turns true, ``lease.check()`` raises, the optional
``on_lost`` callback runs in the heartbeat thread, and leaving the block raises
``LeaseLostError`` (unless the block already raised).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from ordo_client._run import Run
from ordo_client.errors import LeaseLostError, OrdoConnectionError, OrdoError

logger = logging.getLogger("ordo_client")

DEFAULT_INTERVAL_S = 10.0
LOST_STATUSES = frozenset({403, 404, 409, 410})


def beat_interval_s(interval_s: float | None, advised_s: float | None) -> float:
    """The heartbeat period: the caller's, else the server's advice, else the default."""
    chosen = interval_s or advised_s or DEFAULT_INTERVAL_S
    if chosen <= 0:
        raise ValueError("interval_s must be positive")
    return chosen


def default_lost_after_s(interval_s: float) -> float:
    """Without news for three periods the server has most likely let the lease expire."""
    return 3 * interval_s


def refusal_reason(error: OrdoError) -> str | None:
    """Why a failed heartbeat means the lease is gone, or ``None`` if it may be transient."""
    if error.status in LOST_STATUSES:
        return f"the server refused the heartbeat: {error}"
    return None


def silence_reason(silent_s: float, lost_after_s: float) -> str | None:
    """Why a long silence means the lease is gone, or ``None`` while it is short enough."""
    if silent_s > lost_after_s:
        return f"no heartbeat succeeded for {silent_s:.1f}s"
    return None


def lose(
    run_id: str, reason: str, on_lost: Callable[[LeaseLostError], None] | None
) -> LeaseLostError:
    """The ``LeaseLostError`` of a run, logged and handed to ``on_lost``."""
    error = LeaseLostError(f"lease of run {run_id} lost: {reason}")
    logger.error("%s", error)
    if on_lost is not None:
        on_lost(error)
    return error


class LeaseKeeper:
    """The heartbeat thread of one run (use it as a context manager)."""

    def __init__(
        self,
        run: Run,
        *,
        interval_s: float | None = None,
        lost_after_s: float | None = None,
        on_lost: Callable[[LeaseLostError], None] | None = None,
    ) -> None:
        self.interval_s = beat_interval_s(interval_s, run.heartbeat_interval_s)
        self.lost_after_s = lost_after_s or default_lost_after_s(self.interval_s)
        self.run = run
        self.beats = 0
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._error: LeaseLostError | None = None
        self._thread = threading.Thread(target=self._loop, name=f"ordo-lease-{run.id}", daemon=True)

    @property
    def lost(self) -> bool:
        """Whether the lease was lost."""
        return self._error is not None

    def check(self) -> None:
        """Raise ``LeaseLostError`` if the lease was lost (call it between training steps)."""
        if self._error is not None:
            raise self._error

    def start(self) -> None:
        """Start heartbeating (one beat at once, so a lost lease shows up early)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop heartbeating and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        if exc is None:
            self.check()

    def _loop(self) -> None:
        last_success = time.monotonic()
        while not self._stop.is_set():
            try:
                self.run.heartbeat()
            except OrdoError as error:
                if (reason := refusal_reason(error)) is not None:
                    self._error = lose(self.run.id, reason, self._on_lost)
                    return
                logger.warning("heartbeat of run %s failed: %s", self.run.id, error)
            except OrdoConnectionError as error:
                logger.warning("heartbeat of run %s failed: %s", self.run.id, error)
            else:
                self.beats += 1
                last_success = time.monotonic()
            reason = silence_reason(time.monotonic() - last_success, self.lost_after_s)
            if reason is not None:
                self._error = lose(self.run.id, reason, self._on_lost)
                return
            self._stop.wait(self.interval_s)
