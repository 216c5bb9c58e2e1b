"""Instances as Docker containers, from an image in a registry.

Each instance is a container of the service's image: the server listens on port 5000 inside,
published on a free loopback port. The handle's endpoint is the container's address on the bridge
when the bridge is in this host's network namespace (then requests skip docker-proxy, the engine's
user-space forwarder of published ports: 0.1 ms and two wake-ups of another process a request),
else that loopback port (rootless Docker, Docker Desktop). CPU, memory and GPUs come from the spec's
resources (GPUs through the engine's device requests); labels name the account's home, the service
and the instance, so ``docker ps`` tells what is what. Containers sit on one bridge network without
NAT or traffic between containers, and (where this process may change the firewall) nothing that
starts inside reaches beyond its own endpoint. The exchange directory for batches passed as files is
a host directory (in /dev/shm) mounted at the same path inside. A container outlives the process
that started it; ``stop`` keeps its output in the instance's log file, then removes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from duckserve.engine.runtimes.base import (
    LOG_TAIL_LINES,
    InstanceHandle,
    InstanceSpec,
    InstanceState,
    Resources,
    Runtime,
    last_lines,
    now_text,
)
from duckserve.engine.runtimes.docker_engine import Engine, EngineError
from duckserve.errors import OperationalError, ProgrammingError

NETWORK = "duckserve-endpoints"
BRIDGE = "duckserve0"
LOOPBACK = "127.0.0.1"
#: exit codes that mean a signal (128 + n): 137 is SIGKILL (killed, or out of memory), 143 SIGTERM
_SIGNALS = {137: "killed (SIGKILL)", 143: "terminated (SIGTERM)", 139: "segmentation fault"}


def _exit_text(code: int, oom: bool) -> str:
    why = "out of memory" if oom else _SIGNALS.get(code)
    return f"exited with code {code}" + (f" ({why})" if why else "")


class DockerRuntime(Runtime):
    """Containers on the Docker engine of this machine."""

    name = "docker"

    def __init__(self, engine: Engine | None = None, probe_timeout: float = 2.0) -> None:
        self.engine = engine or Engine()
        self._probe_timeout = probe_timeout
        self._network_ready = False
        self._lock = threading.Lock()

    # -- checks -----------------------------------------------------------------------------------
    def check(self) -> None:
        self.engine.ping()

    def check_resources(self, resources: Resources, what: str) -> None:
        if not resources.gpus:
            return
        info = self.engine.info()
        has_toolkit = "nvidia" in (info.get("Runtimes") or {}) or shutil.which("nvidia-container-runtime-hook")
        devices = [d for d in os.listdir("/dev") if d.startswith("nvidia") and d[6:].isdigit()]
        if not has_toolkit or not devices:
            missing = "no NVIDIA GPU (/dev/nvidia*)" if not devices else "no NVIDIA Container Toolkit"
            raise ProgrammingError(
                f"{what}: gpu_requests={resources.gpus}, but this host has {missing} for the Docker engine to give "
                "its containers: deploy on a host with NVIDIA GPUs and the NVIDIA Container Toolkit "
                "(nvidia-ctk runtime configure --runtime=docker), or without gpu_requests, or on a pool with "
                "RUNTIME = 'PROCESS' (which runs GPU services on the CPU for local development)"
            )

    def _ensure_network(self) -> None:
        with self._lock:
            if self._network_ready:
                return
            if self.engine.network(NETWORK) is None:
                self.engine.create_network(NETWORK, {
                    "com.docker.network.bridge.name": BRIDGE,
                    "com.docker.network.bridge.enable_ip_masquerade": "false",  # no way out through NAT
                    "com.docker.network.bridge.enable_icc": "false",  # no traffic between containers
                }, {"io.duckserve.network": "endpoints"})
            _isolate_bridge()
            self._network_ready = True

    # -- start ------------------------------------------------------------------------------------
    def start(self, spec: InstanceSpec) -> InstanceHandle:
        artifact = spec.artifact
        if artifact.kind != "image":
            raise ProgrammingError(
                f"instance {spec.name}: the Docker runtime runs container images, not environments of this host "
                f"({' '.join(artifact.entrypoint)}): the service's build must produce an image (MODEL_BUILD on a pool "
                "with RUNTIME = 'DOCKER')"
            )
        log_path = Path(spec.log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._ensure_network()
        if self.engine.image(artifact.reference) is None:
            self._log(log_path, f"pulling {artifact.reference}")
            pulling = time.monotonic()
            self.engine.pull(artifact.reference)
            self._log(log_path, f"pulled in {time.monotonic() - pulling:.1f}s")
        exchange = tempfile.mkdtemp(prefix="duckserve-exchange-", dir=_shm()) if spec.exchange else None
        env = {**spec.env, "DUCKSERVE_HOST": "0.0.0.0", "DUCKSERVE_PORT": str(spec.port),
               "DUCKSERVE_INSTANCE": spec.name, "HOME": "/tmp"}
        binds = []
        if exchange is not None:
            env["DUCKSERVE_EXCHANGE_DIR"] = exchange
            binds.append(f"{exchange}:{exchange}")
        port = f"{spec.port}/tcp"
        host_config: dict[str, Any] = {
            "PortBindings": {port: [{"HostIp": LOOPBACK, "HostPort": ""}]}, "NetworkMode": NETWORK,
            "Binds": binds, "Init": True, "Tmpfs": {"/tmp": "rw,exec"}, "ShmSize": 256 * 2**20,
            "RestartPolicy": {"Name": "no"},
        }
        resources = spec.resources
        if resources.cpus:
            host_config["NanoCpus"] = int(resources.cpus * 1e9)
        if resources.memory_bytes:
            host_config["Memory"] = int(resources.memory_bytes)
        if resources.gpus:
            request: dict[str, Any] = {"Driver": "nvidia", "Capabilities": [["gpu"]]}
            if resources.gpu_devices:
                request["DeviceIDs"] = list(resources.gpu_devices)
            else:
                request["Count"] = resources.gpus
            host_config["DeviceRequests"] = [request]
        config = {
            "Image": artifact.reference, "Cmd": list(spec.args), "Env": [f"{k}={v}" for k, v in env.items()],
            "Labels": {**spec.labels, "io.duckserve.instance-name": spec.name}, "ExposedPorts": {port: {}},
            "User": f"{os.getuid()}:{os.getgid()}", "HostConfig": host_config,
        }
        name = "duckserve-" + "".join(c if c.isalnum() else "-" for c in spec.name.lower())[:80] + "-" + uuid.uuid4().hex[:6]
        try:
            container = self.engine.create(name, config)
            try:
                self.engine.start(container)
            except EngineError:
                self.engine.remove(container)
                raise
        except EngineError as exc:
            if exchange is not None:
                shutil.rmtree(exchange, ignore_errors=True)
            self._log(log_path, f"cannot start: {exc}")
            if resources.gpus and "device driver" in str(exc):
                raise OperationalError(f"instance {spec.name} asked for {resources.gpus} GPU(s), which the Docker engine "
                                       f"cannot give: {exc}. Install the NVIDIA Container Toolkit") from exc
            raise OperationalError(f"instance {spec.name} cannot start from image {artifact.reference}: {exc}") from exc
        details = self.engine.inspect(container) or {}
        self._log(log_path, f"starting instance {spec.name}: container {container[:12]} ({name}) of image "
                            f"{artifact.reference}")
        return InstanceHandle(
            runtime=self.name, name=spec.name, started_at=now_text(), log_path=str(log_path),
            endpoint=_endpoint(details, port), ready_path=spec.ready_path, labels=dict(spec.labels),
            data={"container": container, "container_name": name, "exchange_dir": exchange, "port": port,
                  "image": artifact.reference, "image_digest": artifact.digest or details.get("Image", "")},
        )

    @staticmethod
    def _log(path: Path, line: str) -> None:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{now_text()} === {line}\n")

    # -- watch ------------------------------------------------------------------------------------
    def endpoint(self, handle: InstanceHandle) -> str | None:
        if handle.endpoint:
            return handle.endpoint
        details = self.engine.inspect(handle.data["container"])
        return _endpoint(details, handle.data.get("port", "5000/tcp")) if details else None

    def _answers_ready(self, endpoint: str, ready_path: str, timeout: float) -> bool:
        from duckserve.engine.client import http_client

        try:
            return http_client().get(endpoint + ready_path, timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def state(self, handle: InstanceHandle) -> InstanceState:
        details = self.engine.inspect(handle.data["container"])
        if details is None:
            return InstanceState("STOPPED")  # stopped and removed
        state = details.get("State") or {}
        if state.get("Running") and not state.get("Restarting"):
            endpoint = self.endpoint(handle)
            if endpoint and self._answers_ready(endpoint, handle.ready_path, self._probe_timeout):
                return InstanceState("READY")
            return InstanceState("PENDING")
        if state.get("Status") == "created":
            return InstanceState("PENDING")
        code = int(state.get("ExitCode", -1))
        if code == 0 and not state.get("OOMKilled"):
            return InstanceState("STOPPED", 0)  # ended by itself, cleanly (an idle timeout)
        return InstanceState("FAILED", code, _exit_text(code, bool(state.get("OOMKilled"))))

    def wait_ready(self, handle: InstanceHandle, timeout: float = 60.0) -> InstanceHandle:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            state = self.state(handle)
            if state.status == "READY":
                endpoint = self.endpoint(handle)
                return InstanceHandle(**{**handle.__dict__, "endpoint": endpoint})
            if state.status in ("FAILED", "STOPPED"):
                problem = state.message or "exited"
                raise self._failure(handle, f"{problem} before it was ready")
            if time.monotonic() >= deadline:
                raise self._failure(handle, f"did not answer {handle.ready_path} within {timeout:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _failure(self, handle: InstanceHandle, problem: str) -> OperationalError:
        log_tail = self.logs(handle, LOG_TAIL_LINES).rstrip()
        return OperationalError(
            f"instance {handle.name} (container {handle.data['container'][:12]}) {problem}; read its log with "
            f"`docker logs {handle.data['container'][:12]}` (last {LOG_TAIL_LINES} lines below) and fix the model "
            f"or its image.\n{log_tail}"
        )

    def logs(self, handle: InstanceHandle, lines: int | None = None) -> str:
        if self.engine.inspect(handle.data["container"]) is not None:
            return self.engine.logs(handle.data["container"], lines)
        try:  # the container is gone: what stop() kept
            return last_lines(Path(handle.log_path).read_text(errors="replace"), lines)
        except OSError:
            return ""

    def describe(self, handle: InstanceHandle) -> dict[str, Any]:
        details = self.engine.inspect(handle.data["container"]) or {}
        pid = (details.get("State") or {}).get("Pid") or None
        return {"container_id": handle.data["container"][:12], "pid": pid,
                "image_digest": handle.data.get("image_digest")}

    # -- stop -------------------------------------------------------------------------------------
    def stop(self, handle: InstanceHandle, timeout: float = 10.0) -> None:
        container = handle.data["container"]
        details = self.engine.inspect(container)
        if details is not None:
            if (details.get("State") or {}).get("Running"):
                self.engine.stop(container, timeout)
            output = self.engine.logs(container)
            with open(handle.log_path, "a", encoding="utf-8") as log:
                log.write(output if output.endswith("\n") or not output else output + "\n")
                log.write(f"{now_text()} === instance {handle.name} stopped (container {container[:12]} removed)\n")
            self.engine.remove(container)
        if handle.data.get("exchange_dir"):
            shutil.rmtree(handle.data["exchange_dir"], ignore_errors=True)


def _endpoint(details: dict[str, Any], port: str) -> str | None:
    """Where this host reaches the container's server: its address on the endpoints bridge if this
    host has the bridge (a route to it), else the port published on loopback."""
    networks = (details.get("NetworkSettings") or {}).get("Networks") or {}
    address = (networks.get(NETWORK) or {}).get("IPAddress")
    if address and os.path.exists(f"/sys/class/net/{BRIDGE}"):
        return f"http://{address}:{port.split('/')[0]}"
    bindings = ((details.get("NetworkSettings") or {}).get("Ports") or {}).get(port) or []
    for binding in bindings:
        if binding.get("HostPort"):
            return f"http://{LOOPBACK}:{binding['HostPort']}"
    return None


def _shm() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


_isolated = False


def _isolate_bridge() -> None:
    """Drop what containers on the bridge start themselves: forwarded traffic (anywhere beyond this
    host) and new connections to this host. Answers on their endpoints (connections this host opens
    through the engine's port proxy) pass. Needs the firewall (root and iptables); without them the
    bridge still has no NAT, so nothing leaves this host. Idempotent."""
    global _isolated
    if _isolated or os.geteuid() != 0 or not shutil.which("iptables"):
        return
    rules = [("DOCKER-USER", ["-i", BRIDGE, "-j", "DROP"]),
             ("INPUT", ["-i", BRIDGE, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"])]
    for chain, rule in rules:
        present = subprocess.run(["iptables", "-C", chain, *rule], capture_output=True).returncode == 0
        if not present:
            subprocess.run(["iptables", "-I", chain, "1", *rule], capture_output=True)
    _isolated = True
