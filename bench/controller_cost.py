"""What the controller's metric sampling costs a running service, on the process runtime.

For each DUCKSERVE_METRICS_INTERVAL given (0: no sampling, the baseline), a fresh home runs one
2-instance service (1 worker each) that nobody calls; over --seconds the controller's CPU seconds
(its /proc utime + stime), the instances' (every process of their groups) and the event table's
growth (rows and bytes) are read. Sampling happens on the controller's look (once a second), so
intervals under 1 s mean "every look".
Usage: python bench/controller_cost.py [--seconds S] [--intervals 0,15,1]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

import duckserve
from duckserve.model import CustomModel, ModelContext, inference_api
from duckserve.registry import Registry

TICKS = os.sysconf("SC_CLK_TCK")


class Doubler(CustomModel):
    @inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"Y": X["X"] * 2})


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def group_pids(pgids: set[int]) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            if int(raw[raw.rindex(")") + 2:].split()[2]) in pgids:
                out.append(int(entry.name))
    return out


def controller_pid(home: Path) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"duckserve.engine.controller" in command and str(home).encode() in command:
                return int(entry.name)
    raise RuntimeError(f"no controller runs for {home}")


def event_rows(home: Path) -> tuple[int, int]:
    path = home / "events.sqlite"
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT count(*) FROM events").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()
    return int(rows), int(pages)


def measure(interval: float, seconds: float) -> dict[str, Any]:
    os.environ["DUCKSERVE_METRICS_INTERVAL"] = str(interval)
    home = Path(tempfile.mkdtemp(prefix="bench-controller-")) / "home"
    conn = duckserve.connect(home=str(home))
    try:
        conn.execute("CREATE COMPUTE POOL p MIN_NODES = 1 MAX_NODES = 2 INSTANCE_FAMILY = 'CPU_X64_XS';"
                     "CREATE IMAGE REPOSITORY r")
        mv = Registry(conn).log_model(Doubler(ModelContext()), model_name="doubler",
                                      sample_input_data=pd.DataFrame({"X": [1.0]}))
        mv.create_service(service_name="s", service_compute_pool="p", image_repo="r", num_workers=1,
                          min_instances=2, max_instances=2)
        conn.execute("SELECT sum(s!predict(range::DOUBLE)) FROM range(1000)").fetchall()
        time.sleep(3)  # the controller settles (it marks the instances ready)
        groups = {int(r[0]) for r in conn.execute("SELECT pid FROM (SHOW SERVICE CONTAINERS IN SERVICE s)").fetchall()}
        controller = controller_pid(home)
        rows0, bytes0 = event_rows(home)
        c0, i0 = cpu_seconds([controller]), cpu_seconds(group_pids(groups))
        time.sleep(seconds)
        c1, i1 = cpu_seconds([controller]), cpu_seconds(group_pids(groups))
        rows1, bytes1 = event_rows(home)
        return {"interval": interval, "controller_cpu_pct": 100 * (c1 - c0) / seconds,
                "instances_cpu_pct": 100 * (i1 - i0) / seconds,
                "rows_per_min": (rows1 - rows0) * 60 / seconds, "bytes_per_min": (bytes1 - bytes0) * 60 / seconds}
    finally:
        conn.execute("DROP SERVICE IF EXISTS s")
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--intervals", default="0,15,1")
    args = parser.parse_args()
    for interval in (float(x) for x in args.intervals.split(",")):
        got = measure(interval, args.seconds)
        print(f"DUCKSERVE_METRICS_INTERVAL={got['interval']:g}: controller {got['controller_cpu_pct']:.2f}% of a core, "
              f"2 idle instances {got['instances_cpu_pct']:.2f}%, event table +{got['rows_per_min']:.0f} rows/min "
              f"(+{got['bytes_per_min'] / 1024:.0f} KiB/min)", flush=True)


if __name__ == "__main__":
    main()
