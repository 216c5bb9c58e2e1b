"""duckserve's benchmark: 1,000,000 rows x 8 float features, a LogisticRegression, in one run.

(a) model.predict on the numpy array (the floor);
(b) a vectorized DuckDB Python UDF calling predict in-process (what a user writes by hand), at 1 and
    2 DuckDB threads, best reported;
(c) SELECT svc!predict(...) through duckserve at warehouse XSMALL and MEDIUM, Arrow IPC on the wire,
    at 1 and 2 DuckDB threads like (b), and the JSON-only wire at XSMALL;
plus the time from create_service to the first answer of a query, for a new environment (uv's cache
warm) and for a second service whose environment is built already.

Every figure is the median of RUNS runs, taken in rounds (a run of each measurement per round) so
that the machine's slow spells fall on all of them alike; ratios are against (b) measured in the
same run.
Usage: python bench/run.py [--rows N] [--runs K]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from duckdb.func import ARROW
from sklearn.linear_model import LogisticRegression

import duckserve
from duckserve.registry import Registry

FEATURES = [f"f{i}" for i in range(8)]


def interleaved_medians(measurements: dict[str, Callable[[], Any]], runs: dict[str, int]) -> dict[str, float]:
    """Median seconds of each measurement, taken in rounds (one run of each per round) so that a
    slow spell of the machine weighs on all of them alike, not on whichever ran during it."""
    timings: dict[str, list[float]] = {name: [] for name in measurements}
    for function in measurements.values():
        function()  # warm-up
    for round_number in range(max(runs.values())):
        for name, function in measurements.items():
            if round_number >= runs[name]:
                continue
            started = time.perf_counter()
            function()
            timings[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in timings.items()}


def data(rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(rows, len(FEATURES)))
    y = (X @ rng.normal(size=len(FEATURES)) > 0).astype(np.int64)
    return X, y


def trained(X: np.ndarray, y: np.ndarray) -> tuple[LogisticRegression, pd.DataFrame]:
    """The benchmarks' model (fitted on the first 50,000 rows) and its sample input (10 rows, under the
    upper-case names of its signature)."""
    model = LogisticRegression(max_iter=200).fit(X[:50_000], y[:50_000])
    return model, pd.DataFrame(X[:10], columns=[c.upper() for c in FEATURES])


def features_table(conn: Any, X: np.ndarray) -> None:
    """The rows as table ``t`` (columns f0 ... f7) of a duckserve connection."""
    conn.duckdb.register("frame", pd.DataFrame(X, columns=FEATURES))
    conn.execute("CREATE TABLE t AS SELECT * FROM frame")


def log_versions(conn: Any, model: Any, sample: pd.DataFrame, *versions: str) -> list[Any]:
    """The model logged as ``bench_model``, once per version name."""
    registry = Registry(conn)
    return [registry.log_model(model, model_name="bench_model", version_name=version, sample_input_data=sample)
            for version in versions]


def in_process_udf(X: np.ndarray, model: LogisticRegression, threads: int) -> Callable[[], Any]:
    """(b): what a user writes by hand, on its own DuckDB connection."""
    con = duckdb.connect()
    con.register("frame", pd.DataFrame(X, columns=FEATURES))
    con.execute("CREATE TABLE t AS SELECT * FROM frame")

    def predict(f0: pa.ChunkedArray, f1: pa.ChunkedArray, f2: pa.ChunkedArray, f3: pa.ChunkedArray,
                f4: pa.ChunkedArray, f5: pa.ChunkedArray, f6: pa.ChunkedArray, f7: pa.ChunkedArray) -> pa.Array:
        columns = (f0, f1, f2, f3, f4, f5, f6, f7)
        matrix = np.column_stack([c.to_numpy() for c in columns])
        return pa.array(model.predict(matrix))

    con.create_function("predict", predict, [duckdb.sqltype("DOUBLE")] * len(FEATURES), duckdb.sqltype("BIGINT"),
                        type=ARROW)
    con.execute(f"SET threads = {threads}")
    query = f"SELECT sum(predict({', '.join(FEATURES)})) FROM t"
    return lambda: con.execute(query).fetchall()


def service_query(conn: Any, query: str, warehouse: str, threads: int, wire: str = "arrow") -> Callable[[], Any]:
    """(c): the same query through duckserve, on a warehouse, at a DuckDB thread count, over one wire form."""
    def run() -> Any:
        conn.execute(f"USE WAREHOUSE {warehouse}")
        conn.execute(f"SET threads = {threads}")
        os.environ["DUCKSERVE_WIRE"] = wire
        try:
            return conn.execute(query).fetchall()
        finally:
            del os.environ["DUCKSERVE_WIRE"]
    return run


def runtime_measurements(conn: Any, want: int, runtimes: Sequence[str]) -> dict[str, Callable[[], Any]]:
    """For each runtime, ``SELECT sum(<runtime>_svc!predict(...)) FROM t`` on XSMALL at 1 and 2 DuckDB
    threads, its answer checked against the model's (``want``) first."""
    measurements: dict[str, Callable[[], Any]] = {}
    for name in runtimes:
        query = f"SELECT sum({name}_svc!predict({', '.join(FEATURES)})) FROM t"
        assert conn.execute(query).fetchone()[0] == want, f"{name} answers differ from the model's"
        for threads in (1, 2):
            measurements[f"{name}: svc!predict, XSMALL, {threads} thread(s)"] = service_query(
                conn, query, "compute_wh", threads)
    return measurements


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows, runs = args.rows, args.runs
    X, y = data(rows)
    model, sample = trained(X, y)
    measurements: dict[str, Callable[[], Any]] = {"(a) model.predict on numpy": lambda: model.predict(X)}
    for threads in (1, 2):
        measurements[f"(b) in-process DuckDB UDF, {threads} thread(s)"] = in_process_udf(X, model, threads)

    with tempfile.TemporaryDirectory() as home:
        conn = duckserve.connect(home=home)
        conn.cursor().execute("""
            CREATE COMPUTE POOL bench_pool MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_S';
            CREATE IMAGE REPOSITORY bench_images;
            CREATE WAREHOUSE medium_wh WAREHOUSE_SIZE = 'MEDIUM';
            USE WAREHOUSE compute_wh;
        """)
        features_table(conn, X)
        mv = Registry(conn).log_model(model, model_name="bench_model", sample_input_data=sample)
        started = time.perf_counter()
        mv.create_service(service_name="bench_svc", service_compute_pool="bench_pool", image_repo="bench_images")
        conn.execute(f"SELECT bench_svc!predict({', '.join(FEATURES)}) FROM t LIMIT 1").fetchall()
        first_answer = time.perf_counter() - started
        # a second service of the same model: its environment is built already
        started = time.perf_counter()
        mv.create_service(service_name="bench_svc2", service_compute_pool="bench_pool", image_repo="bench_images")
        conn.execute(f"SELECT bench_svc2!predict({', '.join(FEATURES)}) FROM t LIMIT 1").fetchall()
        second_answer = time.perf_counter() - started
        conn.execute("DROP SERVICE bench_svc2")
        query = f"SELECT sum(bench_svc!predict({', '.join(FEATURES)})) FROM t"
        want = int(model.predict(X).sum())
        assert conn.execute(query).fetchone()[0] == want, "service answers differ from the model's"
        for size, warehouse in (("XSMALL", "compute_wh"), ("MEDIUM", "medium_wh")):
            for threads in (1, 2):
                measurements[f"(c) SELECT svc!predict(...), {size}, Arrow, {threads} thread(s)"] = service_query(
                    conn, query, warehouse, threads)
        json_label = "(c) SELECT svc!predict(...), XSMALL, JSON only, 2 thread(s)"
        measurements[json_label] = service_query(conn, query, "compute_wh", 2, wire="json")
        counts = {name: runs for name in measurements}
        counts[json_label] = max(1, runs // 2)  # ~10 s a run
        results = interleaved_medians(measurements, counts)
        results["create_service to first answer, new environment (warm uv cache), s"] = first_answer
        results["create_service to first answer, environment already built, s"] = second_answer
        conn.execute("DROP SERVICE bench_svc")
        conn.close()
    udf = {t: results[f"(b) in-process DuckDB UDF, {t} thread(s)"] for t in (1, 2)}
    best_threads = min(udf, key=lambda t: udf[t])
    baseline = udf[best_threads]

    print(f"duckserve bench: {rows:,} rows x {len(FEATURES)} floats, LogisticRegression, median of {runs} runs, "
          f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, DuckDB {duckdb.__version__}")
    print(f"{'measurement':68} {'seconds':>9} {'M rows/s':>9} {'vs (b) best':>11}")
    for name, seconds in results.items():
        if name.startswith("create_service"):
            print(f"{name:68} {seconds:9.2f}")
            continue
        print(f"{name:68} {seconds:9.3f} {rows / seconds / 1e6:9.2f} {baseline / seconds:10.2f}x")
    print(f"(b) best is {best_threads} thread(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
