"""Docker against the process runtime, side by side in one run (1,000,000 rows x 8 floats, a
LogisticRegression):

- create_service to the first answer on a Docker pool: with the base image cached and uv's cache
  warm but every other layer new (a fresh layer cache, a fresh registry, no duckserve image in
  Docker), then for a second version with the same dependencies (only the model layer is new);
- the image's size (its layers, uncompressed, as Docker counts it);
- SELECT svc!predict(...) throughput on Docker and on the process runtime, in paired rounds (each
  round runs both, in alternating order), with the median of the rounds' ratios (a slow spell of a
  shared machine falls on both queries of a round alike) and each side's CPU per query: this
  process's (DuckDB and the client) and the instance's (its processes, seen in /proc: a container's
  are this host's too; Docker's side adds the docker-proxy of the published port).

Usage: python bench/docker.py [--rows N] [--runs K]   (needs a Docker engine and docker-registry)

It removes every image duckserve built from the Docker engine (those no container uses), so that the
cold case is cold: on a shared machine run it under the CPU lock (`flock /work/.locks/cpu`), which
the container tests take too, or a build running meanwhile may lose the layers it counted on.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import FEATURES, data, service_query  # noqa: E402

import duckserve  # noqa: E402
from duckserve.engine.runtimes.docker_engine import Engine  # noqa: E402
from duckserve.registry import Registry  # noqa: E402


def fresh_cache_with_the_base(cache: Path) -> None:
    """A new layer cache holding only the base image (built once per machine), and no image duckserve
    built left in Docker (but those a container uses), so every other layer is built, pushed and
    pulled anew."""
    from duckserve.engine.images.base import base_image
    from duckserve.engine.images.layers import cache_dir

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
    used = {container.get("ImageID") for container in engine.containers({})}
    for image in engine.images("io.duckserve.build"):
        if image["Id"] not in used:
            engine.remove_image(image["Id"], force=True)


def _processes() -> dict[int, tuple[int, bytes]]:
    """Every live process of this host: pid -> (parent pid, command line)."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            parent = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
            found[int(entry.name)] = (parent, Path(entry.path, "cmdline").read_bytes())
        except OSError:
            continue  # ended meanwhile
    return found


def _cpu_seconds(pid: int) -> float:
    """The CPU time of a process's live threads, in nanoseconds' resolution (/proc/<pid>/task/*/schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(task.read_text().split()[0])
        except (OSError, IndexError):
            continue
    return total / 1e9


def instance_cpu(pid: int, port: int | None) -> Callable[[], float]:
    """The CPU seconds an instance has used so far: its process ``pid`` and their descendants (a
    container's init and the server's workers), and with ``port`` the docker-proxy that forwards
    that loopback port into the container (none when duckserve calls the container's address)."""
    def seconds() -> float:
        processes = _processes()
        children: dict[int, list[int]] = {}
        for child, (parent, _) in processes.items():
            children.setdefault(parent, []).append(child)
        pids, todo = [], [pid]
        while todo:
            pids.append(todo.pop())
            todo += children.get(pids[-1], [])
        if port is not None:
            pids += [p for p, (_, command) in processes.items()
                     if command.split(b"\0")[0].endswith(b"docker-proxy") and f"-host-port\0{port}\0".encode() in command]
        return sum(_cpu_seconds(p) for p in pids)
    return seconds


def paired_rounds(queries: dict[str, Callable[[], Any]], instance_cpus: dict[str, Callable[[], float]],
                  runs: int) -> dict[str, list[tuple[float, float, float]]]:
    """Each query once per round, in alternating order (ABBA...), after one warm-up each: per round
    and query, (wall seconds, this process's CPU seconds, the instance's CPU seconds)."""
    for query in queries.values():
        query()
    names = list(queries)
    measured: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    for round_number in range(runs):
        for name in names if round_number % 2 == 0 else reversed(names):
            instance_before, client_before = instance_cpus[name](), time.process_time()
            started = time.perf_counter()
            queries[name]()
            wall = time.perf_counter() - started
            measured[name].append((wall, time.process_time() - client_before, instance_cpus[name]() - instance_before))
    return measured


def round_trips(endpoints: dict[str, str], requests: int = 300) -> dict[str, float]:
    """Median seconds of a GET /ready (an answer without work) per endpoint, interleaved."""
    client = httpx.Client(trust_env=False)
    seconds: dict[str, list[float]] = {name: [] for name in endpoints}
    for _ in range(requests):
        for name, url in endpoints.items():
            started = time.perf_counter()
            client.get(url + "/ready").raise_for_status()
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seconds.items()}


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
    parser.add_argument("--runs", type=int, default=9)
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
            instance_cpus, endpoints = {}, {}
            for runtime in ("process", "docker"):
                query = f"SELECT sum({runtime}_svc!predict({', '.join(FEATURES)})) FROM t"
                assert conn.execute(query).fetchone()[0] == want, f"{runtime} answers differ from the model's"
                cursor = conn.execute(f"SHOW SERVICE CONTAINERS IN SERVICE {runtime}_svc")
                row = dict(zip([column[0] for column in cursor.description], cursor.fetchone()))
                calls = urlsplit(row["endpoint"])
                proxied = runtime == "docker" and calls.hostname == "127.0.0.1"
                instance_cpus[runtime] = instance_cpu(int(row["pid"]), calls.port if proxied else None)
                endpoints[runtime] = row["endpoint"]
                if runtime == "docker":  # the same container through the port Docker published on loopback
                    details = Engine().inspect(row["container_id"]) or {}
                    published = details["NetworkSettings"]["Ports"]["5000/tcp"][0]["HostPort"]
                    endpoints["docker, published port (docker-proxy)"] = f"http://127.0.0.1:{published}"
                notes.append(f"{runtime}: duckserve calls the instance at {row['endpoint']}"
                             + (" (through docker-proxy)" if proxied else ""))
            rounds = {}
            for threads in (1, 2):
                queries = {runtime: service_query(conn, f"SELECT sum({runtime}_svc!predict({', '.join(FEATURES)})) "
                                                        "FROM t", "compute_wh", threads)
                           for runtime in ("process", "docker")}
                rounds[threads] = paired_rounds(queries, instance_cpus, args.runs)
            latency = round_trips(endpoints)
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
    for threads, measured in rounds.items():
        process, docker = (statistics.median(wall for wall, _, _ in measured[side]) for side in ("process", "docker"))
        ratios = sorted(p[0] / d[0] for p, d in zip(measured["process"], measured["docker"]))
        print(f"svc!predict, {threads} thread(s): process {args.rows / process / 1e6:.2f} M rows/s, Docker "
              f"{args.rows / docker / 1e6:.2f} M rows/s, Docker/process {statistics.median(ratios):.2f}x "
              f"(the rounds' ratios {ratios[0]:.2f}x to {ratios[-1]:.2f}x)")
        for side in ("process", "docker"):
            client = statistics.median(cpu for _, cpu, _ in measured[side])
            instance = statistics.median(cpu for _, _, cpu in measured[side])
            print(f"  CPU per query on {side:7}: this process {client:.3f} s, the instance {instance:.3f} s")
    print("GET /ready round trip, median of 300: " + ", ".join(
        f"{name} ({endpoints[name]}) {seconds * 1e3:.2f} ms" for name, seconds in latency.items()))
    return 0 if np.isfinite(list(results.values())).all() else 1


if __name__ == "__main__":
    sys.exit(main())
