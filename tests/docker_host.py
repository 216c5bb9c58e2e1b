"""``make test``'s helper for the container tests: ``up`` installs and starts what they need when it
is missing, ``down`` stops what ``up`` started and leaves the swarm as ``up`` found it (a dockerd
that others' containers run on by then is left running: on a shared machine, stopping it killed them).

    python tests/docker_host.py up|down

As root (here and on CI) ``up`` installs Debian's docker.io, docker-registry and debootstrap with
apt-get when one is missing and starts dockerd when no engine answers. Otherwise it only says what
is missing: the container tests then skip, saying how to enable them (on CI, with CI=true, they fail).
When the engine is in no swarm, ``up`` makes this machine a one-node swarm for the Swarm tests
(``docker swarm init --advertise-addr 127.0.0.1``) and
``down`` leaves it again; a swarm that was there before is left alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(".docker-started")
SWARM_STATE = Path(".swarm-started")
PACKAGES = {"docker.io": "dockerd", "docker-registry": "docker-registry", "debootstrap": "debootstrap"}
SOCKET = "/var/run/docker.sock"


def engine_answers() -> bool:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from duckserve.engine.runtimes.docker_engine import Engine
    from duckserve.errors import Error

    try:
        Engine().ping()
        return True
    except Error:
        return False


def swarm_state() -> str:
    done = subprocess.run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def swarm_up() -> int:
    """A one-node swarm on loopback when the engine is in none (the Swarm tests need a manager)."""
    if not shutil.which("docker") or swarm_state() != "inactive":
        return 0
    # the manager listens on Docker's default (port 2377 of every address) so that the test's second
    # node, behind a veth on 127.0.100.1, can join; it advertises loopback
    done = subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"docker_host: docker swarm init failed, the Swarm tests will skip: {done.stderr.strip()}", flush=True)
        return 0
    SWARM_STATE.write_text("initialized\n")
    print("docker_host: this engine is now a one-node swarm (docker swarm init --advertise-addr 127.0.0.1)", flush=True)
    return 0


def swarm_down() -> None:
    if not SWARM_STATE.exists():
        return
    SWARM_STATE.unlink()
    subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True)
    print("docker_host: left the swarm that up initialized", flush=True)


def containers_running() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from duckserve.engine.runtimes.docker_engine import Engine
    from duckserve.errors import Error

    try:
        return sum(1 for c in Engine().containers({}) if c.get("State") == "running")
    except Error:
        return 0


def lists_are_fresh(hours: float = 24) -> bool:
    """apt's package lists were renewed within ``hours`` (their directory changes when they are; a
    list's own date is the mirror's)."""
    lists = Path("/var/lib/apt/lists")
    try:
        return any(lists.glob("*Packages*")) and time.time() - lists.stat().st_mtime < hours * 3600
    except OSError:
        return False


def up() -> int:
    code = engine_up()
    return code or swarm_up()


def engine_up() -> int:
    missing = [package for package, program in PACKAGES.items() if not shutil.which(program)]
    root = os.geteuid() == 0
    if missing and root and shutil.which("apt-get"):
        print(f"docker_host: installing {' '.join(missing)} (apt-get)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        # another apt-get (a parallel setup, unattended upgrades) may hold dpkg's lock: wait for it
        wait = ["-o", "DPkg::Lock::Timeout=600"]
        install = ["apt-get", *wait, "install", "-y", "-qq", "--no-install-recommends", *missing]
        # the package lists are read again only when they are old or the install fails without it
        if not lists_are_fresh() or subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", *wait, "update", "-qq"], check=False, env=env)
            subprocess.run(install, check=True, env=env, stdout=subprocess.DEVNULL)
    elif missing:
        print(f"docker_host: {', '.join(missing)} missing and not root: the container tests will skip", flush=True)
    if engine_answers():
        return 0
    if not root or not shutil.which("dockerd"):
        print("docker_host: no Docker engine answers: the container tests will skip (start dockerd to run them)")
        return 0
    log = open("/tmp/duckserve-test-dockerd.log", "ab")
    process = subprocess.Popen(["dockerd", "--host", f"unix://{SOCKET}"], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    STATE.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + 60
    while not engine_answers():
        if process.poll() is not None or time.monotonic() > deadline:
            print("docker_host: dockerd did not start: see /tmp/duckserve-test-dockerd.log", file=sys.stderr)
            return 1
        time.sleep(0.2)
    print(f"docker_host: started dockerd (pid {process.pid})", flush=True)
    return 0


def down() -> int:
    swarm_down()
    try:
        pid = int(STATE.read_text())
    except (OSError, ValueError):
        return 0
    STATE.unlink()
    others = containers_running()
    if others:  # someone else's work runs on the engine the tests started (a shared machine): leave it
        print(f"docker_host: dockerd (pid {pid}) left running: {others} container(s) run on it", flush=True)
        return 0
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.2)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)
    print(f"docker_host: stopped dockerd (pid {pid})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(up() if sys.argv[1:] == ["up"] else down() if sys.argv[1:] == ["down"] else 2)
