"""Error codes are a contract: one enum, its table in docs/errors.md, the enum in the OpenAPI."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ordo_server import app
from ordo_server.app.errors import (
    ERROR_CODES,
    ConflictError,
    ErrorCode,
    ServiceError,
    error_code_table,
    http_error_code,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_DIR = REPO_ROOT / "app"


def _all_subclasses(cls: type[ServiceError]) -> Iterator[type[ServiceError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def _import_every_app_module() -> None:
    for module in pkgutil.walk_packages(app.__path__, prefix="ordo_server.app."):
        importlib.import_module(module.name)


def test_every_code_has_a_status_and_a_meaning() -> None:
    assert set(ERROR_CODES) == set(ErrorCode)
    for code, info in ERROR_CODES.items():
        assert 400 <= info.status <= 599, code
        assert info.meaning.endswith("."), code


def test_docs_table_is_the_enum() -> None:
    page = (REPO_ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    assert error_code_table() in page, (
        "docs/errors.md is stale: paste the output of "
        "`python -c 'from app.errors import error_code_table; print(error_code_table())'`"
    )
    documented = {line.split("`")[1] for line in page.splitlines() if line.startswith("| `")}
    assert documented == {code.value for code in ErrorCode}


def test_every_service_error_answers_a_member_with_its_status() -> None:
    _import_every_app_module()
    subclasses = list(_all_subclasses(ServiceError))
    assert len(subclasses) >= 12  # the base errors plus the services' own
    error_types: list[type[ServiceError]] = [ServiceError, *subclasses]
    for error_type in error_types:
        assert isinstance(error_type.code, ErrorCode), error_type
        assert ERROR_CODES[error_type.code].status == error_type.status, error_type


def test_a_service_error_with_an_unknown_code_is_refused() -> None:
    with pytest.raises(TypeError, match="must be an ErrorCode member"):

        class _Unlisted(ConflictError):
            code = "not_a_listed_code"  # type: ignore[assignment]

    with pytest.raises(TypeError, match="is answered with 422, not 409"):

        class _WrongStatus(ConflictError):
            code = ErrorCode.VALIDATION_FAILED


def test_a_listed_code_given_as_text_becomes_the_member() -> None:
    class _Listed(ConflictError):
        code = "report_mismatch"  # type: ignore[assignment]

    assert _Listed.code is ErrorCode.REPORT_MISMATCH


def _code_literals(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """String literals given as ``code=...`` or assigned to ``code`` or to a ``"code"`` key."""
    for node in ast.walk(tree):
        values: list[ast.expr] = []
        if isinstance(node, ast.keyword) and node.arg == "code":
            values.append(node.value)
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "code" for t in targets):
                values.append(node.value)
        elif isinstance(node, ast.Dict):
            values += [
                v
                for k, v in zip(node.keys, node.values, strict=True)
                if isinstance(k, ast.Constant) and k.value == "code"
            ]
        for value in values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                yield value.lineno, value.value


def test_no_code_is_answered_outside_the_enum() -> None:
    """Any code written as text in app/ (a problem dict, a ``code=`` argument) is a member."""
    members = {code.value for code in ErrorCode}
    strays = []
    for path in APP_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, value in _code_literals(tree):
            if value not in members:
                strays.append(f"{path.relative_to(REPO_ROOT)}:{line}: {value!r}")
    assert strays == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413, 418, 500])
def test_framework_errors_answer_a_member_with_their_status(status: int) -> None:
    code = http_error_code(status)
    assert isinstance(code, ErrorCode)
    if status != 418:  # an unlisted 4xx (never raised today) falls back to bad_request
        assert ERROR_CODES[code].status == status


def test_openapi_declares_code_as_the_enum() -> None:
    spec = json.loads((REPO_ROOT / "openapi.json").read_text(encoding="utf-8"))
    schemas = spec["components"]["schemas"]
    assert schemas["Problem"]["properties"]["code"] == {"$ref": "#/components/schemas/ErrorCode"}
    assert schemas["ErrorCode"]["enum"] == [code.value for code in ErrorCode]
    for code, info in ERROR_CODES.items():
        assert f"| `{code.value}` | {info.status} |" in schemas["ErrorCode"]["description"]
