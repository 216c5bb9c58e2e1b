"""Services that look after themselves: lifecycle changes serialized across processes, the
controller that heals and scales them, failover in the client, model updates without downtime.

Real everything: uv-built environments, inference servers as process groups on loopback, separate
Python processes sharing one home.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import duckserve
from duckserve.model import CustomModel, ModelContext, inference_api
from duckserve.registry import Registry
from tests.conftest import rows

pytestmark = pytest.mark.xdist_group("service_control")


class Plus(CustomModel):
    """``predict`` adds the version's offset (read from its artifact), so a row tells which version answered."""

    def __init__(self, context: ModelContext) -> None:
        super().__init__(context)
        with open(self.context.path("offset")) as handle:
            self.offset = float(handle.read())

    @inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"Y": X["X"] + self.offset})


def log_plus(reg: Registry, tmp: Path, version: str, offset: float) -> Any:
    artifact = tmp / f"offset-{version}.txt"
    artifact.write_text(str(offset))
    return reg.log_model(Plus(ModelContext(artifacts={"offset": str(artifact)})), model_name="plus",
                         version_name=version, sample_input_data=pd.DataFrame({"X": [1.0]}))


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("control")
    home = base / "home"
    conn = duckserve.connect(home=str(home))
    conn.cursor().execute("CREATE COMPUTE POOL ctl_pool MIN_NODES = 1 MAX_NODES = 3 INSTANCE_FAMILY = 'CPU_X64_XS';"
                          "CREATE IMAGE REPOSITORY ctl_images")
    reg = Registry(conn)
    mv1 = log_plus(reg, base, "v1", 1.0)
    yield {"conn": conn, "home": home, "base": base, "reg": reg, "mv1": mv1}
    for service in rows(conn, "SHOW SERVICES EXCLUDE JOBS"):
        conn.execute(f"DROP SERVICE IF EXISTS {service['name']}")
    conn.close()


def server_groups(home: Path) -> list[int]:
    """Process-group leaders of inference servers of ``home`` (each instance is one)."""
    leaders = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, pgid = stat[stat.rindex(")") + 2:].split()[0], int(stat[stat.rindex(")") + 2:].split()[2])
        text = b" ".join(command).decode(errors="replace")
        if state not in ("Z", "X") and pgid == int(entry.name) and "duckserve.inference_server" in text \
                and str(home) in text:
            leaders.append(int(entry.name))
    return leaders


def test_concurrent_resumes_and_calls_start_exactly_the_desired_instances(account: Any) -> None:
    conn, home = account["conn"], account["home"]
    account["mv1"].create_service(service_name="race_svc", service_compute_pool="ctl_pool", image_repo="ctl_images",
                                  min_instances=2, max_instances=2, num_workers=1)
    conn.execute("ALTER SERVICE race_svc SUSPEND")
    assert rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE race_svc") == []
    go = account["base"] / "go"
    script = textwrap.dedent("""
        import os, sys, time
        import duckserve
        home, action, go = sys.argv[1], sys.argv[2], sys.argv[3]
        conn = duckserve.connect(home=home)
        conn.execute("SHOW SERVICES")  # everything imported and opened before the start
        open(go + "." + str(os.getpid()), "w").close()
        while not os.path.exists(go):
            time.sleep(0.002)
        if action == "resume":
            conn.execute("ALTER SERVICE race_svc RESUME")
        else:
            print(conn.execute("SELECT sum(race_svc!predict(range::DOUBLE)) FROM range(100)").fetchone()[0])
    """)
    actions = ["resume", "call"] * 2
    procs = [subprocess.Popen([sys.executable, "-c", script, str(home), a, str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for a in actions]
    deadline = time.monotonic() + 120
    while len(list(go.parent.glob("go.*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()  # all at once
    for action, proc in zip(actions, procs):
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        if action == "call":
            assert float(out.strip()) == sum(range(100)) + 100
    containers = rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE race_svc")
    assert sorted(c["instance_id"] for c in containers) == ["0", "1"]
    assert {c["status"] for c in containers} == {"READY"}
    # no orphan: exactly the two instances the catalog knows run on this machine
    assert sorted(server_groups(home)) == sorted(c["pid"] for c in containers)
    conn.execute("DROP SERVICE race_svc")
    assert server_groups(home) == []
