"""Exceptions of the Ordo client.

::

    OrdoError                    the server answered with an error (RFC 9457 problem details)
    ├── BadRequestError          400 / 422: the input was rejected; ``errors`` lists each field
    ├── AuthenticationError      401: missing, unknown, revoked or expired key
    ├── PermissionDeniedError    403: the key's role does not allow the action
    ├── NotFoundError            404: no such object in the key's project
    ├── ConflictError            409: conflicts with the current state (e.g. a different report)
    │   └── LeaseFencedError     409 ``lease_lost``: another holder took the run over
    ├── LeaseTokenRequiredError  428 ``lease_token_required``: a write on a run without a token
    ├── RateLimitedError         429
    ├── UnavailableError         502 / 503 / 504: retry later (``retry_after_s``)
    └── ServerError              other 5xx
    OrdoConnectionError          no answer at all (connection refused, timeout), after retries
    LeaseLostError               the run's lease is lost: a heartbeat thread could not keep
                                 it, ``next`` shows another holder, or a write was fenced off
                                 (``LeaseFencedError`` is one too)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


@dataclass(frozen=True, slots=True)
class FieldError:
    """One rejected input, as the server names it: ``tasks[2].key``, and why."""

    field: str
    reason: str


class OrdoError(Exception):
    """The server answered with an error status; carries its problem details.

    Attributes
    ----------
    status : int
        HTTP status code.
    title : str
        Short, human-readable summary (the status' reason phrase).
    detail : str
        Explanation specific to this occurrence.
    code : str
        Stable machine-readable error code (``not_found``, ``validation_failed``, ...).
    errors : tuple[FieldError, ...]
        The rejected fields of a 422, empty otherwise.
    retry_after_s : float or None
        The server's ``Retry-After`` (seconds), when it sent one.
    problem : dict
        The whole problem document, extension members included.
    """

    def __init__(
        self,
        *,
        status: int,
        title: str,
        detail: str,
        code: str = "",
        errors: tuple[FieldError, ...] = (),
        retry_after_s: float | None = None,
        problem: dict[str, Any] | None = None,
        method: str = "",
        url: str = "",
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.code = code
        self.errors = errors
        self.retry_after_s = retry_after_s
        self.problem = problem or {}
        self.method = method
        self.url = url
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"{self.status} {self.title}: {self.detail}"
        if self.errors:
            text += " (" + "; ".join(f"{e.field}: {e.reason}" for e in self.errors) + ")"
        return text


class BadRequestError(OrdoError):
    """400 or 422: the request was rejected; ``errors`` names each field and the reason."""


class AuthenticationError(OrdoError):
    """401: missing, malformed, unknown, revoked or expired API key."""


class PermissionDeniedError(OrdoError):
    """403: the key is valid but its role does not allow the action."""


class NotFoundError(OrdoError):
    """404: no such object (objects of other projects look the same)."""


class ConflictError(OrdoError):
    """409: the request conflicts with the current state."""


class RateLimitedError(OrdoError):
    """429: too many requests; retry after ``retry_after_s``."""


class UnavailableError(OrdoError):
    """502, 503 or 504: the server or its database cannot answer now."""


class ServerError(OrdoError):
    """Any other 5xx: a bug on the server side (it was logged there)."""


class OrdoConnectionError(Exception):
    """The server could not be reached (or did not answer in time), after any retries."""


class LeaseLostError(Exception):
    """The run's lease could not be kept: another worker may take the run over."""


class LeaseFencedError(ConflictError, LeaseLostError):
    """409 ``lease_lost``: this holder's lease token no longer holds the run; stop working on it.

    The run went silent past its grace period and was re-claimed by its ``client_id``: a new
    holder has a newer token and this holder's write was refused (nothing was stored).
    ``detail`` names the token that holds the run now. Also a ``LeaseLostError``.
    """


class LeaseTokenRequiredError(OrdoError):
    """428 ``lease_token_required``: a write on a run came without its lease token."""


# Errors told apart by their problem ``code`` before their status.
_ERROR_BY_CODE: dict[str, type[OrdoError]] = {
    "lease_lost": LeaseFencedError,
    "lease_token_required": LeaseTokenRequiredError,
}


_ERROR_BY_STATUS: dict[int, type[OrdoError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: BadRequestError,
    429: RateLimitedError,
    502: UnavailableError,
    503: UnavailableError,
    504: UnavailableError,
}


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), ``None`` if absent or bad."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_from_response(response: httpx.Response) -> OrdoError:
    """The exception for an error response, its problem document parsed when there is one."""
    problem: dict[str, Any] = {}
    try:
        body = response.json()
        if isinstance(body, dict):
            problem = body
    except ValueError:
        pass
    return error_from_problem(
        problem,
        status=response.status_code,
        title=response.reason_phrase,
        detail=response.text[:500],
        retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
        method=response.request.method,
        url=str(response.request.url),
    )


def error_from_problem(
    problem: Mapping[str, Any],
    *,
    status: int | None = None,
    title: str = "",
    detail: str = "",
    retry_after_s: float | None = None,
    method: str = "",
    url: str = "",
) -> OrdoError:
    """The exception for a problem document (an error answer, or a failed job's ``problem``);
    ``status`` (the answer's) wins over the document's; ``title`` and ``detail`` fill in what the
    document lacks."""
    if status is None:
        status = int(problem.get("status") or 500)
    raw_errors = problem.get("errors") or []
    errors = tuple(
        FieldError(field=str(item.get("field", "")), reason=str(item.get("reason", "")))
        for item in raw_errors
        if isinstance(item, dict)
    )
    code = str(problem.get("code") or "")
    error_type = _ERROR_BY_CODE.get(code) or _ERROR_BY_STATUS.get(
        status, ServerError if status >= 500 else OrdoError
    )
    return error_type(
        status=status,
        title=str(problem.get("title") or title or "Error"),
        detail=str(problem.get("detail") or detail or "(no detail)"),
        code=code,
        errors=errors,
        retry_after_s=retry_after_s,
        problem=dict(problem),
        method=method,
        url=url,
    )
