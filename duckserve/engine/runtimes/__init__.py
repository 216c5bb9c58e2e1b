"""Where service instances run: one interface (``base``) and its implementations.

``get_runtime(name)`` gives the runtime a compute pool names (``RUNTIME = 'PROCESS'``, the default,
needs nothing installed); ``runtime_for(handle)`` the one that started an instance. The rest of the
engine speaks only to these objects and never reads a handle's runtime-specific ``data``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from duckserve.engine.runtimes.base import (
    INSTANCE_PORT,
    Artifact,
    InstanceHandle,
    InstanceSpec,
    InstanceState,
    InstanceStatus,
    PoolNodes,
    Resources,
    Runtime,
    tail,
)
from duckserve.errors import ProgrammingError

__all__ = ["INSTANCE_PORT", "RUNTIMES", "Artifact", "InstanceHandle", "InstanceSpec", "InstanceState",
           "InstanceStatus", "PoolNodes", "Resources", "Runtime", "get_runtime", "runtime_for", "tail"]


def _process() -> Runtime:
    from duckserve.engine.runtimes.process import ProcessRuntime

    return ProcessRuntime()


def _docker() -> Runtime:
    from duckserve.engine.runtimes.docker import DockerRuntime

    return DockerRuntime()


def _swarm() -> Runtime:
    from duckserve.engine.runtimes.swarm import SwarmRuntime

    return SwarmRuntime()


#: runtime name -> how to make it (one instance per process, made on first use)
RUNTIMES: dict[str, Callable[[], Runtime]] = {"process": _process, "docker": _docker, "swarm": _swarm}
_made: dict[str, Runtime] = {}
_lock = threading.Lock()


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name`` (case-insensitive: a pool's RUNTIME = 'PROCESS' is ``process``)."""
    key = name.lower()
    with _lock:
        runtime = _made.get(key)
        if runtime is None:
            factory = RUNTIMES.get(key)
            if factory is None:
                raise ProgrammingError(
                    f"unknown runtime {name!r}: use one of {', '.join(repr(n.upper()) for n in RUNTIMES)}"
                )
            runtime = _made[key] = factory()
        return runtime


def runtime_for(handle: InstanceHandle) -> Runtime:
    """The runtime that started the instance of ``handle``."""
    return get_runtime(handle.runtime)
