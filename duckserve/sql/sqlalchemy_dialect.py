"""SQLAlchemy dialect ``duckserve://``: duckdb-engine's DuckDB dialect, connecting through
``duckserve.connect`` so duckserve's statements and ``service!method(...)`` calls work from
SQLAlchemy, pandas (``read_sql``/``to_sql``) and Jupyter's SQL magics (jupysql).

URL: ``duckserve:///path/to/file.duckdb?home=/path/to/account&user=ADMIN&role=...&warehouse=...``
(``duckserve:///:memory:`` or ``duckserve://`` for an in-memory database; ``duckserve://ANALYST@/f.duckdb``
names the user too). Any other query parameter is a DuckDB setting (``?threads=4``).

Everything SQL-level (compilation, types, reflection through DuckDB's pg_catalog) is duckdb-engine's;
only the DB-API connection differs, and it is duckserve's own PEP 249 connection.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from duckdb_engine import Dialect as DuckDBDialect
from sqlalchemy import pool, sql
from sqlalchemy import types as sqltypes
from sqlalchemy.engine.url import URL

from duckserve import errors

_CONNECT_KEYS = ("home", "user", "role", "warehouse")
#: DuckDB type names that neither duckdb-engine nor PostgreSQL's dialect knows by these spellings
_DUCKDB_TYPES: dict[str, Any] = {
    "double": sqltypes.Double, "float": sqltypes.Float, "integer": sqltypes.Integer, "bigint": sqltypes.BigInteger,
    "smallint": sqltypes.SmallInteger, "boolean": sqltypes.Boolean, "varchar": sqltypes.String,
    "date": sqltypes.Date, "time": sqltypes.Time, "timestamp": sqltypes.DateTime,
    "timestamp with time zone": lambda: sqltypes.DateTime(timezone=True), "blob": sqltypes.LargeBinary,
    "interval": sqltypes.Interval, "uuid": sqltypes.Uuid, "json": sqltypes.JSON,
}


def _filtered(query: str, params: dict[str, Any], filter_names: Any, column: str, order_by: str) -> sql.TextClause:
    """The reflection query in ``order_by`` order, only of the tables ``filter_names`` lists (when given)."""
    if filter_names:
        query += f" AND {column} IN :filter_names"
        params["filter_names"] = list(filter_names)
    statement = sql.text(f"{query} ORDER BY {order_by}")
    if filter_names:
        statement = statement.bindparams(sql.bindparam("filter_names", expanding=True))
    return statement


class DBAPI(errors.DBAPIExceptions):
    """The DB-API module SQLAlchemy sees: duckserve's exceptions and paramstyle."""

    paramstyle = "numeric_dollar"  # $1, $2: what duckdb-engine compiles to under SQLAlchemy 2
    apilevel = "2.0"
    threadsafety = 1
    TransactionException = errors.OperationalError
    ParserException = errors.ProgrammingError

    @staticmethod
    def Binary(value: Any) -> Any:  # noqa: N802 - the PEP 249 name
        return value


