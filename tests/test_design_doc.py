"""docs/design.md is the design the code cites: every ``docs/design.md §N`` names a section.

Docstrings, schema descriptions (and so the OpenAPI spec) and tests point at its numbered
sections; a renumbered or removed section, or a citation of one that never existed, fails here.
The layout section must name every module of the solver package, so that a new module is placed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DESIGN = REPO_ROOT / "docs" / "design.md"
CITATION = re.compile(r"docs/design\.md §(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)*)\. \S", re.MULTILINE)
SCANNED_SUFFIXES = {".py", ".md", ".json", ".toml", ".yml", ".yaml", ".js", ".html", ".sh"}
SKIPPED_DIRS = {"build", "dist", "node_modules", "__pycache__"}


def _sections() -> list[str]:
    return HEADING.findall(DESIGN.read_text(encoding="utf-8"))


def _scanned_files() -> list[Path]:
    files = []
    for path in REPO_ROOT.rglob("*"):
        parts = path.relative_to(REPO_ROOT).parts
        hidden = any(part.startswith(".") for part in parts)
        skipped = any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in parts)
        if path.is_file() and path.suffix in SCANNED_SUFFIXES and not hidden and not skipped:
            files.append(path)
    return files


def _citations() -> list[tuple[str, str]]:
    """``(file:line, section)`` of every citation outside the design itself."""
    found = []
    for path in _scanned_files():
        if path == DESIGN:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in CITATION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{path.relative_to(REPO_ROOT)}:{line}", match.group(1)))
    return found


def test_top_level_sections_are_numbered_one_to_n() -> None:
    top = [int(section) for section in _sections() if "." not in section]

    assert top == list(range(1, len(top) + 1))
    assert len(top) >= 10


def test_every_citation_names_an_existing_section() -> None:
    sections = set(_sections())
    citations = _citations()

    assert len(citations) >= 15, "the code cites the design; did the scan miss it?"
    assert [(where, section) for where, section in citations if section not in sections] == []


@pytest.mark.parametrize("needle", ["DESIGN §", "DESIGN's"])
def test_nothing_cites_the_design_document_that_is_not_in_the_repository(needle: str) -> None:
    stale = [
        str(path.relative_to(REPO_ROOT))
        for path in _scanned_files()
        if path != Path(__file__).resolve()
        and needle in path.read_text(encoding="utf-8", errors="replace")
    ]

    assert stale == []


def test_layout_names_every_solver_module() -> None:
    text = DESIGN.read_text(encoding="utf-8")
    layout = text[text.index("Package layout") :]
    modules = sorted(
        path.stem for path in (REPO_ROOT / "solver").glob("*.py") if path.stem != "__init__"
    )

    assert [module for module in modules if not re.search(rf"\b{module}\b", layout)] == []
