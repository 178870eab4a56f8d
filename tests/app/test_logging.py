"""Request ids (X-Request-ID) and JSON log lines, from the app and from a live `ordo serve`."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ordo_server.app.logging_config import REQUEST_ID, JsonFormatter
from ordo_server.app.server_process import free_port, ordo_command
from tests.conftest import (
    ADMIN_TOKEN,
    REPO_ROOT,
    migrated_sqlite_url,
)
from tests.factories import bearer

METRICS_TOKEN = "metrics-" + secrets.token_hex(16)
HEX32 = re.compile(r"[0-9a-f]{32}")


# --- request ids ---------------------------------------------------------------------------------


def test_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "trace-42.a:b"})
    assert response.headers["x-request-id"] == "trace-42.a:b"


@pytest.mark.parametrize(
    "presented", [None, "", "has space", "x" * 65, "tab\there", "caf\u00e9".encode()]
)
def test_request_id_is_generated_when_absent_or_invalid(
    client: TestClient, presented: str | bytes | None
) -> None:
    headers = {"X-Request-ID": presented} if presented is not None else {}
    first = client.get("/v1/projects", headers=headers)  # a 401: errors get one too
    second = client.get("/v1/projects", headers=headers)
    assert first.status_code == 401
    assert HEX32.fullmatch(first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


def test_every_line_of_a_request_carries_its_id(app: FastAPI, client: TestClient) -> None:
    def sync_route() -> dict[str, str]:  # served in a worker thread
        logging.getLogger("app.test").warning("in a thread")
        return {}

    async def async_route() -> dict[str, str]:
        logging.getLogger("app.test").warning("in the loop")
        return {}

    app.add_api_route("/test-log-sync", sync_route)
    app.add_api_route("/test-log-async", async_route)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    access = logging.getLogger("ordo.access")
    previous_level = access.level
    access.setLevel(logging.INFO)
    try:
        for path in ("/test-log-sync", "/test-log-async"):
            headers = {"X-Request-ID": f"req{path}", "Authorization": "Bearer s3cret"}
            assert client.get(path, headers=headers).status_code == 200
    finally:
        root.removeHandler(handler)
        access.setLevel(previous_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert "s3cret" not in stream.getvalue()
    by_message = {line["message"]: line for line in lines if line["logger"] == "app.test"}
    assert by_message["in a thread"]["request_id"] == "req/test-log-sync"
    assert by_message["in the loop"]["request_id"] == "req/test-log-async"
    access_lines = [line for line in lines if line["logger"] == "ordo.access"]
    assert [(a["request_id"], a["method"], a["path"], a["status"]) for a in access_lines] == [
        ("req/test-log-sync", "GET", "/test-log-sync", 200),
        ("req/test-log-async", "GET", "/test-log-async", 200),
    ]
    assert all(a["duration_ms"] >= 0 for a in access_lines)


def test_an_unhandled_error_is_a_500_with_its_request_id(app: FastAPI) -> None:
    """Starlette answers a 500 outside the app's middleware; it carries the id all the same."""

    def failing_route() -> dict[str, str]:
        raise RuntimeError("boom")

    app.add_api_route("/test-fail", failing_route)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    access = logging.getLogger("ordo.access")
    previous_level = access.level
    access.setLevel(logging.INFO)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            given = client.get("/test-fail", headers={"X-Request-ID": "req-500"})
            generated = client.get("/test-fail")
    finally:
        root.removeHandler(handler)
        access.setLevel(previous_level)
    assert (given.status_code, given.headers["x-request-id"]) == (500, "req-500")
    assert given.headers["content-type"] == "application/problem+json"
    assert given.json()["code"] == "internal_error"
    assert generated.status_code == 500
    assert HEX32.fullmatch(generated.headers["x-request-id"])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    ids = ["req-500", generated.headers["x-request-id"]]
    errors = [r for r in lines if r["message"] == "unhandled error on GET /test-fail"]
    assert [r["request_id"] for r in errors] == ids
    assert all("RuntimeError: boom" in r["exception"] for r in errors)
    access_lines = [(r["request_id"], r["status"]) for r in lines if r["logger"] == "ordo.access"]
    assert access_lines == [(ids[0], 500), (ids[1], 500)]


def test_json_formatter_writes_one_object_per_line() -> None:
    token = REQUEST_ID.set("abc")
    try:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            record = logging.LogRecord(
                "app.x", logging.ERROR, __file__, 1, "failed %s", ("x",), None
            )
            record.exc_info = sys.exc_info()
        text = JsonFormatter().format(record)
    finally:
        REQUEST_ID.reset(token)
    assert "\n" not in text
    line = json.loads(text)
    assert line["request_id"] == "abc"
    assert (line["level"], line["logger"], line["message"]) == ("ERROR", "app.x", "failed x")
    assert "ValueError" in line["exception"]
    assert line["timestamp"].endswith("+00:00")


# --- a live server ----------------------------------------------------------------------------


def test_ordo_serve_logs_json_lines_with_request_ids(tmp_path: Path) -> None:
    """`ordo serve` (as in production): every line after its banner is one JSON object."""
    url = migrated_sqlite_url(tmp_path / "ordo.sqlite")
    port = free_port()
    env = {
        **os.environ,
        "ORDO_DATABASE_URL": url,
        "ORDO_ADMIN_TOKEN": ADMIN_TOKEN,
        "ORDO_METRICS_TOKEN": METRICS_TOKEN,
        "ORDO_PORT": str(port),
    }
    base_url = f"http://127.0.0.1:{port}"
    output_path = tmp_path / "server.log"
    with output_path.open("wb") as output:
        process = subprocess.Popen(
            ordo_command("serve"), env=env, stdout=output, stderr=subprocess.STDOUT, cwd=REPO_ROOT
        )
        try:
            _wait_for(base_url, process)
            headers = {**bearer(ADMIN_TOKEN), "X-Request-ID": "live-req-1"}
            response = httpx.get(f"{base_url}/v1/projects?token=abc", headers=headers, timeout=10)
            assert response.headers["x-request-id"] == "live-req-1"
            generated = httpx.get(f"{base_url}/healthz", timeout=10).headers["x-request-id"]
            httpx.get(f"{base_url}/metrics", headers=bearer(METRICS_TOKEN), timeout=10)
        finally:
            process.terminate()
            process.wait(timeout=15)
    text = output_path.read_text()
    assert ADMIN_TOKEN not in text
    assert METRICS_TOKEN not in text
    assert "Authorization" not in text
    assert "Bearer" not in text
    lines = text.splitlines()
    banner = next(i for i, line in enumerate(lines) if line.startswith("Ordo API docs:"))
    records = [json.loads(line) for line in lines[banner + 1 :]]  # each must parse
    assert all({"timestamp", "level", "logger", "message"} <= set(r) for r in records)
    access = {r["request_id"]: r for r in records if r["logger"] == "ordo.access"}
    line = access["live-req-1"]
    assert (line["method"], line["path"], line["status"]) == ("GET", "/v1/projects", 200)
    assert isinstance(line["duration_ms"], float)
    assert access[generated]["path"] == "/healthz"
    assert any(r["logger"].startswith("uvicorn") for r in records)


def _wait_for(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "ordo serve exited"
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("ordo serve did not answer within 30 s")
