"""Domain errors and their RFC 9457 ``application/problem+json`` rendering.

Services raise ``ServiceError`` subclasses; routes never raise ``HTTPException``. One table maps
solver errors to statuses. Every handler below answers problem+json, so clients see one error
shape for unknown routes, bad input, auth failures, conflicts and an unreachable database.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ordo_server.app.db import UPGRADE_HINT, is_missing_table
from ordo_server.app.problem_examples import problem_examples
from ordo_server.app.schemas.common import (
    LOCATION_CONTEXT,
    MAX_JSON_DEPTH,
    UNSTORABLE_TEXT,
    escape_unstorable,
)
from ordo_server.solver.errors import (
    InfeasibleError,
    InvalidProblemError,
    NoSolutionError,
    SolverError,
)

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


# --- the problem document --------------------------------------------------------------------


class FieldError(BaseModel):
    """One rejected input: where it is and why."""

    field: str = Field(description="Path of the offending input, e.g. `tasks[2].key`.")
    reason: str


class ErrorCode(StrEnum):
    """Every value the API answers in a problem's ``code``; see :data:`ERROR_CODES`."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    RUN_FINISHED = "run_finished"
    PLAN_PENDING = "plan_pending"
    CLIENT_ID_CONFLICT = "client_id_conflict"
    LEASE_LOST = "lease_lost"
    REPORT_MISMATCH = "report_mismatch"
    STAGE_OUT_OF_TURN = "stage_out_of_turn"
    CONTENT_TOO_LARGE = "content_too_large"
    VALIDATION_FAILED = "validation_failed"
    INFEASIBLE = "infeasible"
    LEASE_TOKEN_REQUIRED = "lease_token_required"
    RATE_LIMITED = "rate_limited"
    INTERNAL_ERROR = "internal_error"
    UNAVAILABLE = "unavailable"
    DATABASE_UNAVAILABLE = "database_unavailable"
    SCHEMA_NOT_MIGRATED = "schema_not_migrated"
    NOT_READY = "not_ready"


@dataclass(frozen=True, slots=True)
class ErrorCodeInfo:
    """The HTTP status a code is answered with, and what it means to a client."""

    status: int
    meaning: str


# The contract: docs/errors.md is this table (tests/app/test_error_codes.py compares them).
ERROR_CODES: Mapping[ErrorCode, ErrorCodeInfo] = {
    ErrorCode.BAD_REQUEST: ErrorCodeInfo(
        400, "The request cannot be read as HTTP the API accepts."
    ),
    ErrorCode.UNAUTHORIZED: ErrorCodeInfo(
        401, "No API key, or one that is malformed, unknown, revoked or expired."
    ),
    ErrorCode.FORBIDDEN: ErrorCodeInfo(403, "The key is valid but its role may not do this."),
    ErrorCode.NOT_FOUND: ErrorCodeInfo(
        404, "No such route or object (another project's objects look the same)."
    ),
    ErrorCode.METHOD_NOT_ALLOWED: ErrorCodeInfo(405, "The route does not take this HTTP method."),
    ErrorCode.CONFLICT: ErrorCodeInfo(
        409, "Conflicts with the current state: a name or key that already exists."
    ),
    ErrorCode.RUN_FINISHED: ErrorCodeInfo(
        409, "The run is completed or failed: it takes no more stages, reports or heartbeats."
    ),
    ErrorCode.PLAN_PENDING: ErrorCodeInfo(
        409, "The run has no plan yet: only its baseline can be reported; ask `next` again."
    ),
    ErrorCode.CLIENT_ID_CONFLICT: ErrorCodeInfo(
        409,
        "The `client_id` names a run created with a different request; `errors` names the "
        "fields that differ.",
    ),
    ErrorCode.LEASE_LOST: ErrorCodeInfo(
        409, "The lease token is not the current holder's: stop working on this run."
    ),
    ErrorCode.REPORT_MISMATCH: ErrorCodeInfo(
        409, "This stage was already reported with a different body."
    ),
    ErrorCode.STAGE_OUT_OF_TURN: ErrorCodeInfo(
        409, "The stage is not the one the run expects next; `errors` names the expected one."
    ),
    ErrorCode.CONTENT_TOO_LARGE: ErrorCodeInfo(413, "The request body is over the size limit."),
    ErrorCode.VALIDATION_FAILED: ErrorCodeInfo(
        422, "Invalid input; `errors` lists each field and reason."
    ),
    ErrorCode.INFEASIBLE: ErrorCodeInfo(
        422, "The constraints admit no order; `errors` names the conflicting ones."
    ),
    ErrorCode.LEASE_TOKEN_REQUIRED: ErrorCodeInfo(
        428, "A write on a run needs the holder's `Ordo-Lease-Token` header."
    ),
    ErrorCode.RATE_LIMITED: ErrorCodeInfo(
        429,
        "Too many requests (or failed sign-ins) from this key or address; retry after "
        "`Retry-After` seconds.",
    ),
    ErrorCode.INTERNAL_ERROR: ErrorCodeInfo(500, "An unexpected server error (logged)."),
    ErrorCode.UNAVAILABLE: ErrorCodeInfo(
        503, "The server is busy or the solver cannot answer now; retry after `Retry-After`."
    ),
    ErrorCode.DATABASE_UNAVAILABLE: ErrorCodeInfo(
        503, "The database is unreachable; retry after `Retry-After` seconds."
    ),
    ErrorCode.SCHEMA_NOT_MIGRATED: ErrorCodeInfo(
        503, "The database schema is behind the code: run `ordo db upgrade`."
    ),
    ErrorCode.NOT_READY: ErrorCodeInfo(503, "`/readyz`: the database or its schema is not ready."),
}


