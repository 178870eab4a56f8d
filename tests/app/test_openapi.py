"""The committed openapi.json is current, and every operation is documented."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.openapi_export import render_openapi

REPO_ROOT = Path(__file__).resolve().parents[2]
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(render_openapi())
    return parsed


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def test_committed_spec_is_current() -> None:
    committed = (REPO_ROOT / "openapi.json").read_text(encoding="utf-8")
    assert committed == render_openapi(), "openapi.json is stale: run `make openapi`"


def test_operations_have_ids_tags_and_descriptions(spec: dict[str, Any]) -> None:
    ids = []
    for method, path, operation in _operations(spec):
        where = f"{method.upper()} {path}"
        assert operation.get("operationId"), where
        assert operation.get("tags"), where
        assert operation.get("description") or operation.get("summary"), where
        ids.append(operation["operationId"])
    assert len(ids) == len(set(ids))
    assert {"create_project", "list_tasks", "import_priors", "get_estimates"} <= set(ids)


def test_api_operations_declare_their_errors_as_problem_json(spec: dict[str, Any]) -> None:
    for method, path, operation in _operations(spec):
        if not path.startswith("/v1"):
            continue
        responses = operation["responses"]
        assert {"401", "503"} <= set(responses), f"{method} {path}"
        for code, response in responses.items():
            if int(code) >= 400:
                assert list(response["content"]) == ["application/problem+json"], code
        if "requestBody" in operation:
            assert {"413", "422"} <= set(responses), f"{method} {path}"
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_integer_parameters_are_bounded(spec: dict[str, Any]) -> None:
    for method, path, operation in _operations(spec):
        for parameter in operation.get("parameters", []):
            schema = parameter["schema"]
            for branch in [schema, *schema.get("anyOf", [])]:
                if branch.get("type") == "integer":
                    where = f"{method} {path} {parameter['name']}"
                    assert {"minimum", "maximum"} <= set(branch), where


def test_request_bodies_have_examples(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    for method, path, operation in _operations(spec):
        if "requestBody" not in operation:
            continue
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        refs = [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]
        named = [s["$ref"].rsplit("/", 1)[1] for s in refs if "$ref" in s]
        named += [
            s["items"]["$ref"].rsplit("/", 1)[1] for s in refs if "$ref" in s.get("items", {})
        ]
        assert named, f"{method} {path}"
        for name in named:
            assert schemas[name].get("examples"), f"{name} has no example"
