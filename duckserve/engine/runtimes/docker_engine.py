"""A small client of the Docker Engine API over its Unix socket (httpx): what the Docker runtime and
the image builder need. ``$DOCKER_HOST`` (``unix://...``) names another socket. Engine errors become
``OperationalError`` naming the call and the engine's message."""

from __future__ import annotations

import json
import os
import shutil
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

import httpx

from duckserve.errors import OperationalError

DEFAULT_SOCKET = "/var/run/docker.sock"
API_VERSION = "v1.41"  # Docker 20.10 (Debian bookworm's docker.io) and every later engine
HOW_TO_START = (
    "install Docker (Debian: apt-get install docker.io) and start its daemon (systemctl start docker, or "
    "dockerd as root), or point $DOCKER_HOST at a running engine"
)

_clients: dict[str, httpx.Client] = {}
_lock = threading.Lock()


class EngineError(OperationalError):
    """The Docker engine answered an API call with an error (``status``: its HTTP status)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def socket_path() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host[len("unix://"):]
    if host:
        raise OperationalError(f"$DOCKER_HOST={host}: duckserve talks to a Docker engine on this machine through "
                               "its Unix socket (unix:///var/run/docker.sock)")
    return DEFAULT_SOCKET


def demultiplex(data: bytes) -> str:
    """The text of a multiplexed log stream (8-byte frame headers: stream, 0, 0, 0, size)."""
    out, at = [], 0
    while at + 8 <= len(data):
        size = struct.unpack(">I", data[at + 4:at + 8])[0]
        out.append(data[at + 8:at + 8 + size])
        at += 8 + size
    return b"".join(out).decode(errors="replace")


def _filters(**filters: list[str]) -> dict[str, str]:
    return {"filters": json.dumps({k.replace("_", "-"): v for k, v in filters.items()})}


class Engine:
    """One Docker engine. Methods raise EngineError (an OperationalError) on failure."""

    def __init__(self, socket: str | None = None, timeout: float = 60.0) -> None:
        self.socket = socket or socket_path()
        self.timeout = timeout

    @property
    def client(self) -> httpx.Client:
        with _lock:
            client = _clients.get(self.socket)
            if client is None:
                client = httpx.Client(transport=httpx.HTTPTransport(uds=self.socket), base_url="http://docker",
                                      timeout=httpx.Timeout(self.timeout, connect=5.0), trust_env=False)
                _clients[self.socket] = client
            return client

    def _request(self, method: str, path: str, what: str, *, ok: Iterable[int] = (200, 201, 204),
                 **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, f"/{API_VERSION}{path}", **kwargs)
        except httpx.TransportError as exc:
            raise EngineError(f"no Docker engine answers on {self.socket} ({type(exc).__name__}: {exc}): "
                              f"{HOW_TO_START}") from exc
        if response.status_code not in tuple(ok):
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise EngineError(f"Docker engine: {what} failed ({response.status_code}): {message.strip()}",
                              response.status_code)
        return response

    def _stream(self, method: str, path: str, what: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """A call that answers with a stream of JSON progress messages (pull, import, load)."""
        try:
            with self.client.stream(method, f"/{API_VERSION}{path}", timeout=httpx.Timeout(None, connect=5.0),
                                    **kwargs) as response:
                if response.status_code != 200:
                    response.read()
                    raise EngineError(f"Docker engine: {what} failed ({response.status_code}): {response.text.strip()}",
                                      response.status_code)
                for line in response.iter_lines():
                    if line.strip():
                        message = json.loads(line)
                        if message.get("error"):
                            raise EngineError(f"Docker engine: {what} failed: {message['error']}")
                        yield message
        except httpx.TransportError as exc:
            raise EngineError(f"no Docker engine answers on {self.socket}: {HOW_TO_START}") from exc

    # -- the engine -------------------------------------------------------------------------------
    def ping(self) -> None:
        if not os.path.exists(self.socket):
            where = "the Docker CLI is installed but " if shutil.which("docker") else ""
            raise EngineError(f"{where}no Docker engine runs here (no socket {self.socket}): {HOW_TO_START}")
        self._request("GET", "/_ping", "ping")

    def info(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/info", "info").json()
        return result

    # -- images -----------------------------------------------------------------------------------
    def image(self, reference: str) -> dict[str, Any] | None:
        response = self._request("GET", f"/images/{quote(reference, safe='')}/json", f"inspect image {reference}",
                                 ok=(200, 404))
        return response.json() if response.status_code == 200 else None

    def pull(self, reference: str) -> list[dict[str, Any]]:
        name, _, tag = reference.partition("@")
        params = {"fromImage": name, "tag": tag} if tag else {"fromImage": reference}
        return list(self._stream("POST", "/images/create", f"pull {reference}", params=params))

    def import_image(self, tarball: Iterable[bytes], repo: str, tag: str, changes: list[str]) -> None:
        params: list[tuple[str, str]] = [("fromSrc", "-"), ("repo", repo), ("tag", tag)]
        params += [("changes", change) for change in changes]
        for _ in self._stream("POST", "/images/create", f"import {repo}:{tag}", params=params, content=tarball,
                              headers={"Content-Type": "application/x-tar"}):
            pass

    def load(self, tarball: Iterable[bytes]) -> list[dict[str, Any]]:
        """Load a ``docker save`` archive (``manifest.json``, the config, the layers the engine lacks)."""
        return list(self._stream("POST", "/images/load", "load an image", params={"quiet": "1"}, content=tarball,
                                 headers={"Content-Type": "application/x-tar"}))

    def save(self, reference: str) -> Iterator[bytes]:
        """The image as a ``docker save`` tar stream."""
        with self.client.stream("GET", f"/{API_VERSION}/images/{quote(reference, safe='')}/get",
                                timeout=httpx.Timeout(None, connect=5.0)) as response:
            if response.status_code != 200:
                response.read()
                raise EngineError(f"Docker engine: save {reference} failed: {response.text.strip()}")
            yield from response.iter_bytes(1 << 20)

    def images(self, label: str) -> list[dict[str, Any]]:
        """Images with the label ``label``."""
        result: list[dict[str, Any]] = self._request("GET", "/images/json", "list images",
                                                     params={"filters": json.dumps({"label": [label]})}).json()
        return result

    def remove_image(self, reference: str, force: bool = False) -> None:
        """Remove an image (``force``: with all its tags); one a container uses stays."""
        self._request("DELETE", f"/images/{quote(reference, safe='')}", f"remove image {reference}",
                      ok=(200, 404, 409), params={"force": "true" if force else "false"})

    # -- containers -------------------------------------------------------------------------------
    def create(self, name: str, config: dict[str, Any]) -> str:
        response = self._request("POST", "/containers/create", f"create container {name}", params={"name": name},
                                 json=config)
        return str(response.json()["Id"])

    def start(self, container: str) -> None:
        self._request("POST", f"/containers/{container}/start", f"start container {container[:12]}", ok=(204, 304))

    def inspect(self, container: str) -> dict[str, Any] | None:
        response = self._request("GET", f"/containers/{container}/json", f"inspect container {container[:12]}",
                                 ok=(200, 404))
        return response.json() if response.status_code == 200 else None

    def stop(self, container: str, timeout: float) -> None:
        self._request("POST", f"/containers/{container}/stop", f"stop container {container[:12]}",
                      ok=(204, 304, 404), params={"t": str(int(timeout))},
                      timeout=httpx.Timeout(timeout + 30, connect=5.0))

    def kill(self, container: str) -> None:
        self._request("POST", f"/containers/{container}/kill", f"kill container {container[:12]}", ok=(204, 404, 409))

    def remove(self, container: str) -> None:
        self._request("DELETE", f"/containers/{container}", f"remove container {container[:12]}",
                      ok=(204, 404, 409), params={"force": "true", "v": "true"})

    def wait(self, container: str, timeout: float) -> int:
        response = self._request("POST", f"/containers/{container}/wait", f"wait for container {container[:12]}",
                                 timeout=httpx.Timeout(timeout, connect=5.0))
        return int(response.json().get("StatusCode", -1))

    def containers(self, labels: dict[str, str | None]) -> list[dict[str, Any]]:
        """Containers (running or not) with these labels (a None value: with the label at all)."""
        filters = json.dumps({"label": [k if v is None else f"{k}={v}" for k, v in labels.items()]})
        result: list[dict[str, Any]] = self._request("GET", "/containers/json", "list containers",
                                                     params={"all": "true", "filters": filters}).json()
        return result

    def logs(self, container: str, lines: int | None = None) -> str:
        """The container's stdout and stderr, interleaved as written (the multiplexed stream of a
        container without a terminal: 8-byte frame headers)."""
        params = {"stdout": "1", "stderr": "1", "tail": str(lines) if lines is not None else "all"}
        response = self._request("GET", f"/containers/{container}/logs", f"read the logs of {container[:12]}",
                                 ok=(200, 404), params=params)
        if response.status_code == 404:
            return ""
        return demultiplex(response.content)

    def run_once(self, name: str, config: dict[str, Any], timeout: float) -> tuple[int, str]:
        """Run a container to its end (no network unless ``config`` says): its exit code and output."""
        config = {**config, "HostConfig": {"NetworkMode": "none", **config.get("HostConfig", {})}}
        container = self.create(name, config)
        try:
            self.start(container)
            code = self.wait(container, timeout)
            return code, self.logs(container)
        finally:
            self.remove(container)

    # -- networks ---------------------------------------------------------------------------------
    def network(self, name: str) -> dict[str, Any] | None:
        response = self._request("GET", f"/networks/{name}", f"inspect network {name}", ok=(200, 404))
        return response.json() if response.status_code == 200 else None

    def create_network(self, name: str, options: dict[str, str], labels: dict[str, str]) -> None:
        self._request("POST", "/networks/create", f"create network {name}", ok=(201, 409),
                      json={"Name": name, "Driver": "bridge", "CheckDuplicate": True, "Options": options,
                            "Labels": labels})

    # -- swarm mode -------------------------------------------------------------------------------
    def nodes(self, **filters: list[str]) -> list[dict[str, Any]]:
        """The swarm's nodes (filters as the API takes them: ``node_label=["k=v"]``, ``role=[...]``)."""
        filters = {("node.label" if k == "node_label" else k): v for k, v in filters.items()}
        result: list[dict[str, Any]] = self._request("GET", "/nodes", "list swarm nodes",
                                                     params={"filters": json.dumps(filters)}).json()
        return result

    def node(self, node_id: str) -> dict[str, Any] | None:
        response = self._request("GET", f"/nodes/{node_id}", f"inspect node {node_id[:12]}", ok=(200, 404))
        return response.json() if response.status_code == 200 else None

    def label_node(self, node_id: str, label: str, add: bool) -> bool:
        """Add ``label=true`` to a swarm node (a compute pool's label puts it in the pool) or remove it;
        False when no such node is in the swarm. The update names the version it was read at, and a
        node changes on its own (heartbeats, certificates): "update out of sequence" is read again."""
        attempt = 0
        while True:
            node = self.node(node_id)
            if node is None:
                return False
            labels = dict(node["Spec"].get("Labels") or {})
            if add:
                labels[label] = "true"
            else:
                labels.pop(label, None)
            try:
                self._request("POST", f"/nodes/{node_id}/update", f"update node {node_id[:12]}",
                              params={"version": str(node["Version"]["Index"])}, json={**node["Spec"], "Labels": labels})
                return True
            except EngineError as exc:
                attempt += 1
                if "out of sequence" not in str(exc) or attempt == 20:
                    raise
                time.sleep(0.05)

    def services(self, **filters: list[str]) -> list[dict[str, Any]]:
        """Swarm services (``label=["k=v"]``, ``name=[...]``, ``id=[...]``)."""
        result: list[dict[str, Any]] = self._request("GET", "/services", "list swarm services",
                                                     params=_filters(**filters)).json()
        return result

    def service(self, service: str) -> dict[str, Any] | None:
        response = self._request("GET", f"/services/{service}", f"inspect swarm service {service}", ok=(200, 404))
        return response.json() if response.status_code == 200 else None

    def create_service(self, spec: dict[str, Any], registry_auth: str | None = None) -> str:
        headers = {"X-Registry-Auth": registry_auth} if registry_auth else {}
        response = self._request("POST", "/services/create", f"create swarm service {spec.get('Name')}", json=spec,
                                 headers=headers)
        return str(response.json()["ID"])

    def update_service(self, service: str, version: int, spec: dict[str, Any]) -> list[str]:
        """Update a service to ``spec`` (Swarm rolls its tasks as the spec's UpdateConfig says);
        the engine's warnings."""
        response = self._request("POST", f"/services/{service}/update", f"update swarm service {service}",
                                 params={"version": str(version)}, json=spec)
        warnings: list[str] = (response.json() or {}).get("Warnings") or []
        return warnings

    def rollback_service(self, service: str, version: int, spec: dict[str, Any]) -> None:
        """Have Swarm roll the service back to its previous spec (as its RollbackConfig says)."""
        self._request("POST", f"/services/{service}/update", f"roll back swarm service {service}",
                      params={"version": str(version), "rollback": "previous"}, json=spec)

    def remove_service(self, service: str) -> None:
        self._request("DELETE", f"/services/{service}", f"remove swarm service {service}", ok=(200, 404))

    def tasks(self, **filters: list[str]) -> list[dict[str, Any]]:
        """Swarm tasks (``service=[id or name]``, ``desired_state=["running"]``, ``label=[...]``)."""
        result: list[dict[str, Any]] = self._request("GET", "/tasks", "list swarm tasks",
                                                     params=_filters(**filters)).json()
        return result

    def task_logs(self, task: str, lines: int | None = None) -> str:
        """A task's output, as ``docker service logs`` reads it (from the node that ran it)."""
        params = {"stdout": "1", "stderr": "1", "tail": str(lines) if lines is not None else "all"}
        response = self._request("GET", f"/tasks/{task}/logs", f"read the logs of task {task[:12]}",
                                 ok=(200, 404, 503), params=params)
        return demultiplex(response.content) if response.status_code == 200 else ""
