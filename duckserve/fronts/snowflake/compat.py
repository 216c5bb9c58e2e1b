"""Snowflake's catalog statements, as its clients send them by themselves (snowflake-sqlalchemy's
reflection, BI tools' schema browsers, ``SELECT CURRENT_VERSION()``), answered from DuckDB's own
catalog with the columns Snowflake's answers have.

Each rule is a pattern and a function that returns the DuckDB SQL answering it; rules are tried in
order on the statement with its comments removed. Identifiers are reported as Snowflake reports
unquoted ones: a lower-case name comes back upper-case (``people`` -> ``PEOPLE``), so clients
that normalize Snowflake's case get the names the user wrote.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from duckserve.fronts.snowflake.protocol import SERVER_VERSION

Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]

_NAME = r'(?:"(?:[^"]|"")+"|[\w$]+)'
_QUALIFIED = rf"{_NAME}(?:\.{_NAME}){{0,2}}"

#: Snowflake's type names for DuckDB's
SNOWFLAKE_TYPE = """CASE
    WHEN {t} IN ('TINYINT','SMALLINT','INTEGER','BIGINT','HUGEINT','UTINYINT','USMALLINT','UINTEGER','UBIGINT',
                 'UHUGEINT') OR {t} LIKE 'DECIMAL%' THEN 'NUMBER'
    WHEN {t} IN ('FLOAT','DOUBLE','REAL') THEN 'FLOAT'
    WHEN {t} = 'VARCHAR' OR {t} = 'UUID' THEN 'TEXT'
    WHEN {t} = 'BOOLEAN' THEN 'BOOLEAN'
    WHEN {t} = 'DATE' THEN 'DATE'
    WHEN {t} LIKE 'TIME%WITH TIME ZONE' OR {t} = 'TIMESTAMPTZ' THEN 'TIMESTAMP_LTZ'
    WHEN {t} LIKE 'TIMESTAMP%' THEN 'TIMESTAMP_NTZ'
    WHEN {t} LIKE 'TIME%' THEN 'TIME'
    WHEN {t} = 'BLOB' THEN 'BINARY'
    WHEN {t} LIKE '%[]' THEN 'ARRAY'
    WHEN {t} LIKE 'STRUCT%' OR {t} LIKE 'MAP%' THEN 'OBJECT'
    WHEN {t} = 'JSON' THEN 'VARIANT'
    ELSE 'TEXT' END"""


def shown(expression: str) -> str:
    """A DuckDB name as Snowflake shows an unquoted one."""
    return (f"CASE WHEN regexp_full_match({expression}, '[a-z_][a-z0-9_$]*') THEN upper({expression}) "
            f"ELSE {expression} END")


def _parts(qualified: str) -> list[str]:
    found = re.findall(_NAME, qualified)
    return [p[1:-1].replace('""', '"') if p.startswith('"') else p for p in found]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _matches(column: str, name: str) -> str:
    """A condition: DuckDB's ``column`` is the object a Snowflake client named (any case)."""
    return f"lower({column}) = lower({_literal(name)})"


def _scope(qualified: str | None, database: str = "database_name", schema: str = "schema_name") -> str:
    """A condition for ``IN SCHEMA db.s`` / ``IN s`` / ``IN DATABASE db`` (empty: the current schema)."""
    if not qualified:
        return f"{database} = current_database() AND {schema} = current_schema()"
    parts = _parts(qualified)
    if len(parts) == 1:
        return f"{database} = current_database() AND {_matches(schema, parts[0])}"
    return f"{_matches(database, parts[-2])} AND {_matches(schema, parts[-1])}"


def _table_scope(qualified: str) -> str:
    parts = _parts(qualified)
    schema_part = ".".join(f'"{p}"' for p in parts[:-1]) or None
    return f"{_scope(schema_part)} AND {_matches('table_name', parts[-1])}"


