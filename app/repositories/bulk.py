"""Several rows in one INSERT statement: ``unnest`` of one array per column on PostgreSQL.

An executemany in psycopg 3 runs in pipeline mode, which polls the socket with the GIL held
until the server answers: cheap alone, but under load it burnt the API process's CPU while
PostgreSQL, on the same cores, had yet to answer (the reports' evaluations and observations
were a fifth of an API process's time). One statement with one array parameter per column is
one round trip whatever the row count, and its SQL is built once per table and column set.
SQLite keeps the executemany (in-process, no round trip to save).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from sqlalchemy import Table, TextClause, insert, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]


def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys: column names) into ``table``.

    For scalar columns (numbers, text, timestamps, booleans; ``None`` allowed): a JSON column's
    values would need wrapping to travel as an array (the reports and deltas, with JSON, are
    inserted as they are).
    """
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.execute(insert(table), list(rows))
        return
    columns = tuple(rows[0])
    parameters = {f"c{i}": [row[name] for row in rows] for i, name in enumerate(columns)}
    session.execute(_unnest_insert(table, columns), parameters)


@cache
def _unnest_insert(table: Table, columns: tuple[str, ...]) -> TextClause:
    """``INSERT INTO table (columns) SELECT * FROM unnest(CAST(:c0 AS type[]), ...)``."""
    arrays = ", ".join(
        f"CAST(:c{i} AS {_array_type(table, name)})" for i, name in enumerate(columns)
    )
    names = ", ".join(f'"{name}"' for name in columns)
    return text(f'INSERT INTO "{table.name}" ({names}) SELECT * FROM unnest({arrays})')


def _array_type(table: Table, column: str) -> str:
    """The PostgreSQL array type of ``column`` (``DOUBLE PRECISION[]`` for a float column)."""
    column_type = table.c[column].type.compile(dialect=_POSTGRESQL)
    return f"{column_type}[]"
