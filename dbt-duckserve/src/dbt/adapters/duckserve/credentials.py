"""The profile of ``type: duckserve``: dbt-duckdb's, plus the duckserve account and session.

```yaml
jaffle_shop:
  target: dev
  outputs:
    dev:
      type: duckserve
      path: jaffle_shop.duckdb     # the DuckDB database (a file, or :memory:)
      home: ~/.duckserve           # the account: catalog, pools, models, services
      user: ADMIN                  # optional: who runs the models (default ADMIN)
      role: SYSADMIN               # optional: the user's DEFAULT_ROLE otherwise
      warehouse: COMPUTE_WH        # optional: sizes service-function calls
      threads: 1
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from dbt.adapters.duckdb.credentials import DuckDBCredentials

# dbt-duckdb's options that reach somewhere other than a local DuckDB file: a duckserve
# connection is always local, so these are refused with the reason rather than ignored
UNSUPPORTED = {
    "remote": "a duckserve connection runs in dbt's process; point `path` at the database instead",
    "plugins": "dbt-duckdb's source plugins read through its own connection, not duckserve's",
    "filesystems": "fsspec filesystems are registered on dbt-duckdb's own connection",
}


@dataclass
class DuckServeCredentials(DuckDBCredentials):
    # the account directory; None means $DUCKSERVE_HOME, else ~/.duckserve (as duckserve.connect)
    home: Optional[str] = None
    user: Optional[str] = None
    role: Optional[str] = None
    warehouse: Optional[str] = None

    @property
    def type(self) -> str:
        return "duckserve"

    @property
    def account_home(self) -> Optional[str]:
        """``home`` with ``~`` expanded; an empty value (an unset env_var) means the default."""
        return os.path.expanduser(self.home) if self.home else None

    def unsupported_options(self) -> list[str]:
        """Each dbt-duckdb option set in the profile that a duckserve connection cannot honour."""
        found = [f"`{name}`: {why}" for name, why in UNSUPPORTED.items() if getattr(self, name)]
        if self.is_motherduck:
            found.append("MotherDuck databases: duckserve serves a local DuckDB database")
        return found

    def _connection_keys(self) -> tuple[str, ...]:
        return (*super()._connection_keys(), "home", "user", "role", "warehouse")
