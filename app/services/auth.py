"""Authentication (who is calling) and authorization (may they touch this project)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import SecretStr
from sqlalchemy.orm import Session

from ordo_server.app.commit_hooks import after_commit
from ordo_server.app.errors import ForbiddenError, NotFoundError, UnauthorizedError
from ordo_server.app.repositories import keys as key_repo
from ordo_server.app.repositories import projects as project_repo
from ordo_server.app.schemas.project import ProjectSettings
from ordo_server.app.security import Role, generate_key, parse_key, secret_matches, token_matches
from ordo_server.app.services.key_cache import forget_keys
from ordo_server.models import Project
from ordo_server.models.base import utcnow

ENV_ADMIN_KEY_ID = "env-admin"
# Hash compared against when the key id is unknown, so that both paths cost the same.
_DUMMY_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller; ``project_id`` is ``None`` for a global admin."""

    key_id: str
    role: Role
    project_id: str | None
    # When the stored key's use was last recorded, as authentication read it (None: never).
    last_used_at: datetime | None = None
    # When the stored key expires (None: never).
    expires_at: datetime | None = None

    @property
    def is_global_admin(self) -> bool:
        """A project-less admin: the operator, who may create and see every project."""
        return self.project_id is None and self.role is Role.ADMIN


@dataclass(frozen=True, slots=True)
class RotatedAdmin:
    """A new global admin token (shown once, never stored) and the public ids it replaced."""

    token: str
    revoked_key_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProjectContext:
    """The project a request acts on, after the caller was authorized for it."""

    id: str
    settings: ProjectSettings
    principal: Principal
    name: str  # the project's name (run seeds derive from it)


def authenticate(
    session: Session, token: str | None, *, admin_token: SecretStr | None, touch: bool
) -> Principal:
    """Resolve a bearer token to a principal, or raise 401."""
    if not token:
        raise UnauthorizedError()
    if admin_token is not None and token_matches(token, admin_token.get_secret_value()):
        return Principal(key_id=ENV_ADMIN_KEY_ID, role=Role.ADMIN, project_id=None)
    parsed = parse_key(token)
    if parsed is None:
        raise UnauthorizedError()
    key = key_repo.find_key(session, parsed.key_id)
    matches = secret_matches(parsed.secret, key.secret_hash if key else _DUMMY_HASH)
    now = utcnow()
    if key is None or not matches or key.revoked_at is not None:
        raise UnauthorizedError()
    if key.expires_at is not None and key.expires_at <= now:
        raise UnauthorizedError()
    if touch:
        key_repo.touch_key(session, key.key_id, now)
    return Principal(
        key_id=key.key_id,
        role=Role(key.role),
        project_id=key.project_id,
        last_used_at=key.last_used_at,
        expires_at=key.expires_at,
    )


def record_key_use(session: Session, principal: Principal) -> datetime | None:
    """Record a use of the caller's stored key (at most once a minute; not for the env token).

    A use recorded less than ``TOUCH_RESOLUTION`` ago when the key was read costs no statement.
    Returns the time recorded, or ``None`` when nothing was written.
    """
    if principal.key_id == ENV_ADMIN_KEY_ID:
        return None
    now = utcnow()
    last = principal.last_used_at
    if last is not None and now - last < key_repo.TOUCH_RESOLUTION:
        return None
    key_repo.touch_key(session, principal.key_id, now)
    return now


def keys_revoked(session: Session, key_ids: Sequence[str]) -> None:
    """Make every API process stop taking these keys once the revocation commits.

    This process's caches forget them at the commit; on PostgreSQL the other processes' listeners
    hear ``NOTIFY ordo_keys`` (``app.services.key_cache``).
    """
    if not key_ids:
        return
    key_repo.announce_revoked(session, key_ids)
    after_commit(session, functools.partial(forget_keys, tuple(key_ids)))


def authorize_project(
    session: Session, principal: Principal, project_id: str, *, admin: bool
) -> ProjectContext:
    """The project if the caller may act on it: 404 for other projects, then 403 for roles.

    Another project's id answers exactly like an id that does not exist.
    """
    check_project_scope(principal, project_id)
    return authorize_loaded(principal, project_repo.get_project(session, project_id), admin=admin)


def check_project_scope(principal: Principal, project_id: str) -> None:
    """404 for a key of another project, before anything is read."""
    if principal.project_id is not None and principal.project_id != project_id:
        raise NotFoundError("Project not found.")


def authorize_loaded(
    principal: Principal, project: Project | None, *, admin: bool
) -> ProjectContext:
    """:func:`authorize_project` once the project has been read (``None``: there is none) and
    :func:`check_project_scope` has passed: 404, then 403 for roles."""
    if project is None:
        raise NotFoundError("Project not found.")
    if admin and principal.role is not Role.ADMIN:
        raise ForbiddenError("This action needs an admin key.")
    settings = ProjectSettings.model_validate(project.settings)
    return ProjectContext(id=project.id, settings=settings, principal=principal, name=project.name)


def require_global_admin(principal: Principal) -> None:
    """Raise 403 unless the caller is a global admin."""
    if not principal.is_global_admin:
        raise ForbiddenError("This action needs the global admin token.")


def ensure_global_admin(session: Session) -> str | None:
    """Create a global admin key if none exists; return its token (to show once) or ``None``."""
    if key_repo.has_global_admin(session):
        return None
    return _issue_global_admin(session, name="global admin (generated at first start)")


def rotate_global_admin(session: Session) -> RotatedAdmin:
    """Revoke every generated global admin key and issue a new one (its token shown once)."""
    revoked = revoke_generated_admins(session)
    token = _issue_global_admin(session, name="global admin (issued by ordo admin rotate)")
    return RotatedAdmin(token=token, revoked_key_ids=revoked)


def revoke_generated_admins(session: Session) -> tuple[str, ...]:
    """Revoke every generated global admin key (``ORDO_ADMIN_TOKEN`` replaces them)."""
    revoked = tuple(key_repo.revoke_global_admins(session, utcnow()))
    keys_revoked(session, revoked)
    return revoked


def _issue_global_admin(session: Session, *, name: str) -> str:
    issued = generate_key()
    key_repo.add_key(
        session,
        project_id=None,
        key_id=issued.key_id,
        secret_hash=issued.secret_hash,
        prefix=issued.prefix,
        role=Role.ADMIN.value,
        name=name,
        expires_at=None,
    )
    return issued.token
