"""ProcessRuntime with real processes: a tiny HTTP server that follows the instance contract."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from duckserve.engine.runtimes import InstanceHandle, InstanceSpec, ProcessRuntime, read_port, tail
from duckserve.errors import OperationalError

SERVER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    port_file, delay = sys.argv[1], float(sys.argv[2])
    started = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            ready = self.path == "/ready" and time.monotonic() - started >= delay
            self.send_response(200 if ready else 503)
            self.end_headers()
            self.wfile.write(b"ok" if ready else b"starting")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"helper pid {helper.pid}")
    with open(port_file + ".tmp", "w") as fh:
        fh.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    print(f"listening on port {server.server_address[1]}", flush=True)
    server.serve_forever()
    """
)


@pytest.fixture
def server_script(tmp_path: Path) -> Path:
    path = tmp_path / "server.py"
    path.write_text(SERVER)
    return path


def spec_for(tmp_path: Path, argv: list[str], name: str = "svc-0") -> InstanceSpec:
    return InstanceSpec(
        name=name,
        argv=argv,
        env={"GREETING": "hello"},
        cwd=tmp_path,
        log_path=tmp_path / "logs" / f"{name}.log",
        port_file=tmp_path / "run" / f"{name}.port",
    )


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def helper_pid(log: str) -> int:
    return int(next(line for line in log.splitlines() if line.startswith("helper pid")).split()[-1])


def test_instance_outlives_its_creator_and_is_managed_from_elsewhere(
    tmp_path: Path, server_script: Path
) -> None:
    spec = spec_for(
        tmp_path, [sys.executable, str(server_script), str(tmp_path / "run" / "svc-0.port"), "0.3"]
    )
    launcher = textwrap.dedent(
        f"""
        from pathlib import Path
        from duckserve.engine.runtimes import InstanceSpec, ProcessRuntime
        spec = InstanceSpec(name={spec.name!r}, argv={spec.argv!r}, cwd=Path({str(tmp_path)!r}),
                            log_path=Path({str(spec.log_path)!r}), port_file=Path({str(spec.port_file)!r}))
        print(ProcessRuntime().start(spec).to_json())
        """
    )
    created = subprocess.run([sys.executable, "-c", launcher], capture_output=True, text=True, timeout=30)
    assert created.returncode == 0, created.stderr
    handle = InstanceHandle.from_json(created.stdout)  # the creator has exited; the instance runs on
    assert handle.port is None and handle.pgid == handle.pid
    json.dumps(handle.to_dict())

    runtime = ProcessRuntime()
    assert runtime.status(handle) in ("PENDING", "READY")
    ready = runtime.wait_ready(handle, timeout=20)
    assert ready.port == read_port(spec.port_file) and ready.url == f"http://127.0.0.1:{ready.port}"
    assert httpx.get(ready.url + "/ready").status_code == 200
    assert runtime.status(ready) == "READY"
    assert runtime.status(handle) == "READY"  # a stored handle without the port finds it in the port file
    assert os.getsid(handle.pid) == handle.pid

    log = runtime.logs(ready)
    assert f"listening on port {ready.port}" in log and "starting instance svc-0" in log
    assert runtime.logs(ready, lines=1).count("\n") == 1
    helper = helper_pid(log)
    assert pid_alive(helper)

    runtime.stop(ready)
    assert not pid_alive(handle.pid) and not pid_alive(helper)
    assert runtime.status(ready) == "STOPPED"
    assert not spec.port_file.exists()
    runtime.stop(ready)  # idempotent
    assert "stopped" in runtime.logs(ready, lines=1)


def test_wait_ready_in_the_creating_process(tmp_path: Path, server_script: Path) -> None:
    runtime = ProcessRuntime()
    code = "import os, sys; print(os.environ['GREETING']); sys.argv[1:] = [os.environ['DUCKSERVE_PORT_FILE'], '0']"
    argv = [sys.executable, "-c", code + "; exec(open('server.py').read())"]
    handle = runtime.start(spec_for(tmp_path, argv, name="svc-1"))
    try:
        ready = runtime.wait_ready(handle, timeout=20)
        assert runtime.status(ready) == "READY"
        assert runtime.logs(ready).splitlines()[1] == "hello"  # env is passed, cwd is used
    finally:
        runtime.stop(handle, timeout=5)
    assert runtime.status(handle) == "STOPPED"


def test_process_that_exits_at_once_fails_fast_with_its_log(tmp_path: Path) -> None:
    runtime = ProcessRuntime()
    code = "import sys; print('model failed to load: no such file model.pkl'); sys.exit(3)"
    handle = runtime.start(spec_for(tmp_path, [sys.executable, "-c", code]))
    started = time.monotonic()
    with pytest.raises(OperationalError) as info:
        runtime.wait_ready(handle, timeout=30)
    assert time.monotonic() - started < 15
    message = str(info.value)
    assert "svc-0" in message and "exited with code 3" in message
    assert "model failed to load: no such file model.pkl" in message and handle.log_path in message
    assert runtime.status(handle) == "FAILED"
    runtime.stop(handle)  # stopping a dead instance is fine
    assert runtime.status(handle) == "STOPPED"


def test_wait_ready_times_out_when_no_port_is_announced(tmp_path: Path) -> None:
    runtime = ProcessRuntime()
    handle = runtime.start(
        spec_for(tmp_path, [sys.executable, "-c", "print('loading'); import time; time.sleep(60)"])
    )
    try:
        with pytest.raises(OperationalError, match=r"did not announce its port within 0.5s(.|\n)*loading"):
            runtime.wait_ready(handle, timeout=0.5)
        assert runtime.status(handle) == "PENDING"
    finally:
        runtime.stop(handle, timeout=5)
    assert not pid_alive(handle.pid)


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ignoring', flush=True); time.sleep(60)"
    runtime = ProcessRuntime()
    handle = runtime.start(spec_for(tmp_path, [sys.executable, "-c", code]))
    deadline = time.monotonic() + 10
    while "ignoring" not in runtime.logs(handle) and time.monotonic() < deadline:
        time.sleep(0.02)
    runtime.stop(handle, timeout=0.3)
    assert not pid_alive(handle.pid)


def test_stop_never_kills_a_process_that_reused_the_pid(tmp_path: Path) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        handle = InstanceHandle(
            name="svc-old",
            pid=stranger.pid,
            pgid=stranger.pid,
            log_path=str(tmp_path / "old.log"),
            port_file=str(tmp_path / "old.port"),
            started_at="2020-01-01T00:00:00Z",
            proc_start=1,  # the instance that had this pid started long ago
        )
        runtime = ProcessRuntime()
        assert runtime.status(handle) == "FAILED"
        runtime.stop(handle, timeout=0.5)
        assert stranger.poll() is None
        assert runtime.status(handle) == "STOPPED"
    finally:
        stranger.send_signal(signal.SIGKILL)
        stranger.wait()


def test_start_of_a_missing_program_is_an_operational_error(tmp_path: Path) -> None:
    with pytest.raises(OperationalError, match="cannot start '/nonexistent/python'"):
        ProcessRuntime().start(spec_for(tmp_path, ["/nonexistent/python", "-V"]))


def test_tail_reads_the_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert tail(path, 2) == "line 9998\nline 9999\n"
    assert tail(path, 3, max_bytes=20) == "line 9998\nline 9999\n"
    assert tail(path, 3, max_bytes=15) == "line 9999\n"
    assert tail(tmp_path / "missing", 5) == ""
