"""SQL for API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import String, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from ordo_server.models import ApiKey


def add_key(
    session: Session,
    *,
    project_id: str | None,
    key_id: str,
    secret_hash: str,
    prefix: str,
    role: str,
    name: str,
    expires_at: datetime | None,
) -> ApiKey:
    """Insert a key (its secret only as a hash) and flush it."""
    key = ApiKey(
        project_id=project_id,
        key_id=key_id,
        secret_hash=secret_hash,
        prefix=prefix,
        role=role,
        name=name,
        expires_at=expires_at,
    )
    session.add(key)
    session.flush()
    return key


# Built once (bound: key_id): every request with a stored key reads it.
_FIND_KEY = select(ApiKey).where(ApiKey.key_id == bindparam("key_id"))


def find_key(session: Session, key_id: str) -> ApiKey | None:
    """The key with this public id, in any project."""
    return session.scalars(_FIND_KEY, {"key_id": key_id}).first()


def list_keys(session: Session, project_id: str) -> Sequence[ApiKey]:
    """The project's keys, oldest first, revoked ones included."""
    query = (
        select(ApiKey)
        .where(ApiKey.project_id == project_id)
        .order_by(ApiKey.created_at, ApiKey.key_id)
    )
    return session.scalars(query).all()


def get_project_key(session: Session, project_id: str, key_id: str) -> ApiKey | None:
    """The project's key with this id, or ``None`` (also for another project's key)."""
    query = select(ApiKey).where(ApiKey.project_id == project_id, ApiKey.key_id == key_id)
    return session.scalar(query)


def revoke_key(session: Session, project_id: str, key_id: str, at: datetime) -> None:
    """Mark the key revoked unless it already is (revoking twice keeps the first time)."""
    session.execute(
        update(ApiKey)
        .where(
            ApiKey.project_id == project_id,
            ApiKey.key_id == key_id,
            ApiKey.revoked_at.is_(None),
        )
        .values(revoked_at=at)
    )


# PostgreSQL channel of revocations; each API process's listener forgets the keys it names.
KEYS_CHANNEL = "ordo_keys"
_NOTIFY_REVOKED = select(func.pg_notify(KEYS_CHANNEL, bindparam("key_id", type_=String)))


def announce_revoked(session: Session, key_ids: Sequence[str]) -> None:
    """PostgreSQL: NOTIFY ``ordo_keys`` with each key id (delivered at commit); SQLite: nothing."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for key_id in key_ids:
        session.execute(_NOTIFY_REVOKED, {"key_id": key_id})


# Uses are recorded to this resolution: an UPDATE on every request would lock the key's row
# until commit, serializing every concurrent write made with one key (a trainer fleet shares one).
TOUCH_RESOLUTION = timedelta(seconds=60)


def touch_key(session: Session, key_id: str, at: datetime) -> None:
    """Record a use of the key with public id ``key_id`` (at most once per TOUCH_RESOLUTION).

    Never waits: a key row that another transaction is touching right now is skipped (``FOR
    UPDATE SKIP LOCKED``; SQLite has one writer). Every trainer of a team may share one key:
    without the skip, the writes of a burst (a fleet starting at once) queued on that row, each
    behind the whole transaction of the one before (up to 0.46 s in the fleet of 100). The use
    is recorded by the transaction holding the row; if that one rolls back, the next use of the
    key records it.
    """
    stale = or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < at - TOUCH_RESOLUTION)
    free = (
        select(ApiKey.id)
        .where(ApiKey.key_id == key_id, stale)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    session.execute(update(ApiKey).where(ApiKey.id == free).values(last_used_at=at))


def has_global_admin(session: Session) -> bool:
    """Whether an unrevoked global (project-less) admin key exists."""
    query = select(ApiKey.id).where(
        ApiKey.project_id.is_(None), ApiKey.role == "admin", ApiKey.revoked_at.is_(None)
    )
    return session.scalar(query.limit(1)) is not None


def revoke_global_admins(session: Session, at: datetime) -> list[str]:
    """Revoke every unrevoked global (project-less) admin key; return their public ids."""
    revoked = session.scalars(
        update(ApiKey)
        .where(ApiKey.project_id.is_(None), ApiKey.role == "admin", ApiKey.revoked_at.is_(None))
        .values(revoked_at=at)
        .returning(ApiKey.key_id)
    )
    return sorted(revoked)
