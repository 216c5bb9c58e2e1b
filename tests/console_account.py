"""An account for the console's tests: a deployed service, two model versions, users with tokens,
and ``duckserve ui`` serving it as a real process on loopback."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import duckserve
from duckserve.model import ModelContext
from duckserve.registry import Registry
from tests.deployments import Sleepy
from tests.servers import Server, start_server

SERVICE = "DUCKSERVE.PUBLIC.CONSOLE_SVC"


@dataclass
class ConsoleAccount:
    home: Path
    database: Path
    server: Server
    ops_token: str        # role OPS: MONITOR and OPERATE on the service, calls its functions
    viewer_token: str     # role VIEWER: MONITOR on the service only

    @property
    def url(self) -> str:
        return self.server.url + "/"

    @property
    def local_link(self) -> str:
        match = re.search(r"open (http://\S+/\?key=\S+)", self.server.log())
        assert match, f"duckserve ui printed no local link; its output:\n{self.server.log()}"
        return match.group(1)

    def connect(self) -> Any:
        """A SQL connection of the account (in memory: the console's process holds the DuckDB file)."""
        return duckserve.connect(home=str(self.home))

    def status(self) -> str:
        with self.connect() as conn:
            return str(conn.execute("SELECT status FROM (SHOW SERVICES LIKE 'CONSOLE_SVC')").fetchall()[0][0])

    def wait_status(self, wanted: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while self.status() != wanted:
            if time.monotonic() > deadline:
                pytest.fail(f"service {SERVICE} is {self.status()}, not {wanted}, after {seconds:.0f} s")
            time.sleep(0.2)


def _token(conn: Any, user: str, role: str) -> str:
    return str(conn.execute(f"ALTER USER {user} ADD PROGRAMMATIC ACCESS TOKEN console "
                            f"ROLE_RESTRICTION = '{role}'").fetchall()[0][1])


def deploy(base: Path) -> ConsoleAccount:
    home, database = base / "home", base / "data.duckdb"
    with duckserve.connect(str(database), home=str(home)) as conn:
        conn.execute("CREATE COMPUTE POOL console_pool MIN_NODES = 1 MAX_NODES = 2 INSTANCE_FAMILY = 'CPU_X64_XS'; "
                     "CREATE IMAGE REPOSITORY console_images")
        registry = Registry(conn)
        sample = pd.DataFrame({"X": [1.0]})
        mv = registry.log_model(Sleepy(ModelContext()), model_name="console_model", version_name="v1",
                                sample_input_data=sample, comment="doubles X")
        registry.log_model(Sleepy(ModelContext()), model_name="console_model", version_name="v2", sample_input_data=sample)
        mv.create_service(service_name="console_svc", service_compute_pool="console_pool", image_repo="console_images",
                          max_batch_rows=50, num_workers=2)
        conn.execute("CREATE TABLE features AS SELECT range::DOUBLE AS x FROM range(10)")
        conn.execute("CREATE ROLE ops; CREATE USER opal DEFAULT_ROLE = ops; GRANT ROLE ops TO USER opal; "
                     "GRANT MONITOR, OPERATE ON SERVICE console_svc TO ROLE ops; "
                     "GRANT MONITOR ON COMPUTE POOL console_pool TO ROLE ops; "
                     "GRANT USAGE ON MODEL console_model TO ROLE ops; "
                     "GRANT SERVICE ROLE console_svc!INFERENCE_SERVICE_FUNCTION_USAGE TO ROLE ops; "
                     "CREATE ROLE viewer; CREATE USER vic DEFAULT_ROLE = viewer; GRANT ROLE viewer TO USER vic; "
                     "GRANT MONITOR ON SERVICE console_svc TO ROLE viewer")
        ops, viewer = _token(conn, "opal", "ops"), _token(conn, "vic", "viewer")
    server = start_server("console", ["duckserve", "ui", "--home", str(home), "--database", str(database)],
                          base / "server", "/")
    return ConsoleAccount(home, database, server, ops, viewer)


def drop(account: ConsoleAccount) -> None:
    account.server.stop()
    with duckserve.connect(home=str(account.home)) as conn:
        conn.execute("DROP SERVICE IF EXISTS console_svc")
