"""The SQL front: splitting, our statements vs DuckDB's, rewrites, errors with positions."""

from __future__ import annotations

from typing import Any

import pytest

from duckserve import errors
from duckserve.sql import parser, rewrite, splitter
from duckserve.sql import statements as S
from tests.conftest import rows


def texts(script: str) -> list[str]:
    return [s.text for s in splitter.split(script)]


def test_split_respects_strings_comments_and_dollar_quotes() -> None:
    script = """
    SELECT 'a;b' AS s; -- a comment; with a semicolon
    SELECT $$x;y$$ AS d;
    /* block; comment */ SELECT $tag$p;q$tag$;
    ;;
    SELECT "weird;name" FROM t
    """
    assert texts(script) == [
        "SELECT 'a;b' AS s",
        "SELECT $$x;y$$ AS d",
        "SELECT $tag$p;q$tag$",
        'SELECT "weird;name" FROM t',
    ]


def test_split_empty_script() -> None:
    assert texts("  -- nothing\n ; ") == []


def test_unterminated_string_is_a_clear_error() -> None:
    with pytest.raises(errors.SQLSyntaxError, match="unterminated"):
        splitter.split("SELECT 'abc")


def parse(sql: str) -> S.Statement | None:
    return parser.parse(splitter.split(sql)[0])


@pytest.mark.parametrize("sql", [
    "SELECT 1", "CREATE TABLE t (a INT)", "DROP TABLE t", "SHOW TABLES", "DESCRIBE t", "USE memory",
    "ALTER TABLE t ADD COLUMN b INT", "CALL pragma_version()", "CREATE VIEW role AS SELECT 1",
])
def test_duckdb_statements_are_not_ours(sql: str) -> None:
    assert parse(sql) is None


def test_create_compute_pool_parses_seed_form() -> None:
    st = parse("CREATE COMPUTE POOL IF NOT EXISTS mypool\nMIN_NODES = 2\nMAX_NODES = 4\n"
               "INSTANCE_FAMILY = 'CPU_X64_M'\nAUTO_RESUME = TRUE")
    assert isinstance(st, S.Create)
    assert st.kind == "COMPUTE POOL" and st.name.name == "MYPOOL" and st.if_not_exists
    assert st.properties == {"MIN_NODES": 2, "MAX_NODES": 4, "INSTANCE_FAMILY": "CPU_X64_M", "AUTO_RESUME": True}


def test_syntax_error_points_at_line_and_column() -> None:
    script = "SELECT 1;\nCREATE COMPUTE POOL p\n  MIN_NODES = 1 MAX_NODES = 2 INSTANCE_FAMILY = CPU_X64_XS\n  COLOUR = 'red'"
    statement = splitter.split(script)[1]
    with pytest.raises(errors.SQLSyntaxError) as info:
        parser.parse(statement)
    assert info.value.line == 4 and info.value.col == 3
    assert "line 4, column 3 near 'COLOUR'" in str(info.value)
    assert "MIN_NODES" in str(info.value)  # it lists what was expected


def test_missing_required_property() -> None:
    with pytest.raises(errors.SQLSyntaxError, match="INSTANCE_FAMILY"):
        parse("CREATE COMPUTE POOL p MIN_NODES = 1 MAX_NODES = 1")


def test_grant_forms() -> None:
    st = parse("GRANT SERVICE READ, SERVICE WRITE ON IMAGE REPOSITORY db.sch.repo TO ROLE r")
    assert isinstance(st, S.GrantPrivileges)
    assert st.privileges == ["SERVICE READ", "SERVICE WRITE"] and st.on_kind == "IMAGE REPOSITORY"
    assert (st.on_name.database, st.on_name.schema, st.on_name.name) == ("DB", "SCH", "REPO")  # type: ignore[union-attr]
    st = parse("GRANT SERVICE ROLE my_service!ALL_ENDPOINTS_USAGE TO ROLE r")
    assert isinstance(st, S.GrantServiceRole) and st.service_role == "ALL_ENDPOINTS_USAGE"
    st = parse("REVOKE ROLE analyst FROM USER alice")
    assert isinstance(st, S.GrantRole) and st.revoke and st.to_kind == "USER"
    st = parse("GRANT BIND SERVICE ENDPOINT ON ACCOUNT TO ROLE r")
    assert isinstance(st, S.GrantPrivileges) and st.on_kind == "ACCOUNT"


