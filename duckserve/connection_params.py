"""``SnowflakeLoginOptions(connection_name)``, as in ``snowflake.ml.utils.connection_params``: the
options of a named connection, for ``Session.builder.configs(...)`` (`duckserve.snowpark`).

Named connections live in ``<home>/connections.toml`` (home: ``$DUCKSERVE_HOME`` or ``~/.duckserve``)::

    [connections.analytics]
    user = "ANA"
    role = "ANALYST"
    warehouse = "COMPUTE_WH"

A name that is not there (or no file at all) gives the defaults: the account in the home, as ADMIN.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _home() -> Path:
    return Path(os.environ.get("DUCKSERVE_HOME") or Path.home() / ".duckserve")


def SnowflakeLoginOptions(connection_name: str = "", login_file: str | None = None) -> dict[str, Any]:  # noqa: N802
    """The options of connection ``connection_name`` (see the module docstring)."""
    options: dict[str, Any] = {"home": str(_home())}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: named connections need 3.11's tomllib
        return options
    path = Path(login_file) if login_file else _home() / "connections.toml"
    if path.is_file():
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
        named = (data.get("connections") or {}).get(connection_name) if connection_name else None
        if named:
            options.update({str(k).lower(): v for k, v in named.items()})
    return options
