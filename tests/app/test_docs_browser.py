"""The API docs render in a real browser with no network beyond the server itself.

A headless Debian Chromium (never a downloaded one) opens ``/docs`` (Swagger UI) and ``/redoc``
served by a real server process (``live_server``: uvicorn over a migrated SQLite file). Every
request to a host other than loopback is aborted and recorded, so a CDN reference anywhere in
the docs (HTML, scripts, images, fonts) fails the test, as it would break the docs on an
air-gapped cluster.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Page, Playwright, Request, Route, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.conftest import LiveServer

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Schemes that never leave the browser.
LOCAL_SCHEMES = frozenset({"data", "blob", "about"})
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
RENDER_TIMEOUT_MS = 30_000
# Operations the design names; the docs must show them whatever else exists.
KNOWN_OPERATIONS = frozenset({("get", "/v1/projects"), ("post", "/v1/projects")})
REDOC_OPERATION_ID = re.compile(r"(?:^|/)operation/(?P<operation_id>.+)$")


def _running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}


def _require_chromium() -> None:
    if os.access(CHROMIUM, os.X_OK):
        return
    reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if _running_in_ci():
        pytest.fail(f"{reason}; CI must run the browser tests")
    pytest.skip(reason)


@dataclass
class NetworkLog:
    """Requests aborted for leaving loopback, local requests that failed, uncaught JS errors."""

    blocked: list[str] = field(default_factory=list)
    local_failures: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in LOCAL_SCHEMES or parts.hostname in LOOPBACK_HOSTS


def _route_loopback_only(route: Route, log: NetworkLog) -> None:
    url = route.request.url
    if _is_local(url):
        route.continue_()
    else:
        log.blocked.append(url)
        route.abort("blockedbyclient")


def _record_failure(request: Request, log: NetworkLog) -> None:
    if _is_local(request.url):
        log.local_failures.append(f"{request.url}: {request.failure}")


def _record_local_error_status(url: str, status: int, log: NetworkLog) -> None:
    if status >= 400 and _is_local(url):
        log.local_failures.append(f"{url}: HTTP {status}")


@pytest.fixture(scope="module", autouse=True)
def _chromium_present() -> None:
    """Skip or fail before anything (a server, a driver) is started for nothing."""
    _require_chromium()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def browser_page(playwright: Playwright, tmp_path: Path) -> Iterator[tuple[Page, NetworkLog]]:
    """A page in a fresh profile whose network is limited to loopback."""
    profile_dir = tmp_path / "chromium-profile"
    profile_dir.mkdir()
    context = playwright.chromium.launch_persistent_context(
        str(profile_dir),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_FLAGS,
        service_workers="block",
    )
    log = NetworkLog()
    context.route("**/*", lambda route: _route_loopback_only(route, log))
    page = context.new_page()
    page.on("requestfailed", lambda request: _record_failure(request, log))
    page.on(
        "response", lambda response: _record_local_error_status(response.url, response.status, log)
    )
    page.on("pageerror", lambda error: log.page_errors.append(str(error)))
    try:
        yield page, log
    finally:
        context.close()


def _spec_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def _spec_operation_ids(spec: dict[str, Any]) -> set[str]:
    return {
        operation["operationId"]
        for item in spec["paths"].values()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


@pytest.fixture(scope="module")
def openapi_spec(live_server: LiveServer) -> dict[str, Any]:
    response = httpx.get(f"{live_server.base_url}/openapi.json", timeout=10)
    response.raise_for_status()
    spec: dict[str, Any] = response.json()
    assert KNOWN_OPERATIONS.issubset(_spec_operations(spec))
    return spec


def _assert_offline(log: NetworkLog) -> None:
    assert log.blocked == [], "the docs reached beyond loopback (CDN or tracking references)"
    assert log.local_failures == []
    assert log.page_errors == []


@contextmanager
def _explained_render_timeout(log: NetworkLog) -> Iterator[None]:
    """On a render timeout, name the blocked or failed requests: they are the usual cause."""
    try:
        yield
    except PlaywrightTimeoutError:
        _assert_offline(log)
        raise


def test_swagger_ui_renders_every_operation_offline(
    live_server: LiveServer,
    openapi_spec: dict[str, Any],
    browser_page: tuple[Page, NetworkLog],
) -> None:
    page, log = browser_page
    expected = _spec_operations(openapi_spec)

    page.goto(f"{live_server.base_url}/docs", wait_until="networkidle")
    with _explained_render_timeout(log):
        page.wait_for_function(
            "n => document.querySelectorAll('.opblock').length >= n",
            arg=len(expected),
            timeout=RENDER_TIMEOUT_MS,
        )
    rendered: list[list[str]] = page.eval_on_selector_all(
        ".opblock",
        """blocks => blocks.map(b => [
            b.querySelector('.opblock-summary-method').textContent.toLowerCase(),
            b.querySelector('.opblock-summary-path').getAttribute('data-path'),
        ])""",
    )

    assert {(method, path) for method, path in rendered} == expected
    assert page.title() == f"{openapi_spec['info']['title']} - Swagger UI"
    _assert_offline(log)


def test_redoc_renders_every_operation_offline(
    live_server: LiveServer,
    openapi_spec: dict[str, Any],
    browser_page: tuple[Page, NetworkLog],
) -> None:
    page, log = browser_page
    expected_ids = _spec_operation_ids(openapi_spec)

    page.goto(f"{live_server.base_url}/redoc", wait_until="networkidle")
    with _explained_render_timeout(log):
        page.wait_for_selector("[data-section-id*='operation/']", timeout=RENDER_TIMEOUT_MS)
    section_ids: list[str] = page.eval_on_selector_all(
        "[data-section-id]", "sections => sections.map(s => s.getAttribute('data-section-id'))"
    )
    rendered_ids = {
        match["operation_id"]
        for section_id in section_ids
        if (match := REDOC_OPERATION_ID.search(section_id))
    }

    assert rendered_ids == expected_ids
    assert "/v1/projects" in page.inner_text("body")
    _assert_offline(log)
