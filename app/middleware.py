"""ASGI middleware: request ids and access lines; the request body limit, as problem+json."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ordo_server.app.errors import PROBLEM_MEDIA_TYPE, ErrorCode
from ordo_server.app.logging_config import ACCESS_LOGGER, REQUEST_ID

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is kept when short and printable ASCII without spaces (it goes into every log
# line and back into a header); anything else is replaced by a new one.
_VALID_REQUEST_ID = re.compile(r"[!-~]{1,64}")

access_logger = logging.getLogger(ACCESS_LOGGER)


def content_length(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """The ``Content-Length`` of raw ASGI headers (a request's or an answer's); 0 where absent
    or not a number."""
    for name, value in headers:
        if name.lower() == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def request_id_of(headers: Headers) -> str:
    """The caller's ``X-Request-ID`` when valid, else a new uuid4 in hex."""
    presented = headers.get(REQUEST_ID_HEADER)
    if presented is not None and _VALID_REQUEST_ID.fullmatch(presented):
        return presented
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Give each HTTP request an id (echoed as ``X-Request-ID``) and log one access line.

    The id is set in :data:`app.logging_config.REQUEST_ID` for the request's task, so every
    line logged while serving it carries the id. It is not reset afterwards: each request runs
    in its own task (a copied context), and uvicorn's report of an unhandled error, logged
    after this middleware returns, should carry the id too. The access line holds the method,
    the path (no query string, no headers: nothing secret), the status and the duration.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(Headers(scope=scope))
        REQUEST_ID.set(request_id)
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration_ms = round((time.perf_counter() - start) * 1000, 3)
            access_logger.info(
                "%s %s %d %.1f ms",
                scope["method"],
                scope["path"],
                status,
                duration_ms,
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": duration_ms,
                },
            )


class BodyLimitMiddleware:
    """Reject bodies over ``max_body_bytes`` with 413 before any handler runs.

    A declared ``Content-Length`` over the limit is answered here at once. Streamed (chunked)
    bodies are counted by Starlette's ``RequestBodyLimitMiddleware``, whose 413 surfaces as an
    ``HTTPException`` inside the app and is rendered by the problem+json handler.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = RequestBodyLimitMiddleware(app, max_body_size=max_body_bytes)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._declared_too_large(scope):
            await self._reject(send)
            return
        await self.app(scope, receive, send)

    def _declared_too_large(self, scope: Scope) -> bool:
        return content_length(scope["headers"]) > self.max_body_bytes

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Content Too Large",
                "status": 413,
                "detail": f"The request body is over the limit of {self.max_body_bytes} bytes.",
                "code": ErrorCode.CONTENT_TOO_LARGE.value,
            },
            separators=(",", ":"),
        ).encode()
        headers = [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
