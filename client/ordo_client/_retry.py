"""When and how long to wait before repeating a request.

Only requests that are safe to repeat are retried: reads, PUTs of stage reports (the server
stores the first body and answers a replay with the stored response) and run creation carrying
a ``client_id`` (the server returns the existing run). A plain POST is never repeated: the first
attempt may have been applied even if its answer was lost.

Retried failures: no connection (refused, reset, timeout) and the statuses 429, 502, 503 and
504. The wait is exponential with full jitter (``uniform(0, min(cap, base * 2**attempt))``) so
that many trainers restarting together do not retry in lock-step; a ``Retry-After`` from the
server is honoured as a lower bound.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry settings of a client.

    Parameters
    ----------
    max_attempts : int
        Attempts in all, the first included (1 disables retries).
    backoff_base_s : float
        Upper bound of the first wait (seconds); doubled on each further attempt.
    backoff_max_s : float
        Cap of one wait (seconds), ``Retry-After`` included.
    """

    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_base_s < 0 or self.backoff_max_s < 0:
            raise ValueError("backoff times must not be negative")

    def delay_s(
        self, attempt: int, *, retry_after_s: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        wait = (rng or random).uniform(0.0, ceiling)
        if retry_after_s is not None:
            wait = max(wait, retry_after_s)
        return min(wait, self.backoff_max_s)


NO_RETRY = RetryPolicy(max_attempts=1)


def is_retryable_status(status: int) -> bool:
    """Whether an answer with this status may succeed when repeated later."""
    return status in RETRY_STATUSES


def is_retryable_error(error: httpx.TransportError) -> bool:
    """Whether a transport failure is worth another attempt (all of them are, for safe calls)."""
    return isinstance(error, httpx.TimeoutException | httpx.NetworkError | httpx.ProtocolError)
