"""The metrics page's series: requests, rows, errors, latency percentiles, requests in flight and
queued, and instances, in fixed steps over a window ending now.

They are read with SQL like every page: each instance's request log
(``CALL SYSTEM$GET_SERVICE_LOGS``: one line per request with its method, rows, status and time)
and the instances' states (``SHOW SERVICE CONTAINERS``). A request that ended at ``e`` after
``d`` seconds was in flight over ``[e - d, e]``, so the average number in flight in a step is the
time those intervals cover in it over the step's length (Little's law); of those, the ones beyond
the instance's workers were waiting in its queue. Instances over time are sampled by the console
each time it reads them (the history starts when the console first looks at a service).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from duckserve.fronts.console.pages import Reader, object_name, sql_string

#: steps per window, whatever its length
STEPS = 60
#: log lines read per instance per refresh
LINES_PER_INSTANCE = 20_000
_REQUEST = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ \[\d+\] [\w.]+: (\S+) rows=(\d+) "
                      r"status=(\d+) ([\d.]+) ms$")


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


def series(reader: Reader, history: InstanceHistory, key: str, window: float = 300.0,
           now: float | None = None) -> dict[str, Any]:
    """The service's series over the last ``window`` seconds."""
    name = object_name(key, "service name")
    described = reader.rows(f"DESCRIBE SERVICE {name}")
    workers = int(described[0].get("num_workers") or 1) if described else 1
    instances = reader.rows(f"SHOW SERVICE CONTAINERS IN SERVICE {name}")
    ready = sum(1 for i in instances if str(i.get("status")).upper() == "READY")
    history.record(name, ready, len(instances))
    requests_by_instance: dict[str, list[Request]] = {}
    for instance in instances:
        text = reader.scalar(f"CALL SYSTEM$GET_SERVICE_LOGS({sql_string(name)}, {int(instance['instance_id'])}, "
                             f"'model-inference', {LINES_PER_INSTANCE})")
        requests_by_instance[str(instance["instance_id"])] = parse_requests(text or "")

    end = time.time() if now is None else now
    step = _step_for(window)
    first = math.floor((end - window) / step) * step
    count = int(math.ceil((end - first) / step))
    starts = [first + i * step for i in range(count)]
    zeros = [0.0] * count
    requests, rows, errors_, in_flight, queued = list(zeros), list(zeros), list(zeros), list(zeros), list(zeros)
    latencies: list[list[float]] = [[] for _ in range(count)]
    totals = {"requests": 0, "rows": 0, "errors": 0}
    for per_instance in requests_by_instance.values():
        busy = [0.0] * count
        for request in per_instance:
            begin = request.end - request.seconds
            if request.end < first or begin > end:
                continue
            index = int((request.end - first) // step)
            if 0 <= index < count:
                requests[index] += 1
                latencies[index].append(request.seconds * 1000)
                totals["requests"] += 1
                if request.status == 200:
                    rows[index] += request.rows
                    totals["rows"] += request.rows
                else:
                    errors_[index] += 1
                    totals["errors"] += 1
            for i in range(max(0, int((begin - first) // step)), min(count, index + 1)):
                overlap = min(request.end, starts[i] + step) - max(begin, starts[i])
                if overlap > 0:
                    busy[i] += overlap
        for i in range(count):
            concurrent = busy[i] / step
            in_flight[i] += concurrent
            queued[i] += max(0.0, concurrent - workers)

    samples = history.samples(name)
    instance_series: list[float | None] = []
    for start in starts:
        seen = [s[1] for s in samples if start <= s[0] < start + step]
        earlier = [s[1] for s in samples if s[0] < start + step]
        instance_series.append(max(seen) if seen else (earlier[-1] if earlier else None))

    every = [v for bucket in latencies for v in bucket]
    return reader.answer(
        service=name, step=step, window=window, t=[s + step for s in starts], source="request log",
        workers=workers, instances_now=ready, instances_total=len(instances),
        series={
            "requests": [v / step for v in requests], "rows": [v / step for v in rows],
            "errors": [v / step for v in errors_],
            "p50": [percentile(b, 0.5) for b in latencies], "p95": [percentile(b, 0.95) for b in latencies],
            "p99": [percentile(b, 0.99) for b in latencies],
            "in_flight": [round(v, 3) for v in in_flight], "queued": [round(v, 3) for v in queued],
            "instances": instance_series,
        },
        totals={**totals, "p50": percentile(every, 0.5), "p95": percentile(every, 0.95),
                "p99": percentile(every, 0.99)},
    )
