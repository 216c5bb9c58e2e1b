"""What the event table learns about services: their lifecycle events, their instances' and build
jobs' logs, and metrics sampled from every instance's ``GET /metrics`` (`duckserve.engine.events`).

`MetricsSampler.sample` reads each instance's Prometheus text and writes, per instance, the
metrics the console and ``svc!SPCS_GET_METRICS`` know:

==============================  =======  ======  =============================================
METRIC_NAME                     type     unit    RECORD_ATTRIBUTES
==============================  =======  ======  =============================================
inference.requests              sum      1       method, status (cumulative since the start)
inference.rows                  sum      1       method, status (cumulative)
inference.requests.rejected     sum      1       (429s of admission control, cumulative)
inference.requests.in_flight    gauge    1
inference.requests.queued       gauge    1
inference.latency.p50/p95/p99   gauge    s       over the requests since the previous sample
inference.worker.restarts       sum      1
model.load.time                 gauge    s
service.instances.ready         gauge    1       (one row per service, no INSTANCE_ID)
==============================  =======  ======  =============================================

The account's controller calls it on its loop; ``svc!SPCS_GET_METRICS`` takes a sample of a
running service itself (unless it did less than FRESH_SECONDS ago), so the newest point is there
without the controller and reflects what the caller just did.
The same sample ingests the instances' new log lines (`ingest_instance_logs`), and stopping or
dropping a service ingests all of them first, so logs outlive the service.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from duckserve.engine.catalog import CatalogObject
from duckserve.engine.events import (
    BUILD_CONTAINER,
    INFERENCE_CONTAINER,
    MetricSample,
    Resource,
    event_table,
    record_event,
)
from duckserve.engine.runtimes import InstanceHandle, runtime_for
from duckserve.errors import Error

if TYPE_CHECKING:
    from duckserve.engine.services.lifecycle import Services

logger = logging.getLogger("duckserve.engine")

SCRAPE_TIMEOUT = 2.0
#: log lines read from each instance per sample (the whole log when a service stops)
LOG_TAIL_LINES = 5000
#: SPCS_GET_METRICS samples a service itself unless it did less than this ago
FRESH_SECONDS = 0.5
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text as ``{sample name: [(labels, value), ...]}`` (comments skipped)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value.replace("+Inf", "inf").replace("-Inf", "-inf"))
        except ValueError:
            continue
        pairs = {k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                 for k, v in _LABEL.findall(labels or "")}
        out.setdefault(name, []).append((pairs, number))
    return out


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram ``[(upper bound, count), ...]`` ending at +Inf,
    interpolated linearly inside its bucket (as Prometheus' histogram_quantile does)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # in the open bucket: the highest finite bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def _latency_buckets(samples: dict[str, list[tuple[dict[str, str], float]]]) -> list[tuple[float, float]]:
    """The latency histogram of every method together, cumulative, by bound."""
    totals: dict[float, float] = {}
    for labels, value in samples.get("duckserve_request_duration_seconds_bucket", []):
        bound = float(labels.get("le", "inf").replace("+Inf", "inf"))
        totals[bound] = totals.get(bound, 0.0) + value
    return sorted(totals.items())


def source_of(handle: InstanceHandle) -> str:
    """The name an instance's log is remembered under in the event table: its file, which the
    next instance of the same id may go on appending to (then only its new lines are new)."""
    return f"{handle.runtime}:{handle.log_path or handle.name}"


def record(services: Services, service: CatalogObject, kind: str, message: str, **attributes: Any) -> None:
    """Record a lifecycle event; a failure to record is logged, never the operation's failure."""
    try:
        record_event(services.account.home, service, kind, message, attributes)
    except Error as exc:
        logger.warning("could not record event %s of service %s: %s", kind, service.key, exc)


def ingest_instance_logs(services: Services, service: CatalogObject, lines: int | None = LOG_TAIL_LINES,
                         handles: dict[int, InstanceHandle] | None = None) -> int:
    """Record the instances' log lines the event table does not hold yet (all of each log with
    ``lines=None``); how many were recorded."""
    table = event_table(services.account.home)
    resource = Resource.of(service)
    count = 0
    for instance_id, handle in sorted((handles if handles is not None else services.handles(service)).items()):
        try:
            text = runtime_for(handle).logs(handle, lines)
        except (Error, OSError) as exc:
            logger.warning("could not read the log of instance %s of %s: %s", instance_id, service.key, exc)
            continue
        try:
            count += table.ingest_log(resource.at(instance_id, INFERENCE_CONTAINER), source_of(handle), text,
                                      final=lines is None)
        except Error as exc:  # the event table is busy or broken: the service goes on
            logger.warning("could not keep the log of instance %s of %s: %s", instance_id, service.key, exc)
    return count


