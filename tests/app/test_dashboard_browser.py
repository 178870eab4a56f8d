"""The dashboard at /dashboard/ in a real browser, over a project populated by real runs.

A live server (uvicorn in a subprocess, on SQLite and on PostgreSQL) gets a project through the
HTTP API (``tests/app/dashboard_data.py``: six simulated tasks, three completed runs, a
recommendation and a run left active). Debian's Chromium (never a downloaded one) signs in with a
project key and visits every view; each must show the project's task keys and draw its SVG
marks, with no console error, no failed request and no request off the server's origin. The run
page must redraw when the trainer reports a stage while it is open.

With ``ORDO_DASHBOARD_SCREENSHOTS=<dir>`` the SQLite case also writes one PNG per view there;
``ORDO_DASHBOARD_SCREENSHOTS=docs .venv/bin/pytest tests/app/test_dashboard_browser.py``
refreshes the README's screenshots.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from playwright.sync_api import (
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    Response,
    Route,
    ViewportSize,
    sync_playwright,
)

from tests.app.dashboard_data import TASK_KEYS, PopulatedProject, populate, report_next_stage
from tests.app.test_docs_browser import CHROMIUM, CHROMIUM_FLAGS, _require_chromium
from tests.conftest import LiveServer

pytestmark = pytest.mark.browser

SCREENSHOT_ENV = "ORDO_DASHBOARD_SCREENSHOTS"
# A palette PNG: a third of the size, and every chart colour kept apart (octree quantizing).
SCREENSHOT_COLOURS = 256
VIEWPORT: ViewportSize = {"width": 1280, "height": 860}
RENDER_TIMEOUT_MS = 20_000
# The run page polls every 2 s; a report must show within a few polls.
LIVE_UPDATE_TIMEOUT_MS = 15_000
LOCAL_SCHEMES = frozenset({"data", "blob", "about"})
N = len(TASK_KEYS)


@dataclass
class Dashboard:
    """A signed-out page on the dashboard, and what its network and console did."""

    page: Page
    base_url: str
    off_origin: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def goto(self, fragment: str) -> None:
        """Open a view by its hash route and wait until it has rendered."""
        self.page.goto(f"{self.base_url}/dashboard/#{fragment}")
        self.wait_ready(f'[data-route="{fragment}"]')

    def wait_ready(self, route_selector: str = "") -> None:
        """Wait until the page marks its view rendered (``data-ready`` on ``main``)."""
        self.page.wait_for_selector(
            f"main[data-ready]{route_selector}", state="attached", timeout=RENDER_TIMEOUT_MS
        )

    def sign_in(self, key: str) -> None:
        """Type the key into the password field and submit; wait for the next view."""
        self.page.goto(f"{self.base_url}/dashboard/")
        self.wait_ready()
        if self.page.is_visible("#sign-out"):
            self.page.click("#sign-out")
        self.wait_ready('[data-route="sign-in"]')
        self.page.fill("#api-key", key)
        # The form is replaced once the key is checked: by a view, or by itself with an alert.
        self.page.evaluate("() => document.querySelector('main').removeAttribute('data-ready')")
        self.page.click("form.sign-in button[type=submit]")
        self.wait_ready()

    def main_text(self) -> str:
        """The text of the view, SVG labels included."""
        return self.page.locator("main").text_content() or ""

    def count(self, selector: str) -> int:
        """How many elements of the view match."""
        return self.page.locator(f"main {selector}").count()

    def assert_clean(self) -> None:
        """Nothing left the origin, nothing failed, nothing was logged as an error."""
        assert self.off_origin == [], "the dashboard requested another origin"
        assert self.failures == []
        assert self.console_errors == []


@dataclass(frozen=True)
class Populated:
    """A live server and the project populated on it."""

    server: LiveServer
    project: PopulatedProject
    empty_project_id: str
    schedule_count: int


@pytest.fixture(scope="module", autouse=True)
def _chromium_present() -> None:
    _require_chromium()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def populated(request: pytest.FixtureRequest) -> Populated:
    """The live server of this database, with the populated project and an empty one."""
    server: LiveServer = request.getfixturevalue(
        "live_server" if request.param == "sqlite" else "live_server_pg"
    )
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        project = populate(http, server.admin_headers)
        empty = http.post(
            "/v1/projects", json={"name": "empty-project"}, headers=server.admin_headers
        )
        assert empty.status_code == 201, empty.text
        schedules = http.get(
            f"/v1/projects/{project.id}/schedules",
            params={"page_size": 100},
            headers=project.trainer,
        ).json()
    return Populated(server, project, empty.json()["id"], len(schedules["items"]))


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


def _watch_request(request: Request, dashboard: Dashboard, origin: str) -> None:
    parts = urlsplit(request.url)
    if parts.scheme not in LOCAL_SCHEMES and f"{parts.scheme}://{parts.netloc}" != origin:
        dashboard.off_origin.append(request.url)


def _route_same_origin(route: Route, dashboard: Dashboard, origin: str) -> None:
    parts = urlsplit(route.request.url)
    if parts.scheme in LOCAL_SCHEMES or f"{parts.scheme}://{parts.netloc}" == origin:
        route.continue_()
    else:
        dashboard.off_origin.append(route.request.url)
        route.abort("blockedbyclient")


def _record_error_status(response: Response, dashboard: Dashboard) -> None:
    if response.status >= 400:
        dashboard.failures.append(f"{response.url}: HTTP {response.status}")


def _record_console(message: ConsoleMessage, dashboard: Dashboard) -> None:
    if message.type == "error":
        dashboard.console_errors.append(message.text)


@pytest.fixture
def dashboard(playwright: Playwright, populated: Populated, tmp_path: Path) -> Iterator[Dashboard]:
    """A fresh browser profile whose requests may only reach the server's origin."""
    origin = populated.server.base_url
    profile_dir = tmp_path / "chromium-profile"
    profile_dir.mkdir()
    context = playwright.chromium.launch_persistent_context(
        str(profile_dir),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_FLAGS,
        service_workers="block",
        viewport=VIEWPORT,
    )
    page = context.new_page()
    board = Dashboard(page, origin)
    context.route("**/*", lambda route: _route_same_origin(route, board, origin))
    page.on("request", lambda request: _watch_request(request, board, origin))
    page.on("requestfailed", lambda request: board.failures.append(f"{request.url}: failed"))
    page.on("response", lambda response: _record_error_status(response, board))
    page.on("console", lambda message: _record_console(message, board))
    page.on("pageerror", lambda error: board.console_errors.append(str(error)))
    try:
        yield board
    finally:
        context.close()


