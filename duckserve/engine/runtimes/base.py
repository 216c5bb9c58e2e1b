"""The runtime interface: what the engine asks of the place where service instances run.

A ``Runtime`` starts an instance from a location-neutral ``InstanceSpec`` (what to run: an
environment on this host or a container image; its arguments, environment, resources, labels and
the port it listens on) and returns an ``InstanceHandle``: plain JSON-serializable data the catalog
stores, carrying the runtime's name, the instance's endpoint URL once known, and the runtime's own
fields (``data``), which only that runtime reads. Any process sharing the home can later ask the
runtime named in a handle for the instance's state, its logs, or to stop it.

The server contract, the same on every runtime: an instance listens on ``$DUCKSERVE_HOST`` and
``$DUCKSERVE_PORT`` (``spec.port`` inside a container; 0, a free port, for a local process, which
then writes the bound port to ``$DUCKSERVE_PORT_FILE``, atomically), answers ``GET <ready_path>``
with 200 when it can serve, and finds its instance name in ``$DUCKSERVE_INSTANCE``. Where the
runtime can share a directory between the instance and this host (``spec.exchange``), it names it
in ``$DUCKSERVE_EXCHANGE_DIR``, at the same path on both sides.

``apply`` makes a set of replicas match a desired count; the base implementation does it with
start/state/stop, and a runtime whose engine schedules replicas itself (Swarm, Kubernetes) can
override it to hand the count to that engine.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

InstanceStatus = Literal["PENDING", "READY", "FAILED", "STOPPED"]

#: the port a server listens on inside its container, as in Snowflake's service specifications
INSTANCE_PORT = 5000
LOG_TAIL_LINES = 40


@dataclass
class Resources:
    """Limits of one instance. ``cpus`` in cores and ``memory_bytes`` (None: no limit), as the
    service requested them; ``gpus`` whole devices, ``gpu_devices`` the host's device indexes when the
    engine assigns them. ``node_cpus`` and ``node_memory_bytes``: the size of a node of the pool's
    instance family, which a scheduling engine (Swarm) reserves from and limits to when the service
    requested nothing."""

    cpus: float | None = None
    memory_bytes: int | None = None
    gpus: int = 0
    gpu_devices: tuple[str, ...] = ()
    node_cpus: float | None = None
    node_memory_bytes: int | None = None


@dataclass
class Artifact:
    """What an instance runs. ``environment``: a program on this host, ``entrypoint`` (e.g. the
    Python of a model environment). ``image``: a container image, ``reference`` (pullable, pinned
    by digest when it has one), run with its own entrypoint."""

    kind: Literal["environment", "image"]
    entrypoint: list[str] = field(default_factory=list)
    reference: str = ""
    digest: str = ""

    @classmethod
    def environment(cls, *entrypoint: str) -> Artifact:
        return cls("environment", entrypoint=list(entrypoint))

    @classmethod
    def image(cls, reference: str, digest: str = "") -> Artifact:
        return cls("image", reference=reference, digest=digest)


@dataclass
class PoolNodes:
    """What a runtime with nodes of its own (Swarm) sees of a compute pool: nodes carrying the
    pool's label that are ``ready`` (up and available for tasks), of those ``active`` (running an
    instance), and a ``message`` when something needs doing."""

    ready: int
    active: int
    total: int
    message: str = ""


@dataclass
class InstanceSpec:
    """One instance to start: ``args`` after the artifact's entrypoint, with ``env``; its output
    goes to (or, when the engine keeps it, is archived in) ``log_path``; ``state_dir`` is a host
    directory for the runtime's own files of this instance."""

    name: str
    artifact: Artifact
    args: list[str]
    log_path: Path
    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = INSTANCE_PORT
    ready_path: str = "/ready"
    resources: Resources = field(default_factory=Resources)
    labels: dict[str, str] = field(default_factory=dict)
    #: share a directory with this host at $DUCKSERVE_EXCHANGE_DIR (batches passed as files)
    exchange: bool = False
    #: local processes only: start from this process's environment (plus ``env``)
    inherit_env: bool = True


@dataclass
class InstanceHandle:
    """A started instance, as data (``to_dict``/``from_dict`` round-trip through JSON)."""

    runtime: str
    name: str
    started_at: str
    log_path: str
    #: the base URL requests go to (``http://host:port``), None until the instance has one
    endpoint: str | None = None
    ready_path: str = "/ready"
    labels: dict[str, str] = field(default_factory=dict)
    #: the runtime's own fields: read by that runtime only
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstanceHandle:
        if "runtime" in data and "data" in data:
            known = cls.__dataclass_fields__
            return cls(**{k: v for k, v in data.items() if k in known})
        # a handle stored before runtimes had this interface: a local process
        port = data.get("port")
        own = {k: data.get(k) for k in ("pid", "pgid", "port_file", "proc_start")}
        return cls(runtime="process", name=str(data.get("name", "")), started_at=str(data.get("started_at", "")),
                   log_path=str(data.get("log_path", "")), ready_path=str(data.get("ready_path", "/ready")),
                   endpoint=f"http://127.0.0.1:{port}" if port else None, data=own)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> InstanceHandle:
        return cls.from_dict(json.loads(text))


@dataclass
class InstanceState:
    """What a runtime observes of an instance: its status, and for one that ended, how."""

    status: InstanceStatus
    exit_code: int | None = None
    message: str = ""

    @property
    def text(self) -> str:
        """A short human description: ``Running``, ``Failed: exited with code 137 (killed)``."""
        base = {"READY": "Running", "PENDING": "Starting", "STOPPED": "Stopped", "FAILED": "Failed"}[self.status]
        return f"{base}: {self.message}" if self.message else base


