"""Packaging: each distribution builds a wheel of one import package, the server's wheel
installs alone in a fresh virtual environment and runs, the server never imports the client,
and one version number serves both distributions and the API.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

import ordo_client
import ordo_server
from ordo_server.app.main import API_VERSION

REPO_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
SERVER_FOLDERS = dict(PYPROJECT["tool"]["setuptools"]["package-dir"])
# What the Dockerfile copies to build the server: the build must need nothing else.
SERVER_SOURCES = ("pyproject.toml", "README.md", "LICENSE", *SERVER_FOLDERS.values())


def _copy_sources(names: tuple[str, ...], destination: Path) -> Path:
    destination.mkdir()
    for name in names:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(
                source,
                destination / name,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
            )
        else:
            shutil.copy2(source, destination / name)
    return destination


def _build_wheel(source: Path, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("*.whl")
    return wheel


def _top_level_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name.split("/")[0] for name in archive.namelist()}


@pytest.fixture(scope="module")
def server_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("server-build")
    return _build_wheel(_copy_sources(SERVER_SOURCES, root / "src"), root / "dist")


def test_server_wheel_installs_one_import_package(server_wheel: Path) -> None:
    version = ordo_server.__version__
    assert server_wheel.name == f"ordo_server-{version}-py3-none-any.whl"
    assert _top_level_names(server_wheel) == {"ordo_server", f"ordo_server-{version}.dist-info"}


def test_server_wheel_maps_every_module_and_data_file(server_wheel: Path) -> None:
    expected = {"ordo_server/__init__.py"}
    for package, folder in SERVER_FOLDERS.items():
        if package == "ordo_server":
            continue
        prefix = package.replace(".", "/")
        for path in (REPO_ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                expected.add(f"{prefix}/{path.relative_to(REPO_ROOT / folder).as_posix()}")
    with zipfile.ZipFile(server_wheel) as archive:
        shipped = set(archive.namelist())
    assert sorted(expected - shipped) == []
    assert any(name.startswith("ordo_server/migrations/versions/") for name in shipped)
    assert "ordo_server/app/dashboard/index.html" in shipped


@pytest.mark.slow
def test_server_wheel_installs_alone_in_a_fresh_venv_and_runs(
    server_wheel: Path, tmp_path: Path
) -> None:
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    bin_dir = environment / "bin"
    subprocess.run(
        [bin_dir / "python", "-m", "pip", "install", "--quiet", server_wheel],
        check=True,
        capture_output=True,
    )
    probe = (
        "import importlib.util, json, ordo_server, ordo_server.app.main as main\n"
        "print(json.dumps({'file': ordo_server.__file__, 'api': main.API_VERSION,\n"
        "  'client': importlib.util.find_spec('ordo_client') is not None}))"
    )
    found = json.loads(
        subprocess.run(
            [bin_dir / "python", "-c", probe],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert Path(found["file"]).is_relative_to(environment)
    assert found == {**found, "api": ordo_server.__version__, "client": False}
    database = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    upgraded = subprocess.run(
        [bin_dir / "ordo-server", "db", "upgrade"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        env={"ORDO_DATABASE_URL": database, "PATH": str(bin_dir)},
    )
    assert "(at head)" in upgraded.stdout


def test_client_wheel_installs_one_import_package(tmp_path: Path) -> None:
    source = _copy_sources(("LICENSE",), tmp_path / "src")
    shutil.copytree(
        REPO_ROOT / "client",
        source / "client",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"),
    )
    wheel = _build_wheel(source / "client", tmp_path / "dist")
    version = ordo_client.__version__
    assert _top_level_names(wheel) == {"ordo_client", f"ordo_client-{version}.dist-info"}
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"ordo_client-{version}.dist-info/METADATA").decode()
        entry_points = archive.read(f"ordo_client-{version}.dist-info/entry_points.txt").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "ordo = ordo_client.cli:main" in entry_points


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
    return names


def test_the_server_never_imports_the_client() -> None:
    offenders = {
        str(path.relative_to(REPO_ROOT))
        for folder in SERVER_FOLDERS.values()
        for path in (REPO_ROOT / folder).rglob("*.py")
        if any(name.partition(".")[0] == "ordo_client" for name in _imported_modules(path))
    }
    assert offenders == set()


def test_one_version_for_both_distributions_and_the_api() -> None:
    spec = json.loads((REPO_ROOT / "openapi.json").read_text())
    assert ordo_server.__version__ == ordo_client.__version__ == API_VERSION
    assert spec["info"]["version"] == API_VERSION
    assert (
        f"## {ordo_server.__version__.removesuffix('.dev0')}"
        in (REPO_ROOT / "CHANGELOG.md").read_text()
    )


SOLVER_MAY_IMPORT = {"numpy", "scipy", "networkx", "ortools", "ordo_server"}


def test_the_solver_stays_pure() -> None:
    """solver/ imports the standard library, numpy, scipy, networkx, OR-Tools and itself."""
    offenders: dict[str, set[str]] = {}
    for path in (REPO_ROOT / "solver").rglob("*.py"):
        outside = {
            name
            for name in _imported_modules(path)
            if name.partition(".")[0] not in SOLVER_MAY_IMPORT | sys.stdlib_module_names
            or (name.startswith("ordo_server.") and not name.startswith("ordo_server.solver"))
        }
        if outside:
            offenders[path.name] = outside
    assert offenders == {}
