"""Services that look after themselves: lifecycle changes serialized across processes, the
controller that heals and scales them, failover in the client, model updates without downtime.

Real everything: uv-built environments, inference servers as process groups on loopback, separate
Python processes sharing one home.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import duckserve
from duckserve.engine.controller import controller_running
from duckserve.model import CustomModel, ModelContext, inference_api
from duckserve.registry import Registry
from tests.conftest import rows
from tests.custom_models import Busy, Plus

pytestmark = pytest.mark.xdist_group("service_control")


class SlowFirst(CustomModel):
    """``predict`` adds one; instance 0 takes a tenth of a second per batch, the others none."""

    @inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        if os.environ.get("DUCKSERVE_INSTANCE", "").endswith("/0"):
            time.sleep(0.1)
        return pd.DataFrame({"Y": X["X"] + 1})


class Broken(CustomModel):
    """Loads where it is logged, fails to load in an inference server."""

    def __init__(self, context: ModelContext) -> None:
        super().__init__(context)
        if os.environ.get("DUCKSERVE_INSTANCE"):
            raise RuntimeError("this version's weights are corrupt")

    @inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"Y": X["X"]})


def log_plus(reg: Registry, tmp: Path, version: str, offset: float) -> Any:
    artifact = tmp / f"offset-{version}.txt"
    artifact.write_text(str(offset))
    return reg.log_model(Plus(ModelContext(artifacts={"offset": str(artifact)})), model_name="plus",
                         version_name=version, sample_input_data=pd.DataFrame({"X": [1.0]}))


#: the controller's timings, shortened (it inherits the environment of the process that starts it)
FAST = {"DUCKSERVE_CONTROLLER_INTERVAL": "0.2", "DUCKSERVE_UNREADY_SECS": "2", "DUCKSERVE_CONTROLLER_IDLE_EXIT": "20",
        "DUCKSERVE_SCALE_DOWN_COOLDOWN": "3", "DUCKSERVE_SCALE_TO_ZERO_SECS": "3"}


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Any:
    saved = {k: os.environ.get(k) for k in FAST}
    os.environ.update(FAST)
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
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


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


def wait_for(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_instance_is_replaced_while_a_million_rows_complete(account: Any) -> None:
    conn, home = account["conn"], account["home"]
    account["mv1"].create_service(service_name="heal_svc", service_compute_pool="ctl_pool", image_repo="ctl_images",
                                  min_instances=2, max_instances=2, num_workers=1, max_batch_rows=20_000)
    wait_for("the controller", lambda: controller_running(home), timeout=30)  # started with the instances
    before = rows(conn, "SELECT instance_id, pid, restart_count FROM (SHOW SERVICE CONTAINERS IN SERVICE heal_svc)")
    assert [b["restart_count"] for b in before] == [0, 0]
    victim = before[0]["pid"]

    def kill_soon() -> None:
        time.sleep(0.3)
        os.killpg(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    got = conn.execute("SELECT count(*), sum(y), count(DISTINCT id) FROM (SELECT range AS id, "
                       "heal_svc!predict(range::DOUBLE) AS y FROM range(1000000))").fetchone()
    killer.join()
    n = 1_000_000
    assert got == (n, float(sum(range(n)) + n), n)

    def replaced() -> list[dict[str, Any]]:
        found = rows(conn, "SELECT * FROM (SHOW SERVICE CONTAINERS IN SERVICE heal_svc) ORDER BY instance_id")
        return found if found[0]["restart_count"] == 1 and found[0]["status"] == "READY" else []

    after = wait_for("the killed instance to come back", replaced)
    assert after[0]["pid"] != victim and after[0]["last_restart_time"] is not None
    assert after[0]["last_exit_code"] == 137  # SIGKILL, as a shell or Docker reports it
    assert after[1]["restart_count"] == 0 and after[1]["pid"] == before[1]["pid"]
    instances = rows(conn, "SHOW SERVICE INSTANCES IN SERVICE heal_svc")
    assert [i["instance_id"] for i in instances] == ["0", "1"] and instances[0]["restart_count"] == 1
    assert {"status", "spec_digest", "creation_time", "start_time"} <= set(instances[0])
    assert instances[0]["creation_time"] < instances[0]["start_time"]
    assert conn.execute("SELECT sum(heal_svc!predict(range::DOUBLE)) FROM range(1000)").fetchone()[0] == 500_500
    assert "INSTANCE.RESTARTED" in event_names(conn, "heal_svc")
    conn.execute("DROP SERVICE heal_svc")


def test_an_instance_killed_from_outside_has_its_exit_code_known_to_every_process(account: Any) -> None:
    """The instance's starter (another Python process) has ended, so neither it nor this process is
    the instance's parent: its waiter records how it ended, and the controller's replacement shows
    last_exit_code 137 (SIGKILL), as on Docker."""
    conn, home = account["conn"], account["home"]
    script = textwrap.dedent("""
        import sys
        import duckserve
        from duckserve.registry import Registry
        conn = duckserve.connect(home=sys.argv[1])
        Registry(conn).get_model("plus").version("v1").create_service(
            service_name="orphan_svc", service_compute_pool="ctl_pool", image_repo="ctl_images",
            min_instances=1, max_instances=1, num_workers=1)
    """)
    subprocess.run([sys.executable, "-c", script, str(home)], check=True, timeout=180)
    try:
        victim = rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE orphan_svc")[0]["pid"]
        os.killpg(victim, signal.SIGKILL)
        found = wait_for("the killed instance to come back", lambda: [
            c for c in rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE orphan_svc")
            if c["restart_count"] == 1 and c["status"] == "READY"])
        assert found[0]["pid"] != victim and found[0]["last_exit_code"] == 137
        events = conn.execute("SELECT RECORD_ATTRIBUTES FROM TABLE(orphan_svc!SPCS_GET_EVENTS()) "
                              "WHERE EVENT_NAME = 'INSTANCE.RESTARTED'").fetchall()
        assert [json.loads(e[0])["exit_code"] for e in events] == [137]
        assert conn.execute("SELECT sum(orphan_svc!predict(range::DOUBLE)) FROM range(10)").fetchone()[0] == 55
    finally:
        conn.execute("DROP SERVICE IF EXISTS orphan_svc")


def test_an_instance_that_stops_answering_is_replaced(account: Any) -> None:
    conn = account["conn"]
    account["mv1"].create_service(service_name="hang_svc", service_compute_pool="ctl_pool", image_repo="ctl_images",
                                  min_instances=1, max_instances=1, num_workers=1)
    victim = rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE hang_svc")[0]["pid"]
    os.killpg(victim, signal.SIGSTOP)  # alive, but it answers nothing
    try:
        found = wait_for("the hung instance to be replaced", lambda: [
            c for c in rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE hang_svc")
            if c["restart_count"] == 1 and c["status"] == "READY"])
        assert found[0]["pid"] != victim
    finally:
        try:
            os.killpg(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert conn.execute("SELECT sum(hang_svc!predict(range::DOUBLE)) FROM range(10)").fetchone()[0] == 55
    conn.execute("DROP SERVICE hang_svc")


def event_names(conn: Any, service: str) -> list[str]:
    """The service's lifecycle events, oldest first, as SQL reads them from the event table."""
    return [r[0] for r in conn.execute(f"SELECT EVENT_NAME FROM TABLE({service}!SPCS_GET_EVENTS()) "
                                       "ORDER BY \"TIMESTAMP\"").fetchall()]


def batches_answered(conn: Any, service: str, instance: int) -> int:
    log = conn.execute(f"CALL SYSTEM$GET_SERVICE_LOGS('{service}', {instance}, 'model-inference')").fetchone()[0]
    return sum(1 for line in log.splitlines() if "POST /predict rows=" in line and "status=200" in line)


def test_batches_go_to_the_least_loaded_instance(account: Any) -> None:
    conn, reg = account["conn"], account["reg"]
    mv = reg.log_model(SlowFirst(ModelContext()), model_name="slow_first", sample_input_data=pd.DataFrame({"X": [1.0]}))
    mv.create_service(service_name="skew_svc", service_compute_pool="ctl_pool", image_repo="ctl_images",
                      min_instances=2, max_instances=2, num_workers=1, max_batch_rows=500)
    got = conn.execute("SELECT count(*), sum(skew_svc!predict(range::DOUBLE)) FROM range(40000)").fetchone()
    assert got == (40000, float(sum(range(40000)) + 40000))
    slow, fast = batches_answered(conn, "skew_svc", 0), batches_answered(conn, "skew_svc", 1)
    assert slow + fast >= 80
    assert fast > 3 * slow, (slow, fast)  # round-robin would give each half
    conn.execute("DROP SERVICE skew_svc")


def test_a_lone_instance_killed_mid_query_is_waited_for(account: Any) -> None:
    """Its batches wait for the replacement the controller starts, and every row comes back once."""
    conn = account["conn"]
    account["mv1"].create_service(service_name="lone_svc", service_compute_pool="ctl_pool", image_repo="ctl_images",
                                  min_instances=1, max_instances=1, num_workers=1, max_batch_rows=20_000)
    victim = rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE lone_svc")[0]["pid"]
    killer = threading.Timer(0.3, os.killpg, (victim, signal.SIGKILL))
    killer.start()
    n = 1_000_000
    got = conn.execute("SELECT count(*), sum(y), count(DISTINCT id) FROM (SELECT range AS id, "
                       "lone_svc!predict(range::DOUBLE) AS y FROM range(1000000))").fetchone()
    killer.join()
    assert got == (n, float(sum(range(n)) + n), n)
    after = rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE lone_svc")
    assert after[0]["restart_count"] == 1 and after[0]["pid"] != victim
    conn.execute("DROP SERVICE lone_svc")


