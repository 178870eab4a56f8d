"""Stored stds below the API's new floor are raised to it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 20:30:00.000000

The API now refuses a std below 1e-6 (``app.schemas.estimate.MIN_STD``): a denormal one squared
to a variance of zero and made the project's every solve fail. Values stored before that would
fail the settings' validation on every request of their project (``authorize_project`` reads
them through ``ProjectSettings``), and a zero prior variance would fail its solves: a project's
``default_prior_std`` and ``default_noise_std`` below 1e-6 become 1e-6, and an imported prior
variance below 1e-12 becomes 1e-12. No schema change. The downgrade keeps the raised values (the
smaller ones cannot be told apart afterwards, and the older code accepts these).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MIN_STD = 1e-6
STD_SETTINGS = ("default_prior_std", "default_noise_std")

_projects = sa.table("ordo_projects", sa.column("id", sa.String), sa.column("settings", sa.JSON))
_estimates = sa.table("ordo_estimates", sa.column("prior_var", sa.Float))


def upgrade() -> None:
    """Apply this revision."""
    connection = op.get_bind()
    for project_id, settings in connection.execute(sa.select(_projects.c.id, _projects.c.settings)):
        raised = _raised(settings or {})
        if raised != settings:
            connection.execute(
                _projects.update().where(_projects.c.id == project_id).values(settings=raised)
            )
    floor = MIN_STD**2
    connection.execute(
        _estimates.update().where(_estimates.c.prior_var < floor).values(prior_var=floor)
    )


def downgrade() -> None:
    """Revert this revision (nothing to undo: see the module docstring)."""


def _raised(settings: dict[str, object]) -> dict[str, object]:
    """``settings`` with each std setting below the floor raised to it."""
    out = dict(settings)
    for name in STD_SETTINGS:
        value = out.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < MIN_STD:
            out[name] = MIN_STD
    return out
