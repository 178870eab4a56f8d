"""Calibration: predicted against observed final utilities of finished runs."""

from __future__ import annotations

from pydantic import ConfigDict, Field, JsonValue

from ordo_server.app.schemas.common import OutputModel


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


_CALIBRATION_READ_EXAMPLE: dict[str, JsonValue] = {
    "runs": [
        {
            "run_id": "82862022-93c8-4f8e-b395-a8af086e791b",
            "initial_schedule_id": "dd6dbc9e-6d8b-4e3a-9284-2117b140c1c8",
            "final_schedule_id": "b5338263-fb8b-4f23-b95e-519c51717fe6",
            "stages_reported": 3,
            "tasks": [
                {
                    "task": "math",
                    "observed": 0.62,
                    "predicted_initial": 0.58,
                    "predicted_final": 0.61,
                    "inside_initial": True,
                    "inside_final": True,
                },
                {
                    "task": "code",
                    "observed": 0.41,
                    "predicted_initial": 0.36,
                    "predicted_final": 0.4,
                    "inside_initial": True,
                    "inside_final": True,
                },
                {
                    "task": "poetry",
                    "observed": 0.47,
                    "predicted_initial": 0.55,
                    "predicted_final": 0.49,
                    "inside_initial": False,
                    "inside_final": True,
                },
            ],
            "mae_initial": 0.0567,
            "mae_final": 0.0133,
            "coverage_initial": 0.6667,
            "coverage_final": 1.0,
        }
    ],
    "count": 3,
    "mae_initial": 0.0567,
    "mae_final": 0.0133,
    "coverage_initial": 0.6667,
    "coverage_final": 1.0,
}


class CalibrationRead(OutputModel):
    """Calibration over the most recent completed runs (utility units)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_CALIBRATION_READ_EXAMPLE]})

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


_RECOMPUTE_READ_EXAMPLE: dict[str, JsonValue] = {
    "observations": 12,
    "cells": 12,
    "changed_cells": 0,
    "estimates_version": 5,
}


class RecomputeRead(OutputModel):
    """The outcome of recomputing the statistics from the raw observations."""

    model_config = ConfigDict(json_schema_extra={"examples": [_RECOMPUTE_READ_EXAMPLE]})

    observations: int
    cells: int = Field(description="Effect cells with observations.")
    changed_cells: int = Field(
        description="Cells whose stored statistics differed from the recomputation."
    )
    estimates_version: int
