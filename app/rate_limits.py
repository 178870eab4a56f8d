"""Rate limits: per client address, per API key, and on failed sign-ins (reliability.md S5, API2).

Three budgets, each a ``limits`` rate (``"1200/minute"``, or several: ``"5/second;1000/hour"``)
counted over a moving window by the `limits` library:

* **per address**, in :class:`RateLimitMiddleware`, before routing, the body or the key is read;
* **failed sign-ins per address**: every ``401`` the app answers counts; past the budget, the
  middleware answers every request from that address with ``429`` before its key is checked, so a
  burst of bad tokens never reaches the database;
* **per key**, in :func:`app.deps.get_principal`, once the key is known to be valid (counting
  an unverified key id would let anyone spend another's budget). Authentication comes before the
  write gate, so a throttled or rejected request never takes a write slot or opens a transaction.

Over a budget: ``429`` problem+json with code ``rate_limited`` and ``Retry-After`` (seconds until
the window lets the next request in). ``/healthz`` and ``/readyz`` are never limited (probes).

Counters live in ``Settings.rate_limit_storage_url``: ``memory://`` counts in each process (with
``--workers N`` an address may send N times its budget), ``redis://`` shares them between every
process and replica. When the storage cannot be reached the request is let through (logged):
a limiter outage must not take the API down.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ordo_server.app.errors import ErrorCode, problem_response
from ordo_server.app.metrics import RATE_LIMITED
from ordo_server.app.settings import Settings

logger = logging.getLogger(__name__)

# Probes are never limited: an orchestrator must always see the process.
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz"})
# Key prefixes in the storage (shared with other apps in one Redis).
_NAMESPACE = "ordo"
_ADDRESS, _KEY, _AUTH_FAILURE = "address", "key", "auth-failure"
_UNKNOWN_ADDRESS = "unknown"


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The three budgets and the limiter that counts them (one per app, built in the lifespan)."""

    limiter: MovingWindowRateLimiter
    per_key: tuple[RateLimitItem, ...]
    per_address: tuple[RateLimitItem, ...]
    auth_failures: tuple[RateLimitItem, ...]

    async def hit_address(self, address: str) -> int | None:
        """Count a request from ``address``; seconds to wait when over its budget, else ``None``."""
        return await self._hit(self.per_address, _ADDRESS, address)

    async def hit_key(self, key_id: str) -> int | None:
        """Count a request of the key ``key_id``; seconds to wait when over its budget."""
        return await self._hit(self.per_key, _KEY, key_id)

    async def auth_blocked(self, address: str) -> int | None:
        """Seconds to wait when ``address`` has used up its failed sign-ins, else ``None``."""
        try:
            for item in self.auth_failures:
                if not await self.limiter.test(item, _NAMESPACE, _AUTH_FAILURE, address):
                    return await self._wait_s(item, _AUTH_FAILURE, address)
        except StorageError as error:
            _storage_unavailable(error)
        return None

    async def count_auth_failure(self, address: str) -> None:
        """Count a failed sign-in (a 401 answer) from ``address``."""
        await self._hit(self.auth_failures, _AUTH_FAILURE, address)

    async def _hit(self, items: Sequence[RateLimitItem], kind: str, who: str) -> int | None:
        waits = []
        try:
            for item in items:
                if not await self.limiter.hit(item, _NAMESPACE, kind, who):
                    waits.append(await self._wait_s(item, kind, who))
        except StorageError as error:
            _storage_unavailable(error)
            return None
        return max(waits) if waits else None

    async def _wait_s(self, item: RateLimitItem, kind: str, who: str) -> int:
        stats = await self.limiter.get_window_stats(item, _NAMESPACE, kind, who)
        return max(1, math.ceil(stats.reset_time - time.time()))


def _storage_unavailable(error: StorageError) -> None:
    logger.warning("rate limit storage unavailable, request let through: %s", error.storage_error)


def build_rate_limits(settings: Settings) -> RateLimits | None:
    """The app's limits from ``settings``, or ``None`` when ``rate_limit_enabled`` is off."""
    if not settings.rate_limit_enabled:
        return None
    return RateLimits(
        limiter=MovingWindowRateLimiter(open_storage(settings.rate_limit_storage_url)),
        per_key=tuple(parse_many(settings.rate_limit_per_key)),
        per_address=tuple(parse_many(settings.rate_limit_per_address)),
        auth_failures=tuple(parse_many(settings.auth_failure_limit)),
    )


def open_storage(url: str) -> Storage:
    """The asyncio storage of ``url`` (``memory://``, ``redis://...``), errors wrapped.

    Redis goes through redis-py (the ``redis`` extra), not ``limits``' default client, coredis.
    """
    options: dict[str, str | bool] = {"wrap_exceptions": True}
    if url.startswith(("redis", "rediss")):
        options["implementation"] = "redispy"
    storage = storage_from_string(f"async+{url}", **options)
    assert isinstance(storage, Storage)
    return storage


def client_address(scope: Scope) -> str:
    """The client's address as the server saw it (behind a proxy: see ``--forwarded-allow-ips``)."""
    client = scope.get("client")
    return str(client[0]) if client else _UNKNOWN_ADDRESS


def too_many_requests(detail: str, retry_after_s: int) -> JSONResponse:
    """The 429 answer."""
    return problem_response(
        429, detail, code=ErrorCode.RATE_LIMITED, headers={"Retry-After": str(retry_after_s)}
    )


class RateLimitMiddleware:
    """Answer 429 to an address over its budget or its failed sign-ins; count its 401s.

    Every 429 passes through here (the per-key one too) and is counted in
    ``ordo_rate_limited_requests_total``.

    The limits are read from ``app.state.rate_limits`` on each request (set in the lifespan;
    absent or ``None``: no limits).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limits: RateLimits | None = None
        if scope["type"] == "http" and scope["path"] not in UNLIMITED_PATHS:
            limits = getattr(scope["app"].state, "rate_limits", None)
        if limits is None:
            await self.app(scope, receive, send)
            return
        address = client_address(scope)

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == 401:
                    await limits.count_auth_failure(address)
                elif message["status"] == 429:
                    RATE_LIMITED.inc()
            await send(message)

        blocked_s = await limits.auth_blocked(address)
        if blocked_s is not None:
            detail = "Too many failed sign-ins from this address; retry later."
            await too_many_requests(detail, blocked_s)(scope, receive, counting)
            return
        wait_s = await limits.hit_address(address)
        if wait_s is not None:
            detail = "Too many requests from this address; retry later."
            await too_many_requests(detail, wait_s)(scope, receive, counting)
            return
        await self.app(scope, receive, counting)
