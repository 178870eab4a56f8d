"""Base classes shared by request and response models, and the guard on what the databases store.

PostgreSQL cannot store NUL (``\\u0000``) in a text or JSON column, and no database can store a
UTF-16 surrogate that a JSON escape (``"\\ud800"``) carries unpaired: it has no UTF-8 encoding.
Every request body (``InputModel``) and every string path or query parameter
(``Annotated[str, Path(...), StorableText]``) refuses them with 422, naming the exact field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from pydantic import AfterValidator, BaseModel, ConfigDict, field_validator
from pydantic_core import PydanticCustomError

MAX_BATCH = 1000
MAX_LIST_LIMIT = 1000
# Offsets of list pages: no listing is this long, and the bound keeps the number far inside the
# databases' 64-bit integers.
MAX_OFFSET = 1_000_000
# Free-form JSON (task metadata) nests at most this deep.
MAX_JSON_DEPTH = 32

UNSTORABLE_TEXT = "Text must not contain NUL (\\u0000) or unpaired surrogates (\\ud800-\\udfff)"
# A validator names a position inside its field (a tuple of keys and indexes) under this key of
# its error's context; app.errors appends it to the field's location.
LOCATION_CONTEXT = "at"

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SCALARS = frozenset({bool, int, type(None)})

Location = tuple[int | str, ...]


def is_storable_text(text: str) -> bool:
    """Whether every database can store ``text`` (no NUL, no unpaired surrogate)."""
    return _UNSTORABLE.search(text) is None


def escape_unstorable(text: str) -> str:
    """``text`` with NUL and surrogates written as ``\\uXXXX``, safe to echo in a response."""
    return _UNSTORABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def find_unstorable(value: Any) -> tuple[Location, str] | None:
    """Where in ``value`` and why the first thing no database can store is, or ``None``.

    Walks strings, dict keys, lists and tuples (nested models are skipped: they check their own
    fields) for unstorable text, non-finite numbers and nesting deeper than MAX_JSON_DEPTH. The
    walk is iterative, so no depth exhausts the stack; a nesting error is reported at ``()``.
    """
    stack: list[tuple[Any, Location]] = [(value, ())]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if not is_storable_text(item):
                return at, UNSTORABLE_TEXT
        elif isinstance(item, float):
            if not math.isfinite(item):
                return at, "Numbers must be finite"
        elif isinstance(item, dict | list | tuple):
            if len(at) >= MAX_JSON_DEPTH:
                return (), f"Nested deeper than {MAX_JSON_DEPTH} levels"
            if isinstance(item, dict):
                for key in item:
                    if isinstance(key, str) and not is_storable_text(key):
                        return (*at, key), UNSTORABLE_TEXT
                pairs: Iterable[tuple[int | str, Any]] = item.items()
            else:
                pairs = enumerate(item)
            # Numbers, booleans and nulls are checked here: a matrix of priors is mostly them.
            children = [
                (child, (*at, key))
                for key, child in pairs
                if not (type(child) in _SCALARS or (type(child) is float and math.isfinite(child)))
            ]
            stack.extend(reversed(children))  # popped in document order
    return None


def _refuse_unstorable_text(value: Any) -> Any:
    if isinstance(value, str) and not is_storable_text(value):
        raise PydanticCustomError("unstorable_text", UNSTORABLE_TEXT)
    return value


StorableText = AfterValidator(_refuse_unstorable_text)
"""Metadata of string path and query parameters: NUL and unpaired surrogates answer 422."""


class InputModel(BaseModel):
    """Base of every request body.

    Unknown fields, NaN and ±inf are rejected, and so is anything no database can store
    (:func:`find_unstorable`), at its exact location, e.g. ``tasks[0].metadata.a[2]``.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _refuse_unstorable(cls, value: Any) -> Any:
        # Runs on every field of every body: the common answers need no walk.
        kind = type(value)
        if kind in _SCALARS or (kind is float and math.isfinite(value)):
            return value
        if kind is str and is_storable_text(value):
            return value
        found = find_unstorable(value)
        if found is None:
            return value
        at, reason = found
        raise PydanticCustomError("unstorable", reason, {LOCATION_CONTEXT: at})


class OutputModel(BaseModel):
    """Base of every response body; built from ORM rows by attribute."""

    model_config = ConfigDict(from_attributes=True)