class Cursor:
    """duckserve's cursor with what SQLAlchemy and the SQL magics expect of duckdb-engine's."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._cursor = connection.raw.cursor()

    @property
    def connection(self) -> Connection:
        return self._connection

    def execute(self, statement: str, parameters: Any = None, context: Any = None) -> None:
        lowered = statement.strip().lower()
        if lowered == "commit":  # ipython-sql and jupysql send it after each cell
            self._connection.commit()
            return
        if lowered in ("register", "register(?, ?)", "register($1, $2)"):  # a DataFrame as a view
            name, frame = parameters
            self._connection.raw.duckdb.register(name, frame)
            return
        self._connection.before(statement)
        self._cursor.execute(statement, parameters or None)

    def executemany(self, statement: str, parameters: Any = None, context: Any = None) -> None:
        self._connection.before(statement)
        self._cursor.executemany(statement, list(parameters or []))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        return self._cursor.fetchmany(size)

    def close(self) -> None:
        self._cursor.close()


#: statements that only read: they run outside the transaction SQLAlchemy asked for
_READS = {"SELECT", "WITH", "FROM", "VALUES", "TABLE", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "SUMMARIZE",
          "PRAGMA", "(", "COMMIT", "ROLLBACK", "BEGIN"}


class Connection:
    """Wraps a duckserve connection for SQLAlchemy's pool (begin, commit, rollback, close).

    SQLAlchemy begins a transaction before each connection's first statement. DuckDB registers a
    service function's UDF inside the open transaction, so a ROLLBACK would take it away while the
    connection still counts on it. So the transaction really begins at the first statement that
    writes, after the service functions that statement calls are bound; reads before it run on
    their own, as DuckDB's autocommit does.
    """

    autocommit = None

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.notices: list[str] = []
        self._pending = False  # SQLAlchemy asked for a transaction that has not begun in DuckDB
        self._open = False

    def cursor(self) -> Cursor:
        return Cursor(self)

    def begin(self) -> None:
        self._pending = True

    def before(self, sql: str) -> None:
        """Begin the pending transaction if ``sql`` writes (binding its service calls first)."""
        if not self._pending or self._open:
            return
        from duckserve.sql import splitter
        from duckserve.sql.service_functions import find_calls

        statements = splitter.split(sql)
        if all(s.tokens[0].text.upper() in _READS for s in statements if s.tokens):
            return
        for statement in statements:
            if find_calls(statement):
                self.raw.functions.rewrite(statement, None)
        try:
            self.raw.execute("BEGIN TRANSACTION")  # through the connection, which tracks open transactions
        except errors.Error:
            pass  # the user's own BEGIN came first
        self._open = True

    def commit(self) -> None:
        self._pending = False
        if self._open:
            self._open = False
            self.raw.commit()

    def rollback(self) -> None:
        self._pending = False
        if self._open:
            self._open = False
            self.raw.rollback()

    def close(self) -> None:
        self.raw.close()

    @property
    def closed(self) -> bool:
        return bool(self.raw.closed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class DuckServeDialect(DuckDBDialect):
    """``duckserve://``: DuckDB SQL from duckdb-engine, connections from ``duckserve.connect``."""

    name = "duckserve"
    driver = "duckserve"
    supports_statement_cache = False

    @staticmethod
    def dbapi(**kwargs: Any) -> type[DBAPI]:  # type: ignore[override]
        return DBAPI

    @classmethod
    def import_dbapi(cls) -> type[DBAPI]:  # type: ignore[override]
        return DBAPI

    def create_connect_args(self, url: URL) -> tuple[tuple[Any, ...], dict[str, Any]]:  # type: ignore[override]
        query = {k: (v[-1] if isinstance(v, tuple) else v) for k, v in url.query.items()}
        options: dict[str, Any] = {"database": url.database or ":memory:"}
        for key in _CONNECT_KEYS:
            if key in query:
                options[key] = query.pop(key)
        if url.username and "user" not in options:
            options["user"] = url.username
        if "read_only" in query:
            options["read_only"] = str(query.pop("read_only")).lower() in ("1", "true", "yes")
        if query:
            options["config"] = query
        return (), options

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        import duckserve

        cparams.pop("preload_extensions", None)
        cparams.pop("register_filesystems", None)
        cparams.pop("url_config", None)
        return Connection(duckserve.connect(*cargs, **cparams))

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        # one in-memory database per connection would lose data between checkouts: keep one per thread
        if not url.database or url.database == ":memory:":
            return pool.SingletonThreadPool
        return pool.QueuePool

    def do_begin(self, dbapi_connection: Any) -> None:
        dbapi_connection.begin()

    def do_rollback(self, dbapi_connection: Any) -> None:
        dbapi_connection.rollback()

    def do_commit(self, dbapi_connection: Any) -> None:
        dbapi_connection.commit()

    def is_disconnect(self, e: Exception, connection: Any, cursor: Any) -> bool:
        return isinstance(e, errors.InterfaceError) and "closed" in str(e)

    def get_multi_columns(self, connection: Any, schema: Any = None, filter_names: Any = None,  # type: ignore[override]
                          scope: Any = None, kind: Any = None, **kw: Any) -> Any:
        """Columns from DuckDB's own ``duckdb_columns()``: PostgreSQL's reflection queries reach
        pg_catalog tables DuckDB does not emulate (pg_collation), and their helpers changed in
        SQLAlchemy 2.1."""
        from sqlalchemy.engine.reflection import ObjectKind

        in_schema, params = self._in_schema(schema, "c.")
        kinds = kind if kind is not None else ObjectKind.ANY
        relations = []
        if ObjectKind.TABLE in kinds:
            relations.append("SELECT database_name, schema_name, table_name, 'table' AS kind, temporary "
                             "FROM duckdb_tables()")
        if ObjectKind.VIEW in kinds or ObjectKind.MATERIALIZED_VIEW in kinds:
            relations.append("SELECT database_name, schema_name, view_name, 'view' AS kind, temporary "
                             "FROM duckdb_views() WHERE NOT internal")
        if not relations:
            return []
        query = (f"SELECT c.table_name, c.column_name, c.data_type, c.is_nullable, c.column_default, c.comment "
                 f"FROM duckdb_columns() AS c JOIN ({' UNION ALL '.join(relations)}) AS r "
                 f"ON r.database_name = c.database_name AND r.schema_name = c.schema_name "
                 f"AND r.table_name = c.table_name WHERE NOT c.internal AND {in_schema}")
        statement = _filtered(query, params, filter_names, "c.table_name", "c.table_name, c.column_index")
        columns: dict[tuple[Any, str], list[dict[str, Any]]] = {}
        for table, name, data_type, nullable, default, comment in connection.execute(statement, params):
            columns.setdefault((schema, table), []).append({
                "name": name, "type": self._reflected_type(data_type), "nullable": bool(nullable),
                "default": default, "autoincrement": False, "comment": comment})
        return list(columns.items())

    def get_view_names(self, connection: Any, schema: Any = None, include: Any = None,  # type: ignore[override]
                       **kw: Any) -> Any:
        # the connection keeps recent results as temporary views for RESULT_SCAN: not the user's views
        return [v for v in super().get_view_names(connection, schema, include, **kw)
                if not v.startswith("__duckserve")]

    def _in_schema(self, schema: Any, prefix: str = "") -> tuple[str, dict[str, Any]]:
        """The condition that a catalog row is in the reflected ``schema`` ([database.]schema, DuckDB's
        main by default; its columns named with ``prefix``) and the condition's parameters."""
        database, schema_name = self.identifier_preparer._separate(schema) if schema else (None, "main")
        params: dict[str, Any] = {"schema_name": schema_name}
        if database:
            params["database_name"] = database
        return (f"{prefix}schema_name = :schema_name AND {prefix}database_name = "
                + (":database_name" if database else "current_database()"), params)

    def _constraints(self, connection: Any, schema: Any, filter_names: Any, kind: str) -> list[Any]:
        in_schema, params = self._in_schema(schema)
        params["kind"] = kind
        query = ("SELECT table_name, constraint_name, constraint_column_names, referenced_table, "
                 "referenced_column_names, expression FROM duckdb_constraints() WHERE constraint_type = :kind "
                 f"AND {in_schema}")
        statement = _filtered(query, params, filter_names, "table_name", "table_name, constraint_index")
        return list(connection.execute(statement, params))

    def get_multi_pk_constraint(self, connection: Any, schema: Any = None, filter_names: Any = None,  # type: ignore[override]
                                scope: Any = None, kind: Any = None, **kw: Any) -> Any:
        return [((schema, r[0]), {"constrained_columns": list(r[2]), "name": r[1], "comment": None})
                for r in self._constraints(connection, schema, filter_names, "PRIMARY KEY")]

    def get_multi_foreign_keys(self, connection: Any, schema: Any = None, filter_names: Any = None,  # type: ignore[override]
                               scope: Any = None, kind: Any = None, **kw: Any) -> Any:
        keys: dict[tuple[Any, str], list[dict[str, Any]]] = {}
        for table, name, columns, referred, referred_columns, _ in self._constraints(
                connection, schema, filter_names, "FOREIGN KEY"):
            keys.setdefault((schema, table), []).append({
                "name": name, "constrained_columns": list(columns), "referred_schema": schema,
                "referred_table": referred, "referred_columns": list(referred_columns), "options": {},
                "comment": None})
        return list(keys.items())

    def get_multi_unique_constraints(self, connection: Any, schema: Any = None, filter_names: Any = None,  # type: ignore[override]
                                     scope: Any = None, kind: Any = None, **kw: Any) -> Any:
        found: dict[tuple[Any, str], list[dict[str, Any]]] = {}
        for table, name, columns, *_ in self._constraints(connection, schema, filter_names, "UNIQUE"):
            found.setdefault((schema, table), []).append({"name": name, "column_names": list(columns),
                                                         "comment": None})
        return list(found.items())

    def get_multi_check_constraints(self, connection: Any, schema: Any = None, filter_names: Any = None,  # type: ignore[override]
                                    scope: Any = None, kind: Any = None, **kw: Any) -> Any:
        found: dict[tuple[Any, str], list[dict[str, Any]]] = {}
        for table, name, _columns, _ref, _refcols, expression in self._constraints(
                connection, schema, filter_names, "CHECK"):
            found.setdefault((schema, table), []).append({"name": name, "sqltext": expression, "comment": None})
        return list(found.items())

    def get_multi_indexes(self, connection: Any, schema: Any = None, filter_names: Any = None,  # type: ignore[override]
                          scope: Any = None, kind: Any = None, **kw: Any) -> Any:
        return []  # DuckDB's ART indexes back constraints; there is nothing else for SQLAlchemy to recreate

    def get_multi_table_comment(self, connection: Any, schema: Any = None, filter_names: Any = None,  # type: ignore[override]
                                scope: Any = None, kind: Any = None, **kw: Any) -> Any:
        database, schema_name = self.identifier_preparer._separate(schema) if schema else (None, "main")
        statement = sql.text("SELECT table_name, comment FROM duckdb_tables() WHERE schema_name = :schema_name "
                             "AND comment IS NOT NULL")
        names = set(filter_names or [])
        return [((schema, table), {"text": comment}) for table, comment in
                connection.execute(statement, {"schema_name": schema_name}) if not names or table in names]

    def get_multi_table_options(self, connection: Any, schema: Any = None, filter_names: Any = None,  # type: ignore[override]
                                scope: Any = None, kind: Any = None, **kw: Any) -> Any:
        return []

    def _reflected_type(self, data_type: str) -> Any:
        """A SQLAlchemy type for a DuckDB type name (``INTEGER``, ``DECIMAL(18,3)``, ``VARCHAR[]``, ...)."""
        from sqlalchemy import types
        from sqlalchemy.dialects.postgresql import ARRAY

        text = data_type.strip()
        if text.endswith("]"):
            return ARRAY(self._reflected_type(text[:text.rindex("[")]))
        upper = text.upper()
        if upper.startswith(("DECIMAL", "NUMERIC")):
            digits = [int(d) for d in re.findall(r"\d+", text)]
            return types.Numeric(digits[0], digits[1] if len(digits) > 1 else None) if digits else types.Numeric()
        base = re.sub(r"\(.*\)$", "", text).strip().lower()
        named = _DUCKDB_TYPES.get(base) or self.ischema_names.get(base)
        if named is None:
            return types.NullType()  # STRUCT, MAP, UNION and extension types: values still come back
        return named() if isinstance(named, type) else named

    @lru_cache  # noqa: B019 - as SQLAlchemy caches it: one query per (schema, filter, scope, kind)
    def _columns_query(self, schema: Any, has_filter_names: bool, scope: Any, kind: Any) -> Any:
        # SQLAlchemy >= 2.0.45 reflects column collations from pg_catalog.pg_collation, which DuckDB
        # does not have (duckdb-engine issue #1391); DuckDB columns have no collation to reflect.
        query = super()._columns_query(schema, has_filter_names, scope, kind)  # type: ignore[misc]
        columns = [sql.null().label("collation") if getattr(c, "name", None) == "collation" else c
                   for c in query.selected_columns]
        return query.with_only_columns(*columns)


dialect = DuckServeDialect
