"""HTTP clients of a model: one-row latency and throughput, and JSON batch throughput, for an
instance, the ingress in front of it, and MLflow's own scoring server on the same model, in one run.

The model is the main benchmark's LogisticRegression on 8 floats. Servers: one duckserve instance
(1 worker), the ingress of a service whose record points at it (a real catalog, a real token), and
``uvicorn mlflow.pyfunc.scoring_server.app:app`` (1 worker) serving the same model saved with
``mlflow.sklearn.save_model``. The client is a plain keep-alive socket client (the same for every
server), so the figures are the servers' and not a client library's.

Measured, each the median over rounds (one run of each server per round):
- 1-row requests, 1 client: p50 and p99 latency;
- 1-row requests, 10 concurrent clients: requests/s (and p50, p99);
- a 65,536-row JSON batch: seconds and rows/s.
duckserve is called in both its own service-function form and MLflow's ``dataframe_split`` form
on ``/invocations`` (the same bytes MLflow gets). Usage: python bench/http_clients.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = [f"f{i}" for i in range(8)]


@dataclass
class Target:
    name: str
    port: int
    path: str
    one_row: bytes
    batch: bytes
    headers: dict[str, str]
    #: the server processes that do this target's work, for CPU time per request
    pids: tuple[int, ...] = ()

    def request(self, body: bytes) -> bytes:
        head = f"POST {self.path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        head += f"content-length: {len(body)}\r\n\r\n"
        return head.encode() + body


class Client:
    """One keep-alive connection; `call` sends a prepared request and reads the whole answer."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(self, request: bytes) -> bytes:
        self.sock.sendall(request)
        buffer = b""
        while True:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buffer += chunk
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                continue
            head = buffer[:end].decode("latin-1").lower()
            status = int(head.split(" ", 2)[1])
            if "transfer-encoding: chunked" in head:
                while not buffer.endswith(b"0\r\n\r\n"):
                    buffer += self.sock.recv(1 << 20)
                body = _unchunk(buffer[end + 4:])
            else:
                length = int(head.split("content-length:")[1].split("\r\n")[0])
                while len(buffer) < end + 4 + length:
                    buffer += self.sock.recv(1 << 20)
                body = buffer[end + 4:end + 4 + length]
            if status != 200:
                raise RuntimeError(f"status {status}: {body[:300]!r}")
            return body

    def close(self) -> None:
        self.sock.close()