def _limit(match: re.Match[str]) -> str:
    starting = match.groupdict().get("from")
    where = f" WHERE name > {starting}" if starting else ""
    limit = match.groupdict().get("limit")
    return where + (f" LIMIT {int(limit)}" if limit else "")


def _like(match: re.Match[str], column: str = "name") -> str:
    pattern = match.groupdict().get("like")
    return f" AND {column} ILIKE {pattern}" if pattern else ""


def _version(match: re.Match[str]) -> str:
    return f"SELECT '{SERVER_VERSION}' AS \"CURRENT_VERSION()\""


def _listing(match: re.Match[str], name: str, columns: str, source: str) -> str:
    """A SHOW listing: ``created_on``, the ``name`` column as ``name``, the other ``columns``, from
    ``source`` (a table function and its WHERE condition), with the statement's LIKE, LIMIT and FROM."""
    return (f"SELECT * FROM (SELECT NULL::TIMESTAMPTZ AS created_on, {shown(name)} AS name, {columns} "
            f"FROM {source}{_like(match, name)} ORDER BY name){_limit(match)}")


def _schemas(match: re.Match[str]) -> str:
    database = match.group("db")
    where = _matches("database_name", _parts(database)[-1]) if database else "database_name = current_database()"
    return _listing(match, "schema_name",
                    "CASE WHEN schema_name = current_schema() THEN 'Y' ELSE 'N' END AS is_default, "
                    "CASE WHEN schema_name = current_schema() THEN 'Y' ELSE 'N' END AS is_current, "
                    f"{shown('database_name')} AS database_name, '' AS owner, comment, '' AS options, "
                    "'1' AS retention_time, '' AS owner_role_type",
                    f"duckdb_schemas() WHERE schema_name NOT IN ('information_schema', 'pg_catalog') AND {where}")


def _tables(match: re.Match[str]) -> str:
    return _listing(match, "table_name",
                    f"{shown('database_name')} AS database_name, {shown('schema_name')} AS schema_name, "
                    "CASE WHEN temporary THEN 'TEMPORARY' ELSE 'TABLE' END AS kind, comment, '' AS cluster_by, "
                    "estimated_size AS rows, NULL::BIGINT AS bytes, '' AS owner, '1' AS retention_time, "
                    "'OFF' AS automatic_clustering, 'OFF' AS change_tracking, 'N' AS is_external, 'N' AS is_event, "
                    "'N' AS is_hybrid, 'N' AS is_iceberg, 'N' AS is_dynamic, 'N' AS is_immutable",
                    f"duckdb_tables() WHERE {_scope(match.group('in'))}")


def _views(match: re.Match[str]) -> str:
    return _listing(match, "view_name",
                    f"'' AS reserved, {shown('database_name')} AS database_name, "
                    f"{shown('schema_name')} AS schema_name, '' AS owner, comment, sql AS text, 'false' AS is_secure, "
                    "'false' AS is_materialized, '' AS owner_role_type, 'OFF' AS change_tracking, 'VIEW' AS kind",
                    f"duckdb_views() WHERE NOT internal AND view_name NOT LIKE '__duckserve%' AND "
                    f"{_scope(match.group('in'))}")


def _key_scope(match: re.Match[str]) -> str:
    """The condition for ``SHOW ... KEYS IN SCHEMA s`` or ``IN TABLE t``."""
    target = match.group("target")
    return _table_scope(target) if match.group("kind").upper() == "TABLE" else _scope(target)


def _keys(constraint: str, match: re.Match[str]) -> str:
    scope = _key_scope(match)
    return ("SELECT NULL::TIMESTAMPTZ AS created_on, " + shown("database_name") + " AS database_name, "
            + shown("schema_name") + " AS schema_name, " + shown("table_name") + " AS table_name, "
            + shown("column_name") + " AS column_name, key_sequence, "
            "coalesce(constraint_name, table_name || '_' || lower(replace(constraint_type, ' ', '_'))) "
            "AS constraint_name, 'false' AS rely, NULL AS comment FROM (SELECT database_name, schema_name, "
            "table_name, constraint_type, constraint_name, unnest(constraint_column_names) AS column_name, "
            "generate_subscripts(constraint_column_names, 1) AS key_sequence FROM duckdb_constraints() "
            f"WHERE constraint_type = '{constraint}' AND {scope}) ORDER BY table_name, constraint_name, key_sequence")


