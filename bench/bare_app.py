"""The yardstick of ``bench/load.py``: a bare FastAPI route that parses a report body.

Same body model as the service's report route (:class:`app.schemas.report.ReportCreate`), no
database, no authentication: what the framework alone costs per request on this machine.
"""

from __future__ import annotations

from fastapi import FastAPI

from ordo_server.app.schemas.report import ReportCreate

app = FastAPI()


@app.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness."""
    return {"status": "ok"}


@app.put("/bare/runs/{run_id}/reports/{stage}")
def put_report(run_id: str, stage: int, body: ReportCreate) -> dict[str, object]:
    """Parse the body and answer a small JSON."""
    return {"run_id": run_id, "stage": stage, "evaluations": len(body.evaluations)}
