"""The examples run in the suite, kept short: the digits trainer and the RL stage-loop sketch."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def in_process_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples start their own server when ORDO_URL is unset."""
    monkeypatch.delenv("ORDO_URL", raising=False)
    monkeypatch.delenv("ORDO_TOKEN", raising=False)


def test_digits_trainer_reports_through_ordo_and_measures_forgetting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digits = load_example("digits_curriculum")
    out = tmp_path / "summary.json"
    argv = ["--runs", "2", "--random-runs", "2", "--epochs", "1", "--json", str(out)]
    summary = digits.main(argv)
    printed = capsys.readouterr().out
    assert "BWT (forgetting < 0)" in printed
    assert "Ordo (last of 2 runs)" in printed
    assert "random order (2 runs)" in printed
    written = json.loads(out.read_text())
    assert written["ordo_runs"] == 2
    assert written["random_runs"] == 2
    assert sorted(written["ordo_order"]) == ["d0v1", "d2v3", "d4v5", "d6v7", "d8v9"]
    assert -1.0 <= written["ordo_bwt"] <= 1.0
    assert 0.5 < written["ordo_final_mean"] <= 1.0
    assert written["random_bwt"] == pytest.approx(summary.random_bwt)


def test_digits_example_reproduces_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    digits = load_example("digits_curriculum")
    argv = ["--runs", "2", "--random-runs", "1", "--epochs", "1", "--seed", "4"]
    first, second = digits.main(argv), digits.main(argv)
    assert first == second


def test_digits_forgetting_is_measured_not_assumed() -> None:
    digits = load_example("digits_curriculum")
    data = digits.load_tasks(0)
    results = [digits.random_run(data, order_seed=1000 + s, seed=0, epochs=1) for s in range(3)]
    assert any(r.bwt < 0 for r in results)  # later pairs erode earlier ones
    assert len({tuple(r.order) for r in results}) == 3


def test_rl_stage_loop_sketch_runs(capsys: pytest.CaptureFixture[str]) -> None:
    sketch = load_example("rl_stage_loop")
    order = sketch.main(["--seed", "3"])
    assert sorted(order) == sorted(task["key"] for task in sketch.TASKS)
    printed = capsys.readouterr().out
    assert "stage 0: trained -;" in printed
    assert "next (done)" in printed
