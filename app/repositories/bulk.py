"""Several rows, of one table or several, in one INSERT statement: one JSON parameter a table,
read by ``json_to_recordset`` on PostgreSQL.

An executemany in psycopg 3 runs in pipeline mode, which polls the socket with the GIL held
until the server answers: cheap alone, but under load it burnt the API process's CPU while
PostgreSQL, on the same cores, had yet to answer (the reports' evaluations and observations
were a fifth of an API process's time). One statement with one parameter is one round trip
whatever the row count (and the table count: the report's rows of four tables go together),
and its SQL is built once per set of tables and columns. The parameter is
the rows as one JSON text (the standard library's C encoder): arrays, one per column, cost
psycopg's pure-Python list dumper a tenth of an API process's time under load
(``py-spy --gil``; docs/jobs.md). SQLite keeps the executemany (in-process, no round trip to
save).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import Insert, Table, TextClause, insert, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]


class Insertion(NamedTuple):
    """Rows for one table (dicts with the same keys: column names)."""

    table: Table
    rows: Sequence[Mapping[str, Any]]


def insert_together(session: Session, insertions: Sequence[Insertion]) -> None:
    """Insert every insertion's rows, in one statement on PostgreSQL.

    Values: numbers, text, timestamps, booleans, ``None``, and for a JSON column what
    ``json.dumps`` takes with finite numbers only (PostgreSQL's ``json`` has no NaN, as before:
    SQLAlchemy's JSON type wrote the same text). Rows are inserted in the order given (an
    identity column numbers them so). On PostgreSQL the tables before the last are written by
    data-modifying ``WITH`` clauses of the last one's ``INSERT``: one round trip whatever the
    tables; a foreign key from a later table to an earlier one is checked at the statement's
    end, when both are in.
    """
    present = [insertion for insertion in insertions if insertion.rows]
    if not present:
        return
    if session.get_bind().dialect.name != "postgresql":
        for table, rows in present:
            session.execute(_insert(table), list(rows))
        return
    shape = tuple((table, tuple(rows[0])) for table, rows in present)
    parameters = {f"rows{i}": rows_json(rows) for i, (_, rows) in enumerate(present)}
    session.execute(_combined_insert(shape), parameters)


def rows_json(rows: Sequence[Mapping[str, Any]]) -> str:
    """``rows`` as one JSON array of objects: timestamps in ISO 8601, a scalar column's
    non-finite floats as the strings PostgreSQL reads them from (``'NaN'``, ``'Infinity'``,
    ``'-Infinity'``)."""
    try:
        return json.dumps(rows, default=_iso, allow_nan=False, separators=(",", ":"))
    except ValueError:  # a non-finite float: rare, so the common path does not look for one
        spelled = [{name: _spelled(value) for name, value in row.items()} for row in rows]
        return json.dumps(spelled, default=_iso, separators=(",", ":"))


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a scalar column value")


def _spelled(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


@cache
def _insert(table: Table) -> Insert:
    """``INSERT INTO table``, built once: a statement built per call costs its cache key each
    time."""
    return insert(table)


@cache
def _combined_insert(shape: tuple[tuple[Table, tuple[str, ...]], ...]) -> TextClause:
    """The INSERT of :func:`insert_together` for tables and column sets ``shape``; parameter
    ``rows{i}`` holds the rows of the ``i``-th."""
    inserts = [
        _recordset_insert(table, columns, f"rows{i}") for i, (table, columns) in enumerate(shape)
    ]
    clauses = ", ".join(f"written_{i} AS ({sql})" for i, sql in enumerate(inserts[:-1]))
    return text(f"WITH {clauses} {inserts[-1]}" if clauses else inserts[-1])


def _recordset_insert(table: Table, columns: tuple[str, ...], parameter: str) -> str:
    """``INSERT INTO table (columns) SELECT columns FROM json_to_recordset(:parameter) AS
    r(column type, ...)``, in the rows' order."""
    names = ", ".join(f'"{name}"' for name in columns)
    record = ", ".join(f'"{name}" {_column_type(table, name)}' for name in columns)
    return (
        f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM ROWS FROM '
        f"(json_to_recordset(CAST(:{parameter} AS json)) AS ({record})) "
        f"WITH ORDINALITY AS r({names}, position) ORDER BY r.position"
    )


def _column_type(table: Table, column: str) -> str:
    """The PostgreSQL type of ``column`` (``DOUBLE PRECISION`` for a float column)."""
    return str(table.c[column].type.compile(dialect=_POSTGRESQL))
