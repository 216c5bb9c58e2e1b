"""What the container tests need: a Docker engine, Debian's docker-registry and the base image.

On a machine without them the tests skip, saying how to enable them; with ``CI=true`` a container
test that cannot run fails instead (``make test`` installs and starts what is missing, as root)."""

from __future__ import annotations

import io
import os
import shutil

import pytest

from duckserve.errors import Error

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
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: the container tests must run, but {problem}")
    pytest.skip(f"needs Docker: {problem}. To enable: {HOW}")


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
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: the Swarm tests must run, but {exc}")
        pytest.skip(f"needs a swarm: {exc}. To enable: {HOW} (tests/docker_host.py up initializes the swarm)")