def _screenshot(dashboard: Dashboard, populated: Populated, name: str) -> None:
    """Write ``dashboard-<name>.png`` when asked (SQLite only), palette-reduced to stay small."""
    target = os.environ.get(SCREENSHOT_ENV)
    if not target or populated.server.database_url.startswith("postgresql"):
        return
    path = Path(target) / f"dashboard-{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    dashboard.page.screenshot(path=str(path), full_page=True)
    with Image.open(path) as image:
        reduced = image.convert("RGB").quantize(
            colors=SCREENSHOT_COLOURS, method=Image.Quantize.FASTOCTREE
        )
    reduced.save(path, optimize=True)


def _assert_task_keys(dashboard: Dashboard) -> None:
    text = dashboard.main_text()
    missing = [key for key in TASK_KEYS if key not in text]
    assert missing == [], f"task keys missing from the view: {missing}"


# --- serving -------------------------------------------------------------------------------------


def test_assets_are_served_same_origin_only(populated: Populated) -> None:
    with httpx.Client(base_url=populated.server.base_url, timeout=10) as http:
        redirect = http.get("/dashboard")
        page = http.get("/dashboard/")
        script = http.get("/dashboard/dashboard.js")
        missing = http.get("/dashboard/secrets.txt")
        traversal = http.get("/dashboard/..%2Fmain.py")
        spec = http.get("/openapi.json").json()
    assert redirect.status_code == 308
    assert redirect.headers["location"] == "/dashboard/"
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert script.headers["content-type"].startswith("text/javascript")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert traversal.status_code == 404
    assert not any(path.startswith("/dashboard") for path in spec["paths"])


# --- sign-in -------------------------------------------------------------------------------------


