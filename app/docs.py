"""The ReDoc page, served from the assets fastapi-offline installs, with nothing off-machine.

Swagger UI (``/docs``) comes from fastapi-offline as is. ReDoc's bundle hard-codes one CDN
image (the Redocly logo in the sidebar footer), so ``/redoc`` loads a copy of the bundle with
that URL blanked; an ``<img>`` with an empty ``src`` makes no request. Training clusters are
often air-gapped.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse, Response

STATIC_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
STATIC_URL = "/static-offline-docs"
REDOC_JS_URL = "/docs-assets/redoc.standalone.js"
REDOC_CDN_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@lru_cache(maxsize=1)
def offline_redoc_js() -> bytes:
    """ReDoc's standalone bundle without its one CDN reference."""
    text = (STATIC_DIR / "redoc.standalone.js").read_text(encoding="utf-8")
    return text.replace(REDOC_CDN_LOGO, "").encode()


def install_redoc(app: FastAPI, *, path: str = "/redoc") -> None:
    """Serve ReDoc at ``path`` from local assets only."""

    @app.get(REDOC_JS_URL, include_in_schema=False)
    def redoc_js() -> Response:
        return Response(
            offline_redoc_js(),
            media_type="application/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    @app.get(path, include_in_schema=False)
    def redoc_html(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{REDOC_JS_URL}",
            redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )
