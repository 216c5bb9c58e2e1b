"""Where service instances run: a small interface and its implementations.

A ``Runtime`` starts an instance from an ``InstanceSpec`` and returns an ``InstanceHandle``: plain
JSON-serializable data that the catalog stores, so any other process can later ask for the
instance's status, read its logs or stop it. ``ProcessRuntime`` runs instances as local processes
detached from their creator; a ``DockerRuntime`` implementing the same interface can sit beside it.

The server contract: an instance writes its TCP port (decimal text) to ``port_file`` once it is
listening, atomically (write a temporary file, then rename), and answers ``GET <ready_path>`` with
200 when it can serve. ``ProcessRuntime`` passes the port file's path in ``$DUCKSERVE_PORT_FILE``
and the instance name in ``$DUCKSERVE_INSTANCE`` (unless the spec's env sets them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import httpx

from duckserve.errors import OperationalError

InstanceStatus = Literal["PENDING", "READY", "FAILED", "STOPPED"]

LOG_TAIL_LINES = 40


@dataclass
class InstanceSpec:
    """What to run: ``argv`` in ``cwd`` with ``env`` (added to this process's environment unless
    ``inherit_env`` is off), output appended to ``log_path``, port announced in ``port_file``."""

    name: str
    argv: list[str]
    log_path: Path
    port_file: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ready_path: str = "/ready"
    inherit_env: bool = True


@dataclass
class InstanceHandle:
    """A started instance, as data: JSON round-trips through ``to_dict``/``from_dict`` (or ``asdict``)."""

    name: str
    pid: int
    pgid: int
    log_path: str
    port_file: str
    started_at: str
    port: int | None = None
    ready_path: str = "/ready"
    #: the process's start time in clock ticks after boot (/proc/<pid>/stat), to recognise a reused pid
    proc_start: int | None = None
    runtime: str = "process"

    @property
    def url(self) -> str:
        if self.port is None:
            raise OperationalError(
                f"instance {self.name} has not announced its port yet: wait for it with wait_ready()"
            )
        return f"http://127.0.0.1:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceHandle:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> InstanceHandle:
        return cls.from_dict(json.loads(text))


class Runtime(ABC):
    """Starts, watches and stops service instances. Every method but ``start`` works from any process."""

    @abstractmethod
    def start(self, spec: InstanceSpec) -> InstanceHandle:
        """Launch the instance and return at once (it is PENDING until ready)."""

    @abstractmethod
    def wait_ready(self, handle: InstanceHandle, timeout: float = 60.0) -> InstanceHandle:
        """Block until the instance answers its ready path; the handle with its port, or OperationalError."""

    @abstractmethod
    def status(self, handle: InstanceHandle) -> InstanceStatus:
        """PENDING (starting), READY (answers its ready path), FAILED (exited on its own), STOPPED."""

    @abstractmethod
    def stop(self, handle: InstanceHandle, timeout: float = 10.0) -> None:
        """Stop the instance and everything it started; a no-op when it is already gone."""

    @abstractmethod
    def logs(self, handle: InstanceHandle, lines: int | None = None) -> str:
        """The instance's output: all of it, or its last ``lines`` lines."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time) of ``pid`` from /proc, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after its last ")"
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2]), int(fields[19])


def _has_proc() -> bool:
    return Path("/proc/self/stat").exists()


def _stop_marker(handle: InstanceHandle) -> Path:
    return Path(handle.log_path + ".stopped")


def read_port(port_file: Path | str) -> int | None:
    """The port an instance announced (decimal text, or JSON with a ``port`` key), None if not yet."""
    try:
        text = Path(port_file).read_text().strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    port = value.get("port") if isinstance(value, dict) else value
    if isinstance(port, bool) or not isinstance(port, int):
        return None
    return port if 0 < port < 65536 else None


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


