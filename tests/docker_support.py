"""What the container tests need: a Docker engine, Debian's docker-registry and the base image.

On a machine without them the tests skip, saying how to enable them; with ``CI=true`` a container
test that cannot run fails instead (``make test`` installs and starts what is missing, as root)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

from duckserve.errors import Error
from tests import needs
from tests.conftest import rows

HOW = ("run `make test` as root (it installs docker.io, docker-registry and debootstrap with apt-get and starts "
       "dockerd), or install them and start dockerd yourself")


def require_docker() -> None:
    """Skip (fail on CI) unless a Docker engine answers and a registry server is installed."""
    from duckserve.engine.runtimes.docker_engine import Engine

    problem = None
    try:
        Engine().ping()
    except Error as exc:
        problem = str(exc)
    if problem is None and not (shutil.which("docker-registry") or shutil.which("registry")):
        problem = "Debian's docker-registry is not installed"
    if problem is not None:
        needs.unavailable(f"needs Docker: {problem}. To enable: {HOW}")


def base_reference() -> str:
    """The base image (built once per machine, cached), for tests that run bare containers."""
    from duckserve.engine.images.base import base_image
    from duckserve.engine.runtimes.docker_engine import Engine

    require_docker()
    return base_image(Engine(), io.StringIO()).reference


def require_swarm() -> None:
    """Skip (fail on CI) unless this machine's Docker engine is a swarm manager, as
    ``tests/docker_host.py up`` makes it (``docker swarm init --advertise-addr 127.0.0.1``)."""
    from duckserve.engine.runtimes.swarm import SwarmRuntime

    require_docker()
    try:
        SwarmRuntime().check()
    except Error as exc:
        needs.unavailable(f"needs a swarm: {exc}. To enable: {HOW} (tests/docker_host.py up initializes the swarm)")


def engine() -> Any:
    from duckserve.engine.runtimes.docker_engine import Engine

    return Engine()


def swarm_services(home: Path) -> list[dict[str, Any]]:
    """The Swarm services of the account in ``home``."""
    return engine().services(label=[f"io.duckserve.home={home}"])  # type: ignore[no-any-return]


def set_node_label(node_id: str, label: str, add: bool) -> None:
    """Add ``label=true`` to a swarm node or remove it; a node that has left the swarm is passed over."""
    engine().label_node(node_id, label, add)


def close_swarm_account(conn: Any, home: Path) -> None:
    """Drop the account's services and close it; then remove any Swarm service of it a failed test left."""
    try:
        for service in rows(conn, "SHOW SERVICES EXCLUDE JOBS"):
            conn.execute(f"DROP SERVICE {service['name']}")
    finally:
        conn.close()
        for service in swarm_services(home):
            engine().remove_service(service["ID"])


def remove_pulled_images(registry_host: str) -> None:
    """The images Swarm's tasks pulled from a test's registry."""
    docker = engine()
    for image in docker.images("io.duckserve.build"):
        names = (image.get("RepoTags") or []) + (image.get("RepoDigests") or [])
        if any(name.startswith(registry_host + "/") for name in names):
            docker.remove_image(image["Id"], force=True)
