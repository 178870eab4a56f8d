"""ASGI middleware: the request body limit, answered as problem+json."""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import PROBLEM_MEDIA_TYPE


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
        declared = Headers(scope=scope).get("content-length")
        return declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Content Too Large",
                "status": 413,
                "detail": f"The request body is over the limit of {self.max_body_bytes} bytes.",
                "code": "content_too_large",
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
