"""Write the OpenAPI spec (``make openapi``):
``python -m ordo_server.app.openapi_export openapi.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ordo_server.app.main import create_app
from ordo_server.app.settings import Settings


def render_openapi() -> str:
    """The spec as committed: indented JSON with a final newline.

    Routes and schemas do not depend on settings, so any environment gives the same text.
    """
    app = create_app(Settings(database_url="sqlite://"))
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """Write the spec to the path in ``argv[0]`` (stdout when absent)."""
    text = render_openapi()
    if not argv:
        sys.stdout.write(text)
        return 0
    Path(argv[0]).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
