"""One attempt of a ``Call``, judged without I/O: shared by the sync and the async client.

Each client sends the request its own way and sleeps its own way (``time.sleep`` or
``asyncio.sleep``); what the answer means -- the parsed result, an exception, or a wait before
the next attempt -- is decided here once, so the two clients retry alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from ordo_client._calls import Call
from ordo_client._retry import RetryPolicy, is_retryable_error, is_retryable_status
from ordo_client.errors import OrdoConnectionError, error_from_response

T = TypeVar("T")
logger = logging.getLogger("ordo_client")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Wait ``delay_s`` seconds, then send the call again (``reason`` goes to the log)."""

    delay_s: float
    reason: str


def request_options(call: Call[Any]) -> dict[str, Any]:
    """Keyword arguments of ``httpx.(Async)Client.request`` for ``call``."""
    timeout = httpx.USE_CLIENT_DEFAULT if call.timeout_s is None else call.timeout_s
    return {
        "method": call.method,
        "url": call.path,
        "json": call.json,
        "params": call.params or None,
        "headers": call.headers or None,
        "timeout": timeout,
    }


def may_repeat(call: Call[Any], attempt: int, policy: RetryPolicy) -> bool:
    """Whether failed attempt number ``attempt`` (1-based) may be followed by another."""
    return call.retry_safe and attempt < policy.max_attempts


def after_response(
    call: Call[T], response: httpx.Response, *, attempt: int, policy: RetryPolicy
) -> T | Backoff:
    """The parsed answer, or a ``Backoff``; raises the ``OrdoError`` of a final error."""
    if response.is_success:
        return call.parse(response)
    error = error_from_response(response)
    if may_repeat(call, attempt, policy) and is_retryable_status(response.status_code):
        return backoff(
            call,
            attempt,
            policy,
            reason=str(response.status_code),
            retry_after_s=error.retry_after_s,
        )
    raise error


def after_transport_error(
    call: Call[Any],
    error: httpx.TransportError,
    *,
    attempt: int,
    policy: RetryPolicy,
    base_url: str,
) -> Backoff:
    """A ``Backoff`` after a failure to get any answer; raises ``OrdoConnectionError`` if final."""
    if may_repeat(call, attempt, policy) and is_retryable_error(error):
        return backoff(call, attempt, policy, reason=type(error).__name__, retry_after_s=None)
    raise OrdoConnectionError(
        f"{call.method} {base_url}{call.path} failed after {attempt} attempt(s): "
        f"{type(error).__name__}: {error}"
    ) from error


def backoff(
    call: Call[Any], attempt: int, policy: RetryPolicy, *, reason: str, retry_after_s: float | None
) -> Backoff:
    """The wait before the next attempt, logged as a warning."""
    delay_s = policy.delay_s(attempt, retry_after_s=retry_after_s)
    logger.warning(
        "%s %s: %s on attempt %d/%d; retrying in %.2fs",
        call.method,
        call.path,
        reason,
        attempt,
        policy.max_attempts,
        delay_s,
    )
    return Backoff(delay_s=delay_s, reason=reason)
