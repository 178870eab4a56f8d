"""Use cases of API keys."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ordo_server.app.errors import FieldIssue, InvalidInputError, NotFoundError
from ordo_server.app.repositories import keys as key_repo
from ordo_server.app.schemas.key import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from ordo_server.app.security import generate_key
from ordo_server.app.services.auth import ProjectContext, keys_revoked
from ordo_server.models.base import utcnow


def create_key(session: Session, context: ProjectContext, body: ApiKeyCreate) -> ApiKeyCreated:
    """Issue a key for the project; the full key is in this answer only."""
    if body.expires_at is not None:
        if body.expires_at.tzinfo is None:
            issue = FieldIssue("expires_at", "Timestamp needs a UTC offset")
            raise InvalidInputError("expires_at has no offset.", errors=[issue])
        if body.expires_at <= utcnow():
            issue = FieldIssue("expires_at", "Must be in the future")
            raise InvalidInputError("expires_at is in the past.", errors=[issue])
    issued = generate_key()
    row = key_repo.add_key(
        session,
        project_id=context.id,
        key_id=issued.key_id,
        secret_hash=issued.secret_hash,
        prefix=issued.prefix,
        role=body.role.value,
        name=body.name,
        expires_at=body.expires_at,
    )
    read = ApiKeyRead.model_validate(row)
    return ApiKeyCreated(**read.model_dump(), key=issued.token)


def list_keys(session: Session, context: ProjectContext) -> list[ApiKeyRead]:
    """The project's keys (display prefixes only)."""
    return [ApiKeyRead.model_validate(row) for row in key_repo.list_keys(session, context.id)]


def revoke_key(session: Session, context: ProjectContext, key_id: str) -> None:
    """Revoke one of the project's keys; revoking a revoked key is a no-op."""
    if key_repo.get_project_key(session, context.id, key_id) is None:
        raise NotFoundError("API key not found.")
    key_repo.revoke_key(session, context.id, key_id, utcnow())
    keys_revoked(session, [key_id])