def error_code_table() -> str:
    """The codes as a Markdown table (code, status, meaning), ordered by status then code."""
    rows = sorted(ERROR_CODES.items(), key=lambda item: (item[1].status, item[0].value))
    lines = ["| Code | Status | Meaning |", "|---|---|---|"]
    lines += [f"| `{code.value}` | {info.status} | {info.meaning} |" for code, info in rows]
    return "\n".join(lines) + "\n"


# The enum's description in the OpenAPI spec lists every code with its status and meaning.
ErrorCode.__doc__ = (
    "Stable machine-readable error code. Each value, its status and meaning:\n\n"
    + (error_code_table())
)


class Problem(BaseModel):
    """An RFC 9457 problem document; ``code`` is a stable machine-readable error code."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: ErrorCode
    errors: list[FieldError] | None = None


# --- domain errors ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldIssue:
    """A field and a reason, as services report them."""

    field: str
    reason: str


class ServiceError(Exception):
    """Base of every error a service raises; ``status`` is the HTTP status it maps to."""

    status: ClassVar[int] = 500
    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_ERROR

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse a subclass whose ``code`` is not an :class:`ErrorCode` or has another status."""
        super().__init_subclass__(**kwargs)
        code = cls.__dict__.get("code", cls.code)
        if code not in ERROR_CODES:
            raise TypeError(f"{cls.__qualname__}.code must be an ErrorCode member, not {code!r}")
        code = cls.code = ErrorCode(code)
        if ERROR_CODES[code].status != cls.status:
            raise TypeError(
                f"{cls.__qualname__}: {code.value} is answered with {ERROR_CODES[code].status}, "
                f"not {cls.status}"
            )

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[FieldIssue] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = tuple(errors)
        self.headers = dict(headers or {})


class NotFoundError(ServiceError):
    """The object does not exist, or belongs to another project (indistinguishable)."""

    status = 404
    code = ErrorCode.NOT_FOUND


class UnauthorizedError(ServiceError):
    """No credentials, or credentials that are malformed, unknown, revoked or expired."""

    status = 401
    code = ErrorCode.UNAUTHORIZED

    def __init__(self, detail: str = "Missing or invalid API key.") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="ordo"'})


class ForbiddenError(ServiceError):
    """The key is valid but its role does not allow the action."""

    status = 403
    code = ErrorCode.FORBIDDEN


class ConflictError(ServiceError):
    """The request conflicts with the current state (duplicate key, different replay...)."""

    status = 409
    code = ErrorCode.CONFLICT


class InvalidInputError(ServiceError):
    """Well-formed JSON whose content is wrong: unknown task keys, shapes, duplicates."""

    status = 422
    code = ErrorCode.VALIDATION_FAILED


class ConstraintConflictError(InvalidInputError):
    """The constraints admit no order; ``errors`` names the conflicting ones (or the cycle)."""

    code = ErrorCode.INFEASIBLE


class UnavailableError(ServiceError):
    """A dependency (the database, the solver) cannot answer now; retry later."""

    status = 503
    code = ErrorCode.UNAVAILABLE


class RateLimitedError(ServiceError):
    """Over a rate limit (app/rate_limits.py); retry after ``Retry-After`` seconds."""

    status = 429
    code = ErrorCode.RATE_LIMITED

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


SOLVER_ERROR_STATUS: Mapping[type[SolverError], type[ServiceError]] = {
    InvalidProblemError: InvalidInputError,
    InfeasibleError: ConstraintConflictError,
    NoSolutionError: UnavailableError,
}