def test_sign_in_keeps_the_key_in_session_storage_only(
    dashboard: Dashboard, populated: Populated
) -> None:
    dashboard.sign_in("ordo_not_a_key")
    assert "refused" in (dashboard.page.locator("form.sign-in [role=alert]").text_content() or "")
    # The refused key's 401, which the page reports to the user (Chromium logs it too).
    assert all("HTTP 401" in failure for failure in dashboard.failures)
    dashboard.failures.clear()
    dashboard.console_errors.clear()

    dashboard.sign_in(populated.project.trainer_key)
    assert dashboard.page.locator("main h1").text_content() == "Projects"
    stored = dashboard.page.evaluate("() => sessionStorage.getItem('ordo.apiKey')")
    assert stored == populated.project.trainer_key
    assert dashboard.page.evaluate("() => localStorage.length") == 0
    assert dashboard.page.context.cookies() == []
    # A project key sees its own project only.
    assert dashboard.count("tbody tr") == 1

    dashboard.page.click("#sign-out")
    dashboard.page.wait_for_selector("input#api-key")
    assert dashboard.page.evaluate("() => sessionStorage.getItem('ordo.apiKey')") is None
    dashboard.assert_clean()


# --- every view ----------------------------------------------------------------------------------


def test_every_view_renders_the_project(dashboard: Dashboard, populated: Populated) -> None:
    project = populated.project
    base = f"/projects/{project.id}"
    dashboard.sign_in(populated.server.admin_token)
    assert "dashboard-demo" in dashboard.main_text()
    assert "empty-project" in dashboard.main_text()
    _screenshot(dashboard, populated, "projects")

    dashboard.goto(base)
    _assert_task_keys(dashboard)
    assert dashboard.count("svg .interval .mark") == N  # the recommendation's predictions
    assert dashboard.count("svg .segment .mark") == 2  # completed and active (or stale)
    assert "recommendation" in dashboard.main_text()
    _screenshot(dashboard, populated, "overview")

    dashboard.goto(f"{base}/effects")
    _assert_task_keys(dashboard)
    assert dashboard.count("svg .cell .mark") == 2 * N * (N - 1)  # F and B, off-diagonal
    assert dashboard.count("svg .bar .mark") == 3 * N  # L, G and D
    opacities = set(
        dashboard.page.eval_on_selector_all(
            "svg .cell .mark", "cells => cells.map(c => c.getAttribute('fill-opacity'))"
        )
    )
    assert len(opacities) > 1, "the uncertainty must show in the cells, not only on hover"
    assert dashboard.count("svg .cell[data-count='0']") > 0  # some cells rest on their prior
    _screenshot(dashboard, populated, "effects")

    dashboard.goto(f"{base}/schedules")
    _assert_task_keys(dashboard)
    assert dashboard.count("svg a.timeline-point") == populated.schedule_count
    assert dashboard.count("svg .link .mark") == N
    dashboard.goto(f"{base}/schedules?a=1&b=2")
    assert "Compare v1 and v2" in dashboard.main_text()
    assert dashboard.count("svg .link.moved .mark") > 0  # two Thompson draws, two orders
    _screenshot(dashboard, populated, "schedules")

    dashboard.goto(f"{base}/runs")
    run_ids = [*project.completed_run_ids, project.active_run_id]
    assert dashboard.count("tbody tr") == len(run_ids)
    assert dashboard.count(".badge.status-completed") == len(project.completed_run_ids)
    for run_id in run_ids:
        assert dashboard.count(f"a[href$='/runs/{run_id}']") == 1
    _screenshot(dashboard, populated, "runs")

    completed = project.completed_run_ids[-1]
    dashboard.goto(f"{base}/runs/{completed}")
    _assert_task_keys(dashboard)
    reports = N + 1  # the baseline and one per stage
    assert dashboard.count("svg .point .mark") == 2 * N * reports  # utility and entropy
    assert dashboard.count(".stage-reported") == N
    assert "re-plan of v" in dashboard.main_text()  # the adaptive run re-planned
    assert dashboard.page.locator("main [role=status]").first.text_content() == (
        "The run is completed."
    )

    dashboard.goto(f"{base}/learning")
    _assert_task_keys(dashboard)
    assert dashboard.count("svg .calibration-point .mark") == len(project.completed_run_ids) * N
    assert dashboard.count("svg .diagonal-line") == 1
    coverage = dashboard.page.locator("[data-testid=coverage-final]").text_content() or ""
    assert coverage.endswith(" %")
    assert dashboard.count("svg .point[data-series='best observed run'] .mark") == 3
    _screenshot(dashboard, populated, "learning")
    dashboard.assert_clean()


