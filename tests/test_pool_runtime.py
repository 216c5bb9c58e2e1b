"""A compute pool chooses its runtime: RUNTIME = 'PROCESS' | 'DOCKER' (duckserve's extension of
CREATE/ALTER COMPUTE POOL), defaulting to $DUCKSERVE_RUNTIME, else PROCESS; SHOW and DESCRIBE say which."""

from __future__ import annotations

from typing import Any

import pytest

from duckserve import errors
from tests.conftest import rows


def test_default_runtime_and_show(conn: Any) -> None:
    conn.execute("CREATE COMPUTE POOL p MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_XS'")
    conn.execute("CREATE COMPUTE POOL q MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_XS' RUNTIME = 'process'")
    assert [(r["name"], r["runtime"]) for r in rows(conn, "SHOW COMPUTE POOLS")] == [("P", "PROCESS"), ("Q", "PROCESS")]
    assert rows(conn, "DESCRIBE COMPUTE POOL q")[0]["runtime"] == "PROCESS"


def test_unknown_runtime_is_refused_and_nothing_is_created(conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(errors.ProgrammingError, match=r"RUNTIME = 'KUBERNETES' is not a runtime: use 'PROCESS'"):
        conn.execute("CREATE COMPUTE POOL k MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_XS' "
                     "RUNTIME = 'KUBERNETES'")
    monkeypatch.setenv("DUCKSERVE_RUNTIME", "nomad")
    with pytest.raises(errors.ProgrammingError, match=r"\$DUCKSERVE_RUNTIME"):
        conn.execute("CREATE COMPUTE POOL k MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_XS'")
    assert rows(conn, "SHOW COMPUTE POOLS") == []
    monkeypatch.setenv("DUCKSERVE_RUNTIME", "PROCESS")
    conn.execute("CREATE COMPUTE POOL k MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_XS'")
    assert rows(conn, "SHOW COMPUTE POOLS")[0]["runtime"] == "PROCESS"


def test_alter_runtime(conn: Any) -> None:
    conn.execute("CREATE COMPUTE POOL p MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_XS'")
    conn.execute("ALTER COMPUTE POOL p SET RUNTIME = 'PROCESS'")
    conn.execute("ALTER COMPUTE POOL p UNSET RUNTIME")
    with pytest.raises(errors.ProgrammingError, match="is not a runtime"):
        conn.execute("ALTER COMPUTE POOL p SET RUNTIME = 'LAMBDA'")
    assert rows(conn, "SHOW COMPUTE POOLS")[0]["runtime"] == "PROCESS"
