"""Services that look after themselves, measured in one run on the process runtime:

(1) overload -> a new instance serves: a MIN 1 / MAX 3 service (50 ms per batch, 1 worker) is hit by
    two query loops of 8 batches in flight each; the seconds from the start of the load until a
    second instance has answered a batch (the controller's look, the decision, the start, the model
    load, the client's re-read), beside the seconds the same instance takes to start by hand
    (ALTER SERVICE ... MIN_INSTANCES = 2, the baseline);
(2) resume from zero -> first answer: a MIN_INSTANCES = 0 service scaled to zero by the controller,
    then one call: the seconds of that call, beside the same call on the warm service (the ratio
    is the cold start's cost);
(2b) the same through the service's ingress (MIN_INSTANCES = 0, ingress_enabled): the seconds of the
    HTTP request that finds no instance and is held while the ingress starts one;
(3) requests failed during a model update under load: two query loops run while ALTER SERVICE ...
    SET MODEL_VERSION moves a 2-instance service between two versions; failed queries and wrong rows
    (target: 0), and the update's seconds.
Each is repeated --runs times; medians. The controller runs with its defaults (a look per second)
except DUCKSERVE_SCALE_TO_ZERO_SECS=2 and a long scale-down cool-down.
Usage: python bench/service_control.py [--runs K]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DUCKSERVE_SCALE_TO_ZERO_SECS", "2")
os.environ.setdefault("DUCKSERVE_SCALE_DOWN_COOLDOWN", "3600")

import pandas as pd  # noqa: E402

import duckserve  # noqa: E402
from duckserve.model import ModelContext  # noqa: E402
from duckserve.registry import Registry  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.custom_models import Busy, Plus  # noqa: E402


def answered(conn: Any, service: str, instance: int) -> int:
    try:
        log = conn.execute(f"CALL SYSTEM$GET_SERVICE_LOGS('{service}', {instance}, 'model-inference')").fetchone()[0]
    except duckserve.errors.Error:
        return 0
    return sum(1 for line in log.splitlines() if "POST /predict rows=" in line and "status=200" in line)


def count_instances(conn: Any, service: str) -> int:
    return len(conn.execute(f"SHOW SERVICE CONTAINERS IN SERVICE {service}").fetchall())


class Loop:
    """Query loops in threads, each on its own connection, counting answers, failures and wrong rows."""

    def __init__(self, home: Path, query: str, check: Any, threads: int = 2, warehouse: str | None = None) -> None:
        self.home, self.query, self.check, self.warehouse = home, query, check, warehouse
        self.stop = threading.Event()
        self.ok = self.failed = self.wrong = 0
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        conn = duckserve.connect(home=str(self.home))
        if self.warehouse:
            conn.execute(f"CREATE WAREHOUSE IF NOT EXISTS {self.warehouse} WAREHOUSE_SIZE = 'MEDIUM'")
            conn.execute(f"USE WAREHOUSE {self.warehouse}")
        try:
            while not self.stop.is_set():
                try:
                    result = conn.execute(self.query).fetchone()
                except Exception as exc:
                    self.failed += 1
                    self.errors.append(str(exc)[:200])
                    continue
                if self.check(result):
                    self.ok += 1
                else:
                    self.wrong += 1
        finally:
            conn.close()

    def __enter__(self) -> Loop:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def wait_for(check: Any, timeout: float = 120.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(every)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as base:
        home = Path(base) / "home"
        conn = duckserve.connect(home=str(home))
        conn.cursor().execute("CREATE COMPUTE POOL bench_pool MIN_NODES = 1 MAX_NODES = 3 INSTANCE_FAMILY = "
                              "'CPU_X64_XS'; CREATE IMAGE REPOSITORY bench_images")
        reg = Registry(conn)
        common = {"service_compute_pool": "bench_pool", "image_repo": "bench_images", "num_workers": 1}
        try:
            # (1) overload -> a new instance serves
            busy = reg.log_model(Busy(ModelContext()), model_name="busy", sample_input_data=pd.DataFrame({"X": [1.0]}))
            busy.create_service(service_name="busy_svc", min_instances=1, max_instances=3, max_batch_rows=100,
                                max_queue=2, **common)
            scale_up, by_hand = [], []
            query = "SELECT sum(busy_svc!predict(range::DOUBLE)) FROM range(2000)"
            for _ in range(args.runs):
                before = answered(conn, "busy_svc", 1)
                started = time.perf_counter()
                with Loop(home, query, lambda r: r[0] == sum(range(2000)) + 2000, warehouse="wide") as loop:
                    wait_for(lambda before=before: answered(conn, "busy_svc", 1) > before)
                    scale_up.append(time.perf_counter() - started)
                assert loop.failed == 0 and loop.wrong == 0, loop.errors[:3]
                conn.execute("ALTER SERVICE busy_svc SET MIN_INSTANCES = 1 MAX_INSTANCES = 1")
                conn.execute("ALTER SERVICE busy_svc SET MIN_INSTANCES = 1 MAX_INSTANCES = 3")
                started = time.perf_counter()
                conn.execute("ALTER SERVICE busy_svc SET MIN_INSTANCES = 2 MAX_INSTANCES = 3")
                by_hand.append(time.perf_counter() - started)
                conn.execute("ALTER SERVICE busy_svc SET MIN_INSTANCES = 1 MAX_INSTANCES = 1")
                conn.execute("ALTER SERVICE busy_svc SET MIN_INSTANCES = 1 MAX_INSTANCES = 3")
            conn.execute("DROP SERVICE busy_svc")

            # (2) resume from zero -> first answer
            artifact = Path(base) / "offset-1.txt"
            artifact.write_text("1")
            mv1 = reg.log_model(Plus(ModelContext(artifacts={"offset": str(artifact)})), model_name="plus",
                                version_name="v1", sample_input_data=pd.DataFrame({"X": [1.0]}))
            mv1.create_service(service_name="zero_svc", min_instances=0, max_instances=1, **common)
            cold, warm = [], []
            call = "SELECT sum(zero_svc!predict(range::DOUBLE)) FROM range(10)"
            for _ in range(args.runs):
                wait_for(lambda: count_instances(conn, "zero_svc") == 0, every=0.2)
                started = time.perf_counter()
                assert conn.execute(call).fetchone()[0] == 55
                cold.append(time.perf_counter() - started)
                started = time.perf_counter()
                assert conn.execute(call).fetchone()[0] == 55
                warm.append(time.perf_counter() - started)
            conn.execute("DROP SERVICE zero_svc")

            # (2b) the same through the ingress: a request held while the ingress starts an instance
            import httpx

            mv1.create_service(service_name="web_zero", min_instances=0, max_instances=1, ingress_enabled=True,
                               **common)
            url = conn.execute("SELECT ingress_url FROM (SHOW ENDPOINTS IN SERVICE web_zero)").fetchone()[0]
            secret = conn.execute("ALTER USER admin ADD PROGRAMMATIC ACCESS TOKEN bench DAYS_TO_EXPIRY = 1"
                                  ).fetchone()[1]
            headers = {"Authorization": f"Bearer {secret}"}
            web_cold, web_warm = [], []
            with httpx.Client(timeout=120, headers=headers) as http:
                def post() -> None:
                    response = http.post(f"http://{url}/predict", json={"data": [[0, 1.0]]})
                    assert response.status_code == 200 and response.json()["data"] == [[0, 2.0]], response.text
                post()
                for _ in range(args.runs):
                    wait_for(lambda: count_instances(conn, "web_zero") == 0, every=0.2)
                    started = time.perf_counter()
                    post()
                    web_cold.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    post()
                    web_warm.append(time.perf_counter() - started)
            conn.execute("DROP SERVICE web_zero")

            # (3) a model update under load
            artifact2 = Path(base) / "offset-2.txt"
            artifact2.write_text("2")
            reg.log_model(Plus(ModelContext(artifacts={"offset": str(artifact2)})), model_name="plus",
                          version_name="v2", sample_input_data=pd.DataFrame({"X": [1.0]}))
            mv1.create_service(service_name="upd_svc", min_instances=2, max_instances=2, max_batch_rows=2000,
                               **common)
            n = 20_000
            query = (f"SELECT count(*), count(*) FILTER (WHERE y - x IN (1, 2)) FROM (SELECT range::DOUBLE AS x, "
                     f"upd_svc!predict(range::DOUBLE) AS y FROM range({n}))")
            updates, failed, wrong, during = [], 0, 0, 0
            for run in range(args.runs):
                with Loop(home, query, lambda r: r == (n, n)) as loop:
                    wait_for(lambda: loop.ok >= 2)
                    ok_before = loop.ok + loop.failed + loop.wrong
                    started = time.perf_counter()
                    conn.execute(f"ALTER SERVICE upd_svc SET MODEL_VERSION = '{'V2' if run % 2 == 0 else 'V1'}'")
                    updates.append(time.perf_counter() - started)
                    done = loop.ok + loop.failed + loop.wrong
                    wait_for(lambda done=done: loop.ok + loop.failed + loop.wrong >= done + 2)
                during += done - ok_before
                failed += loop.failed
                wrong += loop.wrong
                if loop.errors:
                    print("errors:", loop.errors[:3], file=sys.stderr)
            conn.execute("DROP SERVICE upd_svc")
        finally:
            for row in conn.execute("SHOW SERVICES EXCLUDE JOBS").fetchall():
                conn.execute(f"DROP SERVICE IF EXISTS {row[0]}")
            conn.close()
    med = statistics.median
    print(f"runs: {args.runs} (medians)")
    print(f"(1) overload -> new instance serves: {med(scale_up):.2f} s "
          f"(starting one by hand with ALTER SERVICE: {med(by_hand):.2f} s; ratio {med(scale_up) / med(by_hand):.2f})")
    print(f"(2) resume from zero -> first answer: {med(cold):.2f} s (warm call {med(warm) * 1000:.1f} ms; "
          f"ratio {med(cold) / med(warm):.0f}x)")
    print(f"(2b) the same through the ingress (one HTTP request): {med(web_cold):.2f} s (warm request "
          f"{med(web_warm) * 1000:.1f} ms)")
    print(f"(3) model update under load: {failed} failed queries, {wrong} with wrong rows, of {during} queries "
          f"that ran during {len(updates)} updates (update {med(updates):.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
