"""What every runtime must do, the same cases on each: start, ready, endpoint, logs, state, stop,
exit codes, replicas (apply), handles usable from another process, a directory shared with the host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from duckserve.engine.runtimes import Artifact, InstanceHandle, InstanceSpec, Runtime, get_runtime
from duckserve.errors import OperationalError

SERVER = (Path(__file__).parent / "contract_server.py").read_text()
RUNTIMES = ["process", "docker"]


@dataclass
class Case:
    runtime: Runtime
    artifact: Artifact
    tmp: Path
    started: list[InstanceHandle]

    def spec(self, name: str, *server_args: str, exchange: bool = False, **env: str) -> InstanceSpec:
        return InstanceSpec(name=name, artifact=self.artifact, args=["-c", SERVER, *server_args],
                            env={"GREETING": "hello", **env}, log_path=self.tmp / "logs" / f"{name}.log",
                            state_dir=self.tmp / "state", labels={"io.duckserve.test": name}, exchange=exchange)

    def start(self, spec: InstanceSpec) -> InstanceHandle:
        handle = self.runtime.start(spec)
        self.started.append(handle)
        return handle


@pytest.fixture(params=[pytest.param(n, marks=pytest.mark.xdist_group("docker")) if n == "docker" else n
                        for n in RUNTIMES])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    name = request.param
    if name == "process":
        artifact = Artifact.environment(sys.executable)
    else:
        from tests.docker_support import base_reference

        artifact = Artifact.image(base_reference())  # Debian with Python, nothing else
    found = Case(get_runtime(name), artifact, tmp_path, [])
    yield found
    for handle in found.started:
        found.runtime.stop(handle, timeout=5)


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_start_ready_endpoint_logs_stop(case: Case) -> None:
    runtime = case.runtime
    handle = case.start(case.spec("svc-0", "0.3"))
    assert handle.runtime == runtime.name and handle.labels == {"io.duckserve.test": "svc-0"}
    assert runtime.status(handle) in ("PENDING", "READY")
    ready = runtime.wait_ready(handle, timeout=60)
    assert ready.endpoint and ready.endpoint.startswith("http://")
    assert httpx.get(ready.endpoint + "/ready").status_code == 200
    assert httpx.get(ready.endpoint + "/env/GREETING").text == "hello"  # the spec's environment is passed
    assert runtime.status(ready) == "READY" and runtime.state(ready).text == "Running"
    assert runtime.endpoint(handle) == ready.endpoint  # a stored handle finds its endpoint
    wait_for(lambda: "listening on port" in runtime.logs(ready))
    assert "as svc-0" in runtime.logs(ready)  # $DUCKSERVE_INSTANCE names the instance
    assert runtime.logs(ready, lines=1).count("\n") <= 1

    runtime.stop(ready)
    assert runtime.status(ready) == "STOPPED"
    with pytest.raises(httpx.HTTPError):
        httpx.get(ready.endpoint + "/ready", timeout=2)
    runtime.stop(ready)  # idempotent
    assert "listening on port" in runtime.logs(ready)  # the log outlives the instance


def test_handle_is_data_another_process_manages_the_instance(case: Case) -> None:
    """The creator exits; the instance runs on, and a process that has only the handle's JSON
    reads its state and logs and stops it."""
    spec = case.spec("svc-1", "0")
    launcher = textwrap.dedent(f"""
        import pickle, sys
        from duckserve.engine.runtimes import get_runtime
        spec = pickle.loads(bytes.fromhex({__import__('pickle').dumps(spec).hex()!r}))
        print(get_runtime({case.runtime.name!r}).start(spec).to_json())
    """)
    created = subprocess.run([sys.executable, "-c", launcher], capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    handle = InstanceHandle.from_json(created.stdout.strip().splitlines()[-1])
    case.started.append(handle)
    manager = textwrap.dedent(f"""
        from duckserve.engine.runtimes import InstanceHandle, runtime_for
        handle = InstanceHandle.from_json({handle.to_json()!r})
        runtime = runtime_for(handle)
        ready = runtime.wait_ready(handle, timeout=60)
        print(runtime.status(ready), "listening" in runtime.logs(ready))
        runtime.stop(ready)
        print(runtime.status(ready))
    """)
    managed = subprocess.run([sys.executable, "-c", manager], capture_output=True, text=True, timeout=120)
    assert managed.returncode == 0, managed.stderr
    assert managed.stdout.split() == ["READY", "True", "STOPPED"]
    assert case.runtime.status(handle) == "STOPPED"


def test_an_instance_that_exits_fails_fast_with_its_log(case: Case) -> None:
    runtime = case.runtime
    handle = case.start(case.spec("svc-2", "9", "0.5:3"))
    started = time.monotonic()
    with pytest.raises(OperationalError) as info:
        runtime.wait_ready(handle, timeout=60)
    assert time.monotonic() - started < 30
    message = str(info.value)
    assert "svc-2" in message and "exited with code 3" in message and "listening on port" in message
    state = runtime.state(handle)
    assert state.status == "FAILED" and state.exit_code == 3 and "3" in state.text
    runtime.stop(handle)
    assert runtime.status(handle) == "STOPPED"


def test_a_killed_instance_is_failed_and_a_clean_exit_is_stopped(case: Case) -> None:
    runtime = case.runtime
    killed = runtime.wait_ready(case.start(case.spec("svc-3", "0")), timeout=60)
    os.kill(runtime.describe(killed)["pid"], signal.SIGKILL)
    wait_for(lambda: runtime.status(killed) == "FAILED")
    state = runtime.state(killed)
    # as a shell and Docker report it: the process runtime's waiter writes it for every process of the home
    assert state.exit_code == 137
    clean = runtime.wait_ready(case.start(case.spec("svc-4", "0", "1:0")), timeout=60)
    wait_for(lambda: runtime.status(clean) == "STOPPED")


def test_apply_makes_the_replicas_match(case: Case) -> None:
    runtime = case.runtime
    made: list[int] = []

    def spec_for(i: int) -> InstanceSpec:
        made.append(i)
        return case.spec(f"rep-{i}-{len(made)}", "0")

    group = runtime.apply(2, spec_for, {})
    case.started.extend(group.values())
    assert sorted(group) == [0, 1] and made == [0, 1]
    group = {i: runtime.wait_ready(h, timeout=60) for i, h in group.items()}
    assert runtime.apply(2, spec_for, group) == group and made == [0, 1]  # nothing to do
    os.kill(runtime.describe(group[1])["pid"], signal.SIGKILL)
    wait_for(lambda: runtime.status(group[1]) == "FAILED")
    smaller = runtime.apply(1, spec_for, group)
    assert list(smaller) == [0] and smaller[0] == group[0] and made == [0, 1]
    assert runtime.status(group[1]) == "STOPPED"
    bigger = runtime.apply(2, spec_for, smaller)
    case.started.extend(bigger.values())
    assert made == [0, 1, 1] and runtime.wait_ready(bigger[1], timeout=60).endpoint


def test_a_directory_shared_with_the_host(case: Case) -> None:
    runtime = case.runtime
    handle = runtime.wait_ready(case.start(case.spec("svc-5", "0", exchange=True)), timeout=60)
    directory = httpx.get(f"{handle.endpoint}/env/DUCKSERVE_EXCHANGE_DIR").text
    assert directory and Path(directory, "hello.txt").read_text() == "from the instance"
    Path(directory, "from-host.txt").write_text("hi")  # and the host may write there
    runtime.stop(handle)
    assert not Path(directory).exists()  # released with the instance
