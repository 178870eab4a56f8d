"""API key request and response models."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field

from app.schemas.common import InputModel, OutputModel
from app.security import Role


class ApiKeyCreate(InputModel):
    """A new API key for the project."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "cluster-a trainer", "role": "trainer"}]}
    )

    name: str = Field(default="", max_length=100)
    role: Role = Role.TRAINER
    expires_at: datetime | None = Field(
        default=None, description="When the key stops working (ISO 8601 with offset)."
    )


class ApiKeyRead(OutputModel):
    """A key as listed: only its display prefix, never the secret."""

    key_id: str
    name: str
    role: Role
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    """A key just created; ``key`` is shown this once and cannot be recovered."""

    key: str = Field(description="The full key: `Authorization: Bearer <key>`.")
