"""The shapes of Snowflake's REST answers: success envelopes, error codes and SQL states, and the
statement type ids drivers read to tell a query from a DML statement or DDL."""

from __future__ import annotations

from typing import Any

from duckserve import errors

#: (Snowflake error code, SQL state) per duckserve error class, most specific first
ERROR_CODES: list[tuple[type[BaseException], str, str]] = [
    (errors.SQLSyntaxError, "001003", "42000"),
    (errors.ObjectNotFound, "002003", "02000"),
    (errors.ObjectExists, "002002", "42710"),
    (errors.InsufficientPrivileges, "003001", "42501"),
    (errors.NotSupportedError, "000002", "0A000"),
    (errors.IntegrityError, "100072", "23000"),
    (errors.DataError, "100038", "22018"),
    (errors.ServiceError, "100357", "P0000"),
    (errors.BuildError, "100357", "P0000"),
    (errors.ProgrammingError, "002043", "42000"),
    (errors.OperationalError, "000603", "XX000"),
    (errors.Error, "000603", "XX000"),
]

#: what CURRENT_VERSION() answers: drivers and dialects parse it as a Snowflake version
SERVER_VERSION = "9.0.0"

CANCELED = ("000604", "57014")
TIMED_OUT = ("000630", "57014")
QUERY_IN_PROGRESS = "333333"
QUERY_IN_PROGRESS_ASYNC = "333334"
SESSION_GONE = "390104"
NO_AUTHORIZATION = "390101"

SELECT = 0x1000
DML_INSERT, DML_UPDATE, DML_DELETE, DML_MERGE, DML_OTHER = 0x3100, 0x3200, 0x3300, 0x3400, 0x3000
ALTER_SESSION, USE, SHOW, DESCRIBE = 0x4100, 0x4300, 0x4400, 0x4500
TRANSACTION = 0x5100
DDL = 0x6100
CALL = 0x9000

#: the statement type id by the statement's first keyword
_FIRST_WORD: dict[str, int] = {
    "SELECT": SELECT, "WITH": SELECT, "FROM": SELECT, "VALUES": SELECT, "TABLE": SELECT, "(": SELECT,
    "SUMMARIZE": SELECT, "PIVOT": SELECT, "UNPIVOT": SELECT, "EXPLAIN": 0x2000,
    "INSERT": DML_INSERT, "UPDATE": DML_UPDATE, "DELETE": DML_DELETE, "MERGE": DML_MERGE, "COPY": DML_OTHER,
    "SHOW": SHOW, "DESCRIBE": DESCRIBE, "DESC": DESCRIBE, "USE": USE, "SET": ALTER_SESSION, "RESET": ALTER_SESSION,
    "PRAGMA": ALTER_SESSION, "BEGIN": TRANSACTION, "START": TRANSACTION, "COMMIT": TRANSACTION,
    "ROLLBACK": TRANSACTION, "ABORT": TRANSACTION, "END": TRANSACTION, "CALL": CALL,
}
#: the header of the one-row result a DML statement answers
DML_COLUMNS = {DML_INSERT: "number of rows inserted", DML_UPDATE: "number of rows updated",
               DML_DELETE: "number of rows deleted", DML_MERGE: "number of rows inserted"}


def statement_type(sql: str) -> int:
    text = sql.lstrip()
    while text.startswith(("--", "/*")):
        if text.startswith("--"):
            text = text.split("\n", 1)[1].lstrip() if "\n" in text else ""
        else:
            text = text.split("*/", 1)[1].lstrip() if "*/" in text else ""
    word = text[:1] if text[:1] == "(" else text.split(None, 1)[0].upper() if text else ""
    if word == "ALTER" and text.upper().split()[1:2] == ["SESSION"]:
        return ALTER_SESSION
    return _FIRST_WORD.get(word, DDL)


#: DuckDB's error kinds (the start of its message) in Snowflake's codes
DUCKDB_CODES = {
    "Catalog Error": ("002003", "42S02"),
    "Parser Error": ("001003", "42000"),
    "Binder Error": ("000904", "42000"),
    "Conversion Error": ("100038", "22018"),
    "Constraint Error": ("100072", "23000"),
    "Invalid Input Error": ("100069", "22000"),
    "Out of Range Error": ("100035", "22003"),
}


def code_of(exc: BaseException) -> tuple[str, str]:
    kind = str(exc).split(":", 1)[0]
    if kind in DUCKDB_CODES and isinstance(exc, errors.DatabaseError) and not isinstance(
            exc, (errors.InsufficientPrivileges, errors.ObjectNotFound, errors.SQLSyntaxError)):
        return DUCKDB_CODES[kind]
    for cls, code, state in ERROR_CODES:
        if isinstance(exc, cls):
            return code, state
    return "000603", "XX000"


def failure(message: str, code: str, sql_state: str | None = None, query_id: str | None = None,
            data: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = dict(data or {})
    body.update({"errorCode": code, "sqlState": sql_state, "queryId": query_id, "internalError": False})
    return {"data": body, "code": code, "message": message, "success": False, "headers": None}


def success(data: dict[str, Any] | None, code: str | None = None, message: str | None = None) -> dict[str, Any]:
    return {"data": data, "code": code, "message": message, "success": True}
