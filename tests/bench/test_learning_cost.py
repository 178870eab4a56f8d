"""Smoke test of ``bench/learning_cost.py``: the core timing function on a tiny history."""

from __future__ import annotations

from bench.learning_cost import CALLS, format_row, make_history, target_lines, time_size


def test_time_size_small_history_times_every_call_and_plans_a_permutation() -> None:
    result = time_size(5, 3, 1)
    assert set(result.times_ms) == set(CALLS)
    assert all(len(times) == 1 and times[0] > 0 for times in result.times_ms.values())
    assert all(peak > 0 for peak in result.peak_mb.values())
    assert sorted(result.plan) == list(range(5))
    assert sorted(result.replan) == list(range(5))
    prefix = make_history(5, 3, 0).current.trained
    assert tuple(result.replan[: len(prefix)]) == prefix
    assert format_row(result).split()[:2] == ["5", "3"]
    assert target_lines([result]) == []