class Runtime(ABC):
    """Starts, watches and stops service instances. Every method but ``start`` works from any
    process that shares the home, given the handle ``start`` returned."""

    #: the name handles carry and pools choose (RUNTIME = 'PROCESS' | 'DOCKER' | 'SWARM')
    name: str = ""
    #: the engine restarts instances that fail or stop answering, and replaces lost ones, by itself
    #: (Swarm): the home's controller leaves them to it
    heals_itself: bool = False
    #: the engine moves a set of instances to a new spec by itself, without downtime (Swarm's
    #: rolling update): model updates call ``roll`` instead of starting a second set beside the first
    rolls_updates: bool = False

    def check(self) -> None:
        """Raise OperationalError saying what is missing and how to get it when this runtime
        cannot run instances on this machine."""
        return None

    def check_resources(self, resources: Resources, what: str) -> None:
        """Raise ProgrammingError when ``resources`` cannot be given here (e.g. GPUs on an engine
        without GPU support); ``what`` names the service for the message."""
        return None

    @abstractmethod
    def start(self, spec: InstanceSpec) -> InstanceHandle:
        """Launch the instance and return at once (it is PENDING until ready)."""

    @abstractmethod
    def wait_ready(self, handle: InstanceHandle, timeout: float = 60.0) -> InstanceHandle:
        """Block until the instance answers its ready path: the handle with its endpoint, or
        OperationalError with the end of its log."""

    @abstractmethod
    def state(self, handle: InstanceHandle) -> InstanceState:
        """PENDING (starting), READY (answers its ready path), FAILED (ended on its own with an
        error, or killed), STOPPED (stopped, or ended cleanly by itself)."""

    def status(self, handle: InstanceHandle) -> InstanceStatus:
        return self.state(handle).status

    def endpoint(self, handle: InstanceHandle) -> str | None:
        """The instance's base URL, looked up when the handle does not carry it yet."""
        return handle.endpoint

    @abstractmethod
    def stop(self, handle: InstanceHandle, timeout: float = 10.0) -> None:
        """Stop the instance and release what it holds (its log stays readable); a no-op when it
        is already gone."""

    @abstractmethod
    def logs(self, handle: InstanceHandle, lines: int | None = None) -> str:
        """The instance's output: all of it, or its last ``lines`` lines."""

    def describe(self, handle: InstanceHandle) -> dict[str, Any]:
        """What SHOW SERVICE CONTAINERS shows of an instance: ``container_id``, ``pid``,
        ``image_digest`` where the runtime knows them."""
        return {}

    def pool_nodes(self, pool: str, min_nodes: int) -> PoolNodes | None:
        """The nodes of compute pool ``pool`` where the runtime has nodes of its own; None where a
        pool's nodes are notional (processes and containers on this machine)."""
        return None

    def release(self, labels: Mapping[str, str]) -> None:
        """After a service's instances are stopped for good (the service is dropped): free what the
        engine keeps for the whole set (a Swarm service), named by the labels its specs carried."""
        return None

    def roll(self, replicas: int, make_spec: Callable[[int], InstanceSpec], current: Mapping[int, InstanceHandle],
             timeout: float) -> dict[int, InstanceHandle]:
        """Where ``rolls_updates``: move the running instances ``current`` to ``make_spec``'s, one at a
        time, each new one ready before an old one stops; the new handles, ready. When a new instance
        fails, the engine rolls back (the old spec serves on) and this raises OperationalError."""
        raise NotImplementedError(f"the {self.name} runtime does not roll updates itself")

    def apply(self, replicas: int, make_spec: Callable[[int], InstanceSpec],
              current: Mapping[int, InstanceHandle]) -> dict[int, InstanceHandle]:
        """Make instances ``0 .. replicas-1`` run: keep those READY or PENDING, replace those that
        FAILED or STOPPED, stop those beyond ``replicas``, start the missing ones from
        ``make_spec(instance_id)``. Returns at once (new instances are PENDING) with the handles
        of the instances now wanted, by instance id."""
        wanted: dict[int, InstanceHandle] = {}
        for instance_id, handle in sorted(current.items()):
            if instance_id >= replicas:
                self.stop(handle)
            elif self.status(handle) in ("READY", "PENDING"):
                wanted[instance_id] = handle
            else:
                self.stop(handle)
        for instance_id in range(replicas):
            if instance_id not in wanted:
                wanted[instance_id] = self.start(make_spec(instance_id))
        return dict(sorted(wanted.items()))


def now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def tail(path: Path | str, lines: int | None = None, max_bytes: int = 1 << 20) -> str:
    """The last ``lines`` lines of a text file (all of it when None), reading at most ``max_bytes``."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if lines is None:
                fh.seek(0)
                return fh.read().decode(errors="replace")
            start = max(0, size - max_bytes)
            fh.seek(max(0, start - 1))
            before = fh.read(1) if start > 0 else b"\n"
            data = fh.read()
    except OSError:
        return ""
    kept = data.decode(errors="replace").splitlines(keepends=True)
    if before != b"\n" and kept:
        kept = kept[1:]  # the first line was cut in the middle
    return "".join(kept[-lines:]) if lines > 0 else ""


def last_lines(text: str, lines: int | None) -> str:
    """The last ``lines`` lines of ``text`` (all of it when None)."""
    if lines is None:
        return text
    kept = text.splitlines(keepends=True)
    return "".join(kept[-lines:]) if lines > 0 else ""