def ingest_job_log(home: Path, job: CatalogObject) -> int:
    """Record a MODEL_BUILD job's log (its ``model-build`` container, instance 0)."""
    path = Path(job.props.get("log_path") or "")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    resource = Resource.of(job, 0, BUILD_CONTAINER, kind="Job")
    return event_table(home).ingest_log(resource, f"job:{job.key}", text, final=True)


@dataclass
class _Previous:
    """An instance's latency histogram at its previous sample."""

    buckets: list[tuple[float, float]]


class MetricsSampler:
    """Samples services' instances into the event table; keeps each instance's previous latency
    histogram, so percentiles cover the time between two samples (since the instance started on
    its first)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._previous: dict[tuple[str, str], _Previous] = {}
        self._sampled: dict[str, float] = {}  # service key -> when sample_if_stale last sampled it
        self._lock = threading.Lock()

    def sample(self, service: CatalogObject, at: float | None = None, logs: bool = True) -> int:
        """Sample every instance of ``service`` once; the rows written."""
        moment = time.time() if at is None else at
        table = event_table(self.services.account.home)
        resource = Resource.of(service)
        written, ready = 0, 0
        handles = self.services.handles(service)
        with httpx.Client(timeout=SCRAPE_TIMEOUT, trust_env=False) as client:
            for instance_id, handle in sorted(handles.items()):
                url = runtime_for(handle).endpoint(handle)
                if not url:
                    continue
                try:
                    response = client.get(url.rstrip("/") + "/metrics")
                except httpx.HTTPError:
                    continue
                if response.status_code != 200:
                    continue
                parsed = parse_exposition(response.text)
                samples, is_ready = self._instance_samples(f"{source_of(handle)}:{handle.started_at}", parsed)
                ready += is_ready
                written += table.record_metrics(resource.at(instance_id), samples, at=moment)
        written += table.record_metrics(resource, [MetricSample("service.instances.ready", ready)], at=moment)
        if logs:
            ingest_instance_logs(self.services, service, handles=handles)
        return written

    def _instance_samples(self, key: str, parsed: dict[str, list[tuple[dict[str, str], float]]]
                          ) -> tuple[list[MetricSample], bool]:
        out: list[MetricSample] = []

        def value(name: str) -> float | None:
            found = parsed.get(name)
            return found[0][1] if found else None

        for prometheus, name in (("duckserve_requests_total", "inference.requests"),
                                 ("duckserve_rows_total", "inference.rows")):
            for labels, number in parsed.get(prometheus, []):
                out.append(MetricSample(name, number, "1", "sum",
                                        {"method": labels.get("method", ""), "status": labels.get("status", "")}))
        for prometheus, name, kind, unit in (
                ("duckserve_requests_rejected_total", "inference.requests.rejected", "sum", "1"),
                ("duckserve_requests_in_flight", "inference.requests.in_flight", "gauge", "1"),
                ("duckserve_requests_queued", "inference.requests.queued", "gauge", "1"),
                ("duckserve_worker_restarts_total", "inference.worker.restarts", "sum", "1"),
                ("duckserve_model_load_seconds", "model.load.time", "gauge", "s")):
            reading = value(prometheus)
            if reading is not None:
                out.append(MetricSample(name, reading, unit, kind))
        buckets = _latency_buckets(parsed)
        with self._lock:
            previous = self._previous.get((key, ""))
            self._previous[(key, "")] = _Previous(buckets)
        interval = buckets
        if previous is not None and [b for b, _ in previous.buckets] == [b for b, _ in buckets] and \
                all(now >= before for (_, now), (_, before) in zip(buckets, previous.buckets)):
            interval = [(bound, now - before) for (bound, now), (_, before) in zip(buckets, previous.buckets)]
        for label, q in QUANTILES:
            quantile = histogram_quantile(q, interval)
            if quantile is not None:
                out.append(MetricSample(f"inference.latency.{label}", quantile, "s", "gauge"))
        workers, workers_ready = value("duckserve_workers"), value("duckserve_workers_ready")
        ready = workers is not None and workers_ready is not None and workers_ready >= workers
        return out, ready

    def sample_all(self, services: Iterable[CatalogObject] | None = None) -> int:
        """Sample every running service of the account (or those given)."""
        from duckserve.engine import access as A

        chosen = services if services is not None else self.services.account.catalog.objects(A.SERVICE)
        written = 0
        for service in chosen:
            if service.props.get("instances"):
                written += self.sample(service)
        return written

    def sample_if_stale(self, service: CatalogObject) -> int:
        """Sample a running service unless this sampler did less than FRESH_SECONDS ago (samples
        of other processes, the controller's, do not count: they may predate what the caller did)."""
        if not service.props.get("instances") or service.props.get("status") == "SUSPENDED":
            return 0
        now = time.monotonic()
        with self._lock:
            last = self._sampled.get(service.key)
            if last is not None and now - last < FRESH_SECONDS:
                return 0
            self._sampled[service.key] = now
        return self.sample(service)
