"""The vectorized DuckDB UDFs one connection registers for ``svc!method(...)`` and
``MODEL(m, v)!method(...)``.

DuckDB registers a Python UDF inside the open transaction: a ROLLBACK drops the ones registered
since BEGIN, and the name cannot be registered again afterwards. So names carry a generation that
moves on after such a rollback, and the next statement registers fresh ones.
"""

from __future__ import annotations

import hashlib
import inspect
import threading
from collections.abc import Callable
from typing import Any

from duckserve.inference_server.manifest import MethodSpec


class UdfRegistry:
    def __init__(self, connection: Any, prefix: str) -> None:
        self.connection = connection
        self.prefix = prefix
        self._registered: dict[str, str] = {}  # udf name -> the signature it was registered with
        self._since_begin: set[str] = set()
        self._generation = 0
        self.lock = threading.Lock()

    def name(self, key: str) -> str:
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        return f"{self.prefix}{digest}" + (f"_{self._generation}" if self._generation else "")

    def ensure(self, udf: str, method: MethodSpec, body: Callable[..., Any]) -> None:
        """Register ``body`` as ``udf`` (arrow in, arrow out) unless it is there with this signature."""
        import duckdb
        from duckdb.func import ARROW, SPECIAL

        signature = f"{method.sql_arguments} -> {method.sql_return_type}"
        if self._registered.get(udf) == signature:
            return
        con = self.connection.duckdb
        if udf in self._registered:
            con.remove_function(udf)
        parameters: list[Any] = [duckdb.sqltype(f.duckdb_type) for f in method.inputs]

        def call(*arguments: Any) -> Any:
            return body(arguments)

        # DuckDB reads the arity from the Python signature
        call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(f"arg{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(len(parameters))])
        con.create_function(udf, call, parameters, duckdb.sqltype(method.sql_return_type), type=ARROW,
                            null_handling=SPECIAL, side_effects=False)
        self._registered[udf] = signature
        if self.connection._in_transaction:
            self._since_begin.add(udf)

    def transaction_ended(self, rolled_back: bool) -> None:
        if rolled_back and self._since_begin:
            for udf in self._since_begin:
                self._registered.pop(udf, None)
            self._generation += 1
        self._since_begin.clear()
