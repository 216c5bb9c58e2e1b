"""GET /metrics of a real inference server: Prometheus text that a strict reader accepts, whose
counters follow the requests sent (rows, statuses, 429s, latency), summed over worker processes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from duckserve.inference_server.handlers import save_package
from duckserve.model import ModelContext
from tests import prometheus_text
from tests.custom_models import Sleeper
from tests.servers import Server, start_inference_server

pytestmark = pytest.mark.xdist_group("server")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sleeper")
    save_package(Sleeper(ModelContext()), root / "pkg", name="sleeper", version="v1",
                 sample_input=pd.DataFrame({"x": [1.0], "seconds": [0.0]}))
    return root / "pkg"


def scrape(server: Server) -> dict[str, prometheus_text.Family]:
    response = httpx.get(server.url + "/metrics", timeout=10, trust_env=False)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return prometheus_text.parse(response.text)


def post(server: Server, rows: list[list[float]], client: httpx.Client | None = None) -> httpx.Response:
    body = json.dumps({"data": [[i, *r] for i, r in enumerate(rows)]})
    sender = client or httpx.Client(trust_env=False, timeout=30)
    try:
        return sender.post(server.url + "/double", content=body, headers={"content-type": "application/json"})
    finally:
        if client is None:
            sender.close()


def test_strict_reader_refuses_what_prometheus_refuses() -> None:
    for bad in ("x 1", "# TYPE x counter\nx{a=b} 1\n", "# TYPE x counter\nx 1 2 3\n", "# TYPE x gauge\nx_bucket 1\n",
                "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n"):
        with pytest.raises(ValueError):
            prometheus_text.parse(bad if bad.endswith("\n") else bad)


def test_metrics_count_requests_rows_latency_and_rejections(package: Path, tmp_path: Path) -> None:
    server = start_inference_server(package, tmp_path, "metrics", extra=["--max-queue", "1"])
    try:
        before = scrape(server)
        assert before["duckserve_requests_total"].samples == []
        assert before["duckserve_requests_in_flight"].value() == 0
        assert before["duckserve_worker_restarts_total"].value() == 0
        assert before["duckserve_workers_ready"].value() == 1
        assert before["duckserve_model_load_seconds"].value() > 0

        with httpx.Client(trust_env=False, timeout=30) as client:
            for _ in range(3):
                assert post(server, [[1.0, 0.0]] * 5, client).status_code == 200
            assert client.post(server.url + "/double", content=b"{not json",
                               headers={"content-type": "application/json"}).status_code == 400
            assert client.post(server.url + "/nope", content=b"{}").status_code == 404
        after = scrape(server)
        requests, rows = after["duckserve_requests_total"], after["duckserve_rows_total"]
        assert requests.value(method="double", status="200") == 3
        assert rows.value(method="double", status="200") == 15
        assert requests.value(method="double", status="400") == 1
        assert requests.value(method="unknown", status="404") == 1
        latency = after["duckserve_request_duration_seconds"]
        assert latency.kind == "histogram"
        assert latency.total("_count", method="double") == 4
        assert 0 < latency.total("_sum", method="double") < 10

        # a slow call holds the model; while it runs it is in flight, and admission turns the surplus away
        slow = threading.Thread(target=post, args=(server, [[1.0, 1.5]]))
        slow.start()
        deadline = time.monotonic() + 10
        while scrape(server)["duckserve_requests_in_flight"].value() < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        results: list[int] = []
        waiting = [threading.Thread(target=lambda: results.append(post(server, [[1.0, 0.5]]).status_code))
                   for _ in range(4)]
        for thread in waiting:
            thread.start()
        time.sleep(0.3)
        during = scrape(server)
        assert during["duckserve_requests_queued"].value() >= 1, during["duckserve_requests_queued"].samples
        for thread in [slow, *waiting]:
            thread.join()
        refused = results.count(429)
        assert refused >= 1 and refused + results.count(200) == 4, results
        final = scrape(server)
        assert final["duckserve_requests_rejected_total"].value() == refused
        assert final["duckserve_requests_total"].value(method="double", status="429") == refused
        assert final["duckserve_requests_in_flight"].value() == 0
        assert final["duckserve_requests_queued"].value() == 0
        assert final["duckserve_request_duration_seconds"].total("_bucket", method="double", le="1") < \
            final["duckserve_request_duration_seconds"].total("_count", method="double")
    finally:
        server.stop()
    assert "/metrics" not in server.log()  # scrapes are not request lines


def test_metrics_add_up_every_worker_and_count_restarts(package: Path, tmp_path: Path) -> None:
    server = start_inference_server(package, tmp_path, "workers", extra=["--workers", "2"])
    # start_inference_server passes --workers 1 first; the last one given wins
    try:
        ready = httpx.get(server.url + "/ready", trust_env=False).json()
        assert ready["workers"] == 2, ready
        pids = set()
        for _ in range(40):  # a connection each: the kernel spreads them over the workers
            with httpx.Client(trust_env=False, timeout=30) as client:
                pids.add(client.get(server.url + "/healthz").json()["pid"])
                assert post(server, [[2.0, 0.0]] * 3, client).status_code == 200
        assert len(pids) == 2, "both workers should have answered some requests"
        time.sleep(1.2)  # each worker shares its counters within FLUSH_SECONDS
        for _ in range(4):  # whichever worker answers the scrape, the sum is the same
            families = scrape(server)
            assert families["duckserve_requests_total"].value(method="double", status="200") == 40
            assert families["duckserve_rows_total"].value(method="double", status="200") == 120
            assert families["duckserve_workers"].value() == 2
        os.kill(next(iter(pids)), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            try:
                families = scrape(server)
                if families["duckserve_worker_restarts_total"].value() == 1 and \
                        families["duckserve_workers_ready"].value() == 2:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        # the killed worker's requests stay counted: a counter never goes down while the server lives
        assert families["duckserve_requests_total"].value(method="double", status="200") == 40
    finally:
        server.stop()
