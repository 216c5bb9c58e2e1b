"""One worker process of the inference server: its settings, its copy of the model, the model
thread and admission control.

Each worker process holds one copy of the model and runs one inference at a time (models need not
be thread-safe, and the event loop stays free to answer /ready and to refuse work). Up to
``max_queue`` requests wait behind the running one; more are answered 429 with ``Retry-After: 1``
at once. A request that waits and runs longer than ``request_timeout`` seconds is answered 504.
A small request that finds the model idle runs on the event loop itself: handing a one-row call
to the model thread and back costs more than the call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from duckserve.inference_server.errors import ModelNotReady, Overloaded, RequestTimeout, UnknownMethod
from duckserve.inference_server.manifest import Manifest, MethodSpec

if TYPE_CHECKING:
    from duckserve.inference_server.handlers.base import LoadedModel

logger = logging.getLogger("duckserve.inference_server")

T = TypeVar("T")

DEFAULT_MAX_QUEUE = 8
DEFAULT_REQUEST_TIMEOUT = 297.0
DEFAULT_MAX_BODY_BYTES = 512 * 2**20
#: requests of at most this many rows run on the event loop when the model is idle and the last
#: such request took less than INLINE_SECONDS (a slow model never blocks the loop twice in a row)
INLINE_ROWS = 64
INLINE_SECONDS = 0.002

ENV_PACKAGE = "DUCKSERVE_PACKAGE"
ENV_MAX_QUEUE = "DUCKSERVE_MAX_QUEUE"
ENV_REQUEST_TIMEOUT = "DUCKSERVE_REQUEST_TIMEOUT"
ENV_INSTANCE_ID = "DUCKSERVE_INSTANCE_ID"
ENV_WORKERS = "DUCKSERVE_WORKERS"
ENV_STATE_DIR = "DUCKSERVE_STATE_DIR"
ENV_IDLE_TIMEOUT = "DUCKSERVE_IDLE_TIMEOUT"
ENV_EXCHANGE_DIR = "DUCKSERVE_EXCHANGE_DIR"
ENV_MAX_BODY = "DUCKSERVE_MAX_BODY_BYTES"
READY_DIR = "ready"
EXCHANGE_SWEEP_SECONDS = 60.0
ACTIVITY_FILE = "activity"


@dataclass
class ServerSettings:
    """What a worker process needs; travels to spawned workers as environment variables."""

    package: Path
    max_queue: int = DEFAULT_MAX_QUEUE
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    instance_id: str = ""
    workers: int = 1
    #: exit after this many seconds without an inference request (None: never)
    idle_timeout: float | None = None
    #: shared by the processes of one server: ``ready/<pid>`` markers of workers that loaded the model,
    #: and the ``activity`` file whose mtime is the last inference request (None: this process only)
    state_dir: Path | None = None
    #: where same-machine callers may pass Arrow batches as files (`protocol`; None: HTTP bodies only)
    exchange_dir: Path | None = None
    #: the largest request body accepted (413 beyond)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def to_env(self) -> dict[str, str]:
        env = {
            ENV_PACKAGE: str(self.package),
            ENV_MAX_QUEUE: str(self.max_queue),
            ENV_REQUEST_TIMEOUT: str(self.request_timeout),
            ENV_INSTANCE_ID: self.instance_id,
            ENV_WORKERS: str(self.workers),
            ENV_MAX_BODY: str(self.max_body_bytes),
        }
        if self.idle_timeout is not None:
            env[ENV_IDLE_TIMEOUT] = str(self.idle_timeout)
        if self.state_dir is not None:
            env[ENV_STATE_DIR] = str(self.state_dir)
        if self.exchange_dir is not None:
            env[ENV_EXCHANGE_DIR] = str(self.exchange_dir)
        return env

    @classmethod
    def from_env(cls) -> ServerSettings:
        package = os.environ.get(ENV_PACKAGE)
        if not package:
            raise RuntimeError(
                f"{ENV_PACKAGE} is not set: start the server with python -m duckserve.inference_server"
            )
        state_dir = os.environ.get(ENV_STATE_DIR)
        exchange_dir = os.environ.get(ENV_EXCHANGE_DIR)
        idle_timeout = os.environ.get(ENV_IDLE_TIMEOUT)
        return cls(
            package=Path(package),
            max_queue=int(os.environ.get(ENV_MAX_QUEUE, DEFAULT_MAX_QUEUE)),
            request_timeout=float(os.environ.get(ENV_REQUEST_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)),
            instance_id=os.environ.get(ENV_INSTANCE_ID, ""),
            workers=int(os.environ.get(ENV_WORKERS, 1)),
            idle_timeout=float(idle_timeout) if idle_timeout else None,
            state_dir=Path(state_dir) if state_dir else None,
            exchange_dir=Path(exchange_dir) if exchange_dir else None,
            max_body_bytes=int(os.environ.get(ENV_MAX_BODY, DEFAULT_MAX_BODY_BYTES)),
        )

    @property
    def activity_file(self) -> Path | None:
        return self.state_dir / ACTIVITY_FILE if self.state_dir is not None else None

    def touch_activity(self) -> None:
        """Record an inference request (the idle timeout counts from the last one)."""
        if self.idle_timeout is not None and self.activity_file is not None:
            try:
                os.utime(self.activity_file)
            except FileNotFoundError:
                self.activity_file.touch()


class ModelWorker:
    """This process's copy of the model, its model thread, and the admission counter."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.manifest = Manifest.read(settings.package)
        self.model: LoadedModel | None = None
        self.load_error: str | None = None
        #: how long the model load took (None until it finished)
        self.load_seconds: float | None = None
        self._jobs: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run_jobs, name="model", daemon=True)
        self._outstanding = 0  # running + waiting; touched only on the event loop
        #: how long the last small request's model call took (unknown: infinite, so it runs on the thread)
        self._small_seconds = float("inf")
        self._waiting = 0  # small requests waiting for the model thread to finish, to run inline
        self._idle = asyncio.Event()  # set while nothing runs or waits on the model thread
        self._idle.set()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the model thread; its first job loads the model, so requests queue behind the load."""
        self._thread.start()
        self._submit(self._load)

    def close(self) -> None:
        self._jobs.put(None)
        marker = self._marker()
        if marker is not None:
            marker.unlink(missing_ok=True)

    def _load(self) -> None:
        from duckserve.inference_server.handlers import load_package

        started = time.monotonic()
        name = f"{self.manifest.name} version {self.manifest.version}"
        logger.info(
            "loading model %s (handler %s) from %s", name, self.manifest.handler, self.settings.package
        )
        try:
            _, self.model = load_package(self.settings.package)
        except BaseException as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            logger.exception("model %s failed to load", name)
            return
        self.load_seconds = time.monotonic() - started
        logger.info(
            "model %s loaded in %.2f s; methods: %s",
            name,
            self.load_seconds,
            ", ".join(m.name for m in self.manifest.methods),
        )
        # idleness counts from the moment the model can answer, not from process start
        self.settings.touch_activity()
        marker = self._marker()
        if marker is not None:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(os.getpid()))

    def _marker(self) -> Path | None:
        if self.settings.state_dir is None:
            return None
        return self.settings.state_dir / READY_DIR / str(os.getpid())

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def queued(self) -> int:
        """Requests of this process waiting for the model (not the one running on it)."""
        return max(0, self._outstanding - 1) + self._waiting

    def workers_ready(self) -> int:
        """How many live worker processes have loaded the model."""
        if self.settings.state_dir is None or not (self.settings.state_dir / READY_DIR).is_dir():
            return int(self.loaded)
        count = 0
        for marker in (self.settings.state_dir / READY_DIR).iterdir():
            try:
                os.kill(int(marker.name), 0)
            except (ValueError, ProcessLookupError):
                continue
            except PermissionError:
                pass
            count += 1
        return count

    # -- the model thread ----------------------------------------------------------------------

    def _submit(self, job: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((future, job))
        return future

    def _run_jobs(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            future, job = item
            if not future.set_running_or_notify_cancel():
                continue  # its request timed out while it waited
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)

    def _model(self) -> LoadedModel:
        if self.model is None:
            raise ModelNotReady(f"model {self.manifest.name} failed to load: {self.load_error}")
        return self.model

    async def run(self, job: Callable[[LoadedModel], T], deadline: float, rows: int = INLINE_ROWS + 1) -> T:
        """Run ``job`` on the model thread after the jobs ahead of it; 429 when the queue is full,
        504 when ``deadline`` (a `time.monotonic` time) passes first. A job of at most INLINE_ROWS
        rows runs right here when nothing else is running or waiting."""
        if self.load_error is not None:
            raise ModelNotReady(f"model {self.manifest.name} failed to load: {self.load_error}")
        small = rows <= INLINE_ROWS
        if small and self.model is not None and self._small_seconds < INLINE_SECONDS:
            return await self._inline(job, deadline)
        if small:
            job = self._timed(job)
        if self._outstanding > self.settings.max_queue:
            raise Overloaded(
                f"server busy: 1 request running and {self._outstanding - 1} waiting "
                f"(max_queue {self.settings.max_queue}); retry later"
            )
        self._outstanding += 1
        self._idle.clear()
        self.settings.touch_activity()
        loop = asyncio.get_running_loop()
        future = self._submit(lambda: job(self._model()))
        future.add_done_callback(lambda _: _call_soon(loop, self._release))
        try:
            return await asyncio.wait_for(
                asyncio.wrap_future(future), timeout=max(0.0, deadline - time.monotonic())
            )
        except asyncio.TimeoutError:
            state = "still running" if future.running() else "had not started"
            raise RequestTimeout(
                f"request timed out after {self.settings.request_timeout:g} s (the model call {state}); "
                "send smaller batches or raise the service's request timeout"
            ) from None

    async def _inline(self, job: Callable[[LoadedModel], T], deadline: float) -> T:
        """Run a small job of a fast model on the event loop, once the model thread is idle (one
        inference at a time); requests waiting for that count against max_queue."""
        if self._outstanding + self._waiting > self.settings.max_queue:
            raise Overloaded(
                f"server busy: {self._outstanding} request(s) on the model and {self._waiting} waiting "
                f"(max_queue {self.settings.max_queue}); retry later"
            )
        self.settings.touch_activity()
        while self._outstanding:
            self._waiting += 1
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise RequestTimeout(
                    f"request timed out after {self.settings.request_timeout:g} s waiting for the model"
                ) from None
            finally:
                self._waiting -= 1
        assert self.model is not None
        began = time.perf_counter()
        try:
            return job(self.model)
        finally:
            self._record_small(time.perf_counter() - began)

    def _record_small(self, seconds: float) -> None:
        """A moving average of small calls' durations, so one preempted call does not flip the path."""
        previous = self._small_seconds
        self._small_seconds = seconds if previous == float("inf") else 0.7 * previous + 0.3 * seconds

    def _timed(self, job: Callable[[LoadedModel], T]) -> Callable[[LoadedModel], T]:
        def timed(model: LoadedModel) -> T:
            began = time.perf_counter()
            try:
                return job(model)
            finally:
                self._record_small(time.perf_counter() - began)

        return timed

    def _release(self) -> None:
        self._outstanding -= 1
        if not self._outstanding:
            self._idle.set()
        self.settings.touch_activity()

    async def keep_active(self) -> None:
        """While requests run or wait here, keep the shared activity fresh (a long call is not idleness)."""
        assert self.settings.idle_timeout is not None
        while True:
            await asyncio.sleep(min(self.settings.idle_timeout / 4, 5.0))
            if self._outstanding:
                self.settings.touch_activity()

    def method(self, name: str) -> MethodSpec:
        try:
            return self.manifest.method(name)
        except KeyError:
            known = ", ".join(m.name for m in self.manifest.methods)
            raise UnknownMethod(
                f"model {self.manifest.name} has no method {name!r}; its methods: {known} "
                "(in URLs, _ may be written -)"
            ) from None


def sweep_exchange_dir(directory: Path, max_age: float) -> int:
    """Remove the files of an exchange directory older than ``max_age`` seconds: those of callers
    that gave up or died before reading their answer (the directory is memory on most machines)."""
    removed = 0
    cutoff = time.time() - max_age
    for entry in os.scandir(directory):
        try:
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            pass  # its caller, or another worker, removed it first
    return removed


async def sweep_exchange(settings: ServerSettings) -> None:
    """Every minute, remove exchange files that no request can still be using."""
    assert settings.exchange_dir is not None
    while True:
        await asyncio.sleep(EXCHANGE_SWEEP_SECONDS)
        try:
            removed = sweep_exchange_dir(settings.exchange_dir, settings.request_timeout + EXCHANGE_SWEEP_SECONDS)
        except FileNotFoundError:
            return  # the server is stopping
        if removed:
            logger.info("removed %d abandoned exchange file(s)", removed)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:  # the loop closed during shutdown
        pass


