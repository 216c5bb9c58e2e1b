"""The inference server's Starlette app, built from plain parts: routes, a lifespan that loads the
model package once per worker process, and exception handlers that answer errors as JSON.

Routes::

    POST /<method>   the service-function protocol (JSON or Arrow IPC; `protocol`)
    GET  /ready      503 until the model is loaded in every worker, then 200 with the model's name
    GET  /healthz    200 while the process lives
    GET  /metadata   the manifest

Admission control: each worker process holds one copy of the model and runs one inference at a
time on its model thread (models need not be thread-safe, and the event loop stays free to answer
/ready and to refuse work). Up to ``max_queue`` requests wait behind the running one; more are
answered 429 with ``Retry-After: 1`` at once. A request that waits and runs longer than
``request_timeout`` seconds is answered 504.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from duckserve.inference_server.errors import (
    ModelError,
    ModelNotReady,
    Overloaded,
    ProtocolError,
    RequestTimeout,
    ServerError,
    UnknownMethod,
)
from duckserve.inference_server.manifest import Manifest, MethodSpec
from duckserve.inference_server.protocol import (
    ARROW_CONTENT_TYPE,
    BODY_FILE_HEADER,
    EXCHANGE_HEADER,
    JSON_CONTENT_TYPE,
    RESPONSE_FILE_SUFFIX,
    arrow_response_table,
    decode_arrow_request,
    decode_json_request,
    encode_arrow_response,
    encode_json_response,
    exchange_file,
    is_arrow,
    read_ipc_file,
    write_ipc_file,
)

if TYPE_CHECKING:
    from duckserve.inference_server.handlers.base import LoadedModel

logger = logging.getLogger("duckserve.inference_server")

T = TypeVar("T")

DEFAULT_MAX_QUEUE = 8
DEFAULT_REQUEST_TIMEOUT = 297.0

ENV_PACKAGE = "DUCKSERVE_PACKAGE"
ENV_MAX_QUEUE = "DUCKSERVE_MAX_QUEUE"
ENV_REQUEST_TIMEOUT = "DUCKSERVE_REQUEST_TIMEOUT"
ENV_INSTANCE_ID = "DUCKSERVE_INSTANCE_ID"
ENV_WORKERS = "DUCKSERVE_WORKERS"
ENV_STATE_DIR = "DUCKSERVE_STATE_DIR"
ENV_IDLE_TIMEOUT = "DUCKSERVE_IDLE_TIMEOUT"
ENV_EXCHANGE_DIR = "DUCKSERVE_EXCHANGE_DIR"
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

    def to_env(self) -> dict[str, str]:
        env = {
            ENV_PACKAGE: str(self.package),
            ENV_MAX_QUEUE: str(self.max_queue),
            ENV_REQUEST_TIMEOUT: str(self.request_timeout),
            ENV_INSTANCE_ID: self.instance_id,
            ENV_WORKERS: str(self.workers),
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
        self._jobs: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run_jobs, name="model", daemon=True)
        self._outstanding = 0  # running + waiting; touched only on the event loop

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
        logger.info(
            "model %s loaded in %.2f s; methods: %s",
            name,
            time.monotonic() - started,
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

    async def run(self, job: Callable[[LoadedModel], T], deadline: float) -> T:
        """Run ``job`` on the model thread after the jobs ahead of it; 429 when the queue is full,
        504 when ``deadline`` (a `time.monotonic` time) passes first."""
        if self.load_error is not None:
            raise ModelNotReady(f"model {self.manifest.name} failed to load: {self.load_error}")
        if self._outstanding > self.settings.max_queue:
            raise Overloaded(
                f"server busy: 1 request running and {self._outstanding - 1} waiting "
                f"(max_queue {self.settings.max_queue}); retry later"
            )
        self._outstanding += 1
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

    def _release(self) -> None:
        self._outstanding -= 1
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


async def _sweep_exchange(settings: ServerSettings) -> None:
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


# -------------------------------------------------------------------------------------------------
# endpoints


def _worker(request: Request) -> ModelWorker:
    worker: ModelWorker = request.app.state.worker
    return worker


async def call_method(request: Request) -> Response:
    started = time.monotonic()
    worker = _worker(request)
    name = request.path_params["method"]
    rows = 0
    status = 500
    try:
        method = worker.method(name)
        body = await request.body()
        arrow = is_arrow(request.headers.get("content-type"))
        body_file = _exchange_request(request, worker, arrow, body)
        if body_file is not None:
            ids, frame = decode_arrow_request(read_ipc_file(body_file, "request body"), method)
        elif arrow:
            ids, frame = decode_arrow_request(body, method)
        else:
            ids, frame = decode_json_request(body, method)
        rows = len(ids)
        encode: Callable[[Any, Any, MethodSpec], bytes] = encode_arrow_response if arrow else encode_json_response
        if body_file is not None:
            answer_file = body_file.with_name(body_file.name + RESPONSE_FILE_SUFFIX)
            abandoned, writing = [False], threading.Lock()

            def encode(ids: Any, out: Any, method: MethodSpec) -> bytes:
                with writing:  # no answer file for a request already answered with an error
                    if not abandoned[0]:
                        write_ipc_file(arrow_response_table(ids, out, method), answer_file)
                return b""

        def infer(model: LoadedModel) -> bytes:
            try:
                out = model.call(method.name, frame)
            except ServerError:
                raise
            except Exception as exc:
                logger.exception("method %s raised", method.name)
                raise ModelError(f"method {method.name} raised {type(exc).__name__}: {exc}") from exc
            return encode(ids, out, method)

        if rows == 0:
            from duckserve.inference_server.handlers.base import empty_outputs

            content = encode(ids, empty_outputs(method), method)
        else:
            try:
                content = await worker.run(infer, deadline=started + worker.settings.request_timeout)
            except BaseException:
                if body_file is not None:
                    with writing:
                        abandoned[0] = True
                        answer_file.unlink(missing_ok=True)
                raise
        status = 200
        headers = {}
        if arrow and worker.settings.exchange_dir is not None:
            headers[EXCHANGE_HEADER] = str(worker.settings.exchange_dir)
        if body_file is not None:
            headers[BODY_FILE_HEADER] = answer_file.name
        return Response(content, media_type=ARROW_CONTENT_TYPE if arrow else JSON_CONTENT_TYPE, headers=headers)
    except ServerError as exc:
        status = exc.status_code
        raise
    except Exception as exc:
        logger.exception("request to %s failed", name)
        raise ModelError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        logger.info("%s rows=%d status=%d %.1f ms", name, rows, status, (time.monotonic() - started) * 1000)


def _exchange_request(request: Request, worker: ModelWorker, arrow: bool, body: bytes) -> Path | None:
    """The exchange file a request's body was passed in, or None for a request with its body."""
    name = request.headers.get(BODY_FILE_HEADER)
    if name is None:
        return None
    directory = worker.settings.exchange_dir
    if directory is None:
        raise ProtocolError(f"{BODY_FILE_HEADER} was sent but this server has no exchange directory; send the body")
    if not arrow or body:
        raise ProtocolError(f"{BODY_FILE_HEADER} needs content type {ARROW_CONTENT_TYPE} and an empty body")
    return exchange_file(directory, name)


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


