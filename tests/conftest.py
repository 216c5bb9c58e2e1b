from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import duckserve


@pytest.fixture(scope="session", autouse=True)
def _no_service_outlives_the_tests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Service instances are meant to outlive the process that started them; a test that leaves one
    running (failing before its DROP SERVICE, or not dropping at all) must not leave it behind the
    run. At the end, every process group started from this session's temporary homes is stopped."""
    yield
    if not Path("/proc").is_dir():
        return
    base = str(tmp_path_factory.getbasetemp())
    groups = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if base in command:
                groups.add(os.getpgid(int(entry.name)))
        except (OSError, ProcessLookupError):
            continue
    groups.discard(os.getpgid(0))
    for group in groups:
        try:
            os.killpg(group, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    _remove_containers_of(base)


def _remove_containers_of(base: str) -> None:
    """Containers and Swarm services of the session's homes (label io.duckserve.home) go too, where
    Docker runs."""
    from duckserve.engine.runtimes.docker_engine import Engine
    from duckserve.errors import Error

    engine = Engine()
    try:
        engine.ping()
        if (engine.info().get("Swarm") or {}).get("ControlAvailable"):  # Swarm services of the homes first
            for service in engine.services(label=["io.duckserve.home"]):
                if ((service.get("Spec") or {}).get("Labels") or {}).get("io.duckserve.home", "").startswith(base):
                    engine.remove_service(service["ID"])
        for container in engine.containers({"io.duckserve.home": None}):
            if (container.get("Labels") or {}).get("io.duckserve.home", "").startswith(base):
                engine.remove(container["Id"])
    except Error:
        pass


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def conn(home: Path) -> Iterator[Any]:
    connection = duckserve.connect(home=str(home))
    yield connection
    if not connection.closed:
        connection.close()


def rows(connection: Any, sql: str) -> list[dict[str, Any]]:
    """Run SQL and return the last result as a list of dicts."""
    cursor = connection.cursor()
    cursor.execute(sql)
    if cursor.description is None:
        return []
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r)) for r in cursor.fetchall()]
