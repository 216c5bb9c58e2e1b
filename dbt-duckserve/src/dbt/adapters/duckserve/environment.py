"""Where a ``type: duckserve`` project's SQL runs: a duckserve connection per dbt connection.

dbt-duckdb's local environment hands each dbt thread a cursor of one DuckDB connection. Here each
dbt connection is its own ``duckserve.connect(path, home, ...)`` (cheap after the first: DuckDB
shares the open database between connections of one process), so every statement a model, hook
or ``run-operation`` macro sends goes through duckserve's executor: ``service!method(...)`` calls,
``CREATE COMPUTE POOL``, ``SHOW SERVICES``, grants and the session's role and warehouse all work,
and each dbt thread has its own session and transaction.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

from dbt_common.exceptions import DbtRuntimeError

import duckserve
from dbt.adapters.contracts.connection import AdapterResponse, Connection
from dbt.adapters.duckdb.environments import Environment
from dbt.adapters.duckdb.utils import SourceConfig, TargetConfig
from dbt.adapters.duckserve.credentials import DuckServeCredentials


class DuckServeHandle:
    """What dbt holds as ``connection.handle``: one duckserve connection and its cursor."""

    def __init__(self, connection: Any, environment: DuckServeEnvironment) -> None:
        self.connection = connection
        self._cursor = connection.cursor()
        self._environment = environment

    def cursor(self) -> Any:
        return self._cursor

    def rollback(self) -> None:
        self.connection.rollback()

    def interrupt(self) -> None:
        self.connection.interrupt()

    def close(self) -> None:
        if not self.connection.closed:
            self.connection.close()
        self._environment.forget(self)


class PythonModelSession:
    """What dbt-duckdb's ``materialize(df, con)`` writes a Python model's result through: DataFrames
    are registered on the DuckDB connection underneath, statements go through duckserve."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def register(self, name: str, frame: Any) -> None:
        self.connection.duckdb.register(name, frame)

    def unregister(self, name: str) -> None:
        self.connection.duckdb.unregister(name)

    def execute(self, sql: str, parameters: Any = None) -> Any:
        return self.connection.cursor().execute(sql, parameters)

    def cursor(self) -> PythonModelSession:
        return self


class DuckServeEnvironment(Environment):
    def __init__(self, credentials: DuckServeCredentials) -> None:
        unsupported = credentials.unsupported_options()
        if unsupported:
            raise DbtRuntimeError("profile of type duckserve: not supported here: " + "; ".join(unsupported))
        super().__init__(credentials)
        self._lock = threading.Lock()
        self._open: set[DuckServeHandle] = set()

    @property
    def duckserve_credentials(self) -> DuckServeCredentials:
        assert isinstance(self.creds, DuckServeCredentials)
        return self.creds

    def handle(self) -> DuckServeHandle:
        creds = self.duckserve_credentials
        connection = duckserve.connect(creds.path, home=creds.account_home, user=creds.user, role=creds.role,
                                       warehouse=creds.warehouse, config=dict(creds.config_options or {}),
                                       python_variables=False)
        try:
            self._configure(connection, creds)
        except Exception:
            connection.close()
            raise
        handle = DuckServeHandle(connection, self)
        with self._lock:
            self._open.add(handle)
        return handle

    @staticmethod
    def _configure(connection: Any, creds: DuckServeCredentials) -> None:
        """The profile's extensions, secrets, attachments and settings, as dbt-duckdb applies them."""
        raw = connection.duckdb
        for extension in creds.extensions or []:
            if isinstance(extension, str):
                raw.install_extension(extension)
                raw.load_extension(extension)
            else:
                raw.execute(f"INSTALL {extension['name']} FROM {extension['repo']}")
                raw.load_extension(extension["name"])
        cursor = connection.cursor()
        for sql in creds.secrets_sql():
            cursor.execute(sql)
        for attachment in creds.attach or []:
            cursor.execute(attachment.to_sql())
        for key, value in (creds.settings or {}).items():
            cursor.execute(f"SET {key} = '{str(value).replace(chr(39), chr(39) * 2)}'")

    def forget(self, handle: DuckServeHandle) -> None:
        with self._lock:
            self._open.discard(handle)

    def close(self) -> None:
        with self._lock:
            handles, self._open = list(self._open), set()
        for handle in handles:
            if not handle.connection.closed:
                handle.connection.close()

    @classmethod
    def is_cancelable(cls) -> bool:
        return True

    @classmethod
    def cancel(cls, connection: Connection) -> None:
        if isinstance(connection.handle, DuckServeHandle):
            connection.handle.interrupt()

    def submit_python_job(self, handle: DuckServeHandle, parsed_model: dict[str, Any],
                          compiled_code: str) -> AdapterResponse:
        """Run a Python model: ``model(dbt, session)`` gets the duckserve connection as ``session``
        (so it may use ``duckserve.registry.Registry(session)``), and its DataFrame is written as
        the model's table through dbt-duckdb's ``materialize``."""
        connection = handle.connection
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{parsed_model['alias']}.py"
            path.write_text(compiled_code.lstrip())
            spec = importlib.util.spec_from_file_location(parsed_model["alias"], path)
            if spec is None or spec.loader is None:
                raise DbtRuntimeError(f"cannot load Python model {parsed_model['alias']} as a module")
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
                dbt = module.dbtObj(lambda name: connection.cursor().execute(f"select * from {name}"))
                frame = module.model(dbt, connection)
                if hasattr(frame, "arrow") and not hasattr(frame, "to_pandas"):  # a DuckDB relation
                    frame = frame.arrow()
                module.materialize(frame, PythonModelSession(connection))
            except Exception as exc:
                raise DbtRuntimeError(
                    f"Python model {parsed_model['alias']} failed:\n{''.join(traceback.format_exception(exc))}"
                ) from exc
            finally:
                sys.modules.pop(parsed_model["alias"], None)
        return AdapterResponse(_message="OK")

    def load_source(self, plugin_name: str, source_config: SourceConfig) -> str:
        raise DbtRuntimeError(f"source plugin {plugin_name!r}: dbt-duckdb's plugins are not supported by "
                              "type: duckserve; load the data with a seed or a model instead")

    def store_relation(self, plugin_name: str, target_config: TargetConfig) -> None:
        raise DbtRuntimeError(f"plugin {plugin_name!r}: dbt-duckdb's plugins are not supported by "
                              "type: duckserve; materialize as a table instead")
