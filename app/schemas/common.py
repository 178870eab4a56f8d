"""Base classes shared by request and response models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

MAX_BATCH = 1000
MAX_LIST_LIMIT = 1000


class InputModel(BaseModel):
    """Base of every request body: unknown fields, NaN and ±inf are rejected."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True)


class OutputModel(BaseModel):
    """Base of every response body; built from ORM rows by attribute."""

    model_config = ConfigDict(from_attributes=True)
