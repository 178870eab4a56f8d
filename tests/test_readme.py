"""The README's five-minute tour, run as written against a real server on a fresh database.

The tour's ``sh`` blocks are extracted in order and run in one ``bash`` process with
``set -euo pipefail``, as a reader pasting them into one terminal would. Two blocks are the
reader's side of the setup and are replaced by this test: the one starting the server (the test
starts its own, on a freshly migrated SQLite file) and the one exporting ``ORDO`` and
``ADMIN_TOKEN`` (the test exports them). Then the figures and facts the prose states are checked
against what the blocks printed, so the story cannot drift from what the server does.

Needs ``bash``, ``curl`` and ``jq``: skipped without them, except under ``CI`` where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import REPO_ROOT, migrated_sqlite_url, run_live_server

README = REPO_ROOT / "README.md"
TOUR_HEADING = "## A five-minute tour"
SERVER_BLOCK_MARK = "make run"
EXPORT_BLOCK = "export ORDO=http://127.0.0.1:8000 ADMIN_TOKEN=<the token above>\n"
MARKER = "@@ordo-readme-block "
TOUR_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class TourBlock:
    """One ``sh`` block of the tour and what it printed."""

    source: str
    output: str = ""

    def json_values(self) -> list[object]:
        """Every JSON document the block printed, in order (other lines, such as CSV, skipped)."""
        return list(_json_documents(self.output))


def _json_documents(text: str) -> Iterator[object]:
    """The JSON values in ``text``, one after the other; lines that are not JSON are skipped."""
    decoder = json.JSONDecoder()
    position = 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            newline = text.find("\n", position)
            position = len(text) if newline < 0 else newline + 1
            continue
        yield value


def tour_text() -> str:
    """The README's tour section, up to the next second-level heading."""
    text = README.read_text(encoding="utf-8")
    start = text.index(TOUR_HEADING)
    end = text.find("\n## ", start + len(TOUR_HEADING))
    return text[start : end if end >= 0 else len(text)]


def tour_blocks() -> list[str]:
    """The tour's ``sh`` blocks in order, without the reader's setup (see the module docstring)."""
    blocks = re.findall(r"^```sh\n(.*?)^```$", tour_text(), flags=re.DOTALL | re.MULTILINE)
    assert any(SERVER_BLOCK_MARK in block for block in blocks), "the server block is gone"
    assert EXPORT_BLOCK in blocks, "the block exporting ORDO and ADMIN_TOKEN changed"
    return [block for block in blocks if SERVER_BLOCK_MARK not in block and block != EXPORT_BLOCK]


def run_tour(base_url: str, admin_token: str) -> list[TourBlock]:
    """Run every block in one bash process; each block's output is told apart by a marker."""
    blocks = tour_blocks()
    script = "set -euo pipefail\n" + "".join(
        f"echo '{MARKER}{index}'\n{block}\n" for index, block in enumerate(blocks)
    )
    result = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": os.environ["PATH"], "ORDO": base_url, "ADMIN_TOKEN": admin_token},
        capture_output=True,
        text=True,
        timeout=TOUR_TIMEOUT_S,
        check=False,
    )
    outputs = re.split(rf"^{MARKER}(\d+)\n", result.stdout, flags=re.MULTILINE)
    printed = {int(index): text for index, text in zip(outputs[1::2], outputs[2::2], strict=True)}
    assert result.returncode == 0, (
        f"the tour stopped with exit {result.returncode} in block {max(printed, default=0)}:\n"
        f"{blocks[max(printed, default=0)]}\nstderr:\n{result.stderr[-4000:]}"
    )
    return [TourBlock(block, printed.get(index, "")) for index, block in enumerate(blocks)]


def block_with(blocks: list[TourBlock], fragment: str) -> TourBlock:
    """The one block whose source contains ``fragment``."""
    found = [block for block in blocks if fragment in block.source]
    assert len(found) == 1, f"{len(found)} tour blocks contain {fragment!r}"
    return found[0]


def require_tools() -> None:
    """Skip (fail under CI) without the tools the tour uses."""
    missing = [tool for tool in ("bash", "curl", "jq") if shutil.which(tool) is None]
    if missing:
        message = f"the README tour needs {', '.join(missing)} on PATH"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> list[TourBlock]:
    """The tour's blocks, run against a real server on a fresh, migrated SQLite file."""
    require_tools()
    url = migrated_sqlite_url(tmp_path_factory.mktemp("readme") / "ordo.sqlite")
    with run_live_server(url) as server:
        assert len(server.admin_token) >= 32
        return run_tour(server.base_url, server.admin_token)


