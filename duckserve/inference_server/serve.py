"""Run the inference server: bind the socket, publish the port, serve with N worker processes.

The parent binds the listening socket itself (so port 0 works and the actual port is known before
any worker starts), writes the port file, then serves the socket with `httpserver`: in this
process for one worker; for several, the parent imports the server and the model's frameworks
once and forks the workers (`ForkSupervisor`; one worker where there is no fork). Each worker
process loads its own copy of the model; the supervisor restarts workers that die.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from duckserve.inference_server.app import READY_DIR, ServerSettings
from duckserve.inference_server.http_messages import Limits
from duckserve.inference_server.manifest import MODEL_DIR, Manifest
from duckserve.inference_server.metrics import count_restart

logger = logging.getLogger("duckserve.inference_server")

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"default": {"format": LOG_FORMAT}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    },
    "loggers": {
        "duckserve": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}
STARTUP_FAILURE = 3
GRACEFUL_SHUTDOWN_SECONDS = 5


def bind_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def write_port_file(path: Path, port: int) -> None:
    """Write the port under a temporary name, then rename, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(f"{port}\n")
    os.replace(temporary, path)


#: the thread-pool sizes of the numeric libraries models use (OpenMP, OpenBLAS, MKL, BLIS, Accelerate, numexpr)
THREAD_LIMIT_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                          "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def worker_thread_limits(workers: int) -> dict[str, str]:
    """Each worker's share of the host's cores for its numeric libraries, unless the environment
    already sets one. Without it every worker starts a pool as large as the host and the pools
    spin against each other (on 2 cores, 5 workers made a 5 ms batch take 6 to 35 ms)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    share = str(max(1, cores // max(1, workers)))
    return {name: share for name in THREAD_LIMIT_VARIABLES if not os.environ.get(name)}


def make_exchange_dir(fallback: Path) -> Path:
    """A private directory (mode 0700) for batches passed as files: in /dev/shm where the machine
    has it (memory, never disk), else beside the server's other state."""
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else fallback
    return Path(tempfile.mkdtemp(prefix="duckserve-exchange-", dir=parent))


def idle_too_long(settings: ServerSettings) -> bool | None:
    """True once no worker has had an inference request for ``idle_timeout`` seconds (logged);
    None when the activity file is gone (the server is stopping)."""
    assert settings.idle_timeout is not None and settings.activity_file is not None
    try:
        idle = time.time() - settings.activity_file.stat().st_mtime
    except FileNotFoundError:
        return None
    ready = settings.state_dir is not None and any((settings.state_dir / READY_DIR).glob("*"))
    if not ready or idle < settings.idle_timeout:
        return False  # still loading the model is not idleness
    logger.info("no inference request for %.0f s (idle timeout %g s): shutting down", idle, settings.idle_timeout)
    return True


def _exit_when_idle(settings: ServerSettings) -> None:
    """Send this process SIGTERM (the usual clean shutdown) once it is idle too long."""
    assert settings.idle_timeout is not None
    while True:
        time.sleep(min(settings.idle_timeout / 4, 1.0))
        idle = idle_too_long(settings)
        if idle is None:
            return
        if idle:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def pickled_modules(path: Path, max_bytes: int = 64 * 2**20) -> list[str]:
    """The modules a pickle file imports when loaded (its GLOBAL and STACK_GLOBAL references), read
    without loading it; nothing for a file larger than ``max_bytes`` or one that does not parse."""
    import pickletools

    try:
        if path.stat().st_size > max_bytes:
            return []
        modules: list[str] = []
        strings: list[str] = []
        with open(path, "rb") as handle:
            for opcode, argument, _ in pickletools.genops(handle):
                if opcode.name == "GLOBAL" and isinstance(argument, str):
                    module = argument.split(" ", 1)[0]
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    module = strings[-2]
                else:
                    if isinstance(argument, str) and "UNICODE" in opcode.name:
                        strings.append(argument)
                    continue
                if module != "__main__" and module not in modules:
                    modules.append(module)
        return modules
    except (OSError, ValueError):
        return []


def preload(manifest: Manifest, package: Path) -> None:
    """Import, once in the parent, what every worker imports: the server, pandas, pyarrow and the
    model's frameworks. Forked workers inherit them, so N workers start in the time of one import
    instead of N imports competing for the cores (five workers took 4 s on two cores, each
    importing scikit-learn). Nothing runs a model or starts a thread pool here; a module that fails
    to import is left to the worker, whose model load reports it."""
    import importlib

    from duckserve.inference_server.handlers import get_handler

    modules = ["duckserve.inference_server.app", "duckserve.inference_server.handlers", "pandas", "pyarrow"]
    try:
        modules += get_handler(manifest.handler).runtime_modules(manifest)
    except KeyError:
        pass
    for pickle_file in sorted((package / MODEL_DIR).rglob("*.pkl")):
        modules += [m for m in pickled_modules(pickle_file) if m not in modules]
    started = time.monotonic()
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - the worker's load names the problem
            logger.warning("preloading %s failed (%s: %s); workers will import it themselves",
                           module, type(exc).__name__, exc)
    logger.info("preloaded %s in %.2f s", ", ".join(modules), time.monotonic() - started)


