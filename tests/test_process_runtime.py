"""ProcessRuntime's own behaviour with real processes (what every runtime does is in
test_runtime_contract): the whole process group stops, SIGKILL after the grace period, a reused
pid is never signalled, old handles still read."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from duckserve.engine.runtimes import Artifact, InstanceHandle, InstanceSpec, tail
from duckserve.engine.runtimes.process import ProcessRuntime, read_port
from duckserve.errors import OperationalError, ProgrammingError

WITH_HELPER = (
    "import subprocess, sys, time; h = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
    "print(f'helper pid {h.pid}', flush=True); time.sleep(600)"
)


def spec_for(tmp_path: Path, code: str, name: str = "svc-0", program: str = sys.executable) -> InstanceSpec:
    return InstanceSpec(name=name, artifact=Artifact.environment(program), args=["-c", code],
                        log_path=tmp_path / "logs" / f"{name}.log", state_dir=tmp_path / "run")


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    runtime = ProcessRuntime()
    handle = runtime.start(spec_for(tmp_path, WITH_HELPER))
    deadline = time.monotonic() + 20
    while not re.search(r"^helper pid \d+$", runtime.logs(handle), re.M) and time.monotonic() < deadline:
        time.sleep(0.02)
    helper = int(re.findall(r"^helper pid (\d+)$", runtime.logs(handle), re.M)[0])
    pid = runtime.describe(handle)["pid"]
    assert pid_alive(helper) and handle.data["pgid"] == pid
    runtime.stop(handle)
    assert not pid_alive(pid) and not pid_alive(helper)
    assert "stopped" in runtime.logs(handle, lines=1)


def test_wait_ready_times_out_when_no_port_is_announced(tmp_path: Path) -> None:
    runtime = ProcessRuntime()
    handle = runtime.start(spec_for(tmp_path, "print('loading'); import time; time.sleep(60)"))
    try:
        with pytest.raises(OperationalError, match=r"did not announce its port within 0.5s(.|\n)*loading"):
            runtime.wait_ready(handle, timeout=0.5)
        assert runtime.status(handle) == "PENDING"
    finally:
        runtime.stop(handle, timeout=5)
    assert not pid_alive(handle.data["pid"])


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ignoring', flush=True); "
            "time.sleep(60)")
    runtime = ProcessRuntime()
    handle = runtime.start(spec_for(tmp_path, code))
    deadline = time.monotonic() + 10
    while "ignoring" not in runtime.logs(handle) and time.monotonic() < deadline:
        time.sleep(0.02)
    runtime.stop(handle, timeout=0.3)
    assert not pid_alive(handle.data["pid"])


def test_stop_never_kills_a_process_that_reused_the_pid(tmp_path: Path) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        handle = InstanceHandle(
            runtime="process", name="svc-old", started_at="2020-01-01T00:00:00Z", log_path=str(tmp_path / "old.log"),
            # the instance that had this pid started long ago
            data={"pid": stranger.pid, "pgid": stranger.pid, "port_file": str(tmp_path / "old.port"), "proc_start": 1},
        )
        runtime = ProcessRuntime()
        assert runtime.status(handle) == "FAILED"
        runtime.stop(handle, timeout=0.5)
        assert stranger.poll() is None
        assert runtime.status(handle) == "STOPPED"
    finally:
        stranger.send_signal(signal.SIGKILL)
        stranger.wait()


def test_handles_stored_before_the_runtime_interface_still_read() -> None:
    old = {"name": "DB.S.SVC/0", "pid": 12345, "pgid": 12345, "log_path": "/x/instance-0.log",
           "port_file": "/x/instance-0.port", "started_at": "2026-01-01T00:00:00Z", "port": 40001,
           "ready_path": "/ready", "proc_start": 7, "runtime": "process"}
    handle = InstanceHandle.from_dict(old)
    assert (handle.runtime, handle.endpoint) == ("process", "http://127.0.0.1:40001")
    assert handle.data == {"pid": 12345, "pgid": 12345, "port_file": "/x/instance-0.port", "proc_start": 7}
    assert InstanceHandle.from_json(handle.to_json()) == handle


def test_start_of_a_missing_program_or_an_image_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OperationalError, match="cannot start '/nonexistent/python'"):
        ProcessRuntime().start(spec_for(tmp_path, "pass", program="/nonexistent/python"))
    spec = spec_for(tmp_path, "pass")
    spec.artifact = Artifact.image("127.0.0.1:5000/db/schema/repo/model:v1")
    with pytest.raises(ProgrammingError, match="RUNTIME = 'DOCKER'"):
        ProcessRuntime().start(spec)


def test_read_port_and_tail(tmp_path: Path) -> None:
    (tmp_path / "p").write_text("4242\n")
    (tmp_path / "q").write_text('{"port": 4343}')
    (tmp_path / "r").write_text("70000")
    assert [read_port(tmp_path / n) for n in "pqrs"] == [4242, 4343, None, None]
    path = tmp_path / "log"
    path.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert tail(path, 2) == "line 9998\nline 9999\n"
    assert tail(path, 3, max_bytes=20) == "line 9998\nline 9999\n"
    assert tail(path, 3, max_bytes=15) == "line 9999\n"
    assert tail(tmp_path / "missing", 5) == ""
