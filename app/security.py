"""API key format, generation and verification (reliability.md S1).

A key reads ``ordo_<key_id>_<secret>``: ``key_id`` (16 hex characters) is public and indexed;
``secret`` is 32 random bytes in base64url. Only SHA-256 of the secret is stored, which is
enough for a secret with 256 bits of entropy (no dictionary to attack); comparisons are
constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

KEY_PREFIX = "ordo"
KEY_ID_BYTES = 8
SECRET_BYTES = 32
DISPLAY_SECRET_CHARS = 4


class Role(StrEnum):
    """What a key may do: ``admin`` everything in its project, ``trainer`` read and report."""

    ADMIN = "admin"
    TRAINER = "trainer"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly generated key: ``token`` is shown once and never stored."""

    key_id: str
    token: str
    secret_hash: str
    prefix: str


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """The two parts of a presented key."""

    key_id: str
    secret: str


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of the secret part of a key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> IssuedKey:
    """A new random key with its hash and display prefix."""
    key_id = secrets.token_hex(KEY_ID_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    token = f"{KEY_PREFIX}_{key_id}_{secret}"
    prefix = f"{KEY_PREFIX}_{key_id}_{secret[:DISPLAY_SECRET_CHARS]}"
    return IssuedKey(key_id=key_id, token=token, secret_hash=hash_secret(secret), prefix=prefix)


def parse_key(token: str) -> ParsedKey | None:
    """Split a presented key; ``None`` when it is not of our format."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    key_id, secret = parts[1], parts[2]
    if len(key_id) != 2 * KEY_ID_BYTES or not _is_hex(key_id) or len(secret) < SECRET_BYTES:
        return None
    return ParsedKey(key_id=key_id, secret=secret)


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret with a stored hash."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def token_matches(presented: str, expected: str) -> bool:
    """Constant-time comparison of two whole tokens (the configured admin token)."""
    return hmac.compare_digest(presented.encode(), expected.encode())


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
