"""A second swarm node on this machine, for placement and node-loss tests: a Docker engine of its own
in a network namespace of its own, joined to this machine's swarm as a worker.

    node = SecondNode.start()      # netns, veth 127.0.100.1 <-> 127.0.100.2, dockerd, swarm join
    node.kill()                    # the node is lost: every process in its namespace killed at once
    node.remove()                  # leaves nothing: the node out of the swarm, mounts, files, netns

A run holds an exclusive lock (/run/dsnode2.lock) while its node lives. What a run killed before
``remove`` left (the namespace, the engine's files, the Down node in the swarm, the registry) is
cleared by the next ``unavailable()``, which finds the namespace with nobody holding the lock.

Addresses are loopback ones on both ends of the veth (127.0.100.1 on this side, 127.0.100.2 inside,
``route_localnet`` on the two veth ends), so nothing here is routed beyond this machine. The engine
runs under ``nsenter --net`` (not ``ip netns exec``, which remounts /sys and hides the cgroups) with
its own data root, exec root (its own containerd), socket and cgroup parent. A registry its engine
can pull from listens on 127.0.100.1 (Docker treats 127.0.0.0/8 as an insecure registry).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

NETNS = "dsnode2"
HOST_END, NODE_END = "ds2h", "ds2n"
HOST_ADDRESS, NODE_ADDRESS = "127.0.100.1", "127.0.100.2"
RUN, DATA = Path("/run/dsnode2"), Path("/var/lib/dsnode2")
SOCKET = RUN / "docker.sock"
LOCK = Path("/run/dsnode2.lock")


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, check=check, timeout=120)


def unavailable() -> str | None:
    """Why a second node cannot be made here, or None."""
    if os.geteuid() != 0:
        return "not root (a network namespace and a second dockerd need root)"
    for program in ("ip", "nsenter", "dockerd", "docker", "docker-registry"):
        if not shutil.which(program):
            return f"{program} is not installed"
    if Path(f"/run/netns/{NETNS}").exists() or RUN.exists():
        held = _lock()
        if held is None:
            return f"network namespace {NETNS} is in use by another run (it holds {LOCK})"
        try:
            clear_stale()
        finally:
            os.close(held)
    return None


def _lock() -> int | None:
    """The second node's lock, taken without waiting (a descriptor), or None while another run holds it."""
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def clear_stale() -> None:
    """What a killed run left: its registry, its engine, the node it joined, the namespace (the caller
    holds the lock, so a node at the second node's address is that run's)."""
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if command[:2] == [b"docker-registry", b"serve"] and len(command) > 2:
            try:
                if f"addr: {HOST_ADDRESS}:" in Path(command[2].decode()).read_text():
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, UnicodeDecodeError):
                pass
    nodes = _run("docker", "node", "ls", "--format", "{{.ID}}", check=False).stdout.split()
    left = [n for n in nodes
            if _run("docker", "node", "inspect", "--format", "{{.Status.Addr}}", n, check=False).stdout.strip() == NODE_ADDRESS]
    teardown(None)
    for node_id in left:
        _run("docker", "node", "rm", "--force", node_id, check=False)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class SecondNode:
    node_id: str
    log: Path
    registry: subprocess.Popen[bytes]
    registry_host: str
    work: Path
    lock: int

    @classmethod
    def start(cls, work: Path) -> SecondNode:
        lock = _lock()
        if lock is None:
            raise RuntimeError(f"another run holds {LOCK}: its second node is in use")
        try:
            _run("ip", "netns", "add", NETNS)
            _run("ip", "link", "add", HOST_END, "type", "veth", "peer", "name", NODE_END)
            _run("ip", "link", "set", NODE_END, "netns", NETNS)
            _run("ip", "addr", "add", f"{HOST_ADDRESS}/30", "dev", HOST_END)
            _run("ip", "link", "set", HOST_END, "up")
            _run("sysctl", "-qw", f"net.ipv4.conf.{HOST_END}.route_localnet=1")
            inside = ("nsenter", f"--net=/run/netns/{NETNS}")
            _run(*inside, "ip", "link", "set", "lo", "up")
            _run(*inside, "ip", "addr", "add", f"{NODE_ADDRESS}/30", "dev", NODE_END)
            _run(*inside, "ip", "link", "set", NODE_END, "up")
            _run(*inside, "sysctl", "-qw", f"net.ipv4.conf.{NODE_END}.route_localnet=1")
            RUN.mkdir(parents=True, exist_ok=True)
            DATA.mkdir(parents=True, exist_ok=True)
            log = work / "dockerd-node2.log"
            with open(log, "ab") as out:
                subprocess.Popen([*inside, "dockerd", "--host", f"unix://{SOCKET}", "--data-root", str(DATA),
                                  "--exec-root", str(RUN / "exec"), "--pidfile", str(RUN / "docker.pid"),
                                  "--cgroup-parent", "/dsnode2"], stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 60
            while _run("docker", "-H", f"unix://{SOCKET}", "info", check=False).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the second dockerd did not start: {log.read_text()[-2000:]}")
                time.sleep(0.3)
            token = _run("docker", "swarm", "join-token", "-q", "worker").stdout.strip()
            _run("docker", "-H", f"unix://{SOCKET}", "swarm", "join", "--token", token, "--advertise-addr",
                 NODE_ADDRESS, "--listen-addr", f"{NODE_ADDRESS}:2377", f"{HOST_ADDRESS}:2377")
            node_id = _run("docker", "-H", f"unix://{SOCKET}", "info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
            registry_root = work / "registry"
            (registry_root / "data").mkdir(parents=True, exist_ok=True)
            port = free_port(HOST_ADDRESS)
            (registry_root / "config.yml").write_text(
                f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {registry_root / 'data'}\n  delete:\n"
                f"    enabled: true\nhttp:\n  addr: {HOST_ADDRESS}:{port}\n")
            with open(registry_root / "registry.log", "ab") as out:
                registry = subprocess.Popen(["docker-registry", "serve", str(registry_root / "config.yml")],
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection((HOST_ADDRESS, port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the registry on 127.0.100.1 did not start"
                    time.sleep(0.1)
            return cls(node_id=node_id, log=log, registry=registry, registry_host=f"{HOST_ADDRESS}:{port}", work=work,
                       lock=lock)
        except BaseException:
            teardown(None)
            os.close(lock)
            raise

    def kill(self) -> None:
        """The node is lost: every process in its network namespace (engine, containerd, tasks) dies."""
        kill_namespace()

    def remove(self) -> None:
        self.registry.terminate()
        try:
            self.registry.wait(10)
        except subprocess.TimeoutExpired:
            self.registry.kill()
        teardown(self.node_id)
        os.close(self.lock)


def _task_processes() -> list[str]:
    """The node's containers' processes: each has a network namespace of its own (so ``ip netns
    pids`` misses them) but sits under the node's cgroup parent."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroups = (entry / "cgroup").read_text()
        except OSError:
            continue
        if f":/{NETNS}/" in cgroups:
            found.append(entry.name)
    return found


def kill_namespace() -> None:
    """Every process of the node: its engine and containerd (in its network namespace) and its tasks."""
    pids = _run("ip", "netns", "pids", NETNS, check=False).stdout.split() + _task_processes()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def teardown(node_id: str | None) -> None:
    """Remove every trace of the second node (idempotent)."""
    kill_namespace()
    time.sleep(0.5)
    if node_id:
        _run("docker", "node", "rm", "--force", node_id, check=False)
    for line in reversed(Path("/proc/mounts").read_text().splitlines()):
        target = line.split()[1]
        if target.startswith((str(DATA), str(RUN))):
            _run("umount", "-l", target, check=False)
    _run("ip", "link", "del", HOST_END, check=False)
    _run("ip", "netns", "del", NETNS, check=False)
    shutil.rmtree(RUN, ignore_errors=True)
    shutil.rmtree(DATA, ignore_errors=True)
