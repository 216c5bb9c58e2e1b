"""duckserve: Snowflake-style model serving over DuckDB.

`import duckserve` stays cheap: duckdb, sqlglot and the frameworks load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# PEP 249 module globals
apilevel = "2.0"
threadsafety = 1
paramstyle = "qmark"

from duckserve.dbapi import (  # noqa: E402 - PEP 249 type objects and constructors (no duckdb import)
    BINARY,
    DATETIME,
    NUMBER,
    ROWID,
    STRING,
    Binary,
    Date,
    DateFromTicks,
    Time,
    TimeFromTicks,
    Timestamp,
    TimestampFromTicks,
)

__all__ = ["BINARY", "DATETIME", "NUMBER", "ROWID", "STRING", "Binary", "Date", "DateFromTicks", "Time",
           "TimeFromTicks", "Timestamp", "TimestampFromTicks", "apilevel", "connect", "paramstyle", "threadsafety"]

if TYPE_CHECKING:
    from duckserve.sql.connection import Connection


def connect(
    database: str = ":memory:",
    home: str | None = None,
    user: str | None = None,
    role: str | None = None,
    warehouse: str | None = None,
    **kwargs: Any,
) -> Connection:
    """Open a PEP 249 connection: DuckDB ``database`` plus the account in ``home``.

    ``home`` defaults to ``$DUCKSERVE_HOME``, else ``~/.duckserve``. ``user`` defaults to the
    account's administrator (ADMIN); ``role`` to the user's default role.
    """
    from duckserve.sql.connection import Connection

    return Connection(database=database, home=home, user=user, role=role, warehouse=warehouse, **kwargs)


def __getattr__(name: str) -> Any:
    # PEP 249 exception classes as module attributes, loaded lazily like everything else.
    import importlib

    errors = importlib.import_module("duckserve.errors")
    if name != "errors" and hasattr(errors, name):
        return getattr(errors, name)
    raise AttributeError(f"module 'duckserve' has no attribute {name!r}")
