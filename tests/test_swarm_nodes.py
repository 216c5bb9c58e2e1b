"""A Swarm pool of two real nodes: this machine's engine (the manager) and a second engine in a network
namespace joined as a worker (tests/swarm_node.py). The pool's two instances are placed one per node;
a query over 2,000,000 rows loses the second node mid-query (every process of its namespace killed)
and still returns every row right; SHOW COMPUTE POOLS says 1 of 2 nodes; Swarm reschedules the lost
instance on the node that is left. Images come from a registry both nodes reach (127.0.100.1)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

import duckserve
from duckserve.registry import Registry
from tests import needs, swarm_node
from tests.conftest import rows
from tests.docker_support import (
    close_swarm_account,
    engine,
    remove_pulled_images,
    require_swarm,
    set_node_label,
)

pytestmark = pytest.mark.xdist_group("swarm")


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_swarm()
    why = swarm_node.unavailable()
    if why:
        needs.unavailable(f"needs a second swarm node on this machine: {why}")
    from duckserve.engine.runtimes.swarm import pool_label

    work = tmp_path_factory.mktemp("two_nodes")
    node = swarm_node.SecondNode.start(work)
    manager = engine().info()["Swarm"]["NodeID"]
    pool = f"PAIR_{uuid.uuid4().hex[:6].upper()}"
    key = pool_label(pool)
    previous = os.environ.get("DUCKSERVE_REGISTRY")
    os.environ["DUCKSERVE_REGISTRY"] = node.registry_host   # one both nodes pull from
    home = work / "home"
    conn = duckserve.connect(home=str(home))
    try:
        for node_id in (manager, node.node_id):
            set_node_label(node_id, key, add=True)
        conn.execute(f"CREATE COMPUTE POOL {pool} MIN_NODES = 2 MAX_NODES = 2 INSTANCE_FAMILY = 'CPU_X64_XS' "
                     "RUNTIME = 'SWARM'; CREATE IMAGE REPOSITORY images")
        yield {"conn": conn, "home": home, "pool": pool, "node": node, "manager": manager}
    finally:
        try:
            close_swarm_account(conn, home)
        finally:
            set_node_label(manager, key, add=False)
            remove_pulled_images(node.registry_host)   # the second node's images go with its data root
            node.remove()
            if previous is None:
                os.environ.pop("DUCKSERVE_REGISTRY", None)
            else:
                os.environ["DUCKSERVE_REGISTRY"] = previous


def test_placement_over_two_nodes_and_a_lost_node_loses_no_row(two_nodes: dict[str, Any]) -> None:
    conn, pool, node = two_nodes["conn"], two_nodes["pool"], two_nodes["node"]
    assert rows(conn, f"SELECT idle_nodes FROM (SHOW COMPUTE POOLS LIKE '{pool}')")[0]["idle_nodes"] == 2
    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(400, 3)), columns=["F1", "F2", "F3"])
    model = LinearRegression().fit(X, X["F1"] - 2 * X["F3"])
    mv = Registry(conn).log_model(model, model_name="pair", sample_input_data=X.head(20))
    mv.create_service(service_name="pair_svc", service_compute_pool=pool, image_repo="images", num_workers=1,
                      cpu_requests="0.5", memory_requests="1Gi", min_instances=2, max_instances=2,
                      max_batch_rows=20_000)
    service = engine().services(label=[f"io.duckserve.home={two_nodes['home']}"])[0]
    assert service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].startswith(node.registry_host + "/")
    tasks = [t for t in engine().tasks(service=[service["ID"]], desired_state=["running"])]
    assert {t["NodeID"] for t in tasks} == {two_nodes["manager"], node.node_id}   # one instance per node
    endpoints = {r["endpoint"] for r in rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE pair_svc")}
    assert any(e.startswith(f"http://{swarm_node.NODE_ADDRESS}:") for e in endpoints)
    assert rows(conn, f"SELECT active_nodes FROM (SHOW COMPUTE POOLS LIKE '{pool}')")[0]["active_nodes"] == 2

    conn.execute("CREATE TABLE big AS SELECT range AS id, random() AS f1, random() AS f2, random() AS f3 "
                 "FROM range(2000000)")
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(got=conn.execute(
        "SELECT id, pair_svc!predict(f1, f2, f3) AS p FROM big ORDER BY id").fetchnumpy()["p"]), daemon=True)
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive(), "the query ended before the node was lost: make the table bigger"
    node.kill()
    thread.join(300)
    assert not thread.is_alive() and "got" in result
    frame = conn.execute("SELECT f1 AS F1, f2 AS F2, f3 AS F3 FROM big ORDER BY id").fetchdf()
    assert len(result["got"]) == 2_000_000
    np.testing.assert_allclose(result["got"], model.predict(frame), rtol=1e-12, atol=1e-12)

    # Swarm sees the node down and reschedules its instance on the manager
    deadline = time.monotonic() + 120
    while True:
        record = rows(conn, f"SELECT * FROM (SHOW COMPUTE POOLS LIKE '{pool}')")[0]
        running = [t for t in engine().tasks(service=[service["ID"]], desired_state=["running"])
                   if t["Status"]["State"] == "running"]
        if "1 of MIN_NODES = 2" in record["status_message"] and len(running) == 2 and all(
                t["NodeID"] == two_nodes["manager"] for t in running):
            break
        assert time.monotonic() < deadline, f"no rescheduling: {record['status_message']}, {len(running)} running"
        time.sleep(1)
    assert conn.execute("SELECT count(pair_svc!predict(f1, f2, f3)) FROM big").fetchone() == (2_000_000,)