def _imported_keys(match: re.Match[str]) -> str:
    scope = _key_scope(match)
    return ("SELECT NULL::TIMESTAMPTZ AS created_on, " + shown("database_name") + " AS pk_database_name, "
            + shown("schema_name") + " AS pk_schema_name, " + shown("referenced_table") + " AS pk_table_name, "
            + shown("pk_column") + " AS pk_column_name, " + shown("database_name") + " AS fk_database_name, "
            + shown("schema_name") + " AS fk_schema_name, " + shown("table_name") + " AS fk_table_name, "
            + shown("fk_column") + " AS fk_column_name, key_sequence, 'NO ACTION' AS update_rule, "
            "'NO ACTION' AS delete_rule, coalesce(constraint_name, table_name || '_fk') AS fk_name, "
            "referenced_table || '_pkey' AS pk_name, 'NOT DEFERRABLE' AS deferrability, 'false' AS rely, "
            "NULL AS comment FROM (SELECT database_name, schema_name, table_name, constraint_name, referenced_table, "
            "unnest(constraint_column_names) AS fk_column, unnest(referenced_column_names) AS pk_column, "
            "generate_subscripts(constraint_column_names, 1) AS key_sequence FROM duckdb_constraints() "
            f"WHERE constraint_type = 'FOREIGN KEY' AND {scope}) ORDER BY fk_table_name, fk_name, key_sequence")


def _describe_table(match: re.Match[str]) -> str:
    scope = _table_scope(match.group("target"))
    return ("SELECT " + shown("column_name") + " AS name, data_type AS type, 'COLUMN' AS kind, "
            "CASE WHEN is_nullable THEN 'Y' ELSE 'N' END AS \"null?\", column_default AS \"default\", "
            "'N' AS \"primary key\", 'N' AS \"unique key\", NULL AS \"check\", NULL AS expression, comment, "
            "NULL AS \"policy name\", NULL AS \"privacy domain\" FROM duckdb_columns() "
            f"WHERE {scope} ORDER BY column_index")


#: Snowflake's information_schema.columns over DuckDB's catalog
_INFORMATION_SCHEMA_COLUMNS = (
    "(SELECT " + shown("database_name") + " AS table_catalog, " + shown("schema_name") + " AS table_schema, "
    + shown("table_name") + " AS table_name, " + shown("column_name") + " AS column_name, "
    "column_index AS ordinal_position, column_default, CASE WHEN is_nullable THEN 'YES' ELSE 'NO' END AS is_nullable, "
    + SNOWFLAKE_TYPE.format(t="data_type") + " AS data_type, "
    "CASE WHEN data_type = 'VARCHAR' THEN 16777216 END AS character_maximum_length, "
    "CASE WHEN data_type = 'VARCHAR' THEN 16777216 END AS character_octet_length, "
    "CASE WHEN data_type IN ('DOUBLE', 'FLOAT', 'REAL') THEN NULL ELSE numeric_precision END AS numeric_precision, "
    "numeric_precision_radix, CASE WHEN data_type IN ('DOUBLE', 'FLOAT', 'REAL') THEN NULL ELSE numeric_scale END "
    "AS numeric_scale, 'NO' AS is_identity, comment, NULL AS identity_start, NULL AS identity_increment, "
    "NULL AS identity_generation, NULL AS identity_cycle, NULL AS identity_ordered, NULL AS data_type_alias "
    "FROM duckdb_columns() WHERE database_name = {database})"
)


