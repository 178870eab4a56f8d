"""Several rows, of one table or several, in one statement: one JSON parameter a table, read by
``json_to_recordset`` on PostgreSQL; new rows and new values of existing ones alike.

An executemany in psycopg 3 runs in pipeline mode, which polls the socket with the GIL held
until the server answers: cheap alone, but under load it burnt the API process's CPU while
PostgreSQL, on the same cores, had yet to answer (the reports' evaluations and observations
were a fifth of an API process's time). One statement with one parameter is one round trip
whatever the row count (and the table count: the report's rows of four tables go together),
and its SQL is built once per set of tables and columns. The parameter is
the rows as one JSON text (pydantic-core's encoder): arrays, one per column, cost
psycopg's pure-Python list dumper a tenth of an API process's time under load
(``py-spy --gil``; docs/jobs.md). Updates of rows by key go into the same statement (a report's
run row): the ORM's unit of work spent as much Python on flushing one run's four columns as
the rest of the statement cost. SQLite keeps the executemany (in-process, no round trip to
save).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

from pydantic_core import to_json
from sqlalchemy import Insert, Table, TextClause, Update, bindparam, insert, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]


class Insertion(NamedTuple):
    """Rows for one table (dicts with the same keys: column names)."""

    table: Table
    rows: Sequence[Mapping[str, Any]]


class Change(NamedTuple):
    """New values for rows of one table (dicts with the same keys: ``key``, the column that
    finds each row, and the columns to set)."""

    table: Table
    key: str
    rows: Sequence[Mapping[str, Any]]


class Queueing(NamedTuple):
    """Rows inserted unless one conflicts on the partial unique index of ``index_columns``
    where ``index_where`` (SQL): an existing row stands for the new one (a coalesced job).
    PostgreSQL: each inserted row's ``announce`` column is sent on ``channel`` (NOTIFY,
    delivered at commit)."""

    table: Table
    rows: Sequence[Mapping[str, Any]]
    index_columns: tuple[str, ...]
    index_where: str
    channel: str
    announce: str


class Announcement(NamedTuple):
    """Payloads sent on PostgreSQL channel ``channel`` (NOTIFY, delivered at commit; nothing
    on SQLite)."""

    channel: str
    payloads: Sequence[str]


def write_together(
    session: Session,
    insertions: Sequence[Insertion],
    changes: Sequence[Change] = (),
    queueing: Queueing | None = None,
    announcement: Announcement | None = None,
) -> None:
    """Insert every insertion's rows and make every change, in one statement on PostgreSQL.

    Values: numbers, text, timestamps, booleans, ``None``, and for a JSON column what
    ``json.dumps`` takes with finite numbers only (PostgreSQL's ``json`` has no NaN, as before:
    SQLAlchemy's JSON type wrote the same text). Rows are inserted in the order given (an
    identity column numbers them so). On PostgreSQL every table's writes but the last are
    data-modifying ``WITH`` clauses of the last one's: one round trip whatever the tables; a
    foreign key from a later table to an earlier one is checked at the statement's end, when
    both are in. The clauses share one snapshot: a change must not touch rows inserted here,
    and no two writes may touch one row. ``queueing``'s rows go last (the statement's own
    ``SELECT pg_notify(...)`` of what it inserted on PostgreSQL), or ``announcement``'s
    payloads (not both).
    """
    present = [insertion for insertion in insertions if insertion.rows]
    changed = [change for change in changes if change.rows]
    queued = queueing if queueing is not None and queueing.rows else None
    announced = announcement if announcement is not None and announcement.payloads else None
    if queued is not None and announced is not None:
        raise ValueError("a queueing or an announcement, not both")
    if not present and not changed and queued is None and announced is None:
        return
    if session.get_bind().dialect.name != "postgresql":
        for table, rows in present:
            session.execute(_insert(table), list(rows))
        for table, key, rows in changed:
            _apply_change(session, table, key, rows)
        if queued is not None:
            _queue_on_sqlite(session, queued)
        return
    shape = (
        tuple((table, tuple(rows[0])) for table, rows in present),
        tuple((table, key, tuple(rows[0])) for table, key, rows in changed),
        None if queued is None else _queue_shape(queued),
        None if announced is None else announced.channel,
    )
    rows_of = [rows for _, rows in present] + [rows for _, _, rows in changed]
    if queued is not None:
        rows_of.append(queued.rows)
    parameters = {f"rows{i}": rows_json(rows) for i, rows in enumerate(rows_of)}
    if announced is not None:
        parameters[f"rows{len(rows_of)}"] = json.dumps(list(announced.payloads))
    session.execute(_combined_write(*shape), parameters)


class _QueueShape(NamedTuple):
    """A queueing's statement without its rows (hashable: the statement is built once)."""

    columns: tuple[str, ...]
    index_columns: tuple[str, ...]
    index_where: str
    channel: str
    announce: str
    table: Table


def _queue_shape(queueing: Queueing) -> _QueueShape:
    return _QueueShape(
        columns=tuple(queueing.rows[0]),
        index_columns=queueing.index_columns,
        index_where=queueing.index_where,
        channel=queueing.channel,
        announce=queueing.announce,
        table=queueing.table,
    )


def _queue_on_sqlite(session: Session, queueing: Queueing) -> None:
    """SQLite's insert of ``queueing``'s rows, a conflicting one skipped (no NOTIFY there)."""
    statement = sqlite_insert(queueing.table).on_conflict_do_nothing(
        index_elements=list(queueing.index_columns), index_where=text(queueing.index_where)
    )
    session.execute(statement, list(queueing.rows))


