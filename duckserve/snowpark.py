"""Just enough of ``snowflake.snowpark.Session`` for the seed's examples to run with only their import
lines changed::

    from duckserve.snowpark import Session
    from duckserve.connection_params import SnowflakeLoginOptions

    session = Session.builder.configs(SnowflakeLoginOptions("connection_name")).create()
    reg = registry.Registry(session=session, database_name="my_registry_db", schema_name="my_registry_schema")

``create()`` returns a duckserve connection (`duckserve.connect`); the options it understands are
``home``, ``database`` (the DuckDB file; Snowflake's database is a namespace here, set on the
Registry), ``user``, ``role`` and ``warehouse``. Snowflake-only options (account, password,
authenticator, ...) are accepted and ignored: local connections are trusted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from duckserve.sql.connection import Connection

#: builder options passed on to duckserve.connect (option -> connect's argument)
CONNECT_OPTIONS = {"home": "home", "duckdb_database": "database", "database_file": "database", "user": "user",
                   "role": "role", "warehouse": "warehouse"}


class SessionBuilder:
    def __init__(self) -> None:
        self._options: dict[str, Any] = {}

    def configs(self, options: dict[str, Any]) -> SessionBuilder:
        self._options.update({str(k).lower(): v for k, v in options.items()})
        return self

    def config(self, key: str, value: Any) -> SessionBuilder:
        self._options[key.lower()] = value
        return self

    def create(self) -> Connection:
        import duckserve

        arguments = {target: self._options[option] for option, target in CONNECT_OPTIONS.items()
                     if self._options.get(option) is not None}
        return duckserve.connect(**arguments)

    getOrCreate = create  # noqa: N815 - Snowpark's name


class _BuilderDescriptor:
    def __get__(self, instance: object, owner: type) -> SessionBuilder:
        return SessionBuilder()  # a fresh builder each time, as Snowpark's Session.builder


class Session:
    """``Session.builder.configs({...}).create()`` gives a duckserve connection."""

    builder = _BuilderDescriptor()
