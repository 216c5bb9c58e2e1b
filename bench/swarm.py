"""Swarm against the Docker and process runtimes, side by side in one run (1,000,000 rows x 8 floats,
a LogisticRegression, every instance with cpu_requests="2" and memory_requests="4Gi" so that the
three get the same share of this machine):

- create_service to the first answer: on a Docker pool (the image built, or its layers cached), on a
  Swarm pool with the same image already in the registry (what Swarm itself adds: the service, the
  task, the pull by digest, the health check), and on a Swarm pool for a new version (only the model
  layer new);
- SELECT svc!predict(...) throughput on the process runtime, Docker and Swarm (one instance each,
  and Swarm with two replicas), at 1 and 2 DuckDB threads, medians of interleaved rounds, with ratios
  against the process runtime in the same run.

Usage: python bench/swarm.py [--rows N] [--runs K]
(needs a Docker engine that is a swarm manager: `python tests/docker_host.py up` makes one; run it
under `flock /work/.locks/cpu` on a shared machine)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402
    FEATURES,
    data,
    features_table,
    interleaved_medians,
    log_versions,
    runtime_measurements,
    service_query,
    trained,
)

import duckserve  # noqa: E402

REQUESTS = {"cpu_requests": "2", "memory_requests": "4Gi"}


def first_answer(conn: Any, mv: Any, service: str, pool: str, **options: Any) -> float:
    started = time.perf_counter()
    mv.create_service(service_name=service, service_compute_pool=pool, image_repo="bench_images", **REQUESTS,
                      **options)
    conn.execute(f"SELECT {service}!predict({', '.join(FEATURES)}) FROM t LIMIT 1").fetchall()
    return time.perf_counter() - started


def label_node(pool: str, add: bool) -> None:
    from duckserve.engine.runtimes.docker_engine import Engine
    from duckserve.engine.runtimes.swarm import pool_label

    engine = Engine()
    node_id = engine.info()["Swarm"]["NodeID"]
    engine.label_node(node_id, pool_label(pool), add)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from duckserve.engine.runtimes.swarm import SwarmRuntime

    SwarmRuntime().check()
    X, y = data(args.rows)
    model, sample = trained(X, y)
    results: dict[str, float] = {}
    pool = f"BENCH_SWARM_{os.getpid()}"
    services = ("process_svc", "docker_svc", "swarm_svc", "swarm2_svc", "swarm_v2_svc")
    with tempfile.TemporaryDirectory() as work:
        home = Path(work) / "home"
        conn = duckserve.connect(home=str(home))
        conn.cursor().execute(f"""
            CREATE COMPUTE POOL process_pool MIN_NODES = 1 MAX_NODES = 2 INSTANCE_FAMILY = 'CPU_X64_XS' RUNTIME = 'PROCESS';
            CREATE COMPUTE POOL docker_pool MIN_NODES = 1 MAX_NODES = 2 INSTANCE_FAMILY = 'CPU_X64_XS' RUNTIME = 'DOCKER';
            CREATE COMPUTE POOL {pool} MIN_NODES = 1 MAX_NODES = 2 INSTANCE_FAMILY = 'CPU_X64_XS' RUNTIME = 'SWARM';
            CREATE IMAGE REPOSITORY bench_images;
        """)
        label_node(pool, add=True)
        features_table(conn, X)
        v1, v2 = log_versions(conn, model, sample, "v1", "v2")
        try:
            results["Docker: create_service to first answer, image built or layers cached, s"] = first_answer(
                conn, v1, "docker_svc", "docker_pool")
            results["Swarm: create_service to first answer, image in the registry, s"] = first_answer(
                conn, v1, "swarm_svc", pool)
            conn.execute("ALTER SERVICE swarm_svc SUSPEND")   # its reservation (2 CPUs) is this node's
            results["Swarm: create_service to first answer, only the model layer new, s"] = first_answer(
                conn, v2, "swarm_v2_svc", pool)
            conn.execute("DROP SERVICE swarm_v2_svc")
            conn.execute("ALTER SERVICE swarm_svc RESUME")
            results["process: create_service to first answer, environment built, s"] = first_answer(
                conn, v1, "process_svc", "process_pool")
            want = int(model.predict(X).sum())
            measurements = runtime_measurements(conn, want, ("process", "docker", "swarm"))
            timings = interleaved_medians(measurements, {name: args.runs for name in measurements})
            # then two replicas of one core each (cpu_requests = 1; the node holds 2 CPUs of reservations):
            # the client balances over the tasks; against the process runtime again, in rounds
            conn.execute("DROP SERVICE swarm_svc")
            v1.create_service(service_name="swarm2_svc", service_compute_pool=pool, image_repo="bench_images",
                              cpu_requests="1", memory_requests="4Gi", min_instances=2, max_instances=2)
            query = f"SELECT sum(swarm2_svc!predict({', '.join(FEATURES)})) FROM t"
            assert conn.execute(query).fetchone()[0] == want
            second = {}
            for threads in (1, 2):
                second[f"swarm, 2 replicas: svc!predict, XSMALL, {threads} thread(s)"] = service_query(
                    conn, query, "compute_wh", threads)
                second[f"process (again): svc!predict, XSMALL, {threads} thread(s)"] = measurements[
                    f"process: svc!predict, XSMALL, {threads} thread(s)"]
            timings.update(interleaved_medians(second, {name: args.runs for name in second}))
        finally:
            for service in services:
                conn.execute(f"DROP SERVICE IF EXISTS {service}")
            conn.close()
            label_node(pool, add=False)
            from duckserve.engine.images.registry import LocalRegistry
            from duckserve.engine.runtimes.docker_engine import Engine

            local = LocalRegistry(home)
            local.stop()
            engine = Engine()
            for image in engine.images("io.duckserve.build"):  # what Docker and Swarm pulled from this run's registry
                names = (image.get("RepoTags") or []) + (image.get("RepoDigests") or [])
                if any(name.startswith(local.client.host + "/") for name in names):
                    engine.remove_image(image["Id"], force=True)
    print(f"duckserve Swarm bench: {args.rows:,} rows x {len(FEATURES)} floats, LogisticRegression, median of "
          f"{args.runs} rounds, {os.cpu_count()} cores, one-node swarm")
    for name, value in results.items():
        print(f"{name:78} {value:9.2f}")
    for threads in (1, 2):
        process = timings[f"process: svc!predict, XSMALL, {threads} thread(s)"]
        line = [f"svc!predict, {threads} thread(s): process {args.rows / process / 1e6:.2f} M rows/s"]
        for name in ("docker", "swarm"):
            seconds = timings[f"{name}: svc!predict, XSMALL, {threads} thread(s)"]
            line.append(f"{name} {args.rows / seconds / 1e6:.2f} ({process / seconds:.2f}x)")
        again = timings[f"process (again): svc!predict, XSMALL, {threads} thread(s)"]
        seconds = timings[f"swarm, 2 replicas: svc!predict, XSMALL, {threads} thread(s)"]
        line.append(f"swarm 2 replicas {args.rows / seconds / 1e6:.2f} ({again / seconds:.2f}x of process "
                    f"{args.rows / again / 1e6:.2f} in its rounds)")
        print(", ".join(line))
    return 0 if np.isfinite(list(results.values())).all() else 1


if __name__ == "__main__":
    sys.exit(main())