def _unchunk(data: bytes) -> bytes:
    out, position = [], 0
    while True:
        end = data.index(b"\r\n", position)
        size = int(data[position:end], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        position = end + 2 + size + 2


def latency(target: Target, requests: int) -> dict[str, float]:
    client = Client(target.port)
    request = target.request(target.one_row)
    for _ in range(50):
        client.call(request)
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        client.call(request)
        times.append(time.perf_counter() - started)
    client.close()
    times.sort()
    return {"p50_ms": times[len(times) // 2] * 1e3, "p99_ms": times[int(len(times) * 0.99)] * 1e3}


def cpu_seconds(pids: tuple[int, ...]) -> float:
    """User plus system CPU time of processes (and their reaped children), from /proc."""
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def throughput(target: Target, clients: int, seconds: float) -> dict[str, float]:
    request = target.request(target.one_row)
    connections = [Client(target.port) for _ in range(clients)]
    for connection in connections:
        connection.call(request)
    times: list[list[float]] = [[] for _ in range(clients)]
    deadline = time.perf_counter() + seconds
    errors: list[BaseException] = []

    def run(index: int) -> None:
        connection, mine = connections[index], times[index]
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                connection.call(request)
                mine.append(time.perf_counter() - started)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    started = time.perf_counter()
    cpu_before, client_before = cpu_seconds(target.pids), sum(os.times()[:2])
    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    server_cpu, client_cpu = cpu_seconds(target.pids) - cpu_before, sum(os.times()[:2]) - client_before
    for connection in connections:
        connection.close()
    if errors:
        raise RuntimeError(f"{target.name}: {errors[0]}")
    flat = sorted(t for mine in times for t in mine)
    return {"rps": len(flat) / elapsed, "p50_ms": flat[len(flat) // 2] * 1e3, "p99_ms": flat[int(len(flat) * 0.99)] * 1e3,
            "server_cpu_us": server_cpu / len(flat) * 1e6, "client_cpu_us": client_cpu / len(flat) * 1e6}


def batch(target: Target) -> float:
    client = Client(target.port)
    started = time.perf_counter()
    client.call(target.request(target.batch))
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed


def wait_port(port_file: Path, process: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text())
        time.sleep(0.05)
    raise RuntimeError(f"server did not start: {log.read_text()[-3000:]}")


def wait_ready(port: int, path: str, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False) as client:
        while time.monotonic() < deadline:
            try:
                if client.get(f"http://127.0.0.1:{port}{path}").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"port {port} not ready at {path}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000, help="1-row requests per latency run")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each 10-client run")
    parser.add_argument("--batch-rows", type=int, default=65_536)
    args = parser.parse_args()

    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    from duckserve.engine import access as A
    from duckserve.engine import tokens as T
    from duckserve.engine.account import Account
    from duckserve.engine.catalog import CatalogObject
    from duckserve.inference_server.handlers import save_package

    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(max(args.batch_rows, 1000), len(FEATURES))), columns=FEATURES)
    y = (X.to_numpy() @ rng.normal(size=len(FEATURES)) > 0).astype(np.int64)
    model = LogisticRegression().fit(X, y)
    work = Path(tempfile.mkdtemp(prefix="duckserve-bench-http-"))
    save_package(model, work / "package", name="BENCH", version="V1", sample_input=X.head(10))
    mlflow.sklearn.save_model(model, str(work / "mlflow_model"), signature=infer_signature(X.head(10), y[:10]),
                              serialization_format="cloudpickle")

    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    processes: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], name: str, extra: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], Path]:
        log = work / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**env, **(extra or {})})
        processes.append(process)
        return process, log

    try:
        port_file = work / "instance.port"
        process, log = start([sys.executable, "-m", "duckserve.inference_server", "--package", str(work / "package"),
                              "--workers", "1", "--max-queue", "64", "--port", "0", "--port-file", str(port_file)], "instance",
                             {"DUCKSERVE_SERVICE": "DUCKSERVE.PUBLIC.BENCH_SVC"})
        instance_port = wait_port(port_file, process, log)
        instance_pid = process.pid
        wait_ready(instance_port, "/ready")

        account = Account(work / "home")
        admin = account.open_session()
        account.catalog.insert(CatalogObject(A.SERVICE, "BENCH_SVC", owner=A.ACCOUNTADMIN, database="DUCKSERVE",
                                             schema="PUBLIC", props={"status": "RUNNING", "instances": [
                                                 {"instance_id": 0, "handle": {"port": instance_port}}]}))
        secret = str(T.add_token(account, admin, "ADMIN", "BENCH").rows[0][1])
        port_file = work / "ingress.port"
        process, log = start([sys.executable, "-m", "duckserve.fronts.ingress", "--home", str(work / "home"),
                              "--service", "DUCKSERVE.PUBLIC.BENCH_SVC", "--port", "0", "--port-file", str(port_file)],
                             "ingress")
        ingress_port = wait_port(port_file, process, log)
        ingress_pid = process.pid
        wait_ready(ingress_port, "/healthz")

        mlflow_port = free_port()
        mlflow_process, _ = start([sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
               "--log-level", "warning", "mlflow.pyfunc.scoring_server.app:app"], "mlflow",
              {"__pyfunc_model_path__": str(work / "mlflow_model")})
        wait_ready(mlflow_port, "/ping")

        row = X.iloc[0].tolist()
        rows = X.head(args.batch_rows).to_numpy().tolist()
        snowflake_one = json.dumps({"data": [[0, *row]]}).encode()
        snowflake_batch = json.dumps({"data": [[i, *r] for i, r in enumerate(rows)]}).encode()
        mlflow_one = json.dumps({"dataframe_split": {"columns": FEATURES, "data": [row]}}).encode()
        mlflow_batch = json.dumps({"dataframe_split": {"columns": FEATURES, "data": rows}}).encode()
        auth = {"authorization": f"Bearer {secret}"}
        targets = [
            Target("instance", instance_port, "/predict", snowflake_one, snowflake_batch, {}, (instance_pid,)),
            Target("instance /invocations", instance_port, "/invocations", mlflow_one, mlflow_batch, {},
                   (instance_pid,)),
            Target("ingress", ingress_port, "/predict", snowflake_one, snowflake_batch, auth,
                   (ingress_pid, instance_pid)),
            Target("ingress /invocations", ingress_port, "/invocations", mlflow_one, mlflow_batch, auth,
                   (ingress_pid, instance_pid)),
            Target("mlflow", mlflow_port, "/invocations", mlflow_one, mlflow_batch, {}, (mlflow_process.pid,)),
        ]
        expected = json.loads(Client(mlflow_port).call(targets[-1].request(mlflow_batch)))["predictions"]
        for target in targets[:-1]:
            answer = json.loads(Client(target.port).call(target.request(target.batch)))
            got = answer["predictions"] if "predictions" in answer else [r[1] for r in answer["data"]]
            assert got == expected, f"{target.name} answers differently from MLflow's scoring server"

        results: dict[str, dict[str, list[float]]] = {t.name: {} for t in targets}
        for round_number in range(args.rounds):
            for target in targets:
                record = results[target.name]
                for key, value in latency(target, args.requests).items():
                    record.setdefault(f"1 client {key}", []).append(value)
                for key, value in throughput(target, 10, args.seconds).items():
                    record.setdefault(f"10 clients {key}", []).append(value)
                seconds = batch(target)
                record.setdefault("batch s", []).append(seconds)
            print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)

        medians = {name: {k: statistics.median(v) for k, v in record.items()} for name, record in results.items()}
        base = medians["mlflow"]
        print(f"\n1-row and {args.batch_rows:,}-row JSON requests, medians of {args.rounds} rounds "
              f"(ratios against MLflow's scoring server in this run)\n")
        print("| server | 1 client p50 ms | 1 client p99 ms | 10 clients req/s | 10 clients p50 ms | 10 clients p99 ms "
              "| server CPU µs/req | client CPU µs/req | batch s | batch M rows/s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, m in medians.items():
            ratio_rps = m["10 clients rps"] / base["10 clients rps"]
            ratio_batch = base["batch s"] / m["batch s"]
            print(f"| {name} | {m['1 client p50_ms']:.3f} | {m['1 client p99_ms']:.3f} | {m['10 clients rps']:,.0f} "
                  f"({ratio_rps:.1f}x) | {m['10 clients p50_ms']:.2f} | {m['10 clients p99_ms']:.2f} "
                  f"| {m['10 clients server_cpu_us']:.0f} | {m['10 clients client_cpu_us']:.0f} | {m['batch s']:.3f} ({ratio_batch:.1f}x) | {args.batch_rows / m['batch s'] / 1e6:.2f} |")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
