"""How fast the web console's pages load with hundreds of services.

An account gets one real service (a running instance) and N more services written into its
catalog as copies of it: a third of them share the real service's instance (so they read as
RUNNING and their status is probed like any running service's), the rest SUSPENDED. ``duckserve
ui`` serves it; the figures, each the median of ``--runs`` rounds:

  (a) ``SHOW SERVICES`` on a local connection (the SQL the services page runs), the baseline;
  (b) ``GET /api/services`` (that SQL, through the console's session, as JSON over HTTP);
  (c) headless Chromium: from navigation to the services page's first 100 rows on screen;
  (d) the same for one service's page and for the compute pools page.

    python bench/console.py [--services 300] [--runs 7]
"""

from __future__ import annotations

import argparse
import copy
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckserve  # noqa: E402
from duckserve.engine import access as A  # noqa: E402
from duckserve.engine.account import Account  # noqa: E402
from duckserve.engine.catalog import CatalogObject  # noqa: E402
from duckserve.model import CustomModel, ModelContext, inference_api  # noqa: E402
from duckserve.registry import Registry  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class Double(CustomModel):
    @inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"Y": X["X"] * 2})


def build_account(home: Path, services: int) -> None:
    with duckserve.connect(home=str(home)) as conn:
        conn.execute("CREATE COMPUTE POOL bench_pool MIN_NODES = 1 MAX_NODES = 10 INSTANCE_FAMILY = 'CPU_X64_XS'; "
                     "CREATE IMAGE REPOSITORY bench_images")
        mv = Registry(conn).log_model(Double(ModelContext()), model_name="bench_model",
                                      sample_input_data=pd.DataFrame({"X": [1.0]}))
        mv.create_service(service_name="bench_svc_real", service_compute_pool="bench_pool", image_repo="bench_images",
                          num_workers=1)
    account = Account(home)
    real = account.catalog.objects(A.SERVICE)[0]
    with account.catalog.transaction():
        for i in range(services):
            props = copy.deepcopy(real.props)
            if i % 3:
                props.update(status="SUSPENDED", instances=[])
            account.catalog.insert(CatalogObject(A.SERVICE, f"BENCH_SVC_{i:04d}", owner=real.owner,
                                                 database=real.database, schema=real.schema, props=props))
    account.catalog.close()


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=300)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="duckserve-bench-console-"))
    home = base / "home"
    started = time.perf_counter()
    build_account(home, args.services)
    print(f"account with {args.services + 1} services built in {time.perf_counter() - started:.1f} s")
    port_file = base / "port"
    server = subprocess.Popen([sys.executable, "-m", "duckserve", "ui", "--home", str(home), "--port", "0",
                               "--port-file", str(port_file)], stdout=subprocess.PIPE, text=True)
    try:
        link = ""
        while not link:
            line = server.stdout.readline() if server.stdout else ""
            if not line:
                raise SystemExit("duckserve ui exited before printing its link")
            found = re.search(r"open (http://\S+)", line)
            link = found.group(1) if found else ""
        url = link.split("?")[0]
        key = link.split("key=")[1]
        sql, api, pages = [], [], {"services": [], "service": [], "pools": []}
        with duckserve.connect(home=str(home)) as conn, \
                httpx.Client(base_url=url, headers={"X-Duckserve-Console": "1"}, trust_env=False, timeout=60) as client:
            client.post("/api/session/local", json={"key": key}).raise_for_status()
            count = len(client.get("/api/services").json()["data"]["services"])
            assert count == args.services + 1, count
            for _ in range(args.runs):
                t = time.perf_counter()
                conn.execute("SHOW SERVICES").fetchall()
                sql.append(time.perf_counter() - t)
                t = time.perf_counter()
                client.get("/api/services").raise_for_status()
                api.append(time.perf_counter() - t)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1360, "height": 860})
            page.goto(link)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_selector("[data-testid=services-table]")
            targets = {
                "services": ("#/services", f"[data-testid=services-table] tbody tr:nth-child({min(100, count)})"),
                "service": ("#/services/DUCKSERVE.PUBLIC.BENCH_SVC_0000", "text=PREDICT(X DOUBLE) RETURN DOUBLE"),
                "pools": ("#/pools", f"text=BENCH_SVC_{args.services - 1:04d}"),
            }
            for _ in range(args.runs):
                for name, (route, selector) in targets.items():
                    page.goto("about:blank")
                    t = time.perf_counter()
                    page.goto(url + route)
                    page.wait_for_selector(selector, timeout=60_000)
                    pages[name].append(time.perf_counter() - t)
            browser.close()
        print(f"(a) SHOW SERVICES, local connection:              {median_ms(sql)}")
        print(f"(b) GET /api/services ({args.services + 1} services):           {median_ms(api)}"
              f"  ({statistics.median(api) / statistics.median(sql):.2f}x (a))")
        print(f"(c) services page, navigation to its rows shown:  {median_ms(pages['services'])}")
        print(f"(d) a service's page, to its functions shown:     {median_ms(pages['service'])}")
        print(f"    compute pools page, to every service listed:  {median_ms(pages['pools'])}")
    finally:
        server.terminate()
        server.wait(10)
        with duckserve.connect(home=str(home)) as conn:
            conn.execute("DROP SERVICE IF EXISTS bench_svc_real")
    return 0


if __name__ == "__main__":
    sys.exit(main())
