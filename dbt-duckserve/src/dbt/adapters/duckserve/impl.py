"""The ``duckserve`` adapter: dbt-duckdb's adapter (its macros, relations, materializations and
incremental strategies) over duckserve connections."""

from __future__ import annotations

from dbt.adapters.duckdb.impl import DuckDBAdapter
from dbt.adapters.duckserve.connections import DuckServeConnectionManager


class DuckServeAdapter(DuckDBAdapter):
    ConnectionManager = DuckServeConnectionManager
