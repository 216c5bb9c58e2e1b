"""The Snowflake-protocol server's overhead: Snowflake's own connector against a local connection.

A real ``duckserve server`` process on loopback, reached by the unmodified
snowflake-connector-python (token login, ``protocol="http"``), against ``duckserve.connect`` in
this process, on the same work in the same run:

(1) a 1,000,000-row x 3-column ``SELECT`` (BIGINT, DOUBLE, VARCHAR) read with ``fetchall``;
(2) the same result read with ``fetch_pandas_all``;
(3) ``SELECT id, svc!predict(f1, f2, f3)`` over 1,000,000 rows (a scikit-learn model deployed as a
    service of the account both sides use), read with ``fetch_pandas_all``.

The server and the local connection each have their own DuckDB file holding the same tables (a
DuckDB file is opened by one process at a time). Rounds of one run of each measurement, the
figure is the median; the ratio is local time / connector time (1.0: no overhead; the target for
(1) and (2) is at least 0.5). Run it under the shared CPU lock:

    flock /work/.locks/cpu .venv/bin/python bench/snowflake_server.py [--rows N] [--runs K]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import interleaved_medians  # noqa: E402

import duckserve  # noqa: E402
from duckserve.registry import Registry  # noqa: E402

# the connector probes cloud metadata addresses at login; nothing outside this machine is reached
os.environ["SNOWFLAKE_DISABLE_PLATFORM_DETECTION"] = "true"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

BIG = "SELECT range AS i, range * 1.5 AS f, 'row ' || range AS s FROM range({rows})"
FEATURES = ("SELECT range AS id, (range % 101) / 101.0 AS f1, (range % 37) / 37.0 AS f2, "
            "(range % 13) / 13.0 AS f3 FROM range({rows})")


def start_server(home: Path, database: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = workdir / "server.port"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - the server's log, kept while it runs
    process = subprocess.Popen([sys.executable, "-m", "duckserve.fronts.snowflake.server", "--home", str(home),
                                "--database", str(database), "--port", "0", "--port-file", str(port_file)],
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    with httpx.Client(trust_env=False, timeout=5.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"the server exited: {(workdir / 'server.log').read_text()}")
            text = port_file.read_text().strip() if port_file.exists() else ""
            if text:
                try:
                    if client.get(f"http://127.0.0.1:{text}/healthz").status_code == 200:
                        return process, int(text)
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
    process.terminate()
    raise SystemExit("the server was not ready within 60 s")


def deploy(home: Path) -> str:
    """A LogisticRegression on 3 floats, logged and deployed through the local API."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.uniform(size=(400, 3)), columns=["F1", "F2", "F3"])
    y = (X["F1"] + X["F2"] * 0.5 - X["F3"] > 0.3).astype(int)
    with duckserve.connect(home=str(home)) as local:
        local.execute("CREATE COMPUTE POOL IF NOT EXISTS bench_pool MIN_NODES = 1 MAX_NODES = 1 "
                      "INSTANCE_FAMILY = 'CPU_X64_S'; CREATE IMAGE REPOSITORY IF NOT EXISTS bench_images")
        mv = Registry(local).log_model(LogisticRegression().fit(X, y), model_name="bench_model", sample_input_data=X)
        mv.create_service(service_name="bench_svc", service_compute_pool="bench_pool", image_repo="bench_images",
                          max_instances=1)
    return "bench_svc"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import snowflake.connector

    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        home = base / "home"
        with duckserve.connect(home=str(home)) as conn:
            token = str(conn.execute("ALTER USER admin ADD PROGRAMMATIC ACCESS TOKEN bench").fetchall()[0][1])
        service = deploy(home)
        process, port = start_server(home, base / "served.duckdb", base)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                remote = snowflake.connector.connect(host="127.0.0.1", port=port, protocol="http",
                                                     account="duckserve", user="ADMIN",
                                                     authenticator="PROGRAMMATIC_ACCESS_TOKEN", token=token)
            local = duckserve.connect(str(base / "local.duckdb"), home=str(home))
            for setup in (f"CREATE TABLE big AS {BIG.format(rows=args.rows)}",
                          f"CREATE TABLE feats AS {FEATURES.format(rows=args.rows)}"):
                remote.cursor().execute(setup)
                local.execute(setup)
            select = "SELECT i, f, s FROM big"
            predict = f"SELECT id, {service}!predict(f1, f2, f3) AS label FROM feats"

            def via(connection: Any) -> Callable[[str, bool], Any]:
                def fetch(sql: str, pandas: bool) -> Any:
                    cursor = connection.cursor()
                    cursor.execute(sql)
                    result = cursor.fetch_pandas_all() if pandas else cursor.fetchall()
                    assert len(result) == args.rows, len(result)
                    return result
                return fetch

            via_connector, via_local = via(remote), via(local)

            # the answers agree before anything is timed
            answers = [side(predict, True).sort_values("id")["label"].tolist() for side in (via_connector, via_local)]
            assert answers[0] == answers[1] and 0 < sum(answers[0]) < args.rows
            measurements = {
                "select fetchall, connector": lambda: via_connector(select, False),
                "select fetchall, local": lambda: via_local(select, False),
                "select fetch_pandas_all, connector": lambda: via_connector(select, True),
                "select fetch_pandas_all, local": lambda: via_local(select, True),
                "svc!predict fetch_pandas_all, connector": lambda: via_connector(predict, True),
                "svc!predict fetch_pandas_all, local": lambda: via_local(predict, True),
            }
            medians = interleaved_medians(measurements, dict.fromkeys(measurements, args.runs))
            remote.close()
            with duckserve.connect(home=str(home)) as conn:
                conn.execute(f"DROP SERVICE IF EXISTS {service}")
            local.close()
        finally:
            process.terminate()
            process.wait(timeout=30)

    print(f"{args.rows:,} rows, medians of {args.runs} runs (seconds; ratio = local / connector, 1.0 = no overhead)")
    print(f"{'measurement':<36} {'connector':>10} {'local':>10} {'ratio':>7} {'connector rows/s':>17}")
    for name in ("select fetchall", "select fetch_pandas_all", "svc!predict fetch_pandas_all"):
        connector, plain = medians[f"{name}, connector"], medians[f"{name}, local"]
        print(f"{name:<36} {connector:>10.3f} {plain:>10.3f} {plain / connector:>7.2f} {args.rows / connector:>17,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
