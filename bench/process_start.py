"""What the process runtime's waiter costs an instance start: ``ProcessRuntime.start`` of a
sleeping Python (it returns once the waiter reported the instance's pid) beside a bare
``subprocess.Popen`` of the same command, and the waiter's private memory (smaps_rollup).
Medians of --runs starts. Usage: python bench/process_start.py [--runs K]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from duckserve.engine.runtimes import Artifact, InstanceSpec
from duckserve.engine.runtimes.process import ProcessRuntime

COMMAND = "import time; time.sleep(60)"


def private_kib(pid: int) -> int:
    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    return sum(int(line.split()[1]) for line in lines if line.startswith(("Private_Clean", "Private_Dirty")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-process-start-"))
    runtime = ProcessRuntime()
    waited, bare, memory = [], [], []
    for i in range(args.runs):
        spec = InstanceSpec(name=f"x{i}", artifact=Artifact.environment(sys.executable), args=["-c", COMMAND],
                            log_path=base / "logs" / f"x{i}.log", state_dir=base / "run")
        started = time.perf_counter()
        handle = runtime.start(spec)
        waited.append(time.perf_counter() - started)
        time.sleep(0.05)
        memory.append(private_kib(int(handle.data["waiter"])))
        runtime.stop(handle)
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", COMMAND], start_new_session=True)
        bare.append(time.perf_counter() - started)
        process.kill()
        process.wait()
    med = statistics.median
    print(f"runs: {args.runs} (medians): ProcessRuntime.start with its waiter {med(waited) * 1000:.1f} ms, "
          f"a bare Popen {med(bare) * 1000:.1f} ms; the waiter's private memory {med(memory) / 1024:.1f} MB")


if __name__ == "__main__":
    main()
