"""Every API call as data: method, path, body, whether it is safe to repeat, how to parse it.

The sync :class:`~ordo_client.Client` and the :class:`~ordo_client.AsyncClient` execute the same
``Call`` objects, so the two never disagree on paths, bodies or retry safety.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One HTTP request and the parser of its successful answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    retry_safe: bool = False
    timeout_s: float | None = None


def segment(value: str) -> str:
    """A path segment, percent-encoded (task keys may contain dots)."""
    return quote(value, safe="")


def model_parser(model: type[T]) -> Callable[[httpx.Response], T]:
    """Parse the JSON answer into ``model`` (a pydantic model or any type TypeAdapter takes)."""
    adapter: TypeAdapter[T] = TypeAdapter(model)

    def parse(response: httpx.Response) -> T:
        return adapter.validate_json(response.content)

    return parse


def list_parser(model: type[T]) -> Callable[[httpx.Response], list[T]]:
    """Parse a JSON array of ``model``."""
    adapter: TypeAdapter[list[T]] = TypeAdapter(list[model])  # type: ignore[valid-type]

    def parse(response: httpx.Response) -> list[T]:
        return adapter.validate_json(response.content)

    return parse


def text_parser(response: httpx.Response) -> str:
    """The answer's body as text (CSV)."""
    return response.text


def no_content(_response: httpx.Response) -> None:
    """An answer without a body (204)."""


def dump(value: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """A request body from a model or a plain mapping (``None`` fields of models dropped)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    return dict(value)


def dump_all(values: Sequence[BaseModel | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Request bodies of a batch."""
    return [dump(value) for value in values]


def params(**values: Any) -> dict[str, Any]:
    """Query parameters without the ``None`` ones."""
    return {key: value for key, value in values.items() if value is not None}
