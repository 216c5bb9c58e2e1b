"""The service-function client: rows in batches to a service's instances, answers back in place.

Batches go out concurrently (as many in flight as the warehouse allows), each to the least-loaded
ready instance (fewest batches in flight from this process; an instance that answered 429 counts as
full until its Retry-After has passed), in Arrow IPC (the JSON form is the fallback and what external
callers use). An instance that does not answer (killed mid-query, stopping during a model update)
is set aside for DOWN_SECONDS and its batch re-sent at once to another instance; when none is left
the batch waits for one (the controller replaces dead instances) for up to ``failover_seconds()``.
429 answers are resent within OVERLOAD_DEADLINE, 5xx up to MAX_BATCH_RETRIES times with backoff.
Every row must come back exactly once and in order, else the call fails.
Rows with a NULL argument are not sent: their result is NULL, as for any strict SQL function.
An instance on this machine that names an exchange directory gets its Arrow batches as files there
rather than as HTTP bodies (`protocol`: a large batch crosses loopback HTTP several times slower).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duckserve.errors import DataError, ServiceError
from duckserve.inference_server import protocol
from duckserve.inference_server.manifest import MethodSpec

MAX_BATCH_RETRIES = 3
DEFAULT_BATCH_ROWS = 65_536
BACKOFF_SECONDS = 0.05
MAX_RETRY_AFTER = 5.0
#: how long a batch may keep being turned away with 429 (not processed, so always safe to resend)
OVERLOAD_DEADLINE = 120.0
REQUEST_TIMEOUT = 300.0
#: how long an instance that did not answer is left out of the choice
DOWN_SECONDS = 5.0
#: how often a call reads the service's instances again
REREAD_SECONDS = 1.0
#: how long an instance's measured answer time counts before it is tried again as average
STALE_SECONDS = 2.0


def failover_seconds() -> float:
    """How long a batch whose instances all failed waits for a live one ($DUCKSERVE_FAILOVER_SECS, default 60)."""
    return float(os.environ.get("DUCKSERVE_FAILOVER_SECS", "60"))


class InstanceLoad:
    """What this process knows of each instance's load: batches in flight, how long its recent
    answers took (a moving average per row), and until when it is full (it answered 429) or down
    (it did not answer). Shared by every call of the process. The least loaded instance is the one
    a new batch would be answered soonest by: (in flight + 1) x its time per batch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight: dict[str, int] = {}
        self.seconds: dict[str, float] = {}  # moving average of a batch's answer time
        self.heard: dict[str, float] = {}  # when that average was last updated
        self.full_until: dict[str, float] = {}
        self.down_until: dict[str, float] = {}
        self._turn = itertools.count()

    def pick(self, urls: list[str], avoid: str | None = None) -> str | None:
        """The least-loaded instance of ``urls`` that is not down (None when all are); ties rotate."""
        now = time.monotonic()
        with self._lock:
            alive = [u for u in urls if self.down_until.get(u, 0.0) <= now]
            if avoid is not None and len(alive) > 1:
                alive = [u for u in alive if u != avoid] or alive
            if not alive:
                return None
            turn = next(self._turn)
            # an instance not heard from lately (new, or set aside after a slow answer) counts as average,
            # so it is tried again
            recent = {u: self.seconds[u] for u in alive if now - self.heard.get(u, -STALE_SECONDS) < STALE_SECONDS}
            typical = sum(recent.values()) / len(recent) if recent else 1.0

            def load(i_url: tuple[int, str]) -> tuple[int, float, int]:
                i, url = i_url
                full = 1 if self.full_until.get(url, 0.0) > now else 0
                wait = (self.in_flight.get(url, 0) + 1) * recent.get(url, typical)
                return (full, wait, (i - turn) % len(alive))

            return min(enumerate(alive), key=load)[1]

    def answered(self, url: str, seconds: float) -> None:
        with self._lock:
            before = self.seconds.get(url)
            self.seconds[url] = seconds if before is None else 0.7 * before + 0.3 * seconds
            self.heard[url] = time.monotonic()

    def add(self, url: str, delta: int) -> None:
        with self._lock:
            self.in_flight[url] = self.in_flight.get(url, 0) + delta

    def full(self, url: str, seconds: float) -> None:
        with self._lock:
            self.full_until[url] = time.monotonic() + seconds

    def down(self, url: str) -> None:
        with self._lock:
            self.down_until[url] = time.monotonic() + DOWN_SECONDS


LOAD = InstanceLoad()

