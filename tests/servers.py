"""Real servers for tests: ``python -m ...`` on port 0, waited for, stopped, their logs at hand."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

START_TIMEOUT = 90.0


@dataclass
class Server:
    """A server process started by a test, with its log for when something fails."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20_000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_server(name: str, argv: list[str], workdir: Path, ready_path: str, env: dict[str, str] | None = None,
                 scheme: str = "http", verify: Any = True) -> Server:
    """Start ``python -m ...`` with ``--port 0 --port-file``; wait for its port and ready path."""
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / f"{name}.port"
    log_path = workdir / f"{name}.log"
    port_file.unlink(missing_ok=True)
    env = {**{k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}, **(env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", *argv, "--port", "0", "--port-file", str(port_file)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
    return wait_until_ready(Server(name, process, log_path, scheme=scheme), ready_path, port_file, verify=verify)


def wait_until_ready(server: Server, ready_path: str, port_file: Path | None = None, timeout: float = START_TIMEOUT,
                     verify: Any = True) -> Server:
    """Wait until ``ready_path`` answers 200 (on the port the server writes to ``port_file``, when
    given); fail the test with the server's log when it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=5.0, verify=verify) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                pytest.fail(f"{server.name} exited with {server.process.returncode} before it was ready; its log:\n"
                            f"{server.log()}")
            text = port_file.read_text().strip() if port_file is not None and port_file.exists() else ""
            if text:
                server.port = int(text)
            if server.port:
                try:
                    if client.get(server.url + ready_path).status_code == 200:
                        return server
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
    server.stop()
    pytest.fail(f"{server.name} was not ready within {timeout:.0f} s; its log:\n{server.log()}")


def start_inference_server(package: Path, workdir: Path, name: str, service: str | None = None,
                           extra: list[str] | None = None) -> Server:
    """An instance; ``service`` is the service key it serves (its Open Inference Protocol name)."""
    env = {"DUCKSERVE_SERVICE": service} if service else None
    return start_server(name, ["duckserve.inference_server", "--package", str(package), "--workers", "1",
                               *(extra or [])], workdir, "/ready", env)


def start_ingress(home: Path, service: str, workdir: Path, name: str = "ingress", extra: list[str] | None = None,
                  scheme: str = "http", verify: Any = True) -> Server:
    return start_server(name, ["duckserve.fronts.ingress", "--home", str(home), "--service", service,
                               *(extra or [])], workdir, "/healthz", scheme=scheme, verify=verify)
