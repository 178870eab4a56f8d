"""The dashboard at /dashboard/: a static page over the v1 API, shipped inside the package."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse

from ordo_server.app.errors import NotFoundError

DASHBOARD_DIR = Path(__file__).resolve().parents[1] / "dashboard"
# The only files served: a fixed table, so no request path ever reaches the filesystem.
ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
}
# Everything the page loads or calls comes from its own origin; the key never leaves it.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # The page is small: revalidating each load keeps it in step with the server's version.
    "Cache-Control": "no-cache",
}

router = APIRouter(prefix="/dashboard", include_in_schema=False)


@router.get("")
def dashboard_redirect() -> RedirectResponse:
    """Send /dashboard to /dashboard/, so the page's relative asset paths resolve."""
    return RedirectResponse("/dashboard/", status_code=308)


@router.api_route("/", methods=["GET", "HEAD"])
def dashboard_page() -> FileResponse:
    """The dashboard's single page (sign-in, then hash-routed views)."""
    return FileResponse(
        DASHBOARD_DIR / "index.html",
        media_type="text/html; charset=utf-8",
        headers=SECURITY_HEADERS,
    )


@router.api_route("/{asset}", methods=["GET", "HEAD"])
def dashboard_asset(asset: Annotated[str, PathParam(max_length=64)]) -> FileResponse:
    """One of the page's scripts or its stylesheet; anything else is a 404."""
    media_type = ASSETS.get(asset)
    if media_type is None:
        raise NotFoundError("No such dashboard file.")
    return FileResponse(DASHBOARD_DIR / asset, media_type=media_type, headers=SECURITY_HEADERS)
