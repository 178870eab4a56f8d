"""Ordo, the curriculum scheduling optimizer service, as one import package.

The repository keeps ``app/`` (the HTTP service), ``solver/`` (pure optimization and learning),
``models/`` (the database tables) and ``migrations/`` (Alembic) at its top; here they are
``ordo_server.app``, ``ordo_server.solver``, ``ordo_server.models`` and
``ordo_server.migrations``. In a checkout they are links to those folders; the wheel maps the
folders under this package (``package-dir`` in ``pyproject.toml``).

``__version__`` is the one version of the server distribution, its API (``info.version`` in the
OpenAPI document) and the client distribution (``ordo_client.__version__``).
"""

__version__ = "0.2.0.dev0"