_clients: dict[int, httpx.Client] = {}
_clients_lock = threading.Lock()
#: instance URL -> the exchange directory it named, for instances whose directory is visible here
_exchanges: dict[str, str] = {}
#: smaller batches go as HTTP bodies: for them a file's creation and removal cost more than they save
EXCHANGE_MIN_BYTES = 256 * 1024


def http_client() -> httpx.Client:
    """One keep-alive client per process (httpx clients are thread-safe)."""
    key = 0
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            # TCP_NODELAY: without it Nagle holds the body behind the headers until the server's
            # delayed ACK (~40 ms per request)
            transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                                            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
            client = httpx.Client(timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=5.0), transport=transport,
                                  trust_env=False)
            _clients[key] = client
        return client


@dataclass
class CallStats:
    """What a call did: for progress displays and tests."""

    rows_sent: int = 0
    rows_answered: int = 0
    batches: int = 0
    retries: int = 0
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


def single_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array; a chunked array of one chunk is that chunk (combine_chunks would copy)."""
    if not isinstance(column, pa.ChunkedArray):
        return column
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def strict_call(arguments: list[pa.Array | pa.ChunkedArray], result_type: pa.DataType,
                compute: Callable[[list[pa.Array | pa.ChunkedArray]], pa.Array]) -> pa.Array:
    """Call ``compute`` on the rows whose arguments are all non-NULL and put its answers back in
    place: a row with a NULL argument yields NULL, as for any strict SQL function."""
    columns = list(arguments)  # chunked arrays stay chunked: batches are cut from them without a copy
    n = len(columns[0]) if columns else 0
    if n == 0:
        return pa.array([], type=result_type)
    valid = None
    for column in columns:
        if column.null_count:
            mask = pc.is_valid(column)
            valid = mask if valid is None else pc.and_(valid, mask)
    if valid is None:
        return compute(columns)
    keep = np.flatnonzero(valid.to_numpy(zero_copy_only=False))
    if len(keep) == 0:
        return pa.nulls(n, type=result_type)
    answers = compute([c.take(pa.array(keep)) for c in columns])
    positions = np.full(n, -1, dtype=np.int64)
    positions[keep] = np.arange(len(keep))
    return answers.take(pa.array(positions, mask=positions < 0))


class ServiceClient:
    """Calls one method of one service. ``instances`` returns the current instance URLs (it is asked
    again after a connection failure, so restarted instances are found)."""

    def __init__(self, service: str, method: MethodSpec, instances: Callable[[], list[str]], *,
                 parallelism: int = 2, batch_rows: int | None = None, use_arrow: bool | None = None,
                 max_retries: int = MAX_BATCH_RETRIES) -> None:
        self.service = service
        self.method = method
        self._instances = instances
        self._urls = instances()
        self._read_at = time.monotonic()
        self.parallelism = max(1, parallelism)
        self.batch_rows = batch_rows or DEFAULT_BATCH_ROWS
        # Arrow IPC unless told otherwise ($DUCKSERVE_WIRE=json selects the external-function JSON form)
        self.use_arrow = use_arrow if use_arrow is not None else os.environ.get("DUCKSERVE_WIRE", "arrow") != "json"
        self.max_retries = max_retries
        self.stats = CallStats()
        self._slots = threading.BoundedSemaphore(self.parallelism)
        self.cancelled = threading.Event()

    def _fail(self, problem: str) -> ServiceError:
        return ServiceError(f"service {self.service}, method {self.method.name}: {problem}")

    # -- the call ---------------------------------------------------------------------------------
    def call(self, arguments: list[pa.Array | pa.ChunkedArray]) -> pa.Array:
        """The method's result for each row of the argument columns (NULL where an argument is NULL)."""
        if len(arguments) != len(self.method.inputs):
            raise self._fail(f"takes {len(self.method.inputs)} argument(s) "
                             f"({', '.join(f.name for f in self.method.inputs)}), got {len(arguments)}")
        return strict_call(arguments, self._result_type(), self._send_all)

    def call_table(self, table: pa.Table) -> pa.Table:
        """``mv.run``'s form: input columns by signature name in, output columns out."""
        names = [f.name for f in self.method.inputs]
        missing = [n for n in names if n not in table.column_names]
        if missing:
            raise self._fail(f"the input has no column {', '.join(missing)} (the signature's inputs are "
                             f"{', '.join(names)})")
        result = self.call([table.column(n) for n in names])
        if len(self.method.outputs) == 1:
            return pa.table({self.method.outputs[0].name: result})
        return pa.Table.from_arrays(result.flatten(), names=[f.name for f in self.method.outputs])

    def _result_type(self) -> pa.DataType:
        from duckserve.inference_server.datatypes import arrow_type

        if len(self.method.outputs) == 1:
            return arrow_type(self.method.outputs[0])
        return pa.struct([pa.field(f.name, arrow_type(f)) for f in self.method.outputs])

    def _send_all(self, columns: list[pa.Array | pa.ChunkedArray]) -> pa.Array:
        n = len(columns[0])
        bounds = [(start, min(start + self.batch_rows, n)) for start in range(0, n, self.batch_rows)]
        if len(bounds) == 1:
            parts = [self._send_batch(columns, 0, n)]
        else:
            with ThreadPoolExecutor(max_workers=min(self.parallelism, len(bounds))) as pool:
                parts = list(pool.map(lambda b: self._send_batch(columns, b[0], b[1]), bounds))
        return pa.concat_arrays(parts) if len(parts) > 1 else parts[0]

    def _send_batch(self, columns: list[pa.Array | pa.ChunkedArray], start: int, stop: int) -> pa.Array:
        ids = np.arange(start, stop, dtype=np.int64)
        chunk = [c.slice(start, stop - start) for c in columns]
        request = _Request(ids, chunk, self.method, self.use_arrow)
        path = self.method.url_path
        problem = ""
        attempt, overloaded_since, failed_url, failing_since = 0, None, None, None
        while attempt <= self.max_retries:
            if self.cancelled.is_set():
                raise self._fail("the query was cancelled")
            if attempt or overloaded_since is not None or failed_url is not None:
                self.stats.add(retries=1)
            url = self._next_url(failed_url, problem)
            with self._slots:
                self.stats.add(in_flight=1, rows_sent=len(ids), batches=1)
                LOAD.add(url, 1)
                sent_at = time.monotonic()
                try:
                    response = request.post(url, path)
                except httpx.HTTPError as exc:
                    # the instance died or is stopping: the batch goes elsewhere at once (answers are
                    # checked row by row, so a batch it had already answered cannot come back twice)
                    problem = f"instance {url} did not answer ({type(exc).__name__}: {exc})"
                    LOAD.down(url)
                    self._urls = self._instances() or self._urls
                    failed_url = url
                    failing_since = failing_since or time.monotonic()
                    if time.monotonic() - failing_since > failover_seconds():
                        raise self._fail(f"no instance answered for {failover_seconds():g}s; last: {problem}") from exc
                    continue
                finally:
                    LOAD.add(url, -1)
                    self.stats.add(in_flight=-1)
            failed_url = failing_since = None
            if response.status_code == 200:
                LOAD.answered(url, time.monotonic() - sent_at)
                answers = self._decode(response, ids, url)
                self.stats.add(rows_answered=len(ids))
                return answers
            problem = f"instance {url} answered {response.status_code}: {_error_text(response)}"
            if response.status_code == 429:
                # turned away before any work: wait as asked and resend, within the overload deadline
                LOAD.full(url, _retry_after(response.headers.get("Retry-After")) or BACKOFF_SECONDS)
                overloaded_since = overloaded_since or time.monotonic()
                if time.monotonic() - overloaded_since < OVERLOAD_DEADLINE:
                    if LOAD.pick(self._urls, avoid=url) in (None, url):  # nowhere else to go: wait
                        self._backoff(0, response.headers.get("Retry-After"))
                    continue
            elif response.status_code >= 500:
                self._backoff(attempt, response.headers.get("Retry-After"))
                attempt += 1
                continue
            raise self._fail(problem)
        raise self._fail(f"a batch of {len(ids)} rows failed after {self.max_retries + 1} attempts; last: {problem}")

    def _decode(self, response: httpx.Response, ids: np.ndarray, url: str) -> pa.Array:
        try:
            answer_file = response.headers.get(protocol.BODY_FILE_HEADER)
            if answer_file is not None:
                got, outputs = protocol.decode_arrow_response(_read_answer_file(url, answer_file), self.method)
            elif protocol.is_arrow(response.headers.get("content-type")):
                got, outputs = protocol.decode_arrow_response(response.content, self.method)
            else:
                got, outputs = protocol.decode_json_response(response.content, self.method)
        except protocol.ProtocolError as exc:
            raise DataError(f"service {self.service}, method {self.method.name}: bad answer: {exc}") from exc
        if len(got) != len(ids) or not np.array_equal(got, ids):
            raise DataError(
                f"service {self.service}, method {self.method.name}: sent {len(ids)} rows and got {len(got)} back, "
                "not the same rows in the same order; refusing to return misplaced results"
            )
        return protocol.result_array(outputs, self.method)

    def _next_url(self, failed: str | None = None, problem: str = "") -> str:
        """The least-loaded live instance; after ``failed`` did not answer, another one, waiting up to
        ``failover_seconds()`` for one to be there (a restarted instance, or the new ones of an update)."""
        urls = self._urls
        if not urls or time.monotonic() - self._read_at > REREAD_SECONDS:
            # new instances (scaled up, or an update's) get batches within a second of being recorded
            urls = self._urls = self._instances() or urls
            self._read_at = time.monotonic()
        if not urls and failed is None:
            raise self._fail("no instance is running: run ALTER SERVICE ... RESUME")
        url = LOAD.pick(urls, avoid=failed)
        if url is not None:
            return url
        deadline = time.monotonic() + failover_seconds()
        delay = 0.05
        while time.monotonic() < deadline:
            if self.cancelled.is_set():
                raise self._fail("the query was cancelled")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
            self._urls = self._instances() or self._urls
            url = LOAD.pick(self._urls)
            if url is not None:
                return url
        raise self._fail(f"no instance answered for {failover_seconds():g}s; last: {problem or 'none running'}")

    def _backoff(self, attempt: int, retry_after: str | None) -> None:
        if attempt >= self.max_retries:
            return
        delay = BACKOFF_SECONDS * (2 ** attempt) * (1 + random.random() / 2)
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER))
            except ValueError:
                pass
        time.sleep(delay)


