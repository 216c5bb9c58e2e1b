"""dbt-duckdb's connection manager, opening duckserve connections (``environment.py``)."""

from __future__ import annotations

import atexit

import dbt.adapters.exceptions
import duckserve
from dbt.adapters.contracts.connection import Connection, ConnectionState
from dbt.adapters.duckdb.connections import DuckDBConnectionManager
from dbt.adapters.duckserve.environment import DuckServeEnvironment
from dbt.adapters.events.logging import AdapterLogger

logger = AdapterLogger("duckserve")


class DuckServeConnectionManager(DuckDBConnectionManager):
    TYPE = "duckserve"

    @classmethod
    def open(cls, connection: Connection) -> Connection:
        if connection.state == ConnectionState.OPEN:
            return connection
        credentials = cls.get_credentials(connection.credentials)
        # dbt-duckdb's adapter and relation read the environment from DuckDBConnectionManager's
        # own slot (DuckDBConnectionManager.env()), so ours is kept there, where they look
        base = DuckDBConnectionManager
        with base._LOCK:
            try:
                if base._ENV is None or base._ENV.creds != credentials:
                    if base._ENV is not None:
                        base._ENV.close()
                    base._ENV = DuckServeEnvironment(credentials)  # type: ignore[assignment]
                connection.handle = base._ENV.handle()  # type: ignore[attr-defined]
                connection.state = ConnectionState.OPEN
            except duckserve.errors.Error as exc:  # type: ignore[attr-defined]
                logger.debug(f"cannot open a duckserve connection: {exc}")
                connection.handle = None
                connection.state = ConnectionState.FAIL
                raise dbt.adapters.exceptions.FailedToConnectError(str(exc)) from exc
        return connection

    @classmethod
    def close_all_connections(cls) -> None:
        base = DuckDBConnectionManager
        with base._LOCK:
            if isinstance(base._ENV, DuckServeEnvironment):
                base._ENV.close()
                base._ENV = None


atexit.register(DuckServeConnectionManager.close_all_connections)
