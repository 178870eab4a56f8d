"""Signed-in callers remembered for a few seconds, so a request with a known key skips its lookup.

Authenticating a stored key is an indexed ``SELECT`` in a read transaction of its own, on a
worker thread: about a millisecond of a report's six. A :class:`KeyCache` keeps the principal a
token resolved to, keyed by the token's SHA-256 (never the token), for ``ORDO_KEY_CACHE_TTL_S``
seconds (reliability.md S1 allows a documented cache of at most 60 s). A hit costs no thread
trip and no statement; the key's expiry is checked on every hit.

A revocation reaches the caches sooner than the time to live: the revoking transaction forgets
the key in every cache of its process when it commits (:func:`forget_keys`), and on PostgreSQL
it NOTIFYs ``ordo_keys``, which each API process's listener thread
(``app.worker.notification_listener``) relays to :func:`forget_keys`, so another process stops
taking the key within milliseconds. When that listener (re)starts listening every cache of the
process is cleared (:func:`forget_all`): a notification sent while nobody listened was lost.
On SQLite nothing relays: another process's revocation (the CLI's) takes effect within the time
to live. A failed sign-in is never remembered.
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from ordo_server.models.base import utcnow

if TYPE_CHECKING:
    from ordo_server.app.services.auth import Principal

# Entries past this many are dropped oldest first (a burst of distinct keys bounds memory).
MAX_ENTRIES = 10_000

_caches: weakref.WeakSet[KeyCache] = weakref.WeakSet()
_caches_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    cached_at: float  # time.monotonic() when it was stored


def token_digest(token: str) -> str:
    """The cache's key for ``token``: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


class KeyCache:
    """Principals by token digest, each for ``ttl_s`` seconds; thread-safe. ``ttl_s`` 0: off."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        with _caches_lock:
            _caches.add(self)

    def get(self, token: str) -> Principal | None:
        """The principal ``token`` resolved to less than ``ttl_s`` ago, its key unexpired."""
        if self.ttl_s <= 0:
            return None
        digest = token_digest(token)
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None:
            return None
        expires_at = entry.principal.expires_at
        stale = time.monotonic() - entry.cached_at >= self.ttl_s
        expired = expires_at is not None and expires_at <= utcnow()
        if stale or expired:
            with self._lock:
                if self._entries.get(digest) is entry:
                    del self._entries[digest]
            return None
        return entry.principal

    def put(self, token: str, principal: Principal) -> None:
        """Remember what ``token`` resolved to."""
        if self.ttl_s <= 0:
            return
        entry = _Entry(principal, time.monotonic())
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]
            self._entries[token_digest(token)] = entry

    def used(self, key_id: str, at: datetime) -> None:
        """The key's use was recorded at ``at``: later hits need not record it again."""
        with self._lock:
            for digest, entry in self._entries.items():
                if entry.principal.key_id == key_id:
                    principal = replace(entry.principal, last_used_at=at)
                    self._entries[digest] = replace(entry, principal=principal)

    def forget(self, key_ids: Iterable[str]) -> None:
        """Drop every entry of these keys."""
        gone = set(key_ids)
        with self._lock:
            for digest in [d for d, e in self._entries.items() if e.principal.key_id in gone]:
                del self._entries[digest]

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def _live_caches() -> list[KeyCache]:
    with _caches_lock:
        return list(_caches)


def forget_keys(key_ids: Iterable[str]) -> None:
    """Drop these keys from every cache of this process (a revocation committed)."""
    ids = list(key_ids)
    for cache in _live_caches():
        cache.forget(ids)


def forget_all() -> None:
    """Clear every cache of this process (revocations may have been missed)."""
    for cache in _live_caches():
        cache.clear()