async def ready(request: Request) -> JSONResponse:
    worker = _worker(request)
    manifest = worker.manifest
    body: dict[str, Any] = {
        "ready": False,
        "model": manifest.name,
        "version": manifest.version,
        "methods": [m.name for m in manifest.methods],
        "instance_id": worker.settings.instance_id,
        "workers": worker.settings.workers,
    }
    if worker.load_error is not None:
        body["error"] = f"model failed to load: {worker.load_error}"
        return JSONResponse(body, status_code=503)
    loaded = worker.workers_ready()
    body["workers_ready"] = loaded
    if not worker.loaded or loaded < worker.settings.workers:
        body["loading"] = True
        return JSONResponse(body, status_code=503)
    body["ready"] = True
    return JSONResponse(body)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "pid": os.getpid()})


async def metadata(request: Request) -> JSONResponse:
    return JSONResponse(json.loads(_worker(request).manifest.to_json()))


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServerError)
    return JSONResponse({"error": str(exc)}, status_code=exc.status_code, headers=exc.headers or None)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


routes = [
    Route("/ready", ready, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metadata", metadata, methods=["GET"]),
    Route("/{method}", call_method, methods=["POST"]),
]


def create_app(settings: ServerSettings | None = None) -> Starlette:
    """The app for one worker process; without ``settings`` they come from the environment
    (this is the factory uvicorn's workers call)."""
    settings = settings or ServerSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        worker = ModelWorker(settings)
        app.state.worker = worker
        worker.start()
        keeper = asyncio.ensure_future(worker.keep_active()) if settings.idle_timeout is not None else None
        sweeper = asyncio.ensure_future(_sweep_exchange(settings)) if settings.exchange_dir is not None else None
        try:
            yield
        finally:
            for task in (keeper, sweeper):
                if task is not None:
                    task.cancel()
            worker.close()

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ServerError: server_error, HTTPException: http_error},
    )
