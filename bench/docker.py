"""Docker against the process runtime, side by side in one run (1,000,000 rows x 8 floats, a
LogisticRegression):

- create_service to the first answer on a Docker pool: with the base image cached and uv's cache
  warm but every other layer new (a fresh layer cache, a fresh registry, no duckserve image in
  Docker), then for a second version with the same dependencies (only the model layer is new);
- the image's size (its layers, uncompressed, as Docker counts it);
- SELECT svc!predict(...) throughput on Docker and on the process runtime, medians of interleaved
  rounds, and their ratio.

Usage: python bench/docker.py [--rows N] [--runs K]   (needs a Docker engine and docker-registry)
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import FEATURES, data, interleaved_medians, service_query  # noqa: E402

import duckserve  # noqa: E402
from duckserve.registry import Registry  # noqa: E402


def fresh_cache_with_the_base(cache: Path) -> None:
    """A new layer cache holding only the base image (built once per machine), and no image duckserve
    built left in Docker, so every other layer is built, pushed and pulled anew."""
    from duckserve.engine.images.base import base_image
    from duckserve.engine.images.layers import cache_dir
    from duckserve.engine.runtimes.docker_engine import Engine

    engine = Engine()
    old = cache_dir()
    base = base_image(engine, io.StringIO())  # builds it in the old cache if this machine has none
    sources = {layer.digest: layer.path for layer in base.layers}
    os.environ["DUCKSERVE_CACHE_DIR"] = str(cache)
    for record in (old / "base").glob("*.json"):
        (cache_dir() / "base").mkdir(parents=True, exist_ok=True)
        shutil.copy(record, cache_dir() / "base" / record.name)
    for digest, source in sources.items():
        target = cache_dir() / "blobs" / "sha256" / digest.split(":")[1]
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copyfile(source, target)
    for image in engine.images("io.duckserve.build"):
        engine.remove_image(image["Id"], force=True)


def first_answer(conn: Any, mv: Any, service: str, pool: str, notes: list[str] | None = None) -> float:
    started = time.perf_counter()
    summary = mv.create_service(service_name=service, service_compute_pool=pool, image_repo="bench_images")
    conn.execute(f"SELECT {service}!predict({', '.join(FEATURES)}) FROM t LIMIT 1").fetchall()
    seconds = time.perf_counter() - started
    if notes is not None and summary.get("build_job"):  # what the build sent to Docker (fewer: a layer was there)
        log = conn.execute(f"CALL SYSTEM$GET_SERVICE_LOGS('{summary['build_job']}', 0, 'model-build')").fetchone()[0]
        notes += [f"{service}: {line.split(' ', 1)[1]}" for line in log.splitlines() if "local Docker engine" in line]
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    X, y = data(args.rows)
    model = LogisticRegression(max_iter=200).fit(X[:50_000], y[:50_000])
    sample = pd.DataFrame(X[:10], columns=[c.upper() for c in FEATURES])
    results: dict[str, float] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as work:
        fresh_cache_with_the_base(Path(work) / "cache")
        home = Path(work) / "home"
        conn = duckserve.connect(home=str(home))
        conn.cursor().execute("""
            CREATE COMPUTE POOL docker_pool MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_S' RUNTIME = 'DOCKER';
            CREATE COMPUTE POOL process_pool MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_S' RUNTIME = 'PROCESS';
            CREATE IMAGE REPOSITORY bench_images;
        """)
        conn.duckdb.register("frame", pd.DataFrame(X, columns=FEATURES))
        conn.execute("CREATE TABLE t AS SELECT * FROM frame")
        reg = Registry(conn)
        v1 = reg.log_model(model, model_name="bench_model", version_name="v1", sample_input_data=sample)
        v2 = reg.log_model(model, model_name="bench_model", version_name="v2", sample_input_data=sample)
        try:
            results["Docker: create_service to first answer, base cached, other layers new, s"] = first_answer(
                conn, v1, "docker_svc", "docker_pool", notes)
            results["Docker: create_service to first answer, only the model layer new, s"] = first_answer(
                conn, v2, "docker_v2_svc", "docker_pool", notes)
            conn.execute("DROP SERVICE docker_v2_svc")
            results["process: create_service to first answer, new environment, s"] = first_answer(
                conn, v1, "process_svc", "process_pool")
            image = [i for i in conn.execute("SHOW IMAGES IN IMAGE REPOSITORY bench_images").fetchall()]
            sizes = {row[2].split("-")[0]: row[4] for row in image}
            digests = {row[2].split("-")[0]: row[3] for row in image}
            results["Docker: image size (layers, uncompressed), MB"] = sizes["v1"] / 1e6
            want = int(model.predict(X).sum())
            measurements = {}
            for runtime in ("process", "docker"):
                query = f"SELECT sum({runtime}_svc!predict({', '.join(FEATURES)})) FROM t"
                assert conn.execute(query).fetchone()[0] == want, f"{runtime} answers differ from the model's"
                for threads in (1, 2):
                    measurements[f"{runtime}: svc!predict, XSMALL, {threads} thread(s)"] = service_query(
                        conn, query, "compute_wh", threads)
            timings = interleaved_medians(measurements, {name: args.runs for name in measurements})
        finally:
            for service in ("docker_svc", "process_svc"):
                conn.execute(f"DROP SERVICE IF EXISTS {service}")
            conn.close()
            from duckserve.engine.images.registry import LocalRegistry

            LocalRegistry(home).stop()
    print(f"duckserve Docker bench: {args.rows:,} rows x {len(FEATURES)} floats, LogisticRegression, median of "
          f"{args.runs} rounds, {os.cpu_count()} cores")
    for name, value in results.items():
        print(f"{name:78} {value:9.2f}")
    print(f"Docker: image digest (the same inputs give the same one) {digests['v1']}")
    for note in notes:
        print(note)
    for threads in (1, 2):
        process = timings[f"process: svc!predict, XSMALL, {threads} thread(s)"]
        docker = timings[f"docker: svc!predict, XSMALL, {threads} thread(s)"]
        print(f"svc!predict, {threads} thread(s): process {args.rows / process / 1e6:.2f} M rows/s, Docker "
              f"{args.rows / docker / 1e6:.2f} M rows/s, Docker/process {process / docker:.2f}x")
    return 0 if np.isfinite(list(results.values())).all() else 1


if __name__ == "__main__":
    sys.exit(main())