def service_error_from_solver(error: SolverError) -> ServiceError:
    """The service error a solver error becomes (the table above; most specific class wins)."""
    for error_type in type(error).__mro__:
        mapped = SOLVER_ERROR_STATUS.get(error_type)
        if mapped is not None:
            issues: tuple[FieldIssue, ...] = ()
            field = getattr(error, "field", None)
            if field:
                issues = (FieldIssue(field=str(field), reason=str(error)),)
            return mapped(str(error), errors=issues)
    return ServiceError(str(error))


# --- rendering -------------------------------------------------------------------------------


def problem_response(
    status: int,
    detail: str,
    *,
    code: ErrorCode,
    errors: Sequence[FieldIssue] = (),
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """A problem+json response; ``title`` is the standard reason phrase of ``status``."""
    body = problem_body(status, detail, code=code, errors=errors, extra=extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def problem_body(
    status: int,
    detail: str,
    *,
    code: ErrorCode,
    errors: Sequence[FieldIssue] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The problem document of :func:`problem_response` (also kept by a failed job)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors:
        body["errors"] = [{"field": e.field, "reason": e.reason} for e in errors]
    if extra:
        body.update(extra)
    return body


# Statuses Starlette and FastAPI raise themselves, as HTTPException.
HTTP_STATUS_CODES: Mapping[int, ErrorCode] = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.CONTENT_TOO_LARGE,
}


def field_path(loc: Sequence[int | str]) -> str:
    """``("body", "tasks", 2, "key")`` -> ``tasks[2].key``; query and path keep their prefix."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    # Tagged unions put the tag into the location; it is not a field the client wrote.
    parts = [p for p in parts if not (isinstance(p, str) and p.startswith("<"))]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            # A key the client wrote may hold NUL or a lone surrogate: echo it escaped.
            name = escape_unstorable(str(part))
            path += f".{name}" if path else name
    return path or "body"


def _validation_issues(exc: RequestValidationError) -> list[FieldIssue]:
    issues = []
    for error in exc.errors():
        reason = str(error.get("msg", "invalid"))
        if error.get("type") == "missing":
            reason = "Field required"
        elif error.get("type") == "string_unicode":  # pydantic's word for an unpaired surrogate
            reason = UNSTORABLE_TEXT
        # Validators of free-form fields name the position inside the field in their context.
        inside = error.get("ctx", {}).get(LOCATION_CONTEXT, ())
        loc = (*error.get("loc", ()), *inside)
        issues.append(FieldIssue(field=field_path(loc), reason=reason))
    return issues


def unparsable_body_issue(cause: BaseException | None) -> FieldIssue | None:
    """Why a syntactically valid JSON body could not be parsed, or ``None`` for other causes.

    FastAPI answers 400 for any exception of ``json.loads`` other than a syntax error; these are
    the client's input, so they become 422 naming ``body``.
    """
    if isinstance(cause, UnicodeDecodeError):
        return FieldIssue(field="body", reason="The body is not valid UTF-8")
    if isinstance(cause, RecursionError):
        return FieldIssue(field="body", reason="JSON nested too deeply to parse")
    if isinstance(cause, ValueError):
        if "integer string conversion" in str(cause):  # Python's limit on digits
            limit = sys.get_int_max_str_digits()
            return FieldIssue(field="body", reason=f"JSON numbers must have at most {limit} digits")
        return FieldIssue(field="body", reason="The body cannot be parsed as JSON")
    return None


def http_error_code(status: int) -> ErrorCode:
    """The code of an HTTP error raised by the framework (routing, body limits)."""
    code = HTTP_STATUS_CODES.get(status)
    if code is not None:
        return code
    return ErrorCode.BAD_REQUEST if status < 500 else ErrorCode.INTERNAL_ERROR


# --- handlers --------------------------------------------------------------------------------

DATABASE_UNAVAILABLE_ERRORS = (OperationalError, InterfaceError, PoolTimeoutError)


def install_error_handlers(app: FastAPI, *, retry_after_s: int) -> None:
    """Register the problem+json handlers on ``app``."""

    async def on_service_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        headers = dict(exc.headers)
        if exc.status == 503:
            headers.setdefault("Retry-After", str(retry_after_s))
        return problem_response(
            exc.status, exc.detail, code=exc.code, errors=exc.errors, headers=headers
        )

    async def on_solver_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SolverError)
        return await on_service_error(request, service_error_from_solver(exc))

    async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        issues = _validation_issues(exc)
        return problem_response(
            422,
            "The request is invalid; see `errors`.",
            code=ErrorCode.VALIDATION_FAILED,
            errors=issues,
        )

    async def on_http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        body_issue = unparsable_body_issue(exc.__cause__) if status == 400 else None
        if body_issue is not None:
            return problem_response(
                422,
                "The request body cannot be parsed; see `errors`.",
                code=ErrorCode.VALIDATION_FAILED,
                errors=[body_issue],
            )
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
        if status == 404:
            detail = "No such resource."
        return problem_response(status, detail, code=http_error_code(status), headers=exc.headers)

    async def on_schema_missing(request: Request, exc: Exception) -> JSONResponse:
        logger.warning(
            "database schema missing on %s %s: %s", request.method, request.url.path, exc.__class__
        )
        return problem_response(
            503,
            f"The database schema is not migrated; {UPGRADE_HINT}.",
            code=ErrorCode.SCHEMA_NOT_MIGRATED,
            headers={"Retry-After": str(retry_after_s)},
        )

    async def on_programming_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProgrammingError)
        if is_missing_table(exc):  # PostgreSQL: "relation ... does not exist"
            return await on_schema_missing(request, exc)
        return await on_unexpected(request, exc)

    async def on_database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DBAPIError) and is_missing_table(exc):  # SQLite: "no such table"
            return await on_schema_missing(request, exc)
        # The message may carry host names or SQL: log it, never send it.
        logger.warning(
            "database unavailable on %s %s: %s", request.method, request.url.path, exc.__class__
        )
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.db_unavailable.inc()
        return problem_response(
            503,
            "The database is unavailable; retry later.",
            code=ErrorCode.DATABASE_UNAVAILABLE,
            headers={"Retry-After": str(retry_after_s)},
        )

    async def on_integrity_error(request: Request, exc: Exception) -> JSONResponse:
        # A concurrent request stored the same key first, on every try (app/retry.py).
        logger.warning(
            "integrity conflict on %s %s: %s", request.method, request.url.path, exc.__class__
        )
        return problem_response(
            409,
            "A concurrent request changed the same data; retry the request.",
            code=ErrorCode.CONFLICT,
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "Internal server error.", code=ErrorCode.INTERNAL_ERROR)

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(SolverError, on_solver_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    for error_type in DATABASE_UNAVAILABLE_ERRORS:
        app.add_exception_handler(error_type, on_database_unavailable)
    app.add_exception_handler(ProgrammingError, on_programming_error)
    app.add_exception_handler(IntegrityError, on_integrity_error)
    app.add_exception_handler(Exception, on_unexpected)


# --- OpenAPI -----------------------------------------------------------------------------------

ERROR_DESCRIPTIONS: Mapping[int, str] = {
    401: "Missing, malformed, unknown, revoked or expired API key.",
    403: "The key's role does not allow this action.",
    404: "No such object in the key's project (other projects' objects look the same).",
    409: "Conflicts with the current state.",
    413: "The request body is over the size limit.",
    422: "Invalid input; `errors` lists each field and reason. Refused everywhere: text with NUL "
    "(`\\u0000`) or an unpaired surrogate, a body that is not UTF-8 JSON, numbers over 4300 "
    f"digits, free-form JSON (task `metadata`) nested over {MAX_JSON_DEPTH} levels.",
    428: "The write on a run needs the holder's lease token in the `Ordo-Lease-Token` header "
    "(code `lease_token_required`).",
    429: "Too many requests from this key or address, or too many failed sign-ins from this "
    "address (code `rate_limited`); retry after `Retry-After` seconds.",
    503: "The database is unavailable; retry after `Retry-After` seconds.",
}


def error_responses(
    *statuses: int, examples: Mapping[int, Sequence[str]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for the given error statuses, each with problem+json examples.

    ``examples`` names, per status, the :data:`app.problem_examples.PROBLEM_EXAMPLES` to show
    instead of that status's defaults (the schema reference is added by the spec).
    """
    unknown = set(examples or {}) - set(statuses)
    if unknown:
        raise ValueError(f"examples for undeclared statuses {sorted(unknown)}")
    chosen = examples or {}
    return {
        status: {
            "description": ERROR_DESCRIPTIONS[status],
            "content": problem_content(status, chosen.get(status)),
        }
        for status in statuses
    }


def problem_content(status: int, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The ``content`` of an error response: problem+json with ``names``' examples (or defaults).

    For error responses written by hand (``responses={409: {"description": ..., "content":
    problem_content(409, ["lease_lost"])}}``); the spec adds the schema reference.
    """
    return {PROBLEM_MEDIA_TYPE: {"examples": problem_examples(status, names)}}