class _Request:
    """One batch, encoded once per form it is sent in: an HTTP body, or (for a batch of at least
    EXCHANGE_MIN_BYTES) an exchange file when the instance named an exchange directory this process
    can see (a new file for each attempt, since a retry may go to another instance; removed once
    answered)."""

    def __init__(self, ids: np.ndarray, columns: list[pa.Array | pa.ChunkedArray], method: MethodSpec,
                 use_arrow: bool) -> None:
        self.ids, self.columns, self.method, self.use_arrow = ids, columns, method, use_arrow
        self._table: pa.Table | None = None
        self._body: bytes | None = None

    def table(self) -> pa.Table:
        if self._table is None:
            self._table = protocol.arrow_request_table(self.ids, self.columns, self.method)
        return self._table

    def post(self, url: str, path: str) -> httpx.Response:
        if not self.use_arrow:
            if self._body is None:
                self._body = protocol.encode_json_request(self.ids, self.columns)
            return self._post(url, path, self._body, protocol.JSON_CONTENT_TYPE, {})
        exchange = _exchanges.get(url)
        if exchange is None or self.table().nbytes < EXCHANGE_MIN_BYTES:
            if self._body is None:
                self._body = protocol.write_ipc(self.table())
            response = self._post(url, path, self._body, protocol.ARROW_CONTENT_TYPE, {})
            _learn_exchange(url, response)
            return response
        name = f"{uuid.uuid4().hex}.arrow"
        body_file = os.path.join(exchange, name)
        try:
            protocol.write_ipc_file(self.table(), body_file)
        except OSError:  # the directory went away (the instance stopped): send the body instead
            _exchanges.pop(url, None)
            return self.post(url, path)
        try:
            return self._post(url, path, b"", protocol.ARROW_CONTENT_TYPE, {protocol.BODY_FILE_HEADER: name})
        finally:
            with contextlib.suppress(FileNotFoundError):  # gone with its directory if the instance stopped
                os.unlink(body_file)

    @staticmethod
    def _post(url: str, path: str, body: bytes, content_type: str, extra: dict[str, str]) -> httpx.Response:
        headers = {"Content-Type": content_type, "Accept": content_type, **extra}
        return http_client().post(url + path, content=body, headers=headers)


def _learn_exchange(url: str, response: httpx.Response) -> None:
    directory = response.headers.get(protocol.EXCHANGE_HEADER)
    if directory and directory != _exchanges.get(url) and os.path.isdir(directory) and os.access(directory, os.W_OK):
        _exchanges[url] = directory


def _read_answer_file(url: str, name: str) -> pa.Table:
    exchange = _exchanges.get(url)
    if exchange is None:
        raise protocol.ProtocolError(f"the answer came as file {name!r:.80} but {url} named no exchange directory")
    path = protocol.exchange_file(exchange, name)
    try:
        return protocol.read_ipc_file(path, "response body")
    finally:
        path.unlink(missing_ok=True)


def _retry_after(value: str | None) -> float:
    try:
        return min(float(value), MAX_RETRY_AFTER) if value else 0.0
    except ValueError:
        return 0.0


def _error_text(response: httpx.Response) -> str:
    try:
        data: Any = response.json()
        if isinstance(data, dict) and "error" in data:
            return str(data["error"])
    except ValueError:
        pass
    return response.text[:300]
