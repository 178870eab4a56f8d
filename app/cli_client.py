"""Client-side ``ordo`` commands: they talk to a running server through ``ordo_client``."""

from __future__ import annotations

import typer


def register_client_commands(cli: typer.Typer) -> None:
    """Add the client commands (projects, tasks, priors, ...) to the ``ordo`` CLI."""
