"""The ingress's ASGI application: one route table, from which both dispatch and the OpenAPI
document are derived.

A request is matched to a route, authenticated (`authorization`), and forwarded to one of the
service's instances round robin (`upstream`), which answers in the protocol the route speaks; the
ingress passes the answer back. Requests carrying Snowflake's batch id go through `batches`.
Every request passes through `IngressApp.__call__`, which logs one line (never the token) and is
the place for counters.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import logging
import re
import time
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from duckserve.engine.account import Account, display_key
from duckserve.engine.catalog import CatalogObject
from duckserve.engine.names import DEFAULT_DATABASE, DEFAULT_SCHEMA, ObjectName
from duckserve.errors import Error
from duckserve.fronts.ingress.authorization import Authorizer, Caller, Decision, Refusal, secret_of
from duckserve.fronts.ingress.batches import BATCH_HEADER, Batches, Reply
from duckserve.fronts.ingress.upstream import Upstream, UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from duckserve.engine.services import Services

log = logging.getLogger("duckserve.ingress")

#: instances in these states are not sent requests (any other state is tried; a refused
#: connection moves on to the next instance)
DEAD_STATES = frozenset({"FAILED", "STOPPED", "DONE"})
#: request headers passed on to the instance, and answer headers passed back
FORWARDED = (b"content-type", b"accept", b"inference-header-content-length")
PASSED_BACK = (b"content-type", b"retry-after", b"inference-header-content-length")
SNOWFLAKE_FORMAT = "sf-external-function-format"
SNOWFLAKE_VERSION = "sf-external-function-format-version"

Scope = MutableMapping[str, Any]
Handler = Callable[["Call"], Awaitable[Reply]]


@dataclass(frozen=True)
class Route:
    """One route: what it matches, who may call it, and what the OpenAPI document says of it."""

    methods: tuple[str, ...]
    template: str
    handler: str
    public: bool
    summary: str
    body: str | None = None  # the request body's kind, for the OpenAPI document
    statuses: tuple[int, ...] = (200, 400, 401, 403, 404, 413, 429, 503)
    answers: str = "application/json"  # the media type of a successful answer

    @property
    def pattern(self) -> re.Pattern[str]:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template)
        return re.compile(f"^{regex}$")


ROUTES: tuple[Route, ...] = (
    Route(("GET",), "/healthz", "healthz", True, "Liveness of the ingress itself", statuses=(200,),
          answers="text/plain"),
    Route(("GET",), "/openapi.json", "openapi", True, "This document", statuses=(200,)),
    Route(("GET",), "/v2/health/live", "v2_live", True, "Open Inference Protocol: server liveness", statuses=(200,)),
    Route(("GET",), "/v2/health/ready", "v2_ready", True, "Open Inference Protocol: server readiness",
          statuses=(200, 503)),
    Route(("GET",), "/v2", "forward_v2", False, "Open Inference Protocol: server metadata"),
    Route(("GET",), "/v2/models/{model}", "forward_v2", False, "Open Inference Protocol: model metadata"),
    Route(("GET",), "/v2/models/{model}/ready", "forward_v2", False, "Open Inference Protocol: model readiness"),
    Route(("POST",), "/v2/models/{model}/infer", "forward_v2", False, "Open Inference Protocol: inference",
          body="v2"),
    Route(("GET",), "/v2/models/{model}/versions/{version}", "forward_v2", False,
          "Open Inference Protocol: model version metadata"),
    Route(("GET",), "/v2/models/{model}/versions/{version}/ready", "forward_v2", False,
          "Open Inference Protocol: model version readiness"),
    Route(("POST",), "/v2/models/{model}/versions/{version}/infer", "forward_v2", False,
          "Open Inference Protocol: inference on a version", body="v2"),
    Route(("POST",), "/invocations", "invocations", False, "MLflow scoring protocol", body="mlflow",
          statuses=(200, 400, 401, 403, 404, 413, 415, 429, 503)),
    Route(("POST",), "/serving-endpoints/{endpoint}/invocations", "invocations", False,
          "MLflow scoring protocol, Databricks' path", body="mlflow", statuses=(200, 400, 401, 403, 404, 413, 415, 429, 503)),
    Route(("POST",), "/{method}", "service_function", False,
          "Snowflake's service-function (external function) protocol", body="snowflake",
          statuses=(200, 202, 400, 401, 403, 404, 413, 429, 503)),
    Route(("GET",), "/{method}", "poll", False, "Poll a Snowflake batch answered 202",
          statuses=(200, 202, 400, 401, 403, 404, 405)),
)


@dataclass
class Call:
    """One request as the handlers see it."""

    scope: Scope
    route: Route
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    caller: Caller | None = None
    service: CatalogObject | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.scope["method"])


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"content-type": "application/json", **(headers or {})},
                 json.dumps(payload, separators=(",", ":")).encode())


def error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return json_reply(status, {"error": message, "code": status}, headers)


def instance_urls(service: CatalogObject) -> list[tuple[int, str]]:
    """(instance_id, base URL) of every instance of a service record that has an endpoint
    (wherever its runtime runs it: a local process, a container, a Swarm task). The handle's own
    endpoint where it carries one, else the runtime's lookup (a task placed after the record was
    written)."""
    from duckserve.engine.runtimes import InstanceHandle, runtime_for

    found: list[tuple[int, str]] = []
    for instance in service.props.get("instances") or []:
        if not isinstance(instance, dict) or str(instance.get("status", "")).upper() in DEAD_STATES:
            continue
        raw = instance.get("handle")
        if not isinstance(raw, dict):
            continue
        handle = InstanceHandle.from_dict(raw)
        endpoint = handle.endpoint or runtime_for(handle).endpoint(handle)
        if endpoint:
            found.append((int(instance.get("instance_id", len(found))), endpoint))
    return found


class IngressApp:
    """The endpoint of one service: authentication, authorization and forwarding."""

    def __init__(self, home: Path | str, service: ObjectName, *, alias: ObjectName | None = None,
                 upstream_timeout: float = 600.0, max_body_bytes: int = 100 * 2**20, async_after: float = 20.0,
                 max_in_flight_per_caller: int = 64) -> None:
        self.account = Account(home)
        self.service_name = service.in_schema(DEFAULT_DATABASE, DEFAULT_SCHEMA)
        alias_name = alias.in_schema(DEFAULT_DATABASE, DEFAULT_SCHEMA) if alias else None
        self.authorizer = Authorizer(self.account, self.service_name, alias_name)
        self.upstream_timeout = upstream_timeout
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight_per_caller
        self.batches = Batches(async_after=async_after)
        self.upstream: Upstream | None = None
        self.routes = [(route, route.pattern) for route in ROUTES]
        self._next = itertools.count()
        self._in_flight: dict[Caller, int] = defaultdict(int)
        self._openapi: bytes | None = None
        self._instances: tuple[CatalogObject | None, list[tuple[int, str]]] = (None, [])
        self._waking = asyncio.Lock()
        self._services: Services | None = None

    @property
    def label(self) -> str:
        return self.service_name.qualified

    # -- ASGI -----------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
                       send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        started = time.perf_counter()
        message = await receive()
        holder: list[Call] = []
        try:
            reply = await self._handle(scope, message.get("body", b""), holder)
        except Refusal as exc:
            reply = error_reply(exc.status, exc.message, exc.headers)
        except Error as exc:  # the catalog failed (locked for 30 s, unreadable)
            reply = error_reply(503, f"service {self.label}: {exc}", {"Retry-After": "1"})
        except Exception as exc:  # noqa: BLE001 - answered, logged, never a dropped connection
            log.exception("ingress of service %s failed on %s %s", self.label, scope["method"], scope["path"][:200])
            reply = error_reply(500, f"service {self.label}: internal error in the ingress: {type(exc).__name__}")
        call = holder[0] if holder else None
        caller = call.caller if call is not None else None
        batch = call.headers.get(BATCH_HEADER) if call is not None else None
        log.info("%s %s %d %.1fms user=%s role=%s%s", scope["method"], scope["path"][:200], reply.status,
                 (time.perf_counter() - started) * 1000, caller.user if caller else "-",
                 caller.role if caller else "-", f" batch={batch[:80]}" if batch else "")
        headers = [(k.encode("latin-1"), str(v).encode("latin-1")) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    async def _lifespan(self, receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
                        send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.upstream = Upstream(max_body=2**31)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.batches.cancel_all()
                if self.upstream is not None:
                    self.upstream.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- dispatch -------------------------------------------------------------------------------
    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        allowed: list[str] = []
        for route, pattern in self.routes:
            found = pattern.match(path)
            if found is None:
                continue
            if method in route.methods or (method == "HEAD" and "GET" in route.methods):
                return route, found.groupdict()
            allowed += [m for m in route.methods if m not in allowed]
        if allowed:
            raise Refusal(405, f"{method} is not allowed on {path[:200]}; use {', '.join(allowed)}",
                          {"Allow": ", ".join(allowed)})
        raise Refusal(404, f"no route {path[:200]}; see GET /openapi.json for this endpoint's routes")

    async def _handle(self, scope: Scope, body: bytes, holder: list[Call]) -> Reply:
        route, params = self.match(scope["method"], scope["path"])
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        call = Call(scope, route, params, headers, body)
        holder.append(call)
        handler: Handler = getattr(self, route.handler)
        if not route.public:
            await self._authorize(call)
        if call.caller is None:
            return await handler(call)
        key = call.caller
        if self._in_flight[key] >= self.max_in_flight:
            raise Refusal(429, f"user {key.user} has {self.max_in_flight} requests in flight on service {self.label} "
                               "(the per-caller limit); retry later", {"Retry-After": "1"})
        self._in_flight[key] += 1
        try:
            return await handler(call)
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]

    async def _authorize(self, call: Call) -> None:
        secret = secret_of(call.headers.get("authorization"), self.label)
        authorizer = self.authorizer
        remembered = authorizer.remembered(secret) if authorizer.fresh() else None
        decision = remembered if remembered is not None else await asyncio.to_thread(self._decide, secret)
        call.caller = authorizer.check(decision)
        call.service = decision.service

    def _decide(self, secret: str) -> Decision:
        if not self.authorizer.fresh():
            self.authorizer.refresh()
        return self.authorizer.decide(secret)

    # -- forwarding -----------------------------------------------------------------------------
    def _unavailable(self, service: CatalogObject, problem: str) -> Refusal:
        svc = display_key(service)
        status = str(service.props.get("status") or "UNKNOWN")
        message = f"service {svc} is not available: {problem} (status {status})"
        if status == "SUSPENDED":
            message += f"; run ALTER SERVICE {svc} RESUME"
        else:
            message += f"; see SHOW SERVICE CONTAINERS IN SERVICE {svc} for its instances"
        return Refusal(503, message, {"Retry-After": "1"})

    def _request_body(self, call: Call) -> bytes:
        encoding = call.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return call.body
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise Refusal(415, f"Content-Encoding {encoding[:40]} is not supported; send gzip, deflate or none")
        if encoding == "deflate":
            wbits = zlib.MAX_WBITS if call.body[:1] == b"\x78" else -zlib.MAX_WBITS
        else:
            wbits = 16 + zlib.MAX_WBITS
        inflater = zlib.decompressobj(wbits)
        try:
            data = inflater.decompress(call.body, self.max_body_bytes + 1)
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise Refusal(400, f"the request body is not valid {encoding}: {exc}") from None
        if len(data) > self.max_body_bytes or inflater.unconsumed_tail:
            raise Refusal(413, f"the request body is larger than the limit of {self.max_body_bytes} bytes "
                               "once decompressed")
        return data

    async def forward(self, call: Call, path: str) -> Reply:
        service = call.service
        assert self.upstream is not None and service is not None and call.caller is not None
        if self._instances[0] is not service:  # read once per catalog version, not per request
            self._instances = (service, instance_urls(service))
        instances = self._instances[1]
        if not instances:  # a runtime may have placed an instance since (a Swarm task): look once more
            self._instances = (service, instance_urls(service))
            instances = self._instances[1]
        if not instances:
            instances = await self._wake(service)
        body = self._request_body(call) if call.method == "POST" else b""
        headers = [(name, call.headers[name.decode()].encode("latin-1")) for name in FORWARDED
                   if name.decode() in call.headers]
        headers.append((b"sf-context-current-user", call.caller.user.encode("utf-8", "replace")))
        query = call.scope.get("query_string") or b""
        target = path + ("?" + query.decode("latin-1") if query else "")
        start = next(self._next)
        failures: list[str] = []
        for attempt in range(len(instances)):
            instance_id, base = instances[(start + attempt) % len(instances)]
            try:
                answer = await self.upstream.request(base, call.method, target, headers, body, self.upstream_timeout)
            except UpstreamTimeout:
                raise Refusal(504, f"service {display_key(service)}: instance {instance_id} did not answer within "
                                   f"{self.upstream_timeout:.0f} s") from None
            except UpstreamError as exc:
                failures.append(f"instance {instance_id}: {exc}")
                if exc.sent:
                    raise Refusal(502, f"service {display_key(service)}: instance {instance_id} broke the connection "
                                       "while answering; retry") from None
                continue
            passed = {name.decode(): answer.headers[name].decode("latin-1") for name in PASSED_BACK
                      if name in answer.headers}
            passed.setdefault("content-type", "application/octet-stream")
            return Reply(answer.status, passed, answer.body)
        raise self._unavailable(service, "no instance could be reached (" + "; ".join(failures) + ")")

    async def _wake(self, service: CatalogObject) -> list[tuple[int, str]]:
        """Start an instance of a service scaled to zero (MIN_INSTANCES = 0, not suspended) and hold
        the request until it is ready, as a SQL call does (`Services.ensure_running`, up to
        DUCKSERVE_READY_TIMEOUT); requests arriving meanwhile wait for the same start."""
        if str(service.props.get("status") or "") == "SUSPENDED":
            raise self._unavailable(service, "no instance is ready")
        async with self._waking:
            if self._instances[1]:  # woken while this request waited
                return self._instances[1]
            log.info("service %s has no instance (scaled to zero): starting one for the waiting request(s)",
                     self.label)
            fresh = await asyncio.to_thread(self._ensure_running, service)
            self._instances = (fresh, instance_urls(fresh))
        if not self._instances[1]:
            raise self._unavailable(fresh, "no instance is ready")
        return self._instances[1]

    def _ensure_running(self, service: CatalogObject) -> CatalogObject:
        from duckserve.engine.services import Services

        if self._services is None:
            self._services = Services(self.account)
        return self._services.ensure_running(None, service, wait=True)

    # -- handlers -------------------------------------------------------------------------------
    async def healthz(self, call: Call) -> Reply:
        return Reply(200, {"content-type": "text/plain"}, b"ok")

    async def openapi(self, call: Call) -> Reply:
        from duckserve.fronts.ingress.openapi import document

        if not self.authorizer.fresh():
            await asyncio.to_thread(self.authorizer.refresh)
            self._openapi = None
        if self._openapi is None:
            service = self.authorizer.service()
            functions = list(service.props.get("functions") or []) if service is not None else []
            self._openapi = json.dumps(document(ROUTES, self.label, self.service_name.name, functions)).encode()
        return Reply(200, {"content-type": "application/json"}, self._openapi)

    async def v2_live(self, call: Call) -> Reply:
        return json_reply(200, {"live": True})

    async def v2_ready(self, call: Call) -> Reply:
        if not self.authorizer.fresh():
            await asyncio.to_thread(self.authorizer.refresh)
        service = self.authorizer.service()
        ready = service is not None and bool(instance_urls(service))
        return json_reply(200 if ready else 503, {"ready": ready})

    def _names_of_service(self) -> set[str]:
        name = self.service_name
        return {name.name.lower(), f"{name.schema}.{name.name}".lower(), name.qualified.lower()}

    async def forward_v2(self, call: Call) -> Reply:
        model = call.params.get("model")
        path = call.scope["path"]
        if model is not None:
            if model.lower() not in self._names_of_service():
                raise Refusal(404, f"model {model[:100]!r} is not served here: this endpoint serves service "
                                   f"{self.label} (use /v2/models/{self.service_name.name}/...)")
            assert call.service is not None
            parts = path.split("/", 4)  # '', 'v2', 'models', <model>, <the rest>
            rest = "/" + quote(parts[4], safe="/") if len(parts) > 4 else ""
            path = "/v2/models/" + quote(call.service.name, safe="") + rest
        return await self.forward(call, path)

    async def invocations(self, call: Call) -> Reply:
        endpoint = call.params.get("endpoint")
        if endpoint is not None and endpoint.lower() not in self._names_of_service():
            raise Refusal(404, f"serving endpoint {endpoint[:100]!r} is not served here: this endpoint serves "
                               f"service {self.label} (use /serving-endpoints/{self.service_name.name}/invocations)")
        return await self.forward(call, "/invocations")

    def _check_snowflake_headers(self, call: Call) -> None:
        form = call.headers.get(SNOWFLAKE_FORMAT)
        if form is not None and form.strip().lower() != "json":
            raise Refusal(400, f"{SNOWFLAKE_FORMAT} {form[:40]!r} is not supported: this endpoint speaks json")
        version = call.headers.get(SNOWFLAKE_VERSION)
        if version is not None and version.strip() != "1.0":
            raise Refusal(400, f"{SNOWFLAKE_VERSION} {version[:40]!r} is not supported: this endpoint speaks 1.0")

    def _batch_key(self, call: Call) -> tuple[Any, ...] | None:
        batch = call.headers.get(BATCH_HEADER)
        if batch is None:
            return None
        if not batch or len(batch) > 256:
            raise Refusal(400, f"{BATCH_HEADER} must be 1 to 256 characters")
        return (call.caller, call.params["method"].lower().replace("_", "-"), batch)

    async def service_function(self, call: Call) -> Reply:
        self._check_snowflake_headers(call)
        path = "/" + quote(call.params["method"], safe="")
        key = self._batch_key(call)
        if key is None:
            return await self.forward(call, path)
        return await self.batches.post(key, lambda: self.forward(call, path))

    async def poll(self, call: Call) -> Reply:
        self._check_snowflake_headers(call)
        key = self._batch_key(call)
        if key is None:
            raise Refusal(405, f"GET /{call.params['method'][:100]} polls a batch answered 202 and needs the "
                               f"{BATCH_HEADER} header; send rows with POST", {"Allow": "POST, GET"})
        reply = self.batches.poll(key)
        if reply is None:
            raise Refusal(404, f"no batch {key[2][:80]!r} is known for this caller and method (it was never posted, "
                               "or its answer expired): POST it again")
        return reply

