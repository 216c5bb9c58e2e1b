"""The inference server's Starlette app, built from plain parts: routes, a lifespan that loads the
model package once per worker process, and exception handlers that answer errors as JSON.

Routes::

    POST /<method>          the service-function protocol (JSON or Arrow IPC; `protocol`)
    POST /invocations       MLflow's scoring protocol (`scoring`); ``?method=`` picks another method
    GET|POST /v2/...        the Open Inference Protocol (`open_inference`)
    GET  /ready             503 until the model is loaded in every worker, then 200 with the model's name
    GET  /healthz           200 while the process lives
    GET  /metadata          the manifest
    GET  /metrics           Prometheus text metrics of every worker (`metrics`)

Every request passes through `observe`: one log line with its route, rows, status and time, and
the counters of `metrics`. Each protocol module decodes its body into the method's input frame and encodes the
output frame; `infer` runs the method between the two on the worker (`worker`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from duckserve.inference_server import open_inference as v2
from duckserve.inference_server import scoring
from duckserve.inference_server.decoding import Inputs
from duckserve.inference_server.errors import ModelError, ProtocolError, ServerError, UnknownMethod
from duckserve.inference_server.manifest import MethodSpec
from duckserve.inference_server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from duckserve.inference_server.metrics import FLUSH_SECONDS, UNKNOWN_METHOD, ServerMetrics
from duckserve.inference_server.protocol import (
    ARROW_CONTENT_TYPE,
    BODY_FILE_HEADER,
    EXCHANGE_HEADER,
    JSON_CONTENT_TYPE,
    RESPONSE_FILE_SUFFIX,
    arrow_response_table,
    decode_arrow_request,
    decode_json_inputs,
    encode_arrow_response,
    encode_json_response,
    exchange_file,
    is_arrow,
    read_ipc_file,
    write_ipc_file,
)
from duckserve.inference_server.worker import (
    DEFAULT_MAX_QUEUE,
    DEFAULT_REQUEST_TIMEOUT,
    READY_DIR,
    ModelWorker,
    ServerSettings,
    sweep_exchange,
    sweep_exchange_dir,
)

if TYPE_CHECKING:
    from duckserve.inference_server.handlers.base import LoadedModel
    from duckserve.inference_server.httpserver import Receive, Scope, Send

__all__ = ["DEFAULT_MAX_QUEUE", "DEFAULT_REQUEST_TIMEOUT", "READY_DIR", "ServerSettings", "create_app",
           "sweep_exchange_dir"]

logger = logging.getLogger("duckserve.inference_server")

SERVICE_ENV = "DUCKSERVE_SERVICE"


def _worker(request: Request) -> ModelWorker:
    worker: ModelWorker = request.app.state.worker
    return worker


async def infer(worker: ModelWorker, method: MethodSpec, inputs: Inputs, encode: Callable[[Any], bytes],
                started: float, params: Any = None, native: bool = False) -> bytes:
    """Run ``method`` on ``inputs`` (with a request's inference ``params``, if any) and encode its
    outputs with ``encode``, on the model thread (or inline for a small request when the model is
    idle). With ``native``, a model that has its own answer (`LoadedModel.answers_natively`) gives
    that. An exception of the model's becomes `ModelError` with it as its cause."""
    rows = len(inputs)

    def job(model: LoadedModel) -> bytes:
        try:
            if native and model.answers_natively:
                out: Any = model.call_native(method.name, inputs, params)
            else:
                out = model.call_inputs(method.name, inputs, params)
        except ServerError:
            raise
        except Exception as exc:
            logger.exception("method %s raised", method.name)
            raise ModelError(f"method {method.name} raised {type(exc).__name__}: {exc}") from exc
        return encode(out)

    if rows == 0:
        from duckserve.inference_server.handlers.base import empty_outputs

        return encode(empty_outputs(method))
    return await worker.run(job, deadline=started + worker.settings.request_timeout, rows=rows)


# -------------------------------------------------------------------------------------------------
# the service-function protocol


async def call_method(request: Request) -> Response:
    started = time.monotonic()
    worker = _worker(request)
    method = worker.method(request.path_params["method"])
    request.state.method = method.name
    body = await request.body()
    arrow = is_arrow(request.headers.get("content-type"))
    body_file = _exchange_request(request, worker, arrow, body)
    if body_file is not None:
        ids, frame = decode_arrow_request(read_ipc_file(body_file, "request body"), method)
        inputs = Inputs(method, frame)
    elif arrow:
        ids, frame = decode_arrow_request(body, method)
        inputs = Inputs(method, frame)
    else:
        ids, inputs = decode_json_inputs(body, method)
    request.state.rows = len(ids)
    encoder = encode_arrow_response if arrow else encode_json_response

    def encode(out: Any) -> bytes:
        return encoder(ids, out, method)

    headers = {}
    if body_file is not None:
        answer_file = body_file.with_name(body_file.name + RESPONSE_FILE_SUFFIX)
        abandoned, writing = [False], threading.Lock()

        def encode(out: Any) -> bytes:
            with writing:  # no answer file for a request already answered with an error
                if not abandoned[0]:
                    write_ipc_file(arrow_response_table(ids, out, method), answer_file)
            return b""

        headers[BODY_FILE_HEADER] = answer_file.name
    try:
        content = await infer(worker, method, inputs, encode, started)
    except BaseException:
        if body_file is not None:
            with writing:
                abandoned[0] = True
                answer_file.unlink(missing_ok=True)
        raise
    if arrow and worker.settings.exchange_dir is not None:
        headers[EXCHANGE_HEADER] = str(worker.settings.exchange_dir)
    return Response(content, media_type=ARROW_CONTENT_TYPE if arrow else JSON_CONTENT_TYPE, headers=headers)


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


# -------------------------------------------------------------------------------------------------
# MLflow's scoring protocol


async def invocations(request: Request) -> Response:
    started = time.monotonic()
    worker = _worker(request)
    try:
        wanted = request.query_params.get("method")
        method = worker.method(wanted) if wanted else v2.default_method(worker.manifest)
        request.state.method = method.name
        body = await request.body()
        inputs, params = scoring.decode_invocation(body, request.headers.get("content-type"), method)
        request.state.rows = len(inputs)
        content = await infer(worker, method, inputs, lambda out: scoring.encode_predictions(out, method), started,
                              params, native=True)
    except ServerError as exc:
        status, answer = scoring.error_answer(exc)
        return Response(answer, status_code=status, media_type=JSON_CONTENT_TYPE, headers=exc.headers or None)
    return Response(content, media_type=JSON_CONTENT_TYPE)


async def ping(request: Request) -> Response:
    """MLflow's /ping and /health: 200 once the model is loaded here."""
    worker = _worker(request)
    return Response("\n", status_code=200 if worker.loaded else 503, media_type=JSON_CONTENT_TYPE)


# -------------------------------------------------------------------------------------------------
# the Open Inference Protocol


def _served_names(worker: ModelWorker) -> set[str]:
    names = {worker.manifest.name.lower()}
    service = os.environ.get(SERVICE_ENV)
    if service:
        names |= {service.lower(), service.split(".")[-1].lower()}
    return names


def _v2_model(request: Request) -> tuple[ModelWorker, str]:
    worker = _worker(request)
    name = request.path_params["model"]
    if name.lower() not in _served_names(worker):
        raise UnknownMethod(f"model {name!r} is not served here; this server serves "
                            f"{', '.join(sorted(_served_names(worker)))}")
    version = request.path_params.get("version")
    if version is not None and version.lower() != worker.manifest.version.lower():
        raise UnknownMethod(f"model {name} has no version {version!r}; it serves version {worker.manifest.version}")
    return worker, name


async def v2_server(request: Request) -> JSONResponse:
    from duckserve import __version__

    return JSONResponse(v2.server_metadata(__version__))


async def v2_live(request: Request) -> JSONResponse:
    return JSONResponse({"live": True})


async def v2_ready(request: Request) -> JSONResponse:
    ready = _worker(request).loaded
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


async def v2_metadata(request: Request) -> JSONResponse:
    worker, name = _v2_model(request)
    method = v2.choose_method(worker.manifest, request.query_params.get("method"))
    return JSONResponse(v2.model_metadata(worker.manifest, method, name))


async def v2_model_ready(request: Request) -> JSONResponse:
    worker, name = _v2_model(request)
    ready = worker.loaded
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


async def v2_infer(request: Request) -> Response:
    started = time.monotonic()
    worker, name = _v2_model(request)
    body = await request.body()
    parsed = v2.decode_infer(body, request.headers.get(v2.HEADER_LENGTH), worker.manifest)
    request.state.method = parsed.method.name
    request.state.rows = len(parsed.inputs)
    answers: list[int | None] = []

    def encode(out: Any) -> bytes:
        content, header_length = v2.encode_infer(out, parsed, name, worker.manifest.version)
        answers.append(header_length)
        return content

    content = await infer(worker, parsed.method, parsed.inputs, encode, started)
    if answers and answers[0] is not None:
        return Response(content, media_type=v2.BINARY_CONTENT_TYPE,
                        headers={"Inference-Header-Content-Length": str(answers[0])})
    return Response(content, media_type=JSON_CONTENT_TYPE)


# -------------------------------------------------------------------------------------------------
# health and metadata


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


def _sync_metrics(worker: ModelWorker, metrics: ServerMetrics) -> None:
    if worker.load_seconds is not None and metrics.model_load_seconds != worker.load_seconds:
        metrics.loaded(worker.load_seconds)


async def metrics_endpoint(request: Request) -> Response:
    worker = _worker(request)
    metrics: ServerMetrics = request.app.state.metrics
    _sync_metrics(worker, metrics)
    text = metrics.exposition(queued=worker.queued(), workers_ready=worker.workers_ready())
    return Response(text, media_type=METRICS_CONTENT_TYPE)


async def flush_metrics(worker: ModelWorker, metrics: ServerMetrics) -> None:
    """Share this worker's metrics with the others (`metrics`), every FLUSH_SECONDS while they change."""
    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        _sync_metrics(worker, metrics)
        try:
            metrics.flush(queued=worker.queued())
        except OSError:
            return  # the server is stopping (its state directory is gone)


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServerError)
    return JSONResponse({"error": str(exc)}, status_code=exc.status_code, headers=exc.headers or None)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("request %s %s failed", request.method, request.url.path)
    return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)


