"""Work that must happen only if a session's transaction commits (counters, cache updates)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

_PENDING_KEY = "ordo_after_commit"


def after_commit(session: Session, record: Callable[[], object]) -> None:
    """Run ``record`` once the session's transaction commits; drop it on rollback.

    A counter of stored things must not count what a failed commit never stored.
    """
    session.info.setdefault(_PENDING_KEY, []).append(record)


@event.listens_for(Session, "after_commit")
def _record_committed(session: Session) -> None:
    for record in session.info.pop(_PENDING_KEY, []):
        record()


@event.listens_for(Session, "after_transaction_end")
def _drop_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)
