"""Calibration: predicted against observed final utilities of finished runs."""

from __future__ import annotations

from pydantic import Field

from app.schemas.common import OutputModel


class TaskCalibration(OutputModel):
    """One task of one run: observed final utility and the two predictions of it."""

    task: str
    observed: float = Field(description="Utility in the run's last report.")
    predicted_initial: float | None = Field(description="By the plan the run started with.")
    predicted_final: float | None = Field(description="By the run's last plan.")
    inside_initial: bool | None = Field(
        default=None, description="Observed within the first plan's 95 % interval."
    )
    inside_final: bool | None = Field(
        default=None, description="Observed within the last plan's 95 % interval."
    )


class RunCalibration(OutputModel):
    """One completed run."""

    run_id: str
    initial_schedule_id: str | None
    final_schedule_id: str | None
    stages_reported: int
    tasks: list[TaskCalibration]
    mae_initial: float | None = Field(description="Mean absolute error of the first plan.")
    mae_final: float | None = Field(description="Mean absolute error of the last plan.")
    coverage_initial: float | None = Field(
        default=None, description="Share of tasks inside the first plan's 95 % interval."
    )
    coverage_final: float | None = Field(
        default=None, description="Share of tasks inside the last plan's 95 % interval."
    )


class CalibrationRead(OutputModel):
    """Calibration over the most recent completed runs (utility units)."""

    runs: list[RunCalibration]
    count: int = Field(description="Task predictions compared (over all runs).")
    mae_initial: float | None = Field(description="Over every task of every run listed.")
    mae_final: float | None
    coverage_initial: float | None = Field(
        default=None,
        description="Share of observed final utilities inside the first plans' 95 % intervals "
        "(of the true utility: evaluation noise lowers it a little).",
    )
    coverage_final: float | None = Field(
        default=None, description="The same for the runs' last plans."
    )


class RecomputeRead(OutputModel):
    """The outcome of recomputing the statistics from the raw observations."""

    observations: int
    cells: int = Field(description="Effect cells with observations.")
    changed_cells: int = Field(
        description="Cells whose stored statistics differed from the recomputation."
    )
    estimates_version: int