class ForkSupervisor:
    """Worker processes forked from this one after `preload` (as gunicorn's --preload does).

    Each child serves the shared listening socket with its own event loop and loads its own
    model copy. A worker that dies is forked again; one that fails its startup (lifespan) stops the
    server with STARTUP_FAILURE. SIGTERM and SIGINT stop the workers gracefully (SIGKILL after the
    grace period) and end the server.
    """

    POLL_SECONDS = 0.1

    def __init__(self, sock: socket.socket, workers: int, settings: ServerSettings, limits: Limits) -> None:
        self.limits = limits
        self.sock = sock
        self.workers = workers
        self.settings = settings
        self.children: dict[int, int] = {}  # pid -> worker slot
        self.stopping = False

    def _fork(self, slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
                    signal.signal(signum, signal.SIG_DFL)
                code = serve_worker(self.settings, self.sock, self.limits)
            except BaseException:  # noqa: BLE001 - a worker must never return into the supervisor
                logger.exception("worker %d failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = slot
        logger.info("started worker process %d", pid)

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._stop)
        for slot in range(self.workers):
            self._fork(slot)
        code = 0
        idle_every = min(self.settings.idle_timeout / 4, 1.0) if self.settings.idle_timeout is not None else None
        idle_checked = time.monotonic()
        while not self.stopping:
            time.sleep(self.POLL_SECONDS)
            if idle_every is not None and time.monotonic() - idle_checked >= idle_every:
                # here, not in a thread: forking a process that has threads risks their locks
                idle_checked = time.monotonic()
                self.stopping = idle_too_long(self.settings) is not False
            for pid, status in self._reap():
                slot = self.children.pop(pid)
                exit_code = _exit_code(status)
                if exit_code == STARTUP_FAILURE:
                    logger.error("worker %d failed to start: stopping", pid)
                    self.stopping, code = True, STARTUP_FAILURE
                elif not self.stopping:
                    logger.warning("worker %d exited with %d: starting another", pid, exit_code)
                    if self.settings.state_dir is not None:
                        count_restart(self.settings.state_dir)
                    self._fork(slot)
        self._terminate_children()
        return code

    def _reap(self) -> list[tuple[int, int]]:
        done = []
        for pid in list(self.children):
            try:
                waited, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                waited, status = pid, 0
            if waited:
                done.append((pid, status))
        return done

    def _terminate_children(self) -> None:
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + GRACEFUL_SHUTDOWN_SECONDS + 5
        while self.children and time.monotonic() < deadline:
            for pid, _ in self._reap():
                self.children.pop(pid, None)
            time.sleep(self.POLL_SECONDS)
        for pid in self.children:
            logger.warning("worker %d did not stop within the grace period: killing it", pid)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.children.clear()


def _exit_code(status: int) -> int:
    """A wait status as an exit code, negative for a signal (os.waitstatus_to_exitcode, before 3.9)."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def serve_worker(settings: ServerSettings, sock: socket.socket, limits: Limits) -> int:
    """Serve one worker's app on the shared socket until SIGTERM; STARTUP_FAILURE when it could not start."""
    from duckserve.inference_server import httpserver
    from duckserve.inference_server.app import create_app

    code = httpserver.run(create_app(settings), sock, limits=limits, grace=GRACEFUL_SHUTDOWN_SECONDS)
    return STARTUP_FAILURE if code else 0


def serve(
    settings: ServerSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    port_file: Path | None = None,
    log_level: str = "info",
    limits: Limits | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT; return the process exit code."""
    import logging.config

    config = {**LOG_CONFIG, "loggers": {"duckserve": {"handlers": ["stderr"], "level": log_level.upper(),
                                                      "propagate": False}}}
    logging.config.dictConfig(config)
    from duckserve.inference_server.httpserver import lean_log_records

    lean_log_records()
    limits = limits or Limits(max_body_bytes=settings.max_body_bytes)
    manifest = Manifest.read(settings.package)  # fail here, once, on a missing or broken package
    instance = f" instance {settings.instance_id}" if settings.instance_id else ""
    sock = bind_socket(host, port)
    actual_port = sock.getsockname()[1]
    state_dir = Path(tempfile.mkdtemp(prefix="duckserve-server-"))
    settings.state_dir = state_dir
    given_exchange = settings.exchange_dir  # a runtime's shared directory: it stays, its files are ours
    exchange_dir = settings.exchange_dir = given_exchange or make_exchange_dir(state_dir)
    assert settings.activity_file is not None
    settings.activity_file.touch()
    os.environ.update(settings.to_env())
    os.environ.update(worker_thread_limits(settings.workers))
    if port_file is not None:
        write_port_file(port_file, actual_port)
    logger.info(
        "serving model %s version %s%s on http://%s:%d with %d worker(s), max queue %d, request timeout %g s",
        manifest.name,
        manifest.version,
        instance,
        host,
        actual_port,
        settings.workers,
        settings.max_queue,
        settings.request_timeout,
    )
    gpu_note = os.environ.get("DUCKSERVE_GPU_NOTE")
    if gpu_note:
        logger.warning("GPU: %s", gpu_note)
    if os.environ.get("DUCKSERVE_DEVICE") == "cuda":
        logger.info("GPU: serving on CUDA devices %s", os.environ.get("CUDA_VISIBLE_DEVICES", "(all)"))
    forking = settings.workers > 1 and hasattr(os, "fork")
    if settings.workers > 1 and not forking:
        logger.warning("this platform cannot fork: serving with one worker instead of %d", settings.workers)
        settings.workers = 1
        os.environ.update(settings.to_env())
    if settings.idle_timeout is not None and not forking:
        threading.Thread(target=_exit_when_idle, args=(settings,), name="idle-watch", daemon=True).start()
    try:
        if forking:
            preload(manifest, Path(settings.package))
            return ForkSupervisor(sock, settings.workers, settings, limits).run()
        return serve_worker(settings, sock, limits)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sock.close()
        shutil.rmtree(state_dir, ignore_errors=True)
        if given_exchange is None:
            shutil.rmtree(exchange_dir, ignore_errors=True)
        if port_file is not None:
            Path(port_file).unlink(missing_ok=True)
        logger.info("stopped")
