"""Compute pools on a real Docker Swarm (this machine as a one-node swarm, `tests/docker_host.py up`):
the pool is the nodes carrying its label, SHOW COMPUTE POOLS counts them; a service is a Swarm service
whose replicas are its instances; svc!predict over 100,000 rows equals the in-process model; scaling
is the replica count; a failing update rolls back; a task killed mid-query loses no row; logs and
status come from Swarm; suspend is 0 replicas, drop removes the Swarm service; deploy-time checks
fail clearly and leave nothing behind. Skips off CI without a swarm, fails on CI."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

import duckserve
from duckserve import errors
from duckserve.registry import Registry
from tests.conftest import rows
from tests.docker_support import (
    close_swarm_account,
    engine,
    remove_pulled_images,
    require_swarm,
    set_node_label,
    swarm_services,
)

pytestmark = pytest.mark.xdist_group("swarm")

ROWS = 100_000


def running_tasks(service_id: str) -> list[dict[str, Any]]:
    return [t for t in engine().tasks(service=[service_id], desired_state=["running"])
            if t["Status"]["State"] == "running"]


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def pool_row(conn: Any, pool: str) -> dict[str, Any]:
    return rows(conn, f"SELECT * FROM (SHOW COMPUTE POOLS LIKE '{pool}')")[0]


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_swarm()
    from duckserve.engine.runtimes.swarm import pool_label

    base = tmp_path_factory.mktemp("swarm")
    home = base / "home"
    conn = duckserve.connect(home=str(home))
    pool = f"SWARM_{uuid.uuid4().hex[:6].upper()}"   # unique: a node label per pool, the node is shared
    label = pool_label(pool)
    conn.execute(f"CREATE COMPUTE POOL {pool} MIN_NODES = 2 MAX_NODES = 2 INSTANCE_FAMILY = 'CPU_X64_XS' "
                 "RUNTIME = 'SWARM'; CREATE IMAGE REPOSITORY images")
    before = pool_row(conn, pool)
    node_id = engine().info()["Swarm"]["NodeID"]
    set_node_label(node_id, label, add=True)
    rng = np.random.default_rng(11)
    X = pd.DataFrame(rng.normal(size=(400, 3)), columns=["F1", "F2", "F3"])
    model = LinearRegression().fit(X, 2 * X["F1"] - X["F2"] + 0.5 * X["F3"])
    mv = Registry(conn).log_model(model, model_name="lin", version_name="v1", sample_input_data=X.head(20))
    conn.execute(f"CREATE TABLE feats AS SELECT range AS id, random() AS f1, random() AS f2, random() AS f3 "
                 f"FROM range({ROWS})")
    started = time.monotonic()
    summary = mv.create_service(service_name="lin_svc", service_compute_pool=pool, image_repo="images",
                                num_workers=1, cpu_requests="0.5", memory_requests="1Gi", min_instances=1,
                                max_instances=2, max_batch_rows=20_000, ingress_enabled=True)
    deployed = time.monotonic() - started
    try:
        yield {"conn": conn, "home": home, "pool": pool, "label": label, "node": node_id, "model": model, "mv": mv,
               "summary": summary, "before": before, "deploy_seconds": deployed}
    finally:
        try:
            close_swarm_account(conn, home)
        finally:
            set_node_label(node_id, label, add=False)
            from duckserve.engine.images.registry import LocalRegistry

            local = LocalRegistry(home)
            local.stop()
            remove_pulled_images(local.client.host)


def the_swarm_service(swarm: dict[str, Any]) -> dict[str, Any]:
    found = [s for s in swarm_services(swarm["home"]) if s["Spec"]["Labels"].get("io.duckserve.service")
             == "DUCKSERVE.PUBLIC.LIN_SVC"]
    assert len(found) == 1
    return engine().service(found[0]["ID"])  # type: ignore[no-any-return]


def expected(swarm: dict[str, Any], conn: Any, where: str = "") -> np.ndarray:
    frame = conn.execute(f"SELECT f1 AS F1, f2 AS F2, f3 AS F3 FROM feats {where} ORDER BY id").fetchdf()
    return swarm["model"].predict(frame)  # type: ignore[no-any-return]


def predictions(conn: Any, table: str = "feats") -> np.ndarray:
    got = conn.execute(f"SELECT id, lin_svc!predict(f1, f2, f3) AS p FROM {table} ORDER BY id").fetchnumpy()
    return got["p"]  # type: ignore[no-any-return]


def test_the_pool_is_the_labeled_nodes(swarm: dict[str, Any]) -> None:
    before = swarm["before"]   # no node carried the label yet
    assert before["runtime"] == "SWARM" and before["idle_nodes"] == 0 and before["active_nodes"] == 0
    assert "0 of MIN_NODES = 2" in before["status_message"] and swarm["label"] in before["status_message"]
    assert "docker node update --label-add" in before["status_message"]
    now = pool_row(swarm["conn"], swarm["pool"])
    assert now["state"] == "ACTIVE" and now["active_nodes"] == 1 and now["idle_nodes"] == 0
    assert now["target_nodes"] == 2 and "1 of MIN_NODES = 2" in now["status_message"]


def test_a_service_is_a_swarm_service_answering_like_the_model(swarm: dict[str, Any]) -> None:
    conn = swarm["conn"]
    service = the_swarm_service(swarm)
    spec = service["Spec"]
    assert spec["Mode"]["Replicated"]["Replicas"] == 1
    task = spec["TaskTemplate"]
    assert task["Placement"]["Constraints"] == [f"node.labels.{swarm['label']}==true"]
    assert task["Resources"]["Reservations"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 2**30}
    assert task["Resources"]["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 2**30}
    image = task["ContainerSpec"]["Image"]
    assert image.startswith("127.0.0.1:") and "@sha256:" in image    # from the repository's registry
    assert spec["UpdateConfig"]["Order"] == "start-first" and spec["UpdateConfig"]["FailureAction"] == "rollback"
    got = predictions(conn)
    assert len(got) == ROWS
    np.testing.assert_allclose(got, expected(swarm, conn), rtol=1e-12, atol=1e-12)
    container = rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE lin_svc")[0]
    assert container["runtime"] == "SWARM" and container["status"] == "READY"
    assert container["endpoint"].startswith("http://127.0.0.1:")


def test_logs_and_status_come_from_swarm(swarm: dict[str, Any]) -> None:
    conn = swarm["conn"]
    log = conn.execute("CALL SYSTEM$GET_SERVICE_LOGS('lin_svc', 0, 'model-inference')").fetchone()[0]
    assert "loaded in" in log and "serving model LIN" in log
    status = conn.execute("CALL SYSTEM$GET_SERVICE_STATUS('lin_svc')").fetchone()[0]
    assert '"status": "READY"' in status


def test_the_ingress_reaches_the_tasks(swarm: dict[str, Any]) -> None:
    conn = swarm["conn"]
    secret = conn.execute("ALTER USER admin ADD PROGRAMMATIC ACCESS TOKEN swarm_probe").fetchall()[0][1]
    url = wait_for(lambda: rows(conn, "SHOW ENDPOINTS IN SERVICE lin_svc")[0]["ingress_url"], what="the ingress")
    answer = httpx.post(f"http://{url}/predict", json={"data": [[0, 1.0, 2.0, 3.0]]},
                        headers={"Authorization": f"Bearer {secret}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    want = swarm["model"].predict(pd.DataFrame({"F1": [1.0], "F2": [2.0], "F3": [3.0]}))[0]
    assert answer.json()["data"][0][1] == pytest.approx(want)


def test_scaling_is_the_replica_count_and_a_killed_task_loses_no_row(swarm: dict[str, Any]) -> None:
    conn = swarm["conn"]
    conn.execute("ALTER SERVICE lin_svc SET MIN_INSTANCES = 2 MAX_INSTANCES = 2")
    service = the_swarm_service(swarm)
    assert service["Spec"]["Mode"]["Replicated"]["Replicas"] == 2
    assert len(running_tasks(service["ID"])) == 2
    containers = rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE lin_svc")
    assert [c["status"] for c in containers] == ["READY", "READY"]
    assert len({c["endpoint"] for c in containers}) == 2

    # a bigger table, so that the query is still running when a task dies (1M rows took under 0.6 s
    # on a quiet machine: 3M take about 2 s)
    total = 3_000_000
    conn.execute("CREATE TABLE big AS SELECT range AS id, random() AS f1, random() AS f2, random() AS f3 "
                 f"FROM range({total})")
    result: dict[str, Any] = {}
    victim = containers[1]
    thread = threading.Thread(target=lambda: result.update(got=predictions(conn, "big")), daemon=True)
    thread.start()
    time.sleep(0.6)
    assert thread.is_alive(), "the query ended before the kill: make the table bigger"
    engine().kill(victim["container_id"])
    thread.join(120)
    assert not thread.is_alive()
    got = result["got"]
    frame = conn.execute("SELECT f1 AS F1, f2 AS F2, f3 AS F3 FROM big ORDER BY id").fetchdf()
    assert len(got) == total and not np.isnan(got).any()
    np.testing.assert_allclose(got, swarm["model"].predict(frame), rtol=1e-12, atol=1e-12)
    # Swarm replaced the killed task in its slot
    wait_for(lambda: len(running_tasks(service["ID"])) == 2, what="the replaced task")
    slot = int(victim["instance_id"]) + 1
    failed = [t for t in engine().tasks(service=[service["ID"]]) if t["Slot"] == slot and t["Status"]["State"] == "failed"]
    assert failed and failed[0]["Status"]["ContainerStatus"]["ExitCode"] == 137
    conn.execute("DROP TABLE big")

    conn.execute("ALTER SERVICE lin_svc SET MIN_INSTANCES = 1 MAX_INSTANCES = 1")  # (1..2 keeps the 2 running)
    assert the_swarm_service(swarm)["Spec"]["Mode"]["Replicated"]["Replicas"] == 1
    wait_for(lambda: len(running_tasks(service["ID"])) == 1, what="the scale-down")
    assert len(rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE lin_svc")) == 1


def test_an_update_that_fails_rolls_back(swarm: dict[str, Any]) -> None:
    """A new spec whose tasks cannot start (the server refuses an unknown argument): Swarm starts
    the new task first, sees it fail, rolls back; the old task serves throughout."""
    from duckserve.engine.account import Account
    from duckserve.engine.runtimes import get_runtime
    from duckserve.engine.services.instances import server_spec
    from duckserve.engine.services.lifecycle import Services

    conn = swarm["conn"]
    account = Account(swarm["home"])
    services = Services(account)
    record = services.get(account.open_session(), "lin_svc")
    assert record is not None
    package = services.models.package_path(services.model_of(record), record.props["version"])
    good = server_spec(account.home, record, services.service_dir(record), package, 0)
    broken = dataclasses.replace(good, args=[*good.args, "--no-such-option"])
    runtime = get_runtime("swarm")
    before = the_swarm_service(swarm)
    old_task = running_tasks(before["ID"])[0]["ID"]
    handles = runtime.apply(1, lambda i: broken, services.handles(record))
    handle = handles[0]
    wait_for(lambda: runtime.update_state(handle) == "rollback_completed", timeout=120, what="the rollback")  # type: ignore[attr-defined]
    after = the_swarm_service(swarm)
    assert "--no-such-option" not in after["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"]
    assert after["Spec"]["Labels"]["io.duckserve.spec-digest"] == before["Spec"]["Labels"]["io.duckserve.spec-digest"]
    assert [t["ID"] for t in running_tasks(after["ID"])] == [old_task]   # never stopped
    failed = [t for t in engine().tasks(service=[after["ID"]]) if t["Status"]["State"] == "failed"
              and "--no-such-option" in t["Spec"]["ContainerSpec"]["Args"]]
    assert failed
    assert conn.execute("SELECT count(lin_svc!predict(f1, f2, f3)) FROM feats").fetchone() == (ROWS,)


def test_a_model_update_is_a_swarm_rolling_update(swarm: dict[str, Any]) -> None:
    """ALTER SERVICE ... SET MODEL_VERSION: Swarm rolls the service to the new image, start-first."""
    conn = swarm["conn"]
    rng = np.random.default_rng(12)
    X = pd.DataFrame(rng.normal(size=(400, 3)), columns=["F1", "F2", "F3"])
    model_v2 = LinearRegression().fit(X, X["F1"] + 3 * X["F3"])
    Registry(conn).log_model(model_v2, model_name="lin", version_name="v2", sample_input_data=X.head(20))
    before = the_swarm_service(swarm)
    old_task = running_tasks(before["ID"])[0]["ID"]
    conn.execute("ALTER SERVICE lin_svc SET MODEL_VERSION = 'V2'")
    after = the_swarm_service(swarm)
    assert after["ID"] == before["ID"]       # the same Swarm service, updated in place
    assert after["UpdateStatus"]["State"] == "completed"
    assert after["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] != before["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    assert [t["ID"] for t in running_tasks(after["ID"])] != [old_task]
    frame = conn.execute("SELECT f1 AS F1, f2 AS F2, f3 AS F3 FROM feats ORDER BY id").fetchdf()
    np.testing.assert_allclose(predictions(conn), model_v2.predict(frame), rtol=1e-12, atol=1e-12)
    described = rows(conn, "DESCRIBE SERVICE lin_svc")[0]
    assert described["update_status"] == "DONE"


def test_suspend_resume_and_drop(swarm: dict[str, Any]) -> None:
    conn, home = swarm["conn"], swarm["home"]
    conn.execute("ALTER SERVICE lin_svc SUSPEND")
    service = the_swarm_service(swarm)
    assert service["Spec"]["Mode"]["Replicated"]["Replicas"] == 0    # suspended: 0 replicas, the service kept
    wait_for(lambda: not running_tasks(service["ID"]), what="the tasks to stop")
    assert rows(conn, "SELECT status FROM (SHOW SERVICES LIKE 'LIN_SVC')")[0]["status"] == "SUSPENDED"
    assert pool_row(conn, swarm["pool"])["active_nodes"] == 0
    conn.execute("ALTER SERVICE lin_svc RESUME")
    assert the_swarm_service(swarm)["Spec"]["Mode"]["Replicated"]["Replicas"] == 1
    assert conn.execute("SELECT count(lin_svc!predict(f1, f2, f3)) FROM feats").fetchone() == (ROWS,)
    log_before_drop = conn.execute("CALL SYSTEM$GET_SERVICE_LOGS('lin_svc', 0, 'model-inference')").fetchone()[0]
    assert "loaded in" in log_before_drop

    conn.execute("DROP SERVICE lin_svc")
    assert swarm_services(home) == []
    wait_for(lambda: not engine().containers({"io.duckserve.home": str(home)}), what="the containers to go")
    assert pool_row(conn, swarm["pool"])["state"] == "IDLE"


def test_deploy_checks_fail_clearly_and_leave_nothing(swarm: dict[str, Any]) -> None:
    conn, home, mv = swarm["conn"], swarm["home"], swarm["mv"]
    conn.execute("CREATE COMPUTE POOL swarm_nowhere MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_XS' "
                 "RUNTIME = 'SWARM'")
    with pytest.raises(errors.OperationalError, match="compute pool SWARM_NOWHERE has no ready swarm node: label one "
                                                      "with `docker node update --label-add"):
        mv.create_service(service_name="nowhere_svc", service_compute_pool="swarm_nowhere", image_repo="images",
                          num_workers=1)
    # an instance family larger than any node (CPU_X64_L: 28 vCPU) cannot be reserved
    conn.execute("CREATE COMPUTE POOL swarm_big MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_L' "
                 "RUNTIME = 'SWARM'")
    from duckserve.engine.runtimes.swarm import pool_label

    set_node_label(swarm["node"], pool_label("SWARM_BIG"), add=True)
    try:
        with pytest.raises(errors.ProgrammingError, match="reserves 25.2 CPUs .* more than any node of compute pool "
                                                          "SWARM_BIG has: pass smaller cpu_requests"):
            mv.create_service(service_name="big_svc", service_compute_pool="swarm_big", image_repo="images",
                              num_workers=1)
    finally:
        set_node_label(swarm["node"], pool_label("SWARM_BIG"), add=False)
    assert rows(conn, "SHOW SERVICES LIKE '%_SVC' EXCLUDE JOBS") == [] or all(
        r["name"] not in ("NOWHERE_SVC", "BIG_SVC") for r in rows(conn, "SHOW SERVICES EXCLUDE JOBS"))
    assert not [s for s in swarm_services(home) if s["Spec"]["Labels"].get("io.duckserve.service") in
                ("DUCKSERVE.PUBLIC.NOWHERE_SVC", "DUCKSERVE.PUBLIC.BIG_SVC")]
    conn.execute("DROP COMPUTE POOL swarm_nowhere; DROP COMPUTE POOL swarm_big")


def test_a_swarm_pool_needs_a_manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no engine answers, CREATE COMPUTE POOL ... RUNTIME = 'SWARM' fails at once saying what to do."""
    from duckserve.engine.runtimes import _made

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    monkeypatch.delitem(_made, "swarm", raising=False)
    conn = duckserve.connect(home=str(tmp_path / "home"))
    try:
        with pytest.raises(errors.OperationalError, match=r"cannot use RUNTIME = 'SWARM'.*no Docker engine"):
            conn.execute("CREATE COMPUTE POOL p MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_XS' "
                         "RUNTIME = 'SWARM'")
        assert rows(conn, "SHOW COMPUTE POOLS") == []
    finally:
        conn.close()
        _made.pop("swarm", None)
