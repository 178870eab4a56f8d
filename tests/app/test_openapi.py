"""The committed openapi.json is current, and every operation is documented."""

from __future__ import annotations

import json
from http import HTTPStatus
from pathlib import Path
from typing import Any, get_args

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel

from ordo_server.app.errors import PROBLEM_MEDIA_TYPE, Problem, error_responses, problem_content
from ordo_server.app.main import ROUTERS
from ordo_server.app.openapi_export import render_openapi

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


# --- docs a user can learn from: summaries, response examples, error examples -------------------


def _generated_summary(operation_id: str) -> str:
    """What FastAPI writes when a route gives no ``summary``: its name in title case."""
    return operation_id.replace("_", " ").title()


def test_every_operation_has_a_summary_written_for_people(spec: dict[str, Any]) -> None:
    summaries = []
    for method, path, operation in _operations(spec):
        where = f"{method.upper()} {path}"
        summary = operation.get("summary", "")
        assert summary, where
        assert summary != _generated_summary(operation["operationId"]), where
        assert summary[0].isupper(), where
        assert not summary.endswith("."), where
        assert len(summary) <= 80, where
        summaries.append(summary)
    assert len(summaries) == len(set(summaries))


def _schema_examples(spec: dict[str, Any], schema: dict[str, Any]) -> list[Any]:
    """The examples of a response schema: its own, its ``$ref``'s, or its items' (a list)."""
    schemas = spec["components"]["schemas"]
    if "$ref" in schema:
        schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
    examples: list[Any] = list(schema.get("examples", []))
    if not examples and schema.get("type") == "array":
        examples = _schema_examples(spec, schema["items"])
    return examples


def _media_examples(media: dict[str, Any]) -> list[Any]:
    named = [example["value"] for example in media.get("examples", {}).values()]
    return named + ([media["example"]] if "example" in media else [])


def test_every_success_response_has_an_example(spec: dict[str, Any]) -> None:
    for method, path, operation in _operations(spec):
        for code, response in operation["responses"].items():
            if not code.startswith("2"):
                continue
            for media_type, media in response.get("content", {}).items():
                where = f"{method.upper()} {path} {code} {media_type}"
                examples = _media_examples(media) or _schema_examples(spec, media["schema"])
                assert examples, f"{where} has no example"


def test_every_error_response_has_problem_examples_of_its_status(spec: dict[str, Any]) -> None:
    checked = 0
    for method, path, operation in _operations(spec):
        for code, response in operation["responses"].items():
            if int(code) < 400:
                continue
            where = f"{method.upper()} {path} {code}"
            media = response["content"]["application/problem+json"]
            examples = _media_examples(media)
            assert examples, f"{where} has no example: declare it with error_responses()"
            for example in examples:
                problem = Problem.model_validate(example)
                assert problem.status == int(code), where
                assert problem.title == HTTPStatus(problem.status).phrase, where
                checked += 1
    assert checked > 100


def test_report_conflicts_show_each_conflict_a_report_can_meet(spec: dict[str, Any]) -> None:
    put_report = spec["paths"]["/v1/projects/{project_id}/runs/{run_id}/reports/{stage}"]["put"]
    examples = _media_examples(put_report["responses"]["409"]["content"][PROBLEM_MEDIA_TYPE])

    assert {example["code"] for example in examples} >= {
        "report_mismatch",
        "stage_out_of_turn",
        "plan_pending",
    }


def _response_models() -> set[type[BaseModel]]:
    """Every pydantic model a route answers with (``response_model``, ``responses`` models)."""
    found: set[type[BaseModel]] = set()
    routes = [route for router in ROUTERS for route in router.routes]
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        candidates = [route.response_model]
        candidates += [response.get("model") for response in route.responses.values()]
        for candidate in candidates:
            for model in (candidate, *get_args(candidate)):
                if isinstance(model, type) and issubclass(model, BaseModel):
                    found.add(model)
    return found


def test_response_examples_are_exactly_what_the_models_answer() -> None:
    """Each example parses as its model and serializes back unchanged: no field is missing,
    misspelled or of the wrong type, so the docs show what a client will receive."""
    models = _response_models()
    assert len(models) >= 15
    for model in models:
        extra = model.model_config.get("json_schema_extra")
        assert isinstance(extra, dict), f"{model.__name__} has no examples"
        examples = extra.get("examples")
        assert isinstance(examples, list), f"{model.__name__} has no examples"
        assert examples, f"{model.__name__} has no examples"
        for example in examples:
            assert model.model_validate(example).model_dump(mode="json") == example, model.__name__


def test_problem_examples_of_routes_are_declared_statuses_only() -> None:
    with pytest.raises(ValueError, match="undeclared"):
        error_responses(404, examples={409: ["task_exists"]})
    with pytest.raises(ValueError, match="not a 404"):
        problem_content(404, ["task_exists"])
