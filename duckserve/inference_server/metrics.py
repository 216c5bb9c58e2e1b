"""The inference server's own metrics, written by hand in Prometheus' text exposition format
(version 0.0.4) so that the server needs nothing beyond starlette, uvicorn and gunicorn.

Every inference request (a POST) is counted by model method and HTTP status, with its rows and
its time in a latency histogram; 429s (admission control turned the request away) are counted
apart; requests in flight and waiting for the model are gauges, as are the model's load time and
the workers that loaded it; the supervisor counts the workers it had to replace.

A server may run several worker processes behind one socket, and ``GET /metrics`` reaches one of
them. So each worker writes its counters to ``<state_dir>/metrics/<pid>.json`` (at most every
FLUSH_SECONDS, when they changed) and the worker that answers adds up every file: counters of
workers that died stay in the sum (a counter never goes down while the server lives), gauges
count live workers only. Another worker's figures may be up to FLUSH_SECONDS old.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_DIR = "metrics"
RESTARTS_FILE = "worker_restarts"
FLUSH_SECONDS = 0.5
#: upper bounds (seconds) of the latency histogram's buckets; +Inf is implied
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)
#: the method label of a request whose method was never resolved (an unknown path)
UNKNOWN_METHOD = "unknown"

PREFIX = "duckserve_"
HELP = {
    "requests_total": ("counter", "Inference requests answered, by model method and HTTP status."),
    "rows_total": ("counter", "Rows of inference requests, by model method and HTTP status."),
    "request_duration_seconds": ("histogram", "Time from a request's arrival to its answer, by model method."),
    "requests_rejected_total": ("counter", "Requests refused with 429 by admission control (queue full)."),
    "requests_in_flight": ("gauge", "Inference requests being answered now (running or waiting for the model)."),
    "requests_queued": ("gauge", "Inference requests waiting for the model now."),
    "worker_restarts_total": ("counter", "Worker processes that exited and were started again."),
    "model_load_seconds": ("gauge", "Seconds the last model load took (the slowest live worker's)."),
    "workers_ready": ("gauge", "Worker processes that loaded the model."),
    "workers": ("gauge", "Worker processes the server runs."),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in pairs)
    return "{" + inner + "}" if inner else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ServerMetrics:
    """One worker process's counters and gauges, and the exposition of all workers' sums."""

    def __init__(self, state_dir: Path | None = None, workers: int = 1) -> None:
        self.state_dir = state_dir
        self.workers = workers
        self.requests: dict[tuple[str, str], int] = {}
        self.rows: dict[tuple[str, str], int] = {}
        self.buckets: dict[str, list[int]] = {}  # per method: counts per bucket (not cumulative), +Inf last
        self.seconds: dict[str, float] = {}
        self.rejected = 0
        self.in_flight = 0
        self.model_load_seconds: float | None = None
        self._dirty = True
        self._flushed = 0.0

    # -- recording (on the event loop) ----------------------------------------------------------
    def started(self) -> None:
        self.in_flight += 1
        self._dirty = True

    def finished(self, method: str, status: int, rows: int, seconds: float) -> None:
        self.in_flight -= 1
        key = (method, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        self.rows[key] = self.rows.get(key, 0) + rows
        counts = self.buckets.get(method)
        if counts is None:
            counts = self.buckets[method] = [0] * (len(LATENCY_BUCKETS) + 1)
        index = len(LATENCY_BUCKETS)
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                index = i
                break
        counts[index] += 1
        self.seconds[method] = self.seconds.get(method, 0.0) + seconds
        if status == 429:
            self.rejected += 1
        self._dirty = True

    def loaded(self, seconds: float) -> None:
        self.model_load_seconds = seconds
        self._dirty = True

    # -- sharing between workers ----------------------------------------------------------------
    def snapshot(self, queued: int = 0) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "requests": [[m, s, n] for (m, s), n in self.requests.items()],
            "rows": [[m, s, n] for (m, s), n in self.rows.items()],
            "buckets": self.buckets, "seconds": self.seconds, "rejected": self.rejected,
            "in_flight": self.in_flight, "queued": queued, "model_load_seconds": self.model_load_seconds,
        }

    def _file(self) -> Path | None:
        return self.state_dir / METRICS_DIR / f"{os.getpid()}.json" if self.state_dir is not None else None

    def flush(self, queued: int = 0, force: bool = False) -> None:
        """Write this worker's snapshot for the others (when it changed, at most every FLUSH_SECONDS)."""
        path = self._file()
        if path is None or self.workers <= 1 or not (self._dirty or force):
            return
        now = time.monotonic()
        if not force and now - self._flushed < FLUSH_SECONDS:
            return
        self._dirty, self._flushed = False, now
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(self.snapshot(queued)))
        os.replace(temporary, path)

    def _snapshots(self, queued: int) -> list[dict[str, Any]]:
        own = self.snapshot(queued)
        out = [own]
        if self.state_dir is None or self.workers <= 1:
            return out
        directory = self.state_dir / METRICS_DIR
        if not directory.is_dir():
            return out
        for path in directory.glob("*.json"):
            try:
                pid = int(path.stem)
                if pid == own["pid"]:
                    continue
                other = json.loads(path.read_text())
            except (ValueError, OSError):
                continue  # a file being replaced or a stray name
            if not _pid_alive(pid):
                other["in_flight"] = other["queued"] = 0
                other["model_load_seconds"] = None
            out.append(other)
        return out

    def restarts(self) -> int:
        if self.state_dir is None:
            return 0
        try:
            return int((self.state_dir / RESTARTS_FILE).read_text() or 0)
        except (OSError, ValueError):
            return 0

    # -- exposition -----------------------------------------------------------------------------
    def exposition(self, queued: int = 0, workers_ready: int = 0) -> str:
        """Every worker's figures added up, in Prometheus' text format."""
        snapshots = self._snapshots(queued)
        requests: dict[tuple[str, str], int] = {}
        rows: dict[tuple[str, str], int] = {}
        buckets: dict[str, list[int]] = {}
        seconds: dict[str, float] = {}
        for snap in snapshots:
            for method, status, n in snap["requests"]:
                requests[(method, status)] = requests.get((method, status), 0) + n
            for method, status, n in snap["rows"]:
                rows[(method, status)] = rows.get((method, status), 0) + n
            for method, counts in snap["buckets"].items():
                total = buckets.setdefault(method, [0] * (len(LATENCY_BUCKETS) + 1))
                for i, n in enumerate(counts[: len(total)]):
                    total[i] += n
            for method, value in snap["seconds"].items():
                seconds[method] = seconds.get(method, 0.0) + value
        loads = [s["model_load_seconds"] for s in snapshots if s.get("model_load_seconds") is not None]

        lines: list[str] = []

        def family(name: str, samples: Callable[[], Iterable[tuple[str, str, float]]]) -> None:
            kind, text = HELP[name]
            lines.append(f"# HELP {PREFIX}{name} {text}")
            lines.append(f"# TYPE {PREFIX}{name} {kind}")
            for suffix, labels, value in samples():
                lines.append(f"{PREFIX}{name}{suffix}{labels} {_number(value)}")

        def per_status(table: dict[tuple[str, str], int]) -> Iterable[tuple[str, str, float]]:
            for (method, status), n in sorted(table.items()):
                yield "", _labels([("method", method), ("status", status)]), n

        def histogram() -> Iterable[tuple[str, str, float]]:
            for method, counts in sorted(buckets.items()):
                cumulative = 0
                for bound, n in zip((*LATENCY_BUCKETS, math.inf), counts):
                    cumulative += n
                    yield "_bucket", _labels([("method", method), ("le", _number(bound))]), cumulative
                yield "_sum", _labels([("method", method)]), seconds.get(method, 0.0)
                yield "_count", _labels([("method", method)]), cumulative

        family("requests_total", lambda: per_status(requests))
        family("rows_total", lambda: per_status(rows))
        family("request_duration_seconds", histogram)
        family("requests_rejected_total", lambda: [("", "", sum(s["rejected"] for s in snapshots))])
        family("requests_in_flight", lambda: [("", "", sum(s["in_flight"] for s in snapshots))])
        family("requests_queued", lambda: [("", "", sum(s["queued"] for s in snapshots))])
        family("worker_restarts_total", lambda: [("", "", self.restarts())])
        if loads:
            family("model_load_seconds", lambda: [("", "", max(loads))])
        family("workers_ready", lambda: [("", "", workers_ready)])
        family("workers", lambda: [("", "", self.workers)])
        return "\n".join(lines) + "\n"


def count_restart(state_dir: Path) -> None:
    """The supervisor replaced a worker: add one to the server's restart count."""
    path = state_dir / RESTARTS_FILE
    try:
        count = int(path.read_text() or 0)
    except (OSError, ValueError):
        count = 0
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(str(count + 1))
    os.replace(temporary, path)