def _information_schema(sql: str) -> str | None:
    """``<db>.information_schema.columns`` (or unqualified) in a query becomes Snowflake's view of it."""
    pattern = re.compile(rf"(?:({_NAME})\.)?information_schema\.columns\b", re.IGNORECASE)
    if not pattern.search(sql):
        return None

    def view(match: re.Match[str]) -> str:
        database = _parts(match.group(1))[0] if match.group(1) else None
        return _INFORMATION_SCHEMA_COLUMNS.format(
            database=f"(SELECT database_name FROM duckdb_databases() WHERE lower(database_name) = "
                     f"lower({_literal(database)}))" if database else "current_database()")

    return pattern.sub(view, sql)


_IN = rf"(?:\s+IN\s+(?:ACCOUNT|(?:SCHEMA\s+|DATABASE\s+)?(?P<in>{_QUALIFIED})))?"
_LIKE = r"(?:\s+LIKE\s+(?P<like>'(?:[^']|'')*'))?"
_PAGE = r"(?:\s+LIMIT\s+(?P<limit>\d+))?(?:\s+FROM\s+(?P<from>'(?:[^']|'')*'))?"

RULES: list[Rule] = [
    (re.compile(r"SELECT\s+CURRENT_VERSION\s*\(\s*\)", re.IGNORECASE), _version),
    (re.compile(rf"SHOW\s+(?:TERSE\s+)?SCHEMAS{_LIKE}(?:\s+IN\s+(?:ACCOUNT|DATABASE(?:\s+(?P<db>{_NAME}))?))?{_PAGE}",
                re.IGNORECASE), _schemas),
    (re.compile(rf"SHOW\s+(?:TERSE\s+)?TABLES{_LIKE}{_IN}{_PAGE}", re.IGNORECASE), _tables),
    (re.compile(rf"SHOW\s+(?:TERSE\s+)?VIEWS{_LIKE}{_IN}{_PAGE}", re.IGNORECASE), _views),
    (re.compile(rf"SHOW\s+PRIMARY\s+KEYS\s+IN\s+(?P<kind>SCHEMA|TABLE)\s+(?P<target>{_QUALIFIED})", re.IGNORECASE),
     lambda m: _keys("PRIMARY KEY", m)),
    (re.compile(rf"SHOW\s+UNIQUE\s+KEYS\s+IN\s+(?P<kind>SCHEMA|TABLE)\s+(?P<target>{_QUALIFIED})", re.IGNORECASE),
     lambda m: _keys("UNIQUE", m)),
    (re.compile(rf"SHOW\s+IMPORTED\s+KEYS\s+IN\s+(?P<kind>SCHEMA|TABLE)\s+(?P<target>{_QUALIFIED})", re.IGNORECASE),
     _imported_keys),
    (re.compile(r"SHOW\s+(?:INDEXES|SEQUENCES)\b.*", re.IGNORECASE | re.DOTALL),
     lambda m: "SELECT NULL::VARCHAR AS name, NULL::VARCHAR AS table, NULL::VARCHAR AS schema_name LIMIT 0"),
    (re.compile(rf"(?:DESC|DESCRIBE)\s+(?:TABLE|VIEW)\s+(?P<target>{_QUALIFIED})(?:\s+TYPE\s*=\s*COLUMNS)?",
                re.IGNORECASE), _describe_table),
]


def without_comments(sql: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", sql, flags=re.DOTALL)
    text = re.sub(r"--[^\n]*", " ", text)
    return " ".join(text.split()).rstrip(";").strip()


def translate(sql: str) -> str | None:
    """The DuckDB SQL that answers one of Snowflake's catalog statements; None for any other."""
    text = without_comments(sql)
    for pattern, answer in RULES:
        match = pattern.fullmatch(text)
        if match:
            return answer(match)
    if "information_schema" in text.lower():
        return _information_schema(sql)
    return None
