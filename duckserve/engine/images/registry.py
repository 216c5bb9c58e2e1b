"""OCI registries: a client of the distribution API (v2), and the local registry duckserve starts.

Image repositories live in one registry per home: the one ``$DUCKSERVE_REGISTRY`` names
(``host:port``, ``https://host`` for TLS; ``$DUCKSERVE_REGISTRY_USERNAME`` and
``$DUCKSERVE_REGISTRY_PASSWORD`` for basic authentication), else a local registry (Debian's
``docker-registry``, the CNCF distribution server) that duckserve starts on loopback when an image
repository first needs it, with its storage in ``<home>/registry``. Its port is chosen once and kept,
so repository URLs stay valid; it runs detached like service instances, and starts again on demand.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from duckserve.errors import OperationalError

MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
SERVER_PROGRAMS = ("docker-registry", "registry")


class RegistryError(OperationalError):
    """A registry refused or failed a request."""


@dataclass(frozen=True)
class RegistryClient:
    """The distribution API of one registry at ``base_url`` (``http://127.0.0.1:5000``)."""

    base_url: str
    auth: tuple[str, str] | None = None

    @property
    def host(self) -> str:
        """How image references name this registry (``127.0.0.1:5000``)."""
        return self.base_url.split("://", 1)[1].rstrip("/")

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, auth=self.auth, timeout=httpx.Timeout(600, connect=5),
                            trust_env=False)

    def _check(self, response: httpx.Response, what: str, ok: tuple[int, ...] = (200, 201, 202)) -> httpx.Response:
        if response.status_code not in ok:
            raise RegistryError(f"registry {self.host}: {what} failed ({response.status_code}): {response.text[:300]}")
        return response

    def _send(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            with self._client() as client:
                return client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RegistryError(f"registry {self.host} does not answer ({type(exc).__name__}: {exc}) while it "
                                f"should {what}") from exc

    def ping(self) -> bool:
        try:
            with self._client() as client:
                return client.get("/v2/", timeout=2).status_code in (200, 401)
        except httpx.HTTPError:
            return False

    def has_blob(self, repository: str, digest: str) -> bool:
        return self._send("HEAD", f"/v2/{repository}/blobs/{digest}", "look up a layer").status_code == 200

    def push_blob(self, repository: str, digest: str, path: Path, mount_from: str | None = None) -> bool:
        """Upload the blob in ``path`` unless the repository has it (or it can be mounted from
        ``mount_from``, another repository of this registry that has it); True when bytes were sent."""
        if self.has_blob(repository, digest):
            return False
        if mount_from:
            response = self._send("POST", f"/v2/{repository}/blobs/uploads/", "mount a layer",
                                  params={"mount": digest, "from": mount_from})
            if response.status_code == 201:
                return False
            start = response
        else:
            start = self._send("POST", f"/v2/{repository}/blobs/uploads/", "start an upload")
        self._check(start, f"start the upload of {digest[:19]} to {repository}")
        location = start.headers["location"]
        separator = "&" if "?" in location else "?"

        def chunks() -> Iterator[bytes]:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    yield chunk

        response = self._send("PUT", f"{location}{separator}digest={digest}", "receive a layer", content=chunks(),
                              headers={"Content-Type": "application/octet-stream",
                                       "Content-Length": str(path.stat().st_size)})
        self._check(response, f"upload {digest[:19]} to {repository}")
        return True

    def push_blob_bytes(self, repository: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has_blob(repository, digest):
            start = self._check(self._send("POST", f"/v2/{repository}/blobs/uploads/", "start an upload"), "upload")
            location = start.headers["location"]
            separator = "&" if "?" in location else "?"
            self._check(self._send("PUT", f"{location}{separator}digest={digest}", "receive a blob", content=data,
                                   headers={"Content-Type": "application/octet-stream"}), f"upload to {repository}")
        return digest

    def put_manifest(self, repository: str, tag: str, manifest: bytes, media_type: str) -> str:
        response = self._send("PUT", f"/v2/{repository}/manifests/{tag}", "store a manifest", content=manifest,
                              headers={"Content-Type": media_type})
        self._check(response, f"store the manifest of {repository}:{tag}")
        return response.headers.get("docker-content-digest") or "sha256:" + hashlib.sha256(manifest).hexdigest()

    def manifest(self, repository: str, reference: str) -> tuple[str, dict[str, Any]] | None:
        """(digest, manifest) of ``repository:reference``, None when there is none."""
        response = self._send("GET", f"/v2/{repository}/manifests/{reference}", "read a manifest",
                              headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if response.status_code == 404:
            return None
        self._check(response, f"read the manifest of {repository}:{reference}")
        digest = response.headers.get("docker-content-digest") or "sha256:" + hashlib.sha256(response.content).hexdigest()
        return digest, response.json()

    def blob_json(self, repository: str, digest: str) -> dict[str, Any]:
        response = self._check(self._send("GET", f"/v2/{repository}/blobs/{digest}", "read a blob"), "read a blob")
        result: dict[str, Any] = response.json()
        return result

    def repositories(self, prefix: str = "") -> list[str]:
        found: list[str] = []
        last = None
        while True:  # pages of at most 1000 (the distribution server's limit)
            params = {"n": "1000", **({"last": last} if last else {})}
            response = self._check(self._send("GET", "/v2/_catalog", "list its repositories", params=params),
                                   "list repositories")
            page = response.json().get("repositories") or []
            found += [r for r in page if r.startswith(prefix)]
            if len(page) < 1000 or "next" not in response.headers.get("link", ""):
                return sorted(found)
            last = page[-1]

    def tags(self, repository: str) -> list[str]:
        response = self._send("GET", f"/v2/{repository}/tags/list", "list tags")
        if response.status_code == 404:
            return []
        return sorted(self._check(response, f"list the tags of {repository}").json().get("tags") or [])

    def delete_manifest(self, repository: str, digest: str) -> None:
        self._check(self._send("DELETE", f"/v2/{repository}/manifests/{digest}", "delete a manifest"),
                    f"delete {repository}@{digest}", ok=(202, 404))


class LocalRegistry:
    """The registry duckserve runs for a home: ``<home>/registry/{config.yml,data,registry.log}``."""

    def __init__(self, home: Path) -> None:
        self.root = Path(home) / "registry"
        self.config = self.root / "config.yml"
        self.data = self.root / "data"
        self.pid_file = self.root / "registry.pid"
        self.log = self.root / "registry.log"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def port(self) -> int:
        """The registry's loopback port, chosen (a free one) the first time and kept."""
        address = self.root / "port"
        try:
            return int(address.read_text())
        except (OSError, ValueError):
            pass
        with self._locked():
            try:
                return int(address.read_text())
            except (OSError, ValueError):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", 0))
                    port = int(probe.getsockname()[1])
                address.write_text(f"{port}\n")
                return port

    @property
    def client(self) -> RegistryClient:
        return RegistryClient(f"http://127.0.0.1:{self.port()}")

    def _write_config(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.data}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n"
            f"      enabled: false\nhttp:\n  addr: 127.0.0.1:{self.port()}\n")

    @staticmethod
    def program() -> str:
        for name in SERVER_PROGRAMS:
            found = shutil.which(name)
            if found:
                return found
        raise OperationalError(
            "image repositories need an OCI registry and none is installed: install Debian's docker-registry "
            "(apt-get install docker-registry), or name a registry with $DUCKSERVE_REGISTRY=host:port"
        )

    def ensure_running(self) -> RegistryClient:
        client = self.client
        if client.ping():
            return client
        with self._locked():
            if client.ping():
                return client
            self._write_config()
            with open(self.log, "ab") as log:
                process = subprocess.Popen([self.program(), "serve", str(self.config)], stdin=subprocess.DEVNULL,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                           close_fds=True)
            self.pid_file.write_text(f"{process.pid}\n")
            deadline = time.monotonic() + 20
            while not client.ping():
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = self.log.read_text(errors="replace")[-2000:]
                    raise OperationalError(f"the local registry on 127.0.0.1:{self.port()} did not start (its log "
                                           f"{self.log}):\n{tail}")
                time.sleep(0.05)
        return client

    def stop(self) -> None:
        """Stop the registry if it runs (its images stay in ``data``)."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            if (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split() or ["Z"])[0] == "Z":
                break
            time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)

    def collect_garbage(self) -> None:
        """Remove the layers no manifest references any more (the registry is stopped meanwhile)."""
        if not self.data.is_dir():
            return
        with self._locked():
            self.stop()
            self._write_config()
            subprocess.run([self.program(), "garbage-collect", "--delete-untagged", str(self.config)],
                           capture_output=True, timeout=600)


def configured_registry() -> RegistryClient | None:
    """The registry $DUCKSERVE_REGISTRY names, if it names one."""
    configured = os.environ.get("DUCKSERVE_REGISTRY", "").strip().rstrip("/")
    if not configured:
        return None
    url = configured if "://" in configured else f"http://{configured}"
    user, password = os.environ.get("DUCKSERVE_REGISTRY_USERNAME"), os.environ.get("DUCKSERVE_REGISTRY_PASSWORD")
    return RegistryClient(url, (user, password) if user and password else None)


def registry_host(home: Path) -> str:
    """``host:port`` of the home's registry, as image references and repository URLs name it."""
    configured = configured_registry()
    return configured.host if configured else f"127.0.0.1:{LocalRegistry(home).port()}"


def open_registry(home: Path) -> tuple[RegistryClient, LocalRegistry | None]:
    """The home's registry, answering (the local one started if needed), and the local one if it is that."""
    configured = configured_registry()
    if configured is not None:
        if not configured.ping():
            raise OperationalError(f"the registry $DUCKSERVE_REGISTRY={configured.host} does not answer: start it, "
                                   "or unset DUCKSERVE_REGISTRY to use a local registry")
        return configured, None
    local = LocalRegistry(home)
    return local.ensure_running(), local


def existing_registry(home: Path) -> tuple[RegistryClient, LocalRegistry | None] | None:
    """The home's registry if it may hold images (configured, or a local one that was ever started)."""
    if configured_registry() is None and not LocalRegistry(home).data.is_dir():
        return None
    return open_registry(home)


def repository_path(database: str, schema: str, name: str) -> str:
    """An image repository's path in the registry: ``db/schema/repo``, lower-case."""
    return "/".join((database, schema, name)).lower()


def json_bytes(value: Any) -> bytes:
    """Canonical JSON: the same value always gives the same bytes (and so the same digest)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
