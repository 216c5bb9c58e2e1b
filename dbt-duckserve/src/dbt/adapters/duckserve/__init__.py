"""dbt adapter ``type: duckserve``: dbt-duckdb whose connections are duckserve connections.

dbt finds it as ``dbt.adapters.duckserve`` (its ``Plugin``) and its macros in
``dbt/include/duckserve``; dbt-duckdb is its parent, so every ``duckdb__`` macro applies.
"""

from dbt.adapters.base import AdapterPlugin
from dbt.adapters.duckserve.credentials import DuckServeCredentials
from dbt.adapters.duckserve.impl import DuckServeAdapter
from dbt.include import duckserve as include

Plugin = AdapterPlugin(
    adapter=DuckServeAdapter,  # type: ignore[arg-type]
    credentials=DuckServeCredentials,
    include_path=include.PACKAGE_PATH,
    dependencies=["duckdb"],
)