def _apply_change(
    session: Session, table: Table, key: str, rows: Sequence[Mapping[str, Any]]
) -> None:
    """SQLite's executemany of one change (a bind parameter may not be named as a column)."""
    columns = [name for name in rows[0] if name != key]
    bound = [{f"new_{name}": value for name, value in row.items()} for row in rows]
    session.execute(_update(table, key, tuple(columns)), bound)


def rows_json(rows: Sequence[Mapping[str, Any]]) -> str:
    """``rows`` as one JSON array of objects: timestamps in ISO 8601, a scalar column's
    non-finite floats as the strings PostgreSQL reads them from (``'NaN'``, ``'Infinity'``,
    ``'-Infinity'``).

    Encoded by pydantic-core (Rust; a fourth of the standard library's time for a report's
    rows, whose encoding was 8 % of an API process's GIL time under the plain-report load).
    Its non-finite floats come out as bare ``NaN`` / ``Infinity``: text that holds either word
    (a non-finite float, or rarely a string that says it) takes the standard library's path,
    which spells a scalar column's and refuses a JSON column's.
    """
    encoded = to_json(rows).decode()
    if "NaN" not in encoded and "Infinity" not in encoded:
        return encoded
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
def _update(table: Table, key: str, columns: tuple[str, ...]) -> Update:
    """``UPDATE table SET column = :new_column ... WHERE key = :new_key``, built once."""
    values: dict[str, Any] = {name: bindparam(f"new_{name}") for name in columns}
    return update(table).where(table.c[key] == bindparam(f"new_{key}")).values(values)


@cache
def _combined_write(
    inserts: tuple[tuple[Table, tuple[str, ...]], ...],
    changes: tuple[tuple[Table, str, tuple[str, ...]], ...],
    queueing: _QueueShape | None,
    channel: str | None,
) -> TextClause:
    """The statement of :func:`write_together` for tables and column sets ``inserts`` and
    ``changes``, a queueing shaped as ``queueing`` and an announcement on ``channel``;
    parameter ``rows{i}`` holds the rows of the ``i``-th of them (inserts, changes, the
    queueing or the announcement's payloads)."""
    writes = [
        _recordset_insert(table, columns, f"rows{i}") for i, (table, columns) in enumerate(inserts)
    ]
    writes += [
        _recordset_update(table, key, columns, f"rows{len(inserts) + i}")
        for i, (table, key, columns) in enumerate(changes)
    ]
    if queueing is not None:
        index = ", ".join(f'"{name}"' for name in queueing.index_columns)
        writes.append(
            f"{_recordset_insert(queueing.table, queueing.columns, f'rows{len(writes)}')} "
            f"ON CONFLICT ({index}) WHERE {queueing.index_where} DO NOTHING "
            f'RETURNING "{queueing.announce}"'
        )
        writes.append(
            f"SELECT pg_notify('{queueing.channel}', \"{queueing.announce}\") "
            f"FROM written_{len(writes) - 1}"
        )
    if channel is not None:
        writes.append(
            f"SELECT pg_notify('{channel}', payload) "
            f"FROM json_array_elements_text(CAST(:rows{len(writes)} AS json)) AS payload"
        )
    clauses = ", ".join(f"written_{i} AS ({sql})" for i, sql in enumerate(writes[:-1]))
    return text(f"WITH {clauses} {writes[-1]}" if clauses else writes[-1])


def _recordset(table: Table, columns: tuple[str, ...], parameter: str) -> str:
    """``json_to_recordset(:parameter) AS (column type, ...)``: the rows of ``parameter``."""
    record = ", ".join(f'"{name}" {_column_type(table, name)}' for name in columns)
    return f"json_to_recordset(CAST(:{parameter} AS json)) AS ({record})"


def _recordset_update(table: Table, key: str, columns: tuple[str, ...], parameter: str) -> str:
    """``UPDATE table SET column = r.column ... FROM json_to_recordset(:parameter) AS r(...)
    WHERE table.key = r.key AND table.key = ANY(the keys of :parameter)``.

    The second condition finds the rows by the key's index: PostgreSQL takes any
    ``json_to_recordset`` for 100 rows, and a join of 100 rows with the table was planned as a
    full scan of it once the table held a few hundred rows (a report's update of its one run
    read all of ``ordo_runs``: 4.5 ms at 11,000 runs, growing with every run kept). The keys as
    an array whose length the planner cannot know are taken for 10, found by index whatever
    the table's size.
    """
    assignments = ", ".join(f'"{name}" = r."{name}"' for name in columns if name != key)
    keys = (
        f"ARRAY(SELECT CAST(element ->> '{key}' AS {_column_type(table, key)}) "
        f"FROM json_array_elements(CAST(:{parameter} AS json)) AS element)"
    )
    return (
        f'UPDATE "{table.name}" SET {assignments} FROM ROWS FROM '
        f'({_recordset(table, columns, parameter)}) AS r WHERE "{table.name}"."{key}" = r."{key}" '
        f'AND "{table.name}"."{key}" = ANY({keys})'
    )


def _recordset_insert(table: Table, columns: tuple[str, ...], parameter: str) -> str:
    """``INSERT INTO table (columns) SELECT columns FROM json_to_recordset(:parameter) AS
    r(column type, ...)``, in the rows' order."""
    names = ", ".join(f'"{name}"' for name in columns)
    return (
        f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM ROWS FROM '
        f"({_recordset(table, columns, parameter)}) "
        f"WITH ORDINALITY AS r({names}, position) ORDER BY r.position"
    )


def _column_type(table: Table, column: str) -> str:
    """The PostgreSQL type of ``column`` (``DOUBLE PRECISION`` for a float column)."""
    return str(table.c[column].type.compile(dialect=_POSTGRESQL))
