"""The metrics page's series: requests, rows, errors, latency percentiles, requests in flight and
queued, and instances, in fixed steps over a window ending now. Read with SQL, from one of two sources:

- the service's recorded metrics, ``TABLE(svc!SPCS_GET_METRICS(START_TIME => ...))``, which the
  account's controller samples from every instance's Prometheus metrics: counters (requests by
  status, rows) become rates between samples, gauges (in flight, queued, ready instances) are
  averaged per step, latency percentiles are the worst instance's;
- where none are recorded (the statement is unknown, or nothing sampled the service in the window),
  each instance's request log (``CALL SYSTEM$GET_SERVICE_LOGS``: a line per request with its
  method, rows, status and time). A request that ended at ``e`` after ``d`` seconds was in flight
  over ``[e - d, e]``, so the average number in flight in a step is the time those intervals cover
  in it over the step's length (Little's law); of those, the ones beyond the instance's workers
  were waiting in its queue. Instances over time are then sampled by the console each time it reads
  them (the history starts when the console first looks at a service).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from duckserve import errors
from duckserve.fronts.console.pages import Reader, object_name, sql_string

#: steps per window, whatever its length
STEPS = 60
#: log lines read per instance per refresh
LINES_PER_INSTANCE = 20_000
#: an instance's request line: ``<time> INFO [pid] logger: POST /predict rows=20 status=200 3.1 ms`` (an older
#: server wrote the method alone: ``predict rows=...``); other HTTP methods (GET /metadata) are no inference
_REQUEST = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ \[\d+\] [\w.]+: (?:POST /)?([^\s/]\S*) "
                      r"rows=(\d+) status=(\d+) ([\d.]+) ms$")


@dataclass(frozen=True)
class Request:
    end: float       # epoch seconds
    seconds: float
    method: str
    rows: int
    status: int


def parse_requests(text: str) -> list[Request]:
    """The request lines of an instance log (other lines are skipped)."""
    out = []
    for line in text.splitlines():
        match = _REQUEST.match(line.strip())
        if match is None:
            continue
        stamp, millis, method, rows, status, ms = match.groups()
        end = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp() + int(millis) / 1000
        out.append(Request(end, float(ms) / 1000, method, int(rows), int(status)))
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


class InstanceHistory:
    """Ready instances per service over time, as the console saw them."""

    def __init__(self, keep_seconds: float = 6 * 3600) -> None:
        self.keep = keep_seconds
        self._samples: dict[str, deque[tuple[float, int, int]]] = {}
        self._lock = threading.Lock()

    def record(self, service: str, ready: int, total: int, at: float | None = None) -> None:
        moment = time.time() if at is None else at
        with self._lock:
            samples = self._samples.setdefault(service, deque())
            samples.append((moment, ready, total))
            while samples and samples[0][0] < moment - self.keep:
                samples.popleft()

    def samples(self, service: str) -> list[tuple[float, int, int]]:
        with self._lock:
            return list(self._samples.get(service, ()))


def _step_for(window: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600):
        if window / step <= STEPS:
            return float(step)
    return 600.0


@dataclass
class Window:
    """Steps of ``step`` seconds covering the last ``seconds`` up to ``end``."""

    end: float
    seconds: float
    step: float = 0.0
    first: float = 0.0
    starts: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.step = _step_for(self.seconds)
        self.first = math.floor((self.end - self.seconds) / self.step) * self.step
        count = int(math.ceil((self.end - self.first) / self.step))
        self.starts = [self.first + i * self.step for i in range(count)]

    def index(self, moment: float) -> int | None:
        position = int((moment - self.first) // self.step)
        return position if 0 <= position < len(self.starts) else None

    def zeros(self) -> list[float]:
        return [0.0] * len(self.starts)


@dataclass(frozen=True)
class Sample:
    """One row of SPCS_GET_METRICS."""

    at: float
    name: str
    value: float
    instance: int | None
    attributes: dict[str, Any]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def from_samples(samples: list[Sample], window: Window) -> dict[str, Any]:
    """Series from recorded metrics (counters are cumulative per instance and labels)."""
    count = len(window.starts)
    requests, rows, errors_ = window.zeros(), window.zeros(), window.zeros()
    gauges: dict[str, list[dict[int | None, list[float]]]] = {
        g: [{} for _ in range(count)] for g in ("in_flight", "queued", "instances")}
    latency: dict[str, list[list[float]]] = {q: [[] for _ in range(count)] for q in ("p50", "p95", "p99")}
    last: dict[tuple[Any, ...], float] = {}
    totals = {"requests": 0.0, "rows": 0.0, "errors": 0.0}
    gauge_names = {"inference.requests.in_flight": "in_flight", "inference.requests.queued": "queued",
                   "service.instances.ready": "instances"}
    for sample in sorted(samples, key=lambda s: s.at):
        index = window.index(sample.at)
        if sample.name in ("inference.requests", "inference.rows"):
            key = (sample.name, sample.instance, tuple(sorted(sample.attributes.items())))
            previous = last.get(key)
            last[key] = sample.value
            if previous is None or index is None:
                continue
            delta = sample.value - previous if sample.value >= previous else sample.value   # a restart: from 0
            if sample.name == "inference.rows":
                rows[index] += delta
                totals["rows"] += delta
            else:
                requests[index] += delta
                totals["requests"] += delta
                if str(sample.attributes.get("status", "200")) != "200":
                    errors_[index] += delta
                    totals["errors"] += delta
        elif index is not None and sample.name in gauge_names:
            gauges[gauge_names[sample.name]][index].setdefault(sample.instance, []).append(sample.value)
        elif index is not None and sample.name.startswith("inference.latency.p"):
            quantile = sample.name.rsplit(".", 1)[1]
            if quantile in latency:
                latency[quantile][index].append(sample.value * 1000)

    def gauge(name: str) -> list[float | None]:
        out: list[float | None] = []
        for by_instance in gauges[name]:
            means = [m for m in (_mean(v) for v in by_instance.values()) if m is not None]
            out.append(round(sum(means), 3) if means else None)
        return out

    series = {
        "requests": [v / window.step for v in requests], "rows": [v / window.step for v in rows],
        "errors": [v / window.step for v in errors_],
        **{q: [max(b) if b else None for b in latency[q]] for q in latency},
        "in_flight": gauge("in_flight"), "queued": gauge("queued"), "instances": gauge("instances"),
    }
    every = {q: [v for b in latency[q] for v in b] for q in latency}
    return {"series": series, "totals": {**{k: round(v) for k, v in totals.items()},
                                         **{q: max(every[q]) if every[q] else None for q in every}}}


def from_request_log(requests_by_instance: dict[str, list[Request]], workers: int, window: Window,
                     history: list[tuple[float, int, int]]) -> dict[str, Any]:
    """Series from the instances' request logs and the console's own instance samples."""
    count = len(window.starts)
    requests, rows, errors_, in_flight, queued = (window.zeros() for _ in range(5))
    latencies: list[list[float]] = [[] for _ in range(count)]
    totals = {"requests": 0, "rows": 0, "errors": 0}
    for per_instance in requests_by_instance.values():
        busy = window.zeros()
        for request in per_instance:
            begin = request.end - request.seconds
            if request.end < window.first or begin > window.end:
                continue
            index = window.index(request.end)
            if index is not None:
                requests[index] += 1
                latencies[index].append(request.seconds * 1000)
                totals["requests"] += 1
                if request.status == 200:
                    rows[index] += request.rows
                    totals["rows"] += request.rows
                else:
                    errors_[index] += 1
                    totals["errors"] += 1
            last = index if index is not None else count - 1
            for i in range(max(0, int((begin - window.first) // window.step)), last + 1):
                overlap = min(request.end, window.starts[i] + window.step) - max(begin, window.starts[i])
                if overlap > 0:
                    busy[i] += overlap
        for i in range(count):
            concurrent = busy[i] / window.step
            in_flight[i] += concurrent
            queued[i] += max(0.0, concurrent - workers)
    instances: list[float | None] = []
    for start in window.starts:
        seen = [s[1] for s in history if start <= s[0] < start + window.step]
        earlier = [s[1] for s in history if s[0] < start + window.step]
        instances.append(max(seen) if seen else (earlier[-1] if earlier else None))
    every = [v for bucket in latencies for v in bucket]
    return {
        "series": {
            "requests": [v / window.step for v in requests], "rows": [v / window.step for v in rows],
            "errors": [v / window.step for v in errors_],
            "p50": [percentile(b, 0.5) for b in latencies], "p95": [percentile(b, 0.95) for b in latencies],
            "p99": [percentile(b, 0.99) for b in latencies],
            "in_flight": [round(v, 3) for v in in_flight], "queued": [round(v, 3) for v in queued],
            "instances": instances,
        },
        "totals": {**totals, "p50": percentile(every, 0.5), "p95": percentile(every, 0.95),
                   "p99": percentile(every, 0.99)},
    }


def recorded_samples(reader: Reader, name: str, window: Window) -> list[Sample] | None:
    """The service's recorded metrics in the window; None where SQL has no SPCS_GET_METRICS (or it
    failed: the page then says why and reads the request log)."""
    sql = (f"SELECT \"TIMESTAMP\", METRIC_NAME, \"VALUE\", INSTANCE_ID, RECORD_ATTRIBUTES "
           f"FROM TABLE({name}!SPCS_GET_METRICS(START_TIME => DATEADD(second, -{int(window.end - window.first) + 60}, "
           "CURRENT_TIMESTAMP()))) ORDER BY \"TIMESTAMP\"")
    try:
        found = reader.result(sql)
    except errors.Error:
        reader.statements.pop()
        return None
    out = []
    names = found.names if found is not None and found.has_rows else []
    for row in (dict(zip(names, values)) for values in (found.fetchall() if names else [])):
        try:
            value = float(row["VALUE"])
        except (TypeError, ValueError):
            continue
        attributes = row.get("RECORD_ATTRIBUTES")
        if isinstance(attributes, str):
            try:
                attributes = json.loads(attributes)
            except ValueError:
                attributes = {}
        stamp = row["TIMESTAMP"]
        if isinstance(stamp, datetime) and stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=timezone.utc)  # TIMESTAMP_NTZ: UTC
        at = stamp.timestamp() if isinstance(stamp, datetime) else float(stamp)
        out.append(Sample(at, str(row["METRIC_NAME"]), value, row.get("INSTANCE_ID"),
                          attributes if isinstance(attributes, dict) else {}))
    return out


def series(reader: Reader, history: InstanceHistory, key: str, window_seconds: float = 300.0,
           now: float | None = None) -> dict[str, Any]:
    """The service's series over the last ``window_seconds``."""
    name = object_name(key, "service name")
    described = reader.rows(f"DESCRIBE SERVICE {name}")
    workers = int(described[0].get("num_workers") or 1) if described else 1
    instances = reader.rows(f"SHOW SERVICE CONTAINERS IN SERVICE {name}")
    ready = sum(1 for i in instances if str(i.get("status")).upper() == "READY")
    history.record(name, ready, len(instances))
    window = Window(time.time() if now is None else now, window_seconds)
    samples = recorded_samples(reader, name, window)
    if samples:
        source, built = "service's metrics (SPCS_GET_METRICS)", from_samples(samples, window)
    else:
        requests_by_instance: dict[str, list[Request]] = {}
        for instance in instances:
            text = reader.scalar(f"CALL SYSTEM$GET_SERVICE_LOGS({sql_string(name)}, {int(instance['instance_id'])}, "
                                 f"'model-inference', {LINES_PER_INSTANCE})")
            requests_by_instance[str(instance["instance_id"])] = parse_requests(text or "")
        source = "request log"
        built = from_request_log(requests_by_instance, workers, window, history.samples(name))
    return reader.answer(service=name, step=window.step, window=window_seconds,
                         t=[s + window.step for s in window.starts], source=source, workers=workers,
                         instances_now=ready, instances_total=len(instances), **built)