def test_quoted_identifiers_keep_case() -> None:
    st = parse('CREATE ROLE "MixedCase"')
    assert isinstance(st, S.Create) and st.name.name == "MixedCase"
    st = parse("CREATE ROLE mixedcase")
    assert isinstance(st, S.Create) and st.name.name == "MIXEDCASE"


class FakeResults:
    """A rewrite context with fixed answers, for golden rewrite pairs."""

    def materialize(self, statement: splitter.Statement) -> str | None:
        return "__shown" if parser.parse(statement) is not None else None

    def result_relation(self, reference: str | int) -> str:
        return f"__result_{reference}".replace("-", "m")


@pytest.mark.parametrize("before, after", [
    ("SELECT * FROM TABLE(RESULT_SCAN(LAST_QUERY_ID()))", "SELECT * FROM __result_m1"),
    ("SELECT name FROM RESULT_SCAN(LAST_QUERY_ID(-2)) WHERE a != 'RESULT_SCAN('",
     "SELECT name FROM __result_m2 WHERE a != 'RESULT_SCAN('"),
    ("select * from result_scan('abc')", "select * from __result_abc"),
    ("SELECT name, state FROM (SHOW COMPUTE POOLS) WHERE state <> 'x'",
     "SELECT name, state FROM (SELECT * FROM __shown) WHERE state <> 'x'"),
    ("SELECT 1 /* (SHOW ROLES) */, '(SHOW ROLES)'", "SELECT 1 /* (SHOW ROLES) */, '(SHOW ROLES)'"),
    ("SELECT * FROM (SHOW TABLES)", "SELECT * FROM (SHOW TABLES)"),
])
def test_rewrite_golden_pairs(before: str, after: str) -> None:
    statement = splitter.split(before)[0]
    assert rewrite.rewrite(statement, FakeResults()) == after


def test_show_output_is_a_relation(conn: Any) -> None:
    conn.execute("CREATE COMPUTE POOL p1 MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = CPU_X64_XS")
    conn.execute("CREATE COMPUTE POOL p2 MIN_NODES = 1 MAX_NODES = 2 INSTANCE_FAMILY = CPU_X64_S "
                 "INITIALLY_SUSPENDED = TRUE")
    assert rows(conn, "SELECT name, state FROM (SHOW COMPUTE POOLS) ORDER BY name") == [
        {"name": "P1", "state": "IDLE"}, {"name": "P2", "state": "SUSPENDED"}]
    conn.execute("SHOW COMPUTE POOLS LIKE 'p2'")
    assert rows(conn, "SELECT name FROM TABLE(RESULT_SCAN(LAST_QUERY_ID()))") == [{"name": "P2"}]
    # the result can be joined like any table
    conn.execute("CREATE TABLE owners AS SELECT 'P1' AS pool, 'team-a' AS team")
    joined = rows(conn, "SELECT o.team, p.instance_family FROM owners o JOIN (SHOW COMPUTE POOLS) p "
                        "ON p.name = o.pool")
    assert joined == [{"team": "team-a", "instance_family": "CPU_X64_XS"}]
    cursor = conn.cursor().execute("SHOW WAREHOUSES")
    first_id = cursor.sfqid
    conn.execute("SELECT 42")
    assert rows(conn, f"SELECT name FROM RESULT_SCAN('{first_id}')") == [{"name": "COMPUTE_WH"}]


def test_result_scan_of_unknown_query(conn: Any) -> None:
    with pytest.raises(errors.ProgrammingError, match="no result for query"):
        conn.execute("SELECT * FROM RESULT_SCAN('nope')")


@pytest.mark.parametrize("text, parts", [
    ("a.b.c", ("A", "B", "C")),
    ("mydb.myschema.my_image_repo", ("MYDB", "MYSCHEMA", "MY_IMAGE_REPO")),
    ('"X y".b', ("", "X y", "B")),
    ('"a""b".c', ("", 'a"b', "C")),
    ("svc", ("", "", "SVC")),
])
def test_python_names_parse_like_sql(text: str, parts: tuple[str, str, str]) -> None:
    from duckserve.engine.names import parse_name

    name = parse_name(text)
    assert (name.database, name.schema, name.name) == parts


@pytest.mark.parametrize("text", ["a..b", "a.", "", '"open', "a.b.c.d"])
def test_bad_python_names(text: str) -> None:
    from duckserve.engine.names import parse_name

    with pytest.raises(errors.ProgrammingError):
        parse_name(text)
