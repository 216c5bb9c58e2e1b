"""Instances as the tasks of a Docker Swarm service, scheduled by Swarm on a compute pool's nodes.

A compute pool with RUNTIME = 'SWARM' is the set of swarm nodes carrying the label
``duckserve.compute-pool.<pool>=true`` (``docker node update --label-add ...``); a node may
belong to several pools. A duckserve service is one Swarm service whose replicas are its instances
(instance ``i`` is the task in slot ``i + 1``), placed on the pool's nodes only, with CPU and memory
reservations and limits from the service's requests or its instance family, pulling its image from
the image repository's registry. Swarm's own mechanisms do the work: ``apply(replicas)`` sets the
replica count, a changed spec is a rolling update that starts a new task before stopping an old one
and rolls back when a new task fails, a task that fails is restarted, a lost node's tasks are
rescheduled. A task is ``running`` only once its health check (the server's ready path) passes.

Endpoints: each task publishes port 5000 in Swarm's host mode on a port the node picks; service
functions and the ingress call ``http://<node address>:<published port>`` of every running task
(no routing mesh: the client spreads batches over the tasks itself and retries a batch on another
task when one is lost). Logs come from Swarm (the tasks' logs, as ``docker service logs``), state from
the tasks' states. Stopping instance ``i`` scales the service to ``i`` replicas (Swarm scales by
count); ``release`` removes the Swarm service when the duckserve service is dropped.

The registry must be reachable from every node at the address in the image reference: a registry on
loopback (duckserve's local one) serves a one-node swarm, i.e. the manager's own engine; for more
nodes set ``$DUCKSERVE_REGISTRY`` to an address all nodes reach. Both are checked before a deploy.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from duckserve.engine.runtimes.base import (
    LOG_TAIL_LINES,
    InstanceHandle,
    InstanceSpec,
    InstanceState,
    PoolNodes,
    Resources,
    Runtime,
    last_lines,
    now_text,
)
from duckserve.engine.runtimes.docker_engine import Engine
from duckserve.errors import OperationalError, ProgrammingError

#: a node belongs to compute pool P when it carries the label ``duckserve.compute-pool.p=true`` (Swarm
#: constraints take no "/" in a label key; one key per pool lets a node serve several pools)
POOL_LABEL_PREFIX = "duckserve.compute-pool."
HOME_LABEL, SERVICE_LABEL, POOL_LABEL = "io.duckserve.home", "io.duckserve.service", "io.duckserve.compute-pool"
SPEC_LABEL = "io.duckserve.spec-digest"
#: without requests, an instance reserves this share of its instance family's node
RESERVED_SHARE = 0.9
SECOND = 1_000_000_000
PENDING_STATES = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
#: addresses of this machine's loopback interface: no other node reaches a registry there
LOOPBACK = re.compile(r"^(127\.0\.0\.\d+|localhost|\[::1\])(:\d+)?$")
HOW_TO_SWARM = ("make this Docker engine a swarm manager: docker swarm init --advertise-addr 127.0.0.1 (this "
                "machine as a one-node swarm), or run duckserve where `docker node ls` works")


def dns_label(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-") or "x"


def pool_label(pool: str) -> str:
    """The node label that puts a node in compute pool ``pool``."""
    return POOL_LABEL_PREFIX + dns_label(pool)


def label_command(pool: str) -> str:
    return f"docker node update --label-add {pool_label(pool)}=true <node>"


def _slot_tasks(tasks: list[dict[str, Any]], slot: int) -> list[dict[str, Any]]:
    """The tasks of one slot, newest first."""
    return sorted((t for t in tasks if t.get("Slot") == slot), key=lambda t: t.get("CreatedAt", ""), reverse=True)


def _task_state(task: dict[str, Any]) -> str:
    return str((task.get("Status") or {}).get("State", ""))


def _task_error(task: dict[str, Any]) -> str:
    status = task.get("Status") or {}
    return str(status.get("Err") or status.get("Message") or "")


class SwarmRuntime(Runtime):
    """Swarm services on the swarm whose manager is this machine's Docker engine."""

    name = "swarm"
    heals_itself = True
    rolls_updates = True

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine or Engine()
        self._node_addresses: dict[str, str] = {}

    # -- checks -----------------------------------------------------------------------------------
    def check(self) -> None:
        self.engine.ping()
        swarm = self.engine.info().get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            state = swarm.get("LocalNodeState") or "inactive"
            role = "a worker" if swarm.get("LocalNodeState") == "active" else f"swarm state {state}"
            raise OperationalError(f"the Docker engine on {self.engine.socket} is not a swarm manager ({role}): "
                                   f"{HOW_TO_SWARM}")

    def check_resources(self, resources: Resources, what: str) -> None:
        if not resources.gpus:
            return
        for node in self.engine.nodes():
            generic = ((node.get("Description") or {}).get("Resources") or {}).get("GenericResources") or []
            if any("GPU" in str((g.get("DiscreteResourceSpec") or {}).get("Kind", "")).upper() for g in generic):
                return
        raise ProgrammingError(
            f"{what}: gpu_requests={resources.gpus}, but no swarm node advertises NVIDIA GPUs: give the GPU nodes' "
            "engines --node-generic-resource NVIDIA-GPU=<uuid> (with the NVIDIA Container Toolkit as their default "
            "runtime), or deploy without gpu_requests"
        )

    def _pool_nodes(self, pool: str) -> list[dict[str, Any]]:
        return self.engine.nodes(node_label=[f"{pool_label(pool)}=true"])

    @staticmethod
    def _ready(node: dict[str, Any]) -> bool:
        return ((node.get("Status") or {}).get("State") == "ready"
                and (node.get("Spec") or {}).get("Availability") == "active")

    def pool_nodes(self, pool: str, min_nodes: int) -> PoolNodes:
        try:
            nodes = self._pool_nodes(pool)
            ready = {n["ID"] for n in nodes if self._ready(n)}
            ours = [s["ID"] for s in self.engine.services(label=[f"{POOL_LABEL}={pool}"])]
            busy = {t.get("NodeID") for t in self.engine.tasks(service=ours, desired_state=["running"])
                    if _task_state(t) == "running"} if ours else set()
        except OperationalError as exc:
            return PoolNodes(0, 0, 0, f"cannot read the swarm's nodes: {exc}")
        message = ""
        if len(ready) < min_nodes:
            message = (f"{len(ready)} of MIN_NODES = {min_nodes} swarm nodes of the pool are ready ({len(nodes)} "
                       f"carry its label {pool_label(pool)}=true): add nodes with `{label_command(pool)}`")
        return PoolNodes(ready=len(ready), active=len(ready & busy), total=len(nodes), message=message)

    def _check_placement(self, pool: str, reserve_cpus: float, reserve_memory: int, what: str) -> list[dict[str, Any]]:
        nodes = [n for n in self._pool_nodes(pool) if self._ready(n)]
        if not nodes:
            raise OperationalError(f"{what}: compute pool {pool} has no ready swarm node: label one with "
                                   f"`{label_command(pool)}` (docker node ls lists them)")

        def fits(node: dict[str, Any]) -> bool:
            size = (node.get("Description") or {}).get("Resources") or {}
            return (int(size.get("NanoCPUs", 0)) >= reserve_cpus * SECOND
                    and int(size.get("MemoryBytes", 0)) >= reserve_memory)

        if not any(fits(n) for n in nodes):
            raise ProgrammingError(
                f"{what}: an instance reserves {reserve_cpus:g} CPUs and {reserve_memory / 2**30:.1f} GiB, more than any "
                f"node of compute pool {pool} has: pass smaller cpu_requests/memory_requests, or label bigger nodes"
            )
        return nodes

    def _check_registry(self, reference: str, nodes: list[dict[str, Any]], what: str) -> None:
        """The image's registry answers here, and every node of the pool can reach its address."""
        host = reference.split("/", 1)[0]
        if "." not in host and ":" not in host and host != "localhost":
            return  # an image of Docker Hub or a local name: the nodes' engines know it
        scheme = "https" if os.environ.get("DUCKSERVE_REGISTRY", "").startswith("https://") else "http"
        try:
            answer = httpx.get(f"{scheme}://{host}/v2/", timeout=5, trust_env=False)
            if answer.status_code not in (200, 401):
                raise OperationalError(f"answered {answer.status_code}")
        except (httpx.HTTPError, OperationalError) as exc:
            raise OperationalError(f"{what}: the image repository's registry {host} does not answer ({exc}): start it "
                                   "or set $DUCKSERVE_REGISTRY to a registry every swarm node reaches") from exc
        if LOOPBACK.match(host):
            own = (self.engine.info().get("Swarm") or {}).get("NodeID")
            others = [(n.get("Description") or {}).get("Hostname", n["ID"]) for n in nodes if n["ID"] != own]
            if others:
                raise OperationalError(
                    f"{what}: the image repository's registry {host} is on this machine's loopback, which swarm "
                    f"node(s) {', '.join(others)} cannot reach: set $DUCKSERVE_REGISTRY=host:port to a registry every "
                    "node reaches (its engines need it in insecure-registries unless it serves TLS), rebuild, or "
                    "keep the pool to this node"
                )

    # -- the Swarm service ------------------------------------------------------------------------
    @staticmethod
    def _group_labels(spec: InstanceSpec) -> dict[str, str]:
        labels = {k: v for k, v in spec.labels.items() if k != "io.duckserve.instance"}
        labels.setdefault(SERVICE_LABEL, spec.name.rsplit("/", 1)[0])
        return labels

    @staticmethod
    def service_name(labels: Mapping[str, str]) -> str:
        """The Swarm service's name: the duckserve service and a digest of its home (one swarm may
        serve several accounts)."""
        home = hashlib.sha256(labels.get(HOME_LABEL, "").encode()).hexdigest()[:8]
        return f"duckserve-{dns_label(labels.get(SERVICE_LABEL, 'service'))[:42].strip('-')}-{home}"

    def _find(self, labels: Mapping[str, str]) -> dict[str, Any] | None:
        found = self.engine.services(name=[self.service_name(labels)])
        exact = [s for s in found if (s.get("Spec") or {}).get("Name") == self.service_name(labels)]
        return exact[0] if exact else None

    def _service_spec(self, spec: InstanceSpec, replicas: int) -> dict[str, Any]:
        if spec.artifact.kind != "image":
            raise ProgrammingError(
                f"instance {spec.name}: the Swarm runtime runs container images, not environments of this host: the "
                "service's build must produce an image (MODEL_BUILD on a pool with RUNTIME = 'SWARM')"
            )
        labels = self._group_labels(spec)
        pool = labels.get(POOL_LABEL, "")
        r = spec.resources
        reserve_cpus = r.cpus or (r.node_cpus * RESERVED_SHARE if r.node_cpus else 0.0)
        reserve_memory = r.memory_bytes or (int(r.node_memory_bytes * RESERVED_SHARE) if r.node_memory_bytes else 0)
        limit_cpus = r.cpus or r.node_cpus
        limit_memory = r.memory_bytes or r.node_memory_bytes
        resources: dict[str, Any] = {"Limits": {}, "Reservations": {}}
        if limit_cpus:
            resources["Limits"]["NanoCPUs"] = int(limit_cpus * SECOND)
        if limit_memory:
            resources["Limits"]["MemoryBytes"] = int(limit_memory)
        if reserve_cpus:
            resources["Reservations"]["NanoCPUs"] = int(reserve_cpus * SECOND)
        if reserve_memory:
            resources["Reservations"]["MemoryBytes"] = int(reserve_memory)
        if r.gpus:
            resources["Reservations"]["GenericResources"] = [
                {"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": r.gpus}}]
        prefix = spec.name.rsplit("/", 1)[0]
        env = {**spec.env, "DUCKSERVE_HOST": "0.0.0.0", "DUCKSERVE_PORT": str(spec.port),
               "DUCKSERVE_INSTANCE": f"{prefix}/task-{{{{.Task.Slot}}}}", "HOME": "/tmp"}
        ready = f"http://127.0.0.1:{spec.port}{spec.ready_path}"
        probe = f"import urllib.request; urllib.request.urlopen('{ready}', timeout=3)"
        container = {
            "Image": spec.artifact.reference, "Args": list(spec.args), "Env": [f"{k}={v}" for k, v in env.items()],
            "Labels": labels, "Init": True, "User": f"{os.getuid()}:{os.getgid()}",
            "Mounts": [{"Type": "tmpfs", "Target": "/tmp"}], "StopGracePeriod": 10 * SECOND,
            "Healthcheck": {"Test": ["CMD-SHELL", f'exec "$(command -v python3 || command -v python3.11 || command -v python)" -c "{probe}"'],
                            "Interval": SECOND, "Timeout": 5 * SECOND, "Retries": 3, "StartPeriod": 300 * SECOND},
        }
        template = {
            "ContainerSpec": container, "Resources": resources,
            "RestartPolicy": {"Condition": "on-failure", "Delay": SECOND, "MaxAttempts": 0},
            "Placement": {"Constraints": [f"node.labels.{pool_label(pool)}==true"]} if pool else {},
        }
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]
        return {
            "Name": self.service_name(labels), "Labels": {**labels, SPEC_LABEL: digest},
            "TaskTemplate": template, "Mode": {"Replicated": {"Replicas": replicas}},
            "UpdateConfig": {"Parallelism": 1, "Delay": 0, "FailureAction": "rollback", "Monitor": 5 * SECOND,
                             "MaxFailureRatio": 0.0, "Order": "start-first"},
            "RollbackConfig": {"Parallelism": 1, "Delay": 0, "FailureAction": "pause", "Monitor": 5 * SECOND,
                               "MaxFailureRatio": 0.0, "Order": "start-first"},
            "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": spec.port,
                                                       "PublishMode": "host"}]},
        }

    def _check_deploy(self, spec: InstanceSpec, desired: dict[str, Any]) -> None:
        reservations = desired["TaskTemplate"]["Resources"]["Reservations"]
        pool = self._group_labels(spec).get(POOL_LABEL, "")
        nodes = self._check_placement(pool, reservations.get("NanoCPUs", 0) / SECOND,
                                      int(reservations.get("MemoryBytes", 0)), f"instance {spec.name}")
        self._check_registry(spec.artifact.reference, nodes, f"instance {spec.name}")

    @staticmethod
    def _registry_auth(reference: str) -> str | None:
        user, password = os.environ.get("DUCKSERVE_REGISTRY_USERNAME"), os.environ.get("DUCKSERVE_REGISTRY_PASSWORD")
        if not user or not password:
            return None
        auth = {"username": user, "password": password, "serveraddress": reference.split("/", 1)[0]}
        return base64.urlsafe_b64encode(json.dumps(auth).encode()).decode()

    def apply(self, replicas: int, make_spec: Callable[[int], InstanceSpec],
              current: Mapping[int, InstanceHandle]) -> dict[int, InstanceHandle]:
        """Hand the count to Swarm: create the Swarm service, change its replica count, or roll it to
        a changed spec (start-first, rollback on failure); slots whose task ended cleanly (an idle
        server) are restarted. Returns at once with a handle per instance."""
        first = make_spec(0)
        desired = self._service_spec(first, replicas)
        existing = self._find(self._group_labels(first))
        if existing is None:
            if replicas == 0:
                return {}
            self._check_deploy(first, desired)
            service_id = self.engine.create_service(desired, self._registry_auth(first.artifact.reference))
        else:
            service_id = existing["ID"]
            spec = existing["Spec"]
            changed = (spec.get("Labels") or {}).get(SPEC_LABEL) != desired["Labels"][SPEC_LABEL]
            count = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0)
            if changed:
                if desired["TaskTemplate"]["ContainerSpec"]["Image"] != spec["TaskTemplate"]["ContainerSpec"]["Image"]:
                    self._check_deploy(first, desired)
                desired["TaskTemplate"]["ForceUpdate"] = spec["TaskTemplate"].get("ForceUpdate", 0)
                self.engine.update_service(service_id, existing["Version"]["Index"], desired)
            elif count != replicas:
                spec["Mode"] = {"Replicated": {"Replicas": replicas}}
                self.engine.update_service(service_id, existing["Version"]["Index"], spec)
            elif replicas and self._ended_cleanly(service_id, replicas):
                spec["TaskTemplate"]["ForceUpdate"] = int(spec["TaskTemplate"].get("ForceUpdate", 0)) + 1
                self.engine.update_service(service_id, existing["Version"]["Index"], spec)
        wanted: dict[int, InstanceHandle] = {}
        for instance_id in range(replicas):
            kept = current.get(instance_id)
            if kept is not None and kept.runtime == self.name and kept.data.get("service_id") == service_id:
                wanted[instance_id] = kept
                continue
            spec_i = make_spec(instance_id) if instance_id else first
            Path(spec_i.log_path).parent.mkdir(parents=True, exist_ok=True)
            wanted[instance_id] = InstanceHandle(
                runtime=self.name, name=spec_i.name, started_at=now_text(), log_path=str(spec_i.log_path),
                ready_path=spec_i.ready_path, labels=dict(spec_i.labels),
                data={"service_id": service_id, "service_name": desired["Name"], "slot": instance_id + 1,
                      "image": first.artifact.reference, "image_digest": first.artifact.digest})
        return wanted

    def roll(self, replicas: int, make_spec: Callable[[int], InstanceSpec], current: Mapping[int, InstanceHandle],
             timeout: float) -> dict[int, InstanceHandle]:
        """A Swarm rolling update to ``make_spec``'s spec, followed to its end: ``completed``, or rolled
        back by Swarm (a new task failed) or by us (a new task not healthy within ``timeout``: a model
        that does not load keeps /ready at 503), which raises OperationalError."""
        first = make_spec(0)
        desired = self._service_spec(first, replicas)
        existing = self._find(self._group_labels(first))
        if existing is None or (existing["Spec"].get("Labels") or {}).get(SPEC_LABEL) == desired["Labels"][SPEC_LABEL]:
            return self._ready_set(self.apply(replicas, make_spec, {}), timeout)
        service_id = existing["ID"]
        if desired["TaskTemplate"]["ContainerSpec"]["Image"] != existing["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]:
            self._check_deploy(first, desired)
        before = (existing.get("UpdateStatus") or {}).get("StartedAt")
        desired["TaskTemplate"]["ForceUpdate"] = existing["Spec"]["TaskTemplate"].get("ForceUpdate", 0)
        self.engine.update_service(service_id, existing["Version"]["Index"], desired)
        deadline = time.monotonic() + timeout
        while True:
            service = self.engine.service(service_id)
            if service is None:
                raise OperationalError(f"swarm service {desired['Name']} was removed during its update")
            status = service.get("UpdateStatus") or {}
            state = status.get("State", "")
            if status.get("StartedAt") != before and state == "completed":
                break
            if status.get("StartedAt") != before and state.startswith(("rollback", "paused")):
                raise OperationalError(f"swarm service {desired['Name']}: Swarm rolled the update back ({state}: "
                                       f"{status.get('Message', '')}); {self._new_task_failure(service_id, first)}")
            if time.monotonic() >= deadline:
                self.engine.rollback_service(service_id, service["Version"]["Index"], service["Spec"])
                raise OperationalError(f"swarm service {desired['Name']}: the new tasks were not healthy within "
                                       f"{timeout:g}s, so it was rolled back; {self._new_task_failure(service_id, first)}")
            time.sleep(0.5)
        return self._ready_set(self.apply(replicas, make_spec, {}), timeout)

    def _ready_set(self, handles: dict[int, InstanceHandle], timeout: float) -> dict[int, InstanceHandle]:
        return {i: self.wait_ready(h, timeout) for i, h in handles.items()}

    def _new_task_failure(self, service_id: str, spec: InstanceSpec) -> str:
        """What the newest task of the new spec said (its error and the end of its log)."""
        tasks = [t for t in self.engine.tasks(service=[service_id])
                 if (t.get("Spec") or {}).get("ContainerSpec", {}).get("Args") == list(spec.args)]
        if not tasks:
            return "no task of the new spec started"
        newest = max(tasks, key=lambda t: t.get("CreatedAt", ""))
        output = self.engine.task_logs(newest["ID"], LOG_TAIL_LINES) if (
            (newest.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID") else ""
        return f"its task {_task_state(newest)} ({_task_error(newest)}); its log ends:\n{output.rstrip()}"

    def _ended_cleanly(self, service_id: str, replicas: int) -> bool:
        tasks = self.engine.tasks(service=[service_id])
        for slot in range(1, replicas + 1):
            mine = _slot_tasks(tasks, slot)
            if not any(t.get("DesiredState") == "running" for t in mine) and mine and _task_state(mine[0]) == "complete":
                return True
        return False

    def start(self, spec: InstanceSpec) -> InstanceHandle:
        """One instance alone: a Swarm service of one replica (services use ``apply``)."""
        return self.apply(1, lambda i: spec, {})[0]

    # -- watch ------------------------------------------------------------------------------------
    def _tasks(self, handle: InstanceHandle) -> list[dict[str, Any]]:
        return _slot_tasks(self.engine.tasks(service=[handle.data["service_id"]]), int(handle.data["slot"]))

    def _running(self, handle: InstanceHandle) -> dict[str, Any] | None:
        for task in self._tasks(handle):
            if task.get("DesiredState") == "running" and _task_state(task) == "running":
                return task
        return None

    def _address(self, node_id: str) -> str:
        address = self._node_addresses.get(node_id)
        if address is None:
            node = self.engine.node(node_id) or {}
            address = str((node.get("Status") or {}).get("Addr") or "")
            if address in ("", "0.0.0.0"):
                manager = str((node.get("ManagerStatus") or {}).get("Addr") or "127.0.0.1")
                address = manager.rsplit(":", 1)[0]
            self._node_addresses[node_id] = address
        return address

    def endpoint(self, handle: InstanceHandle) -> str | None:
        task = self._running(handle)
        if task is None:
            return None
        ports = ((task.get("Status") or {}).get("PortStatus") or {}).get("Ports") or []
        published = next((p.get("PublishedPort") for p in ports if p.get("PublishedPort")), None)
        return f"http://{self._address(task['NodeID'])}:{published}" if published else None

    def state(self, handle: InstanceHandle) -> InstanceState:
        service = self.engine.service(handle.data["service_id"])
        if service is None:
            return InstanceState("STOPPED")
        replicas = ((service["Spec"].get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0)
        tasks = self._tasks(handle)
        live = [t for t in tasks if t.get("DesiredState") == "running"]
        for task in live:
            if _task_state(task) == "running":
                return InstanceState("READY")
        if live:
            return InstanceState("PENDING", message=_task_error(live[0]))
        if int(handle.data["slot"]) > replicas:
            return InstanceState("STOPPED")
        if not tasks:
            return InstanceState("PENDING", message="waiting for Swarm to schedule a task")
        last = tasks[0]
        code = ((last.get("Status") or {}).get("ContainerStatus") or {}).get("ExitCode")
        state = _task_state(last)
        if state in ("failed", "rejected"):
            return InstanceState("FAILED", code, f"task {state}: {_task_error(last)}")
        return InstanceState("STOPPED", code)

    def wait_ready(self, handle: InstanceHandle, timeout: float = 60.0) -> InstanceHandle:
        """Until the slot's task runs (its health check passed). Swarm restarts a failed task; two
        new failures (or a task no node can take for 15 s) end the wait with the task's log."""
        deadline = time.monotonic() + timeout
        known_failures = {t["ID"] for t in self._tasks(handle) if _task_state(t) in ("failed", "rejected")}
        unplaced_since: float | None = None
        while True:
            state = self.state(handle)
            if state.status == "READY":
                return InstanceHandle(**{**handle.__dict__, "endpoint": self.endpoint(handle)})
            tasks = self._tasks(handle)
            failures = [t for t in tasks if _task_state(t) in ("failed", "rejected") and t["ID"] not in known_failures]
            if len(failures) >= 2 or any(_task_state(t) == "rejected" for t in failures):
                raise self._failure(handle, f"failed twice before it was ready ({_task_error(failures[0])})")
            if state.status == "STOPPED":
                raise self._failure(handle, "was stopped before it was ready")
            if state.status == "PENDING" and "no suitable node" in state.message:
                unplaced_since = unplaced_since or time.monotonic()
                if time.monotonic() - unplaced_since > 15:
                    raise self._failure(handle, f"cannot be placed: {state.message}")
            if time.monotonic() >= deadline:
                raise self._failure(handle, f"did not pass its health check ({handle.ready_path}) within {timeout:g}s")
            time.sleep(0.2)

    def _failure(self, handle: InstanceHandle, problem: str) -> OperationalError:
        log_tail = self.logs(handle, LOG_TAIL_LINES).rstrip()
        return OperationalError(
            f"instance {handle.name} (swarm service {handle.data['service_name']}, slot {handle.data['slot']}) {problem}; "
            f"see `docker service ps {handle.data['service_name']}` and `docker service logs "
            f"{handle.data['service_name']}` (last {LOG_TAIL_LINES} lines below).\n{log_tail}"
        )

    def logs(self, handle: InstanceHandle, lines: int | None = None) -> str:
        if self.engine.service(handle.data["service_id"]) is None:
            try:
                return last_lines(Path(handle.log_path).read_text(errors="replace"), lines)
            except OSError:
                return ""
        return last_lines(self._task_output(handle), lines)

    def _task_output(self, handle: InstanceHandle) -> str:
        """The output of the slot's tasks, oldest first (Swarm keeps a few ended ones)."""
        parts = []
        for task in reversed(self._tasks(handle)):
            if not ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID"):
                continue  # never started: no output (the engine answers with an error text)
            text = self.engine.task_logs(task["ID"])
            if text:
                parts.append(text if text.endswith("\n") else text + "\n")
        return "".join(parts)

    def describe(self, handle: InstanceHandle) -> dict[str, Any]:
        task = self._running(handle) or next(iter(self._tasks(handle)), None) or {}
        container = ((task.get("Status") or {}).get("ContainerStatus") or {})
        return {"container_id": (container.get("ContainerID") or "")[:12] or None, "pid": container.get("PID") or None,
                "image_digest": handle.data.get("image_digest"), "task_id": task.get("ID"),
                "node_id": task.get("NodeID")}

    def update_state(self, handle: InstanceHandle) -> str:
        """The Swarm service's rolling update: ``updating``, ``completed``, ``rollback_started``,
        ``rollback_completed``, ``paused`` ..., or ``""`` when it was never updated."""
        service = self.engine.service(handle.data["service_id"]) or {}
        return str((service.get("UpdateStatus") or {}).get("State", ""))

    # -- stop -------------------------------------------------------------------------------------
    def stop(self, handle: InstanceHandle, timeout: float = 10.0) -> None:
        """Stop instance ``i`` and those above it: Swarm scales a service by count."""
        service = self.engine.service(handle.data["service_id"])
        if service is None:
            return
        replicas = ((service["Spec"].get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0)
        keep = int(handle.data["slot"]) - 1
        output = self._task_output(handle)
        with open(handle.log_path, "a", encoding="utf-8") as log:
            log.write(output)
            log.write(f"{now_text()} === instance {handle.name} stopped (swarm service {handle.data['service_name']} "
                      f"scaled to {min(keep, replicas)})\n")
        if keep < replicas:
            spec = service["Spec"]
            spec["Mode"] = {"Replicated": {"Replicas": keep}}
            self.engine.update_service(service["ID"], service["Version"]["Index"], spec)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(
                t.get("DesiredState") == "running" or _task_state(t) == "running" for t in self._tasks(handle)):
            time.sleep(0.2)

    def release(self, labels: Mapping[str, str]) -> None:
        service = self._find(labels)
        if service is not None:
            self.engine.remove_service(service["ID"])