class ProcessRuntime(Runtime):
    """Instances as local processes, each the leader of its own session so it outlives its creator."""

    def __init__(self, ready_timeout: float = 2.0) -> None:
        self._exit_codes: dict[int, int] = {}
        self._lock = threading.Lock()
        self._probe_timeout = ready_timeout

    def start(self, spec: InstanceSpec) -> InstanceHandle:
        log_path, port_file = Path(spec.log_path), Path(spec.port_file)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        port_file.parent.mkdir(parents=True, exist_ok=True)
        port_file.unlink(missing_ok=True)
        Path(str(log_path) + ".stopped").unlink(missing_ok=True)
        env = {**os.environ, **spec.env} if spec.inherit_env else dict(spec.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("DUCKSERVE_PORT_FILE", str(port_file))
        env.setdefault("DUCKSERVE_INSTANCE", spec.name)
        with open(log_path, "ab") as log:
            log.write(f"{_now()} === starting instance {spec.name}: {' '.join(spec.argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    spec.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=spec.cwd,
                    env=env,
                    close_fds=True,
                    start_new_session=True,
                )
            except OSError as exc:
                log.write(f"{_now()} === cannot start: {exc}\n".encode())
                raise OperationalError(
                    f"instance {spec.name} cannot start {spec.argv[0]!r}: {exc}. Check that the program exists "
                    "and is executable (for a model service: rebuild its environment)"
                ) from exc
        stat = _proc_stat(proc.pid)
        handle = InstanceHandle(
            name=spec.name,
            pid=proc.pid,
            pgid=proc.pid,
            log_path=str(log_path),
            port_file=str(port_file),
            started_at=_now(),
            ready_path=spec.ready_path,
            proc_start=stat[2] if stat else None,
        )
        # reap the child when it exits so it never lingers as a zombie, and keep its exit code
        threading.Thread(target=self._reap, args=(proc,), name=f"reap-{spec.name}", daemon=True).start()
        return handle

    def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        with self._lock:
            self._exit_codes[proc.pid] = code

    def _alive(self, handle: InstanceHandle) -> bool:
        """Is the handle's process still running, and still the one we started (not a reused pid)?"""
        if not _has_proc():
            try:
                os.kill(handle.pid, 0)
            except (ProcessLookupError, PermissionError):
                return False
            return True
        stat = _proc_stat(handle.pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        return handle.proc_start is None or stat[2] == handle.proc_start

    def _group_members(self, pgid: int) -> list[int]:
        """Live (non-zombie) processes in process group ``pgid``."""
        members = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                stat = _proc_stat(int(entry.name))
                if stat and stat[1] == pgid and stat[0] not in ("Z", "X"):
                    members.append(int(entry.name))
        return members

    def _group_is_ours(self, handle: InstanceHandle) -> bool:
        """May we signal ``handle.pgid``? Yes while its leader is ours; after the leader died, the
        kernel never hands out a pid still used as a process group id, so a remaining group is ours
        unless the pid was reused by a new process."""
        if not _has_proc():
            return self._alive(handle)
        stat = _proc_stat(handle.pgid)
        if stat is not None and stat[0] not in ("Z", "X"):
            return handle.proc_start is None or stat[2] == handle.proc_start
        return bool(self._group_members(handle.pgid))

    def _refresh_port(self, handle: InstanceHandle) -> InstanceHandle:
        if handle.port is None:
            port = read_port(handle.port_file)
            if port is not None:
                return replace(handle, port=port)
        return handle

    def _answers_ready(self, handle: InstanceHandle, timeout: float) -> bool:
        from duckserve.engine.client import http_client

        try:
            # the process's keep-alive client: a fresh httpx client costs ~30 ms (it loads the CA store)
            response = http_client().get(handle.url + handle.ready_path, timeout=timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _failure(self, handle: InstanceHandle, problem: str) -> OperationalError:
        log_tail = tail(handle.log_path, LOG_TAIL_LINES).rstrip()
        return OperationalError(
            f"instance {handle.name} {problem}; read its log {handle.log_path} "
            f"(last {LOG_TAIL_LINES} lines below) and fix the model or its environment.\n{log_tail}"
        )

    def wait_ready(self, handle: InstanceHandle, timeout: float = 60.0) -> InstanceHandle:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            handle = self._refresh_port(handle)
            if handle.port is not None and self._answers_ready(handle, min(self._probe_timeout, timeout)):
                if self._alive(handle):
                    return handle
            if not self._alive(handle):
                with self._lock:
                    code = self._exit_codes.get(handle.pid)
                exited = f"exited with code {code}" if code is not None else "exited"
                raise self._failure(handle, f"{exited} before it was ready")
            if time.monotonic() >= deadline:
                waited = (
                    "did not announce its port"
                    if handle.port is None
                    else f"did not answer {handle.ready_path}"
                )
                raise self._failure(handle, f"{waited} within {timeout:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def status(self, handle: InstanceHandle) -> InstanceStatus:
        if not self._alive(handle):
            # stopped by us, or shut down cleanly by itself (a clean exit removes the port file it announced)
            announced_then_removed = handle.port is not None and not Path(handle.port_file).exists()
            return "STOPPED" if _stop_marker(handle).exists() or announced_then_removed else "FAILED"
        handle = self._refresh_port(handle)
        if handle.port is not None and self._answers_ready(handle, self._probe_timeout):
            return "READY"
        return "PENDING"

    def stop(self, handle: InstanceHandle, timeout: float = 10.0) -> None:
        marker = _stop_marker(handle)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(_now() + "\n")
        if self._group_is_ours(handle):
            self._signal_group(handle, signal.SIGTERM)
            if not self._wait_group_gone(handle, timeout):
                self._signal_group(handle, signal.SIGKILL)
                if not self._wait_group_gone(handle, 5.0):
                    raise OperationalError(
                        f"instance {handle.name} (process group {handle.pgid}) survived SIGKILL: "
                        f"check `ps -g {handle.pgid}` for processes stuck in the kernel"
                    )
            try:
                with open(handle.log_path, "ab") as log:
                    log.write(f"{_now()} === instance {handle.name} stopped\n".encode())
            except OSError:
                pass
        Path(handle.port_file).unlink(missing_ok=True)

    def _signal_group(self, handle: InstanceHandle, sig: signal.Signals) -> None:
        try:
            os.killpg(handle.pgid, sig)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise OperationalError(
                f"instance {handle.name}: not allowed to signal process group {handle.pgid}: stop it as the user "
                "who started it"
            ) from exc

    def _wait_group_gone(self, handle: InstanceHandle, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            gone = not self._group_members(handle.pgid) if _has_proc() else not self._alive(handle)
            if gone:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def logs(self, handle: InstanceHandle, lines: int | None = None) -> str:
        return tail(handle.log_path, lines)