def prose() -> str:
    """The tour's text with line breaks folded, so sentences match across lines."""
    return " ".join(tour_text().split())


def test_the_tour_runs_to_its_end(tour: list[TourBlock]) -> None:
    assert len(tour) >= 10
    assert tour[-1].json_values(), "the last block printed nothing"


def test_the_solved_schedule_is_the_one_the_prose_names(tour: list[TourBlock]) -> None:
    (plan,) = block_with(tour, '"label": "first plan"').json_values()
    assert isinstance(plan, dict)
    assert plan["order"] == ["math", "code", "poetry"]
    assert plan["status"] == "optimal"
    assert plan["bound"] == pytest.approx(plan["objective"])
    assert "The answer is math, code, poetry," in prose()
    assert f"with an objective of {plan['objective']:.2f}, proven optimal" in prose()


def test_pinning_and_maximin_match_the_prose(tour: list[TourBlock]) -> None:
    (plan,) = block_with(tour, '"label": "first plan"').json_values()
    pinned, maximin = block_with(tour, '"objective": "maximin"').json_values()
    assert isinstance(plan, dict)
    assert isinstance(pinned, dict)
    assert isinstance(maximin, dict)
    assert pinned["order"][0] == "poetry"
    cost = plan["objective"] - pinned["objective"]
    assert cost > 0
    assert f"Pinning poetry first costs {cost:.2f}." in prose()
    assert maximin["order"][0] == "code"
    assert "and puts code first" in prose()


def test_the_run_asks_for_the_task_the_prose_names(tour: list[TourBlock]) -> None:
    (started,) = block_with(tour, "STARTED=$(curl").json_values()
    assert isinstance(started, dict)
    assert (started["status"], started["strategy"]) == ("active", "thompson")
    assert started["level_model"] == "run_model"
    (baseline_next, baseline) = block_with(tour, "/reports/0").json_values()
    assert baseline_next == {"stage": 0, "task": None}
    assert isinstance(baseline, dict)
    assert baseline["next"]["stage"] == 1
    stage_1 = block_with(tour, 'echo "stage 1 trains $TASK"')
    (first_task,) = re.findall(r"^stage 1 trains (\w+)$", stage_1.output, flags=re.MULTILINE)
    assert first_task == baseline["next"]["task"]
    assert f"this project's `job-1` asks for {first_task} first on any server" in prose()
    (accepted,) = stage_1.json_values()
    assert isinstance(accepted, dict)
    assert accepted["plan_pending"] is True
    assert f"The stage-1 report added {accepted['observations']} observations" in prose()


def test_the_run_completes_and_its_replan_is_in_the_history(tour: list[TourBlock]) -> None:
    *reports, completed = block_with(tour, "/complete").json_values()
    assert reports == [
        {"report": 2, "next": reports[0]["next"]},  # type: ignore[index]
        {"report": 3, "next": {"done": True, "stage": None, "task": None}},
    ]
    assert isinstance(completed, dict)
    assert completed["status"] == "completed"
    assert sorted(completed["order"]) == ["code", "math", "poetry"]
    history = block_with(tour, '/schedules" -H').json_values()
    run_plans = [item for item in history if isinstance(item, dict) and item["run_id"]]
    assert [plan["parent_id"] is None for plan in run_plans] == [False, True]
    assert len(history) == 3 + len(run_plans)


def test_calibration_reads_the_completed_run(tour: list[TourBlock]) -> None:
    (calibration,) = block_with(tour, "/calibration").json_values()
    assert isinstance(calibration, dict)
    assert calibration["stages_reported"] == 3
    for share in (calibration["coverage_initial"], calibration["coverage_final"]):
        assert 0.0 <= share <= 1.0
    assert "coverage of the plans' 95 % intervals" in prose()


def test_a_broken_block_fails_the_tour() -> None:
    require_tools()
    with pytest.raises(AssertionError, match="exit"):
        run_tour("http://127.0.0.1:9", "x" * 32)  # nothing listens on the discard port
