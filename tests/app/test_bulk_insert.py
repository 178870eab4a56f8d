"""Several rows in one statement (``app.repositories.bulk``): every value comes back as it went
in, inserted or changed, on SQLite (executemany) and PostgreSQL (one JSON parameter a table,
read by ``json_to_recordset``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ordo_server.app.repositories.bulk import (
    Announcement,
    Change,
    Insertion,
    Queueing,
    rows_json,
    write_together,
)
from tests.conftest import postgres_database, require_postgres

_METADATA = MetaData()
_ROWS = Table(
    "test_bulk_rows",
    _METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("label", String(64)),
    Column("value", Float),
    Column("flag", Boolean),
    Column("at", DateTime(timezone=True)),
    Column("doc", JSON),
)

_PARENTS = Table(
    "test_bulk_parents", _METADATA, Column("id", String(36), primary_key=True), Column("n", Integer)
)
_QUEUE = Table(
    "test_bulk_queue",
    _METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(36), nullable=False),
    Column("status", String(16), nullable=False),
    Column("doc", JSON),
    Index(
        "uq_test_bulk_queue_waiting",
        "key",
        unique=True,
        postgresql_where=text("status = 'todo'"),
        sqlite_where=text("status = 'todo'"),
    ),
)
_CHANNEL = "test_bulk_queue"

_CHILDREN = Table(
    "test_bulk_children",
    _METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("parent_id", String(36), ForeignKey("test_bulk_parents.id"), nullable=False),
    Column("value", Float),
)

AWKWARD_TEXT = ['quote " and \\ backslash', "tab\tnew\nline", "accents é ß 漢字 😀", "{1,2}", ""]


def _rows() -> list[dict[str, object]]:
    at = datetime(2026, 12, 6, 18, 30, 1, 123456, tzinfo=UTC)
    values = [0.1 + 0.2, -1e-300, 1e308, 2.0**-1074, -0.0]
    return [
        {
            "label": label,
            "value": value,
            "flag": i % 2 == 0,
            "at": at + timedelta(microseconds=i),
            "doc": {"label": label, "values": [value, i], "nested": {"ok": True}},
        }
        for i, (label, value) in enumerate(zip(AWKWARD_TEXT, values, strict=True))
    ] + [{"label": None, "value": None, "flag": None, "at": None, "doc": [1, "two"]}]


def _read_back(session: Session) -> list[tuple[object, ...]]:
    columns = (_ROWS.c.label, _ROWS.c.value, _ROWS.c.flag, _ROWS.c.at, _ROWS.c.doc)
    query = select(*columns).order_by(_ROWS.c.id)
    return [tuple(row) for row in session.execute(query)]


def test_rows_come_back_exactly_and_in_order(session: Session) -> None:
    _METADATA.create_all(session.connection())
    rows = _rows()

    write_together(session, [Insertion(_ROWS, rows)])

    stored = _read_back(session)
    assert [row[:3] for row in stored] == [(r["label"], r["value"], r["flag"]) for r in rows]
    # SQLite keeps no zone: compare instants.
    assert [_instant(row[3]) for row in stored] == [r["at"] for r in rows]
    assert [row[4] for row in stored] == [r["doc"] for r in rows]


def _instant(value: object) -> datetime | None:
    """A stored timestamp as an aware datetime (SQLite keeps no zone: its values are UTC)."""
    if value is None:
        return None
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_non_finite_floats_are_stored(session: Session) -> None:
    _METADATA.create_all(session.connection())
    rows = [{"value": math.inf}, {"value": -math.inf}, {"value": math.nan}, {"value": 1.5}]

    write_together(session, [Insertion(_ROWS, rows)])

    values = session.scalars(select(_ROWS.c.value).order_by(_ROWS.c.id)).all()
    assert values[:2] == [math.inf, -math.inf]
    if session.get_bind().dialect.name == "postgresql":
        assert math.isnan(values[2])
    else:  # SQLite stores a NaN as NULL, whatever writes it
        assert values[2] is None
    assert values[3] == 1.5


def test_text_that_spells_a_non_finite_float_is_stored_as_text(session: Session) -> None:
    # The encoder's non-finite floats are bare words: text holding them takes the careful path.
    _METADATA.create_all(session.connection())
    labels = ["NaN", "-Infinity", "not a NaN"]
    rows = [
        {"label": label, "value": 1.0, "flag": True, "at": None, "doc": {"say": label}}
        for label in labels
    ]

    write_together(session, [Insertion(_ROWS, rows)])

    stored = _read_back(session)
    assert [(row[0], row[1], row[4]) for row in stored] == [
        (label, 1.0, {"say": label}) for label in labels
    ]


def test_json_spells_timestamps_with_their_offset() -> None:
    at = datetime(2026, 12, 6, 12, 0, tzinfo=timezone(timedelta(hours=2)))

    assert rows_json([{"at": at}]) == '[{"at":"2026-12-06T12:00:00+02:00"}]'


def test_several_tables_in_one_call_children_after_parents(session: Session) -> None:
    _METADATA.create_all(session.connection())
    parents = [{"id": f"p{i}", "n": i} for i in range(3)]
    children = [{"parent_id": f"p{i % 3}", "value": float(i)} for i in range(7, 0, -1)]

    write_together(
        session,
        [Insertion(_PARENTS, parents), Insertion(_ROWS, []), Insertion(_CHILDREN, children)],
    )

    stored = session.execute(
        select(_CHILDREN.c.parent_id, _CHILDREN.c.value).order_by(_CHILDREN.c.id)
    ).all()
    assert [tuple(row) for row in stored] == [(c["parent_id"], c["value"]) for c in children]
    assert session.scalars(select(_PARENTS.c.n).order_by(_PARENTS.c.id)).all() == [0, 1, 2]
    assert session.scalar(select(func.count()).select_from(_ROWS)) == 0


def test_a_child_without_its_parent_is_refused(session: Session) -> None:
    _METADATA.create_all(session.connection())
    with pytest.raises(IntegrityError):
        write_together(
            session,
            [
                Insertion(_PARENTS, [{"id": "q0", "n": 0}]),
                Insertion(_CHILDREN, [{"parent_id": "missing", "value": 1.0}]),
            ],
        )


def test_changes_set_their_columns_on_their_rows_only(session: Session) -> None:
    _METADATA.create_all(session.connection())
    write_together(session, [Insertion(_ROWS, _rows())])
    ids = session.scalars(select(_ROWS.c.id).order_by(_ROWS.c.id)).all()
    before = _read_back(session)
    later = datetime(2027, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    changes = [
        {"id": ids[4], "label": 'changed "4"\n', "value": -2.5, "at": later},
        {"id": ids[1], "label": None, "value": 1e308, "at": None},
    ]

    write_together(session, [], [Change(_ROWS, "id", changes)])

    after = _read_back(session)
    assert after[1][:2] == (None, 1e308)
    assert after[1][3] is None
    assert after[4][:2] == ('changed "4"\n', -2.5)
    assert _instant(after[4][3]) == later
    # The columns not named and the rows not changed are as they were.
    assert [row[2:5:2] for row in after] == [row[2:5:2] for row in before]
    assert [after[i] for i in (0, 2, 3, 5)] == [before[i] for i in (0, 2, 3, 5)]


def test_inserts_and_changes_in_one_call(session: Session) -> None:
    _METADATA.create_all(session.connection())
    write_together(session, [Insertion(_PARENTS, [{"id": "p0", "n": 0}, {"id": "p1", "n": 1}])])

    write_together(
        session,
        [Insertion(_CHILDREN, [{"parent_id": "p1", "value": 2.0}])],
        [Change(_PARENTS, "id", [{"id": "p1", "n": 11}])],
    )

    assert session.scalars(select(_PARENTS.c.n).order_by(_PARENTS.c.id)).all() == [0, 11]
    assert session.execute(select(_CHILDREN.c.parent_id, _CHILDREN.c.value)).all() == [("p1", 2.0)]


def _queueing(keys: list[str]) -> Queueing:
    rows = [{"key": k, "status": "todo", "doc": {"asked": k}} for k in keys]
    return Queueing(_QUEUE, rows, ("key",), "status = 'todo'", _CHANNEL, "key")


def test_queued_rows_that_conflict_with_a_waiting_one_are_skipped(session: Session) -> None:
    _METADATA.create_all(session.connection())
    session.execute(
        _QUEUE.insert(), [{"key": "a", "status": "todo"}, {"key": "b", "status": "done"}]
    )

    write_together(
        session,
        [Insertion(_PARENTS, [{"id": "p0", "n": 0}])],
        [],
        _queueing(["a", "b", "c"]),
    )

    stored = session.execute(select(_QUEUE.c.key, _QUEUE.c.status, _QUEUE.c.doc)).all()
    assert sorted(stored, key=str) == sorted(
        [("a", "todo", None), ("b", "done", None), ("b", "todo", {"asked": "b"}),
         ("c", "todo", {"asked": "c"})],
        key=str,
    )  # fmt: skip
    assert session.scalars(select(_PARENTS.c.id)).all() == ["p0"]


@pytest.mark.postgres
def test_queued_rows_are_announced_at_commit_each_once() -> None:
    with postgres_database(require_postgres(), migrate=False) as url:
        engine = create_engine(url)
        listener = psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(
            hide_password=False
        ), autocommit=True)  # fmt: skip
        try:
            listener.execute(f"LISTEN {_CHANNEL}")
            with Session(engine) as session, session.begin():
                _METADATA.create_all(session.connection())
                session.execute(_QUEUE.insert(), [{"key": "a", "status": "todo"}])
            with Session(engine) as session, session.begin():
                write_together(session, [], [], _queueing(["a", "b", "c"]))
            heard = [note.payload for note in listener.notifies(timeout=2.0, stop_after=2)]
            with Session(engine) as session, session.begin():
                said = Announcement(_CHANNEL, ["x", 'y "quoted"'])
                write_together(session, [Insertion(_PARENTS, [])], [], announcement=said)
            announced = [note.payload for note in listener.notifies(timeout=2.0, stop_after=2)]
        finally:
            listener.close()
            engine.dispose()
    assert sorted(heard) == ["b", "c"]
    assert announced == ["x", 'y "quoted"']


def test_a_queueing_and_an_announcement_do_not_go_together(session: Session) -> None:
    with pytest.raises(ValueError, match="not both"):
        write_together(session, [], [], _queueing(["a"]), Announcement(_CHANNEL, ["a"]))