def test_model_update_under_load_loses_nothing_and_a_broken_version_leaves_the_old_serving(account: Any) -> None:
    conn, home, reg, base = account["conn"], account["home"], account["reg"], account["base"]
    account["mv1"].create_service(service_name="upd_svc", service_compute_pool="ctl_pool", image_repo="ctl_images",
                                  min_instances=2, max_instances=2, num_workers=1, max_batch_rows=2_000)
    log_plus(reg, base, "v2", 2.0)
    n = 20_000
    query = (f"SELECT count(*) AS n, count(*) FILTER (WHERE y - x = 1) AS v1, count(*) FILTER (WHERE y - x = 2) AS v2 "
             f"FROM (SELECT range::DOUBLE AS x, upd_svc!predict(range::DOUBLE) AS y FROM range({n}))")
    results: list[tuple[int, int, int]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:
        client = duckserve.connect(home=str(home))
        try:
            while not stop.is_set():
                try:
                    results.append(client.execute(query).fetchone())
                except BaseException as exc:  # counted: the test wants none
                    failures.append(exc)
        finally:
            client.close()

    loader = threading.Thread(target=load)
    loader.start()
    try:
        wait_for("queries before the update", lambda: len(results) >= 2)
        old_pids = {c["pid"] for c in rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE upd_svc")}
        conn.execute("ALTER SERVICE upd_svc SET MODEL_VERSION = 'V2'")
        during = len(results)
        wait_for("queries after the update", lambda: len(results) >= during + 3)
    finally:
        stop.set()
        loader.join()
    assert failures == []
    assert all(r[0] == n and r[1] + r[2] == n for r in results), [r for r in results if r[1] + r[2] != n]
    assert results[0] == (n, n, 0) and results[-1] == (n, 0, n)
    described = rows(conn, "DESCRIBE SERVICE upd_svc")[0]
    assert (described["model_version"], described["update_status"], described["target_model_version"]) == \
        ("V2", "DONE", "V2")
    containers = rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE upd_svc")
    assert [c["model_version"] for c in containers] == ["V2", "V2"] and not old_pids & {c["pid"] for c in containers}
    assert len(server_groups(home)) == len([s for s in rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE upd_svc")])

    # a version that fails to load: the update FAILS, V2 keeps serving, the message says what to do
    reg.log_model(Broken(ModelContext()), model_name="plus", version_name="v3",
                  sample_input_data=pd.DataFrame({"X": [1.0]}))
    with pytest.raises(duckserve.errors.OperationalError, match="weights are corrupt") as failed:
        conn.execute("ALTER SERVICE upd_svc SET MODEL_VERSION = 'V3'")
    assert "MODEL_VERSION = 'V2'" in str(failed.value) and "V2 still serves" in str(failed.value)
    described = rows(conn, "DESCRIBE SERVICE upd_svc")[0]
    assert (described["model_version"], described["update_status"], described["target_model_version"]) == \
        ("V2", "FAILED", "V3")
    assert "weights are corrupt" in described["update_message"] and "roll back" in described["update_message"]
    assert conn.execute("SELECT sum(upd_svc!predict(range::DOUBLE)) FROM range(10)").fetchone()[0] == 65
    assert len(server_groups(home)) == 2  # the broken version's instances are gone
    conn.execute("ALTER SERVICE upd_svc SET MODEL_VERSION = 'V2'")  # the roll back: V2 never stopped
    assert rows(conn, "DESCRIBE SERVICE upd_svc")[0]["update_status"] is None

    assert event_names(conn, "upd_svc").count("SERVICE.UPDATED") == 2  # V2 done, V3 failed

    # the Python form
    account["mv1"].update_service("upd_svc")
    assert conn.execute("SELECT sum(upd_svc!predict(range::DOUBLE)) FROM range(10)").fetchone()[0] == 55
    conn.execute("DROP SERVICE upd_svc")


def test_load_scales_up_then_down_after_the_cool_down(account: Any) -> None:
    conn, home, reg = account["conn"], account["home"], account["reg"]
    mv = reg.log_model(Busy(ModelContext()), model_name="busy", sample_input_data=pd.DataFrame({"X": [1.0]}))
    mv.create_service(service_name="auto_svc", service_compute_pool="ctl_pool", image_repo="ctl_images",
                      min_instances=1, max_instances=3, num_workers=1, max_batch_rows=100, max_queue=2)
    assert len(rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE auto_svc")) == 1
    stop = threading.Event()
    failures: list[BaseException] = []
    answered = [0]

    def load() -> None:
        client = duckserve.connect(home=str(home))
        client.execute("CREATE OR REPLACE WAREHOUSE wide WAREHOUSE_SIZE = 'MEDIUM'")  # 8 batches in flight
        try:
            while not stop.is_set():
                try:
                    got = client.execute("SELECT sum(auto_svc!predict(range::DOUBLE)) FROM range(2000)").fetchone()
                    assert got[0] == sum(range(2000)) + 2000
                    answered[0] += 1
                except BaseException as exc:
                    failures.append(exc)
        finally:
            client.close()

    loaders = [threading.Thread(target=load) for _ in range(2)]
    for loader in loaders:
        loader.start()
    try:
        wait_for("the service to scale up to 3", lambda: len([
            c for c in rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE auto_svc") if c["status"] == "READY"]) == 3,
            timeout=90)
        # the new instances serve (the queries in flight when they came up may have been sent to the
        # first one alone, and a log line is written after its answer: waited for, not asserted at once)
        wait_for("batches answered by the new instances",
                 lambda: all(batches_answered(conn, "auto_svc", i) > 0 for i in (1, 2)), timeout=60)
    finally:
        stop.set()
        for loader in loaders:
            loader.join()
    assert failures == []
    wait_for("the service to scale back to 1", lambda: len(
        rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE auto_svc")) == 1, timeout=60)
    assert conn.execute("SELECT sum(auto_svc!predict(range::DOUBLE)) FROM range(10)").fetchone()[0] == 55
    assert event_names(conn, "auto_svc").count("SERVICE.SCALED") >= 2  # up (once or twice) and down
    conn.execute("DROP SERVICE auto_svc")


def test_min_zero_scales_to_zero_and_serves_the_next_call(account: Any) -> None:
    conn = account["conn"]
    others = server_groups(account["home"])
    account["mv1"].create_service(service_name="zero_svc", service_compute_pool="ctl_pool", image_repo="ctl_images",
                                  min_instances=0, max_instances=1, num_workers=1)
    assert conn.execute("SELECT sum(zero_svc!predict(range::DOUBLE)) FROM range(10)").fetchone()[0] == 55
    wait_for("the service to scale to zero", lambda: rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE zero_svc") == [],
             timeout=60)
    assert server_groups(account["home"]) == others  # no instance of it runs
    assert "scaled to zero" in rows(conn, "DESCRIBE SERVICE zero_svc")[0]["scale_message"]
    assert conn.execute("SELECT sum(zero_svc!predict(range::DOUBLE)) FROM range(10)").fetchone()[0] == 55
    assert len(rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE zero_svc")) == 1
    conn.execute("DROP SERVICE zero_svc")


def test_an_ingress_service_scaled_to_zero_is_woken_by_its_next_request(account: Any) -> None:
    """MIN_INSTANCES = 0 with ingress: the endpoint stays up while no instance runs; requests sent
    then wait while the ingress starts one, and get their answers."""
    import httpx

    conn, home = account["conn"], account["home"]
    others = server_groups(home)
    account["mv1"].create_service(service_name="web_zero", service_compute_pool="ctl_pool", image_repo="ctl_images",
                                  min_instances=0, max_instances=1, num_workers=1, ingress_enabled=True)
    try:
        url = rows(conn, "SHOW ENDPOINTS IN SERVICE web_zero")[0]["ingress_url"]
        secret = rows(conn, "ALTER USER admin ADD PROGRAMMATIC ACCESS TOKEN web_zero_test DAYS_TO_EXPIRY = 1")[0][
            "token_secret"]
        headers = {"Authorization": f"Bearer {secret}"}

        def predict(values: list[float]) -> list[float]:
            response = httpx.post(f"http://{url}/predict", headers=headers, timeout=120,
                                  json={"data": [[i, v] for i, v in enumerate(values)]})
            assert response.status_code == 200, response.text
            return [row[1] for row in response.json()["data"]]

        assert predict([1.0, 2.0]) == [2.0, 3.0]
        wait_for("the service to scale to zero", lambda: rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE web_zero")
                 == [], timeout=60)
        assert server_groups(home) == others  # no instance of it runs; its ingress does
        answers: list[list[float]] = []
        callers = [threading.Thread(target=lambda v=float(v): answers.append(predict([v]))) for v in range(3)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        assert sorted(answers) == [[1.0], [2.0], [3.0]]
        assert len(rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE web_zero")) == 1  # one start for the three
        assert "SERVICE.RESUMED" in event_names(conn, "web_zero")
    finally:
        conn.execute("DROP SERVICE IF EXISTS web_zero")


def test_scaling_stops_at_the_pools_max_nodes_and_says_why(account: Any) -> None:
    conn, home, reg = account["conn"], account["home"], account["reg"]
    conn.execute("CREATE COMPUTE POOL small_pool MIN_NODES = 1 MAX_NODES = 2 INSTANCE_FAMILY = 'CPU_X64_XS'")
    account["mv1"].create_service(service_name="neighbour_svc", service_compute_pool="small_pool",
                                  image_repo="ctl_images", min_instances=1, max_instances=1, num_workers=1)
    mv = reg.log_model(Busy(ModelContext()), model_name="busy_too", sample_input_data=pd.DataFrame({"X": [1.0]}))
    mv.create_service(service_name="capped_svc", service_compute_pool="small_pool", image_repo="ctl_images",
                      min_instances=1, max_instances=2, num_workers=1, max_batch_rows=100, max_queue=1)
    stop = threading.Event()

    def load() -> None:
        client = duckserve.connect(home=str(home))
        client.execute("CREATE OR REPLACE WAREHOUSE wide2 WAREHOUSE_SIZE = 'MEDIUM'")
        try:
            while not stop.is_set():
                client.execute("SELECT sum(capped_svc!predict(range::DOUBLE)) FROM range(2000)").fetchone()
        finally:
            client.close()

    loader = threading.Thread(target=load)
    loader.start()
    try:
        pending = wait_for("a PENDING instance", lambda: [
            i for i in rows(conn, "SHOW SERVICE INSTANCES IN SERVICE capped_svc") if i["status"] == "PENDING"])
        assert len(rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE capped_svc")) == 1  # no room for two
    finally:
        stop.set()
        loader.join()
    assert "MAX_NODES = 2" in pending[0]["message"] and "ALTER COMPUTE POOL" in pending[0]["message"]
    # without the load the wish for a second instance goes, and the message with it
    wait_for("the PENDING instance to go", lambda: rows(conn, "DESCRIBE SERVICE capped_svc")[0]["pending_instances"]
             == 0)
    conn.execute("DROP SERVICE capped_svc")
    conn.execute("DROP SERVICE neighbour_svc")