def test_run_page_updates_while_a_report_arrives(
    dashboard: Dashboard, populated: Populated
) -> None:
    project = populated.project
    dashboard.sign_in(project.trainer_key)
    dashboard.goto(f"/projects/{project.id}/runs/{project.active_run_id}")
    _assert_task_keys(dashboard)
    reports = int(dashboard.page.get_attribute("[data-reports]", "data-reports") or "0")
    assert reports >= 2
    assert dashboard.count("svg .point .mark") == 2 * N * reports
    assert "Live" in (dashboard.page.locator("main [role=status]").text_content() or "")

    with httpx.Client(base_url=populated.server.base_url, timeout=60) as http:
        stage = report_next_stage(http, project)

    dashboard.page.wait_for_selector(
        f"[data-reports='{stage + 1}']", timeout=LIVE_UPDATE_TIMEOUT_MS
    )
    assert dashboard.count("svg .point .mark") == 2 * N * (stage + 1)
    assert dashboard.count(".stage-reported") == stage
    _screenshot(dashboard, populated, "run")
    dashboard.assert_clean()


# --- keyboard and empty states -----------------------------------------------------------------


def test_heatmap_cells_are_reachable_by_keyboard(
    dashboard: Dashboard, populated: Populated
) -> None:
    dashboard.sign_in(populated.project.trainer_key)
    dashboard.goto(f"/projects/{populated.project.id}/effects")
    for _ in range(40):
        dashboard.page.keyboard.press("Tab")
        if dashboard.page.evaluate("() => document.activeElement.matches('.cell')"):
            break
    else:
        pytest.fail("Tab never reached a heatmap cell")
    info = dashboard.page.locator(".cell-info").text_content() or ""
    assert info.startswith("F: ")
    assert " ± " in info
    dashboard.assert_clean()


@pytest.mark.parametrize(
    ("view", "hint"),
    [
        ("", "No tasks yet"),
        ("/effects", "No tasks yet"),
        ("/schedules", "No schedules yet"),
        ("/runs", "No runs yet"),
        ("/learning", "No completed run yet"),
    ],
)
def test_empty_project_says_what_to_do_next(
    dashboard: Dashboard, populated: Populated, view: str, hint: str
) -> None:
    dashboard.sign_in(populated.server.admin_token)
    dashboard.goto(f"/projects/{populated.empty_project_id}{view}")
    assert hint in (dashboard.page.locator("main .empty").first.text_content() or "")
    dashboard.assert_clean()


# --- the one write -------------------------------------------------------------------------------


def test_overview_solves_a_recommendation_for_an_admin_only(
    dashboard: Dashboard, populated: Populated
) -> None:
    project = populated.project
    dashboard.sign_in(project.trainer_key)
    dashboard.goto(f"/projects/{project.id}")
    dashboard.page.click("text=Solve a new recommendation")
    dashboard.page.wait_for_selector("text=Only a project admin key may solve a schedule.")
    assert all("HTTP 403" in failure for failure in dashboard.failures)
    dashboard.failures.clear()
    dashboard.console_errors.clear()  # Chromium logs the 403 the page explains

    dashboard.sign_in(project.admin_key)
    dashboard.goto(f"/projects/{project.id}")
    before = dashboard.page.locator("[data-testid=schedule-version]").text_content() or ""
    dashboard.page.evaluate("() => document.querySelector('main').removeAttribute('data-ready')")
    dashboard.page.click("text=Solve a new recommendation")
    dashboard.wait_ready()
    after = dashboard.page.locator("[data-testid=schedule-version]").text_content() or ""
    assert after.startswith("v")
    assert after.endswith("dashboard recommendation")
    assert after != before
    assert dashboard.count("svg .interval .mark") == N
    dashboard.assert_clean()
