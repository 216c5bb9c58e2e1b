"""What metrics and events cost: the inference server's counting per request, a scrape of GET
/metrics, writes to the event table, and reading it in SQL as it grows.

(1) ``ServerMetrics.finished`` per request (the request path's added work), and the
    exposition text of a server that has seen 4 methods x 3 statuses;
(2) ``record_metrics`` of one instance's sample (12 rows), one transaction each;
(3) with N rows in the event table (one service's metrics every 5 s, the rest of the rows other
    services'), the seed's troubleshooting query through ``duckserve.connect`` and one service's
    last 10 minutes read the way SPCS_GET_METRICS reads them (``EventTable.rows``).
Medians of --runs rounds. Usage: python bench/telemetry.py [--rows N] [--runs K]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckserve
from duckserve.engine.events import EventTable, MetricSample, Resource
from duckserve.inference_server.metrics import ServerMetrics

SEED_QUERY = """
SELECT RESOURCE_ATTRIBUTES, VALUE FROM SNOWFLAKE.TELEMETRY.EVENTS WHERE true
AND timestamp > dateadd(day, -1, current_timestamp())
AND RESOURCE_ATTRIBUTES:"snow.service.name" = 'SVC_0'
AND RESOURCE_ATTRIBUTES:"snow.service.container.instance" = '0'
ORDER BY timestamp ASC"""


def median_of(function: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def sample(i: int) -> list[MetricSample]:
    return [MetricSample("inference.requests", i, "1", "sum", {"method": "predict", "status": "200"}),
            MetricSample("inference.rows", i * 100, "1", "sum", {"method": "predict", "status": "200"}),
            *[MetricSample(name, 0.0) for name in ("inference.requests.in_flight", "inference.requests.queued",
                                                   "inference.requests.rejected", "inference.worker.restarts",
                                                   "model.load.time", "inference.latency.p50",
                                                   "inference.latency.p95", "inference.latency.p99",
                                                   "service.instances.ready", "inference.requests.x")]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    metrics = ServerMetrics()
    count = 100_000
    started = time.perf_counter()
    for i in range(count):
        metrics.started()
        metrics.finished(("predict", "predict_proba", "explain", "score")[i % 4], (200, 429, 500)[i % 3], 1, 0.0004)
    per_request = (time.perf_counter() - started) / count
    scrape = median_of(lambda: metrics.exposition(), args.runs * 20)
    print(f"(1) counting a request: {per_request * 1e6:.2f} us; exposition: {scrape * 1e3:.3f} ms "
          f"({len(metrics.exposition())} bytes)")

    with tempfile.TemporaryDirectory() as directory:
        home = Path(directory) / "home"
        table = EventTable(home)
        instance = Resource("DUCKSERVE", "PUBLIC", "SVC_0").at(0)
        write = median_of(lambda: table.record_metrics(instance, sample(1)), args.runs * 20)
        print(f"(2) one instance's sample (12 rows), one transaction: {write * 1e3:.2f} ms")

        now = time.time()
        per_sample = len(sample(0))
        samples = args.rows // per_sample
        for j in range(samples):
            service = Resource("DUCKSERVE", "PUBLIC", f"SVC_{j % 10}").at(0)
            table.record_metrics(service, sample(j), at=now - (samples - j) * 0.5)
        table.record_logs(instance, [(now - 60, f"line {k}") for k in range(1000)])
        conn = duckserve.connect(home=str(home))
        cur = conn.cursor()

        def seed_query() -> None:
            cur.execute(SEED_QUERY)
            cur.fetchall()

        query = median_of(seed_query, args.runs)
        window = median_of(lambda: table.rows(service="DUCKSERVE.PUBLIC.SVC_0", record_type="METRIC",
                                              start=now - 600, end=now), args.runs)
        conn.close()
        print(f"(3) {samples * per_sample + 1000:,} rows: the seed's troubleshooting query {query:.3f} s; "
              f"one service's last 10 minutes of metrics {window * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