_V2_MODEL = "/v2/models/{model}"
_V2_VERSION = "/v2/models/{model}/versions/{version}"

routes = [
    Route("/ready", ready, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metadata", metadata, methods=["GET"]),
    Route("/metrics", metrics_endpoint, methods=["GET"]),
    Route("/ping", ping, methods=["GET"]),
    Route("/health", ping, methods=["GET"]),
    Route("/invocations", invocations, methods=["POST"]),
    Route("/v2", v2_server, methods=["GET"]),
    Route("/v2/health/live", v2_live, methods=["GET"]),
    Route("/v2/health/ready", v2_ready, methods=["GET"]),
    *[Route(prefix, v2_metadata, methods=["GET"]) for prefix in (_V2_MODEL, _V2_VERSION)],
    *[Route(prefix + "/ready", v2_model_ready, methods=["GET"]) for prefix in (_V2_MODEL, _V2_VERSION)],
    *[Route(prefix + "/infer", v2_infer, methods=["POST"]) for prefix in (_V2_MODEL, _V2_VERSION)],
    Route("/{method}", call_method, methods=["POST"]),
]


async def dispatch_inference(app: Starlette, scope: Scope, receive: Receive, send: Send) -> None:
    """What Starlette does for ``POST /invocations`` and ``POST /<method>`` (a path of one segment),
    without its middleware layers and its route scan (a regular expression per route until one matches).
    The handlers and exception handlers are the same ones `routes` and `create_app` give Starlette."""
    path = scope["path"]
    scope["app"] = app
    if path == "/invocations":
        endpoint: Callable[[Request], Awaitable[Response]] = invocations
    else:
        scope["path_params"] = {"method": path[1:]}
        endpoint = call_method
    request = Request(scope, receive)
    try:
        response = await endpoint(request)
    except ServerError as exc:
        response = await server_error(request, exc)
    except HTTPException as exc:
        response = await http_error(request, exc)
    except Exception as exc:  # noqa: BLE001 - as Starlette's ServerErrorMiddleware answers it
        response = await unexpected_error(request, exc)
    await response(scope, receive, send)


def is_inference_path(method: str, path: str) -> bool:
    """``POST /invocations`` or ``POST /<method>``: the requests `dispatch_inference` answers (every
    other route of `routes` with one path segment is a GET, so Starlette would send these to the same
    handlers)."""
    return method == "POST" and len(path) > 1 and path.find("/", 1) < 0


_QUIET_PATHS = frozenset(("/ready", "/healthz", "/v2/health/live", "/v2/health/ready", "/ping", "/health", "/metrics"))


def observe(app: Starlette, metrics: ServerMetrics) -> Callable[[Scope, Receive, Send], Any]:
    """Every HTTP request passes here: one log line with its path, rows, status and time; an
    inference request (a POST) is counted in ``metrics``. Inference requests go to
    `dispatch_inference`, the others to Starlette."""

    async def observed(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.monotonic()
        status = [500]
        scope.setdefault("state", {})
        inference = scope["method"] == "POST"
        if inference:
            metrics.started()

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if is_inference_path(scope["method"], scope["path"]):
                await dispatch_inference(app, scope, receive, sending)
            else:
                await app(scope, receive, sending)
        finally:
            path = scope["path"]
            seconds = time.monotonic() - started
            rows = scope["state"].get("rows", 0)
            if inference:
                metrics.finished(scope["state"].get("method", UNKNOWN_METHOD), status[0], rows, seconds)
            if path not in _QUIET_PATHS:
                logger.info("%s %s rows=%d status=%d %.1f ms", scope["method"], path[:120], rows, status[0],
                            seconds * 1000)

    return observed


def create_app(settings: ServerSettings | None = None) -> Callable[[Scope, Receive, Send], Any]:
    """The app for one worker process; without ``settings`` they come from the environment."""
    settings = settings or ServerSettings.from_env()
    metrics = ServerMetrics(settings.state_dir, settings.workers)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        worker = ModelWorker(settings)
        app.state.worker = worker
        app.state.metrics = metrics
        worker.start()
        keeper = asyncio.ensure_future(worker.keep_active()) if settings.idle_timeout is not None else None
        sweeper = asyncio.ensure_future(sweep_exchange(settings)) if settings.exchange_dir is not None else None
        flusher = asyncio.ensure_future(flush_metrics(worker, metrics)) if settings.workers > 1 else None
        try:
            yield
        finally:
            for task in (keeper, sweeper, flusher):
                if task is not None:
                    task.cancel()
            if flusher is not None:
                try:  # what this worker counted stays in the server's sums
                    metrics.flush(queued=0, force=True)
                except OSError:
                    pass
            worker.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ServerError: server_error, HTTPException: http_error, Exception: unexpected_error},
    )
    wrapped = observe(app, metrics)
    wrapped.state = app.state  # type: ignore[attr-defined]
    return wrapped
