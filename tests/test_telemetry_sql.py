"""Golden pairs for the telemetry rewrites (duckserve.sql.telemetry), and what they leave alone."""

from __future__ import annotations

from pathlib import Path

import pytest

import duckserve
from duckserve.sql import splitter
from duckserve.sql.rewrite import apply
from duckserve.sql.telemetry import applies, snowflake_forms

PAIRS = [
    ("SELECT v FROM t WHERE ts > dateadd(day, -1, current_timestamp())",
     "SELECT v FROM t WHERE ts > (to_days(-1) + (current_timestamp))"),
    ("SELECT DATEADD('second', -5 * 2, TIMESTAMPADD(minute, 1, now()))",
     "SELECT (to_seconds(-5 * 2) + ((to_minutes(1) + (now()))))"),
    ('SELECT a FROM t WHERE RESOURCE_ATTRIBUTES:"snow.service.name" = \'X\'',
     "SELECT a FROM t WHERE json_extract_string(RESOURCE_ATTRIBUTES, '$.\"snow.service.name\"') = 'X'"),
    ("SELECT e.RECORD:metric.name, VALUE:message::VARCHAR FROM t e",
     "SELECT json_extract_string(e.RECORD, '$.\"metric\".\"name\"'), "
     "json_extract_string(VALUE, '$.\"message\"')::VARCHAR FROM t e"),
    ("SELECT x::INT, 'a:b' /* a:b */, \"c:d\" FROM t", "SELECT x::INT, 'a:b' /* a:b */, \"c:d\" FROM t"),
]


@pytest.mark.parametrize(("sql", "expected"), PAIRS)
def test_snowflake_forms(sql: str, expected: str) -> None:
    [statement] = splitter.split(sql)
    assert apply(statement, snowflake_forms(statement.tokens, statement.script)) == expected


def test_unknown_date_part_names_the_fix() -> None:
    [statement] = splitter.split("SELECT dateadd(fortnight, 1, now())")
    with pytest.raises(duckserve.ProgrammingError, match="unknown date or time part 'fortnight'"):
        snowflake_forms(statement.tokens, statement.script)


def test_only_telemetry_statements_are_taken_over() -> None:
    for sql in ("SELECT {'a': 1} AS s", "SELECT e: 42", "SELECT [1, 2, 3][1:2]", "SELECT * FROM events",
                "SELECT * FROM telemetry.events", "SELECT svc!predict(1)"):
        [statement] = splitter.split(sql)
        assert not applies(statement), sql
    for sql in ("SELECT * FROM snowflake.telemetry.events", 'SELECT 1 FROM "SNOWFLAKE".TELEMETRY.EVENTS_VIEW',
                "SELECT * FROM TABLE(db.s.svc!spcs_get_metrics())"):
        [statement] = splitter.split(sql)
        assert applies(statement), sql


def test_duckdb_colons_stay_duckdbs(tmp_path: Path) -> None:
    """Outside telemetry statements DuckDB's own ``:`` forms (prefix aliases, slices, structs) run as in DuckDB."""
    conn = duckserve.connect(home=str(tmp_path / "home"))
    try:
        cur = conn.cursor()
        cur.execute("SELECT e: 42, [1, 2, 3][2:3] AS sl, {'a': 1} AS s")
        assert cur.fetchall() == [(42, [2, 3], {"a": 1})]
        assert [d[0] for d in cur.description] == ["e", "sl", "s"]
        cur.execute("SELECT count(*), max(RECORD_TYPE) FROM snowflake.telemetry.events")
        assert cur.fetchone() == (0, None)
    finally:
        conn.close()


def test_the_seed_shape_reads_only_its_rows_and_other_shapes_read_all(tmp_path: Path) -> None:
    import time

    from duckserve.engine.events import Resource, event_table

    home = tmp_path / "home"
    table = event_table(home)
    now = time.time()
    for name, ages in (("A", (7200, 60, 30)), ("B", (50,)), ("XA", (40,))):
        for age in ages:
            table.record_event(Resource("DUCKSERVE", "PUBLIC", name), "SERVICE.TICK", f"{name} {age}", at=now - age)
    conn = duckserve.connect(home=str(home))
    try:
        cur = conn.cursor()

        def one(sql: str) -> tuple[object, ...]:
            cur.execute(sql)
            row = cur.fetchone()
            assert row is not None
            return row

        events = "SNOWFLAKE.TELEMETRY.EVENTS"
        a = "RESOURCE_ATTRIBUTES:\"snow.service.name\" = 'A'"
        assert one(f"SELECT count(*) FROM {events} WHERE {a} AND timestamp > dateadd(hour, -1, current_timestamp())"
                   ) == (2,)
        assert one(f"SELECT count(*) FROM {events} e WHERE true AND {a}") == (3,)
        assert one(f"SELECT count(*) FROM {events} WHERE {a} OR RESOURCE_ATTRIBUTES:\"snow.service.name\" = 'B'"
                   ) == (4,)
        assert one(f"SELECT sum(CASE WHEN {a} THEN 1 ELSE 0 END), count(*) FROM {events}") == (3, 5)
        assert one(f"SELECT count(*) FROM {events} WHERE ({a} OR VALUE:message = 'B 50') "
                   "AND timestamp > dateadd(minute, -59, current_timestamp())") == (3,)
        assert one(f"SELECT (SELECT count(*) FROM {events} WHERE {a}), (SELECT count(*) FROM {events})") == (3, 5)
    finally:
        conn.close()
