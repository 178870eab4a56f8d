"""API key request and response models."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field, JsonValue

from ordo_server.app.schemas.common import InputModel, OutputModel
from ordo_server.app.security import Role


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


_API_KEY_READ_EXAMPLE: dict[str, JsonValue] = {
    "key_id": "0b68d5e100f34d46",
    "name": "cluster-a trainer",
    "role": "trainer",
    "prefix": "ordo_0b68d5e100f34d46_C4f4",
    "created_at": "2026-11-27T09:05:00Z",
    "last_used_at": "2026-11-27T11:07:00Z",
    "expires_at": None,
    "revoked_at": None,
}


class ApiKeyRead(OutputModel):
    """A key as listed: only its display prefix, never the secret."""

    model_config = ConfigDict(json_schema_extra={"examples": [_API_KEY_READ_EXAMPLE]})

    key_id: str
    name: str
    role: Role
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


_API_KEY_CREATED_EXAMPLE: dict[str, JsonValue] = {
    "key_id": "0b68d5e100f34d46",
    "name": "cluster-a trainer",
    "role": "trainer",
    "prefix": "ordo_0b68d5e100f34d46_C4f4",
    "created_at": "2026-11-27T09:05:00Z",
    "last_used_at": None,
    "expires_at": None,
    "revoked_at": None,
    "key": "ordo_0b68d5e100f34d46_C4f4AFMU3gC84RMevKavutpwL5dfEMvtrez__ghdsoE",
}


class ApiKeyCreated(ApiKeyRead):
    """A key just created; ``key`` is shown this once and cannot be recovered."""

    model_config = ConfigDict(json_schema_extra={"examples": [_API_KEY_CREATED_EXAMPLE]})

    key: str = Field(description="The full key: `Authorization: Bearer <key>`.")
