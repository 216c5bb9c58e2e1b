"""Instances as local processes, each a process group of its own in a session of its own, so it
outlives its creator.

An environment artifact's entrypoint (a model environment's Python) runs with the spec's arguments,
listening on loopback on a free port that it writes to ``$DUCKSERVE_PORT_FILE`` (in the spec's
state directory). Its parent is a small waiter (`duckserve.engine.runtimes.waiter`, the session's
leader) that writes the instance's exit code to ``<state dir>/<log name>.exit`` when it ends, so any
process of the home learns how an instance ended (``last_exit_code``), not just the one that started
it. The handle's own fields (``data``) are the process id and group, the process's start time (to
recognise a reused pid), the port and exit files and the waiter's pid. This is the only module
that reads them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from duckserve.engine.runtimes.base import (
    LOG_TAIL_LINES,
    InstanceHandle,
    InstanceSpec,
    InstanceState,
    Runtime,
    now_text,
    tail,
)
from duckserve.engine.runtimes.waiter import ARGV_ENV
from duckserve.errors import OperationalError, ProgrammingError

LOOPBACK = "127.0.0.1"
WAITER = Path(__file__).with_name("waiter.py")


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time) of ``pid`` from /proc, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after its last ")"
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2]), int(fields[19])


def _read_exit_file(path: str, pid: int) -> int | None:
    """The exit code the waiter of instance ``pid`` wrote, None before it did (or for another pid's file)."""
    try:
        found = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("pid") != pid or not isinstance(found.get("exit_code"), int):
        return None
    return int(found["exit_code"])


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


def make_exchange_dir() -> str:
    """A private directory (mode 0700) shared with an instance for batches passed as files: in
    /dev/shm where the machine has it (memory, never disk), else the temporary directory."""
    shm = Path("/dev/shm")
    parent = str(shm) if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None
    return tempfile.mkdtemp(prefix="duckserve-exchange-", dir=parent)


class ProcessRuntime(Runtime):
    """Instances as local process groups; nothing to install."""

    name = "process"

    def __init__(self, ready_timeout: float = 2.0) -> None:
        self._exit_codes: dict[int, int] = {}
        self._reapers: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()
        self._probe_timeout = ready_timeout

    def start(self, spec: InstanceSpec) -> InstanceHandle:
        if spec.artifact.kind != "environment":
            raise ProgrammingError(
                f"instance {spec.name}: the process runtime runs environments on this host, not container images "
                f"({spec.artifact.reference}): run it on a compute pool with RUNTIME = 'DOCKER'"
            )
        log_path = Path(spec.log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        Path(spec.state_dir).mkdir(parents=True, exist_ok=True)
        port_file = Path(spec.state_dir) / f"{log_path.stem}.port"
        port_file.unlink(missing_ok=True)
        Path(str(log_path) + ".stopped").unlink(missing_ok=True)
        env = {**os.environ, **spec.env} if spec.inherit_env else dict(spec.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(DUCKSERVE_HOST=LOOPBACK, DUCKSERVE_PORT="0", DUCKSERVE_PORT_FILE=str(port_file))
        env.setdefault("DUCKSERVE_INSTANCE", spec.name)
        exchange = make_exchange_dir() if spec.exchange else None
        if exchange is not None:
            env["DUCKSERVE_EXCHANGE_DIR"] = exchange
        argv = [*spec.artifact.entrypoint, *spec.args]
        exit_file = Path(spec.state_dir) / f"{log_path.stem}.exit"
        exit_file.unlink(missing_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"{now_text()} === starting instance {spec.name}: {' '.join(argv)}\n".encode())
            log.flush()
            waiter, pid, problem = self._spawn(argv, env, log, spec.state_dir, exit_file)
            if problem is not None:
                log.write(f"{now_text()} === cannot start: {problem}\n".encode())
                if exchange is not None:
                    shutil.rmtree(exchange, ignore_errors=True)
                raise OperationalError(
                    f"instance {spec.name} cannot start {argv[0]!r}: {problem}. Check that the program exists "
                    "and is executable (for a model service: rebuild its environment)"
                )
        stat = _proc_stat(pid)
        waiter_stat = _proc_stat(waiter.pid)
        handle = InstanceHandle(
            runtime=self.name,
            name=spec.name,
            started_at=now_text(),
            log_path=str(log_path),
            ready_path=spec.ready_path,
            labels=dict(spec.labels),
            data={"pid": pid, "pgid": pid, "port_file": str(port_file),
                  "proc_start": stat[2] if stat else None, "exchange_dir": exchange,
                  "exit_file": str(exit_file), "waiter": waiter.pid,
                  "waiter_start": waiter_stat[2] if waiter_stat else None},
        )
        # reap the waiter when it exits so it never lingers as a zombie
        reaper = threading.Thread(target=self._reap, args=(waiter, pid), name=f"reap-{spec.name}", daemon=True)
        with self._lock:
            self._reapers[pid] = reaper
        reaper.start()
        return handle

    @staticmethod
    def _spawn(argv: list[str], env: dict[str, str], log: Any, cwd: str | Path, exit_file: Path
               ) -> tuple[subprocess.Popen[bytes], int, str | None]:
        """Start the instance under its waiter (`duckserve.engine.runtimes.waiter`): the waiter, the
        instance's pid, and why it could not start (None when it did)."""
        read_fd, write_fd = os.pipe()
        try:
            try:
                waiter = subprocess.Popen(
                    [sys.executable, "-I", "-S", str(WAITER), str(exit_file), str(write_fd)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                    env={**env, ARGV_ENV: json.dumps(argv)}, close_fds=True, pass_fds=(write_fd,),
                    start_new_session=True,
                )
            except OSError as exc:
                raise OperationalError(f"cannot start the process runtime's waiter {sys.executable}: {exc}") from exc
            os.close(write_fd)
            write_fd = -1
            report = b""
            while not report.endswith(b"\n"):
                chunk = os.read(read_fd, 4096)
                if not chunk:
                    break
                report += chunk
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
        text = report.decode(errors="replace").strip()
        if text.isdigit():
            return waiter, int(text), None
        waiter.wait()
        return waiter, waiter.pid, text.removeprefix("error ") or f"its waiter exited with code {waiter.returncode}"

    def _reap(self, waiter: subprocess.Popen[bytes], pid: int) -> None:
        code = waiter.wait()  # the waiter exits with its instance's code
        with self._lock:
            self._exit_codes[pid] = code

    @staticmethod
    def _own(handle: InstanceHandle) -> tuple[int, int, int | None]:
        data = handle.data
        return int(data["pid"]), int(data.get("pgid") or data["pid"]), data.get("proc_start")

    def _alive(self, handle: InstanceHandle) -> bool:
        """Is the handle's process still running, and still the one we started (not a reused pid)?"""
        pid, _, proc_start = self._own(handle)
        if not _has_proc():
            try:
                os.kill(pid, 0)
            except (ProcessLookupError, PermissionError):
                return False
            return True
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        return proc_start is None or stat[2] == proc_start

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
        """May we signal the handle's process group? Yes while its leader is ours; after the leader
        died, the kernel never hands out a pid still used as a process group id, so a remaining group
        is ours unless the pid was reused by a new process."""
        if not _has_proc():
            return self._alive(handle)
        _, pgid, proc_start = self._own(handle)
        stat = _proc_stat(pgid)
        if stat is not None and stat[0] not in ("Z", "X"):
            return proc_start is None or stat[2] == proc_start
        return bool(self._group_members(pgid))

    def endpoint(self, handle: InstanceHandle) -> str | None:
        if handle.endpoint:
            return handle.endpoint
        port = read_port(handle.data.get("port_file") or "")
        return f"http://{LOOPBACK}:{port}" if port is not None else None

    def _refreshed(self, handle: InstanceHandle) -> InstanceHandle:
        endpoint = self.endpoint(handle)
        return replace(handle, endpoint=endpoint) if endpoint != handle.endpoint else handle

    def _answers_ready(self, handle: InstanceHandle, timeout: float) -> bool:
        from duckserve.engine.client import http_client

        assert handle.endpoint is not None
        try:
            # the process's keep-alive client: a fresh httpx client costs ~30 ms (it loads the CA store)
            response = http_client().get(handle.endpoint + handle.ready_path, timeout=timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _failure(self, handle: InstanceHandle, problem: str) -> OperationalError:
        log_tail = tail(handle.log_path, LOG_TAIL_LINES).rstrip()
        return OperationalError(
            f"instance {handle.name} {problem}; read its log {handle.log_path} "
            f"(last {LOG_TAIL_LINES} lines below) and fix the model or its environment.\n{log_tail}"
        )

    def _exit_code(self, handle: InstanceHandle) -> int | None:
        """The exit code of a dead instance, whichever process started it: its waiter writes it to
        the exit file just after the instance ended (waited for while the waiter lives, up to 2 s).
        None when nobody knows it (the waiter was killed too, or a handle from before waiters)."""
        pid = self._own(handle)[0]
        exit_file = handle.data.get("exit_file")
        deadline = time.monotonic() + 2.0
        while exit_file:
            code = _read_exit_file(exit_file, pid)
            if code is not None or not self._waiter_alive(handle) or time.monotonic() >= deadline:
                if code is not None:
                    return code
                break
            time.sleep(0.01)
        with self._lock:
            reaper = self._reapers.get(pid)
        if reaper is not None:  # started by this process: its reaper knows the waiter's code
            reaper.join(timeout=2.0)
        with self._lock:
            return self._exit_codes.get(pid)

    @staticmethod
    def _waiter_alive(handle: InstanceHandle) -> bool:
        waiter, started = handle.data.get("waiter"), handle.data.get("waiter_start")
        if not waiter:
            return False
        stat = _proc_stat(int(waiter))
        return stat is not None and stat[0] not in ("Z", "X") and (started is None or stat[2] == started)

    def wait_ready(self, handle: InstanceHandle, timeout: float = 60.0) -> InstanceHandle:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            handle = self._refreshed(handle)
            if handle.endpoint is not None and self._answers_ready(handle, min(self._probe_timeout, timeout)):
                if self._alive(handle):
                    return handle
            if not self._alive(handle):
                code = self._exit_code(handle)
                exited = f"exited with code {code}" if code is not None else "exited"
                raise self._failure(handle, f"{exited} before it was ready")
            if time.monotonic() >= deadline:
                waited = "did not announce its port" if handle.endpoint is None else f"did not answer {handle.ready_path}"
                raise self._failure(handle, f"{waited} within {timeout:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def state(self, handle: InstanceHandle) -> InstanceState:
        if not self._alive(handle):
            code = self._exit_code(handle)
            # stopped by us, or shut down cleanly by itself (a clean exit removes the port file it announced)
            port_file = Path(handle.data.get("port_file") or "")
            announced_then_removed = handle.endpoint is not None and not port_file.exists()
            if _stop_marker(handle).exists() or announced_then_removed or code == 0:
                return InstanceState("STOPPED", code)
            return InstanceState("FAILED", code, f"exited with code {code}" if code is not None else "exited")
        handle = self._refreshed(handle)
        if handle.endpoint is not None and self._answers_ready(handle, self._probe_timeout):
            return InstanceState("READY")
        return InstanceState("PENDING")

    def stop(self, handle: InstanceHandle, timeout: float = 10.0) -> None:
        marker = _stop_marker(handle)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(now_text() + "\n")
        _, pgid, _ = self._own(handle)
        if self._group_is_ours(handle):
            self._signal_group(handle, signal.SIGTERM)
            if not self._wait_group_gone(handle, timeout):
                self._signal_group(handle, signal.SIGKILL)
                if not self._wait_group_gone(handle, 5.0):
                    raise OperationalError(
                        f"instance {handle.name} (process group {pgid}) survived SIGKILL: "
                        f"check `ps -g {pgid}` for processes stuck in the kernel"
                    )
            try:
                with open(handle.log_path, "ab") as log:
                    log.write(f"{now_text()} === instance {handle.name} stopped\n".encode())
            except OSError:
                pass
        if handle.data.get("port_file"):
            Path(handle.data["port_file"]).unlink(missing_ok=True)
        if handle.data.get("exchange_dir"):
            shutil.rmtree(handle.data["exchange_dir"], ignore_errors=True)

    def _signal_group(self, handle: InstanceHandle, sig: signal.Signals) -> None:
        _, pgid, _ = self._own(handle)
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise OperationalError(
                f"instance {handle.name}: not allowed to signal process group {pgid}: stop it as the user "
                "who started it"
            ) from exc

    def _wait_group_gone(self, handle: InstanceHandle, timeout: float) -> bool:
        _, pgid, _ = self._own(handle)
        deadline = time.monotonic() + timeout
        while True:
            gone = not self._group_members(pgid) if _has_proc() else not self._alive(handle)
            if gone:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def logs(self, handle: InstanceHandle, lines: int | None = None) -> str:
        return tail(handle.log_path, lines)

    def describe(self, handle: InstanceHandle) -> dict[str, Any]:
        return {"pid": self._own(handle)[0], "container_id": None}
