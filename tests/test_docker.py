"""Services on real Docker with a real registry: Docker pools, layered images pushed to the local
registry, containers that answer svc!predict like the in-process model, suspend/resume/drop, a
killed container, ingress, GPUs on a host without them, grants, DROP IMAGE REPOSITORY.

Two image builds in all (a scikit-learn environment, then a custom model with only the server's
packages); every other service reuses their layers."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import duckserve
from duckserve import errors
from duckserve.model import CustomModel, ModelContext, inference_api
from duckserve.registry import Registry
from tests import needs
from tests.conftest import rows
from tests.docker_support import require_docker

pytestmark = pytest.mark.xdist_group("docker")


class Tripler(CustomModel):
    @inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"Y": X["X"] * 3})


def containers_of(home: Path, running_only: bool = False) -> list[dict[str, Any]]:
    from duckserve.engine.runtimes.docker_engine import Engine

    found = Engine().containers({"io.duckserve.home": str(home)})
    return [c for c in found if c.get("State") == "running"] if running_only else found


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_docker()
    home = tmp_path_factory.mktemp("docker") / "home"
    conn = duckserve.connect(home=str(home))
    conn.execute("CREATE COMPUTE POOL dpool MIN_NODES = 1 MAX_NODES = 2 INSTANCE_FAMILY = 'CPU_X64_XS' "
                 "RUNTIME = 'DOCKER'; CREATE IMAGE REPOSITORY images")
    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(400, 3)), columns=["F1", "F2", "F3"])
    model = LogisticRegression().fit(X, (X["F1"] + X["F2"] > 0).astype(int))
    reg = Registry(conn)
    mv = reg.log_model(model, model_name="clf", version_name="v1", sample_input_data=X.head(20))
    started = time.monotonic()
    summary = mv.create_service(service_name="clf_svc", service_compute_pool="dpool", image_repo="images",
                                num_workers=1)
    yield {"conn": conn, "home": home, "reg": reg, "model": model, "X": X, "summary": summary,
           "seconds": time.monotonic() - started}
    try:
        for service in rows(conn, "SHOW SERVICES EXCLUDE JOBS"):
            conn.execute(f"DROP SERVICE {service['name']}")
    finally:
        conn.close()
        from duckserve.engine.images.registry import LocalRegistry
        from duckserve.engine.runtimes.docker_engine import Engine

        local = LocalRegistry(home)
        local.stop()
        engine, host = Engine(), local.client.host
        for image in engine.images("io.duckserve.build"):  # what Docker pulled from this registry
            if any(name.startswith(host + "/") for name in (image.get("RepoTags") or []) + (image.get("RepoDigests") or [])):
                engine.remove_image(image["Id"], force=True)


def test_a_docker_service_answers_like_the_model(world: dict[str, Any]) -> None:
    conn, model, summary = world["conn"], world["model"], world["summary"]
    assert summary["status"] == "RUNNING" and summary["image_built"] is True
    assert rows(conn, "SELECT runtime FROM (SHOW COMPUTE POOLS)")[0]["runtime"] == "DOCKER"
    conn.execute("CREATE OR REPLACE TABLE feats AS SELECT range AS id, sin(range) AS f1, cos(range) AS f2, "
                 "(range % 7) / 7.0 AS f3 FROM range(100000)")
    got = np.array([r[0] for r in conn.execute("SELECT clf_svc!predict(f1, f2, f3) FROM feats ORDER BY id").fetchall()])
    X = conn.execute("SELECT f1 AS F1, f2 AS F2, f3 AS F3 FROM feats ORDER BY id").fetch_pandas_all()
    want = model.predict(X)
    assert len(want) == 100_000 and np.array_equal(got, want)

    container = rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE clf_svc")[0]
    assert container["runtime"] == "DOCKER" and container["status"] == "READY"
    assert container["image_digest"].startswith("sha256:") and len(container["container_id"]) == 12
    assert rows(conn, "SELECT runtime FROM (SHOW SERVICES LIKE 'CLF_SVC')")[0]["runtime"] == "DOCKER"
    labels = containers_of(world["home"])[0]["Labels"]
    assert labels["io.duckserve.service"] == "DUCKSERVE.PUBLIC.CLF_SVC" and labels["io.duckserve.instance"] == "0"
    log = conn.execute("CALL SYSTEM$GET_SERVICE_LOGS('clf_svc', 0, 'model-inference')").fetchone()[0]
    assert "serving model CLF version V1" in log  # read through the engine


def test_the_image_is_layered_in_the_registry_and_docker_pulls_it(world: dict[str, Any]) -> None:
    conn, home = world["conn"], world["home"]
    build_log = conn.execute(f"CALL SYSTEM$GET_SERVICE_LOGS('{world['summary']['build_job']}', 0, 'model-build')"
                             ).fetchone()[0]
    assert "base image:" in build_log and "server packages:" in build_log and "scikit-learn==" in build_log
    url = rows(conn, "SHOW IMAGE REPOSITORIES")[0]["repository_url"]
    assert url.startswith("127.0.0.1:") and url.endswith("/duckserve/public/images")
    images = rows(conn, "SHOW IMAGES IN IMAGE REPOSITORY images")
    assert [(i["image_name"], i["tags"].split("-")[0]) for i in images] == [("clf", "v1")]
    image = images[0]
    assert image["digest"].startswith("sha256:") and 50 * 2**20 < image["size"] < 600 * 2**20
    assert image["image_path"] == f"{url}/clf:{image['tags']}" and image["created_on"] is not None
    docker = shutil.which("docker")
    if docker:
        pulled = subprocess.run([docker, "pull", image["image_path"]], capture_output=True, text=True, timeout=300)
        assert pulled.returncode == 0, pulled.stderr
        assert image["digest"] in pulled.stdout

    # instances start without compiling: what the server and the model's framework import (the
    # standard library too) has its bytecode in the image
    from duckserve.engine.runtimes.docker_engine import Engine

    code, output = Engine().run_once(f"duckserve-test-imports-{os.getpid()}", {
        "Image": f"{url}/clf@{image['digest']}", "Entrypoint": ["/usr/bin/python3.11"],
        "Cmd": ["-v", "-c", "import duckserve.inference_server.serve, pandas, pyarrow, sklearn"]}, timeout=300)
    loaded = [line for line in output.splitlines() if line.startswith("# code object from")]
    compiled = [line for line in loaded if not line.endswith(".pyc'")]
    assert code == 0 and len(loaded) > 500 and not compiled, compiled[:10]
    assert re.search(r"loaded into the local Docker engine \([1-4] new layer\(s\) of 5\)", build_log), build_log

    # a second version with the same dependencies pushes only its model layer
    mv2 = world["reg"].log_model(world["model"], model_name="clf", version_name="v2",
                                 sample_input_data=world["X"].head(20))
    second = mv2.create_service(service_name="clf_v2_svc", service_compute_pool="dpool", image_repo="images",
                                num_workers=1, ingress_enabled=True)
    job = [r for r in rows(conn, "SHOW SERVICES") if r["name"] == second["build_job"]][0]
    assert job["status"] == "DONE"
    log = conn.execute(f"CALL SYSTEM$GET_SERVICE_LOGS('{second['build_job']}', 0, 'model-build')").fetchone()[0]
    assert "1 new layer(s) of 5" in log and "pushed 1: model package" in log
    assert "loaded into the local Docker engine (1 new layer(s) of 5)" in log
    tags = sorted(i["tags"].split("-")[0] for i in rows(conn, "SHOW IMAGES IN IMAGE REPOSITORY images"))
    assert tags == ["v1", "v2"]

    # the same inputs give the same image: building again skips, and the digest stays
    again = world["reg"].get_model("clf").version("v2").create_service(
        service_name="clf_v2_again", service_compute_pool="dpool", image_repo="images", num_workers=1)
    assert again["image_built"] is False and again["image"] == second["image"]
    conn.execute("DROP SERVICE clf_v2_again")

    # the ingress reaches the container
    secret = rows(conn, "ALTER USER admin ADD PROGRAMMATIC ACCESS TOKEN docker_test DAYS_TO_EXPIRY = 1")[0][
        "token_secret"]
    ingress = rows(conn, "SHOW ENDPOINTS IN SERVICE clf_v2_svc")[0]["ingress_url"]
    answer = httpx.post(f"http://{ingress}/predict", json={"data": [[0, 3.0, 3.0, 0.0], [1, -3.0, -3.0, 0.0]]},
                        headers={"Authorization": f"Bearer {secret}"}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == [[0, 1], [1, 0]]
    conn.execute("DROP SERVICE clf_v2_svc")
    assert home.exists()


def test_suspend_resume_kill_and_drop_leave_no_container(world: dict[str, Any]) -> None:
    conn, home = world["conn"], world["home"]
    assert len(containers_of(home, running_only=True)) == 1
    conn.execute("ALTER SERVICE clf_svc SUSPEND")
    assert containers_of(home) == []
    assert rows(conn, "SELECT status FROM (SHOW SERVICES LIKE 'CLF_SVC')")[0]["status"] == "SUSPENDED"
    conn.execute("ALTER SERVICE clf_svc RESUME")
    assert conn.execute("SELECT count(clf_svc!predict(1.0, 2.0, 3.0)) FROM range(10)").fetchone() == (10,)
    assert len(containers_of(home, running_only=True)) == 1

    victim = rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE clf_svc")[0]
    os.kill(victim["pid"], signal.SIGKILL)  # the container's init dies: the container with it
    # the dead container shows FAILED with its exit code until the controller replaces it; then the
    # replacement shows the restart and the exit code it replaced
    deadline = time.monotonic() + 30
    while True:
        seen = rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE clf_svc")[0]
        if seen["status"] == "FAILED" or seen["restart_count"]:
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.1)
    if seen["status"] == "FAILED":
        assert seen["exit_code"] == 137 and "exited with code 137" in seen["message"]
    else:
        assert seen["restart_count"] == 1 and seen["last_exit_code"] == 137
    # the next call is answered (by the replacement, or auto-resume replaces the failed container)
    assert conn.execute("SELECT count(clf_svc!predict(1.0, 2.0, 3.0)) FROM range(10)").fetchone() == (10,)
    assert len(containers_of(home, running_only=True)) == 1

    conn.execute("DROP SERVICE clf_svc")
    assert containers_of(home) == []


def test_custom_model_grants_and_dropping_the_repository(world: dict[str, Any]) -> None:
    conn, home = world["conn"], world["home"]
    conn.execute("CREATE ROLE builder; GRANT USAGE ON COMPUTE POOL dpool TO ROLE builder; "
                 "GRANT CREATE MODEL ON ACCOUNT TO ROLE builder; GRANT ROLE builder TO USER admin")
    conn.execute("USE ROLE builder")
    try:
        mv = Registry(conn).log_model(Tripler(ModelContext()), model_name="tripler",
                                      sample_input_data=pd.DataFrame({"X": [1.0]}))
        with pytest.raises(errors.InsufficientPrivileges, match="image repository"):
            mv.create_service(service_name="tri_svc", service_compute_pool="dpool", image_repo="images")
        conn.execute("USE ROLE accountadmin")
        conn.execute("GRANT READ, WRITE, SERVICE READ, SERVICE WRITE ON IMAGE REPOSITORY images TO ROLE builder")
        conn.execute("USE ROLE builder")
        mv.create_service(service_name="tri_svc", service_compute_pool="dpool", image_repo="images", num_workers=1)
    finally:
        conn.execute("USE ROLE accountadmin")
    assert conn.execute("SELECT sum(tri_svc!predict(range::DOUBLE)) FROM range(1000)").fetchone()[0] == 3 * 499500
    with pytest.raises(errors.ProgrammingError, match="runs service"):
        conn.execute("ALTER COMPUTE POOL dpool SET RUNTIME = 'PROCESS'")
    conn.execute("DROP SERVICE tri_svc")

    from duckserve.engine.images.registry import LocalRegistry

    client = LocalRegistry(home).client
    assert any(r.startswith("duckserve/public/images/") for r in client.repositories())
    conn.execute("DROP IMAGE REPOSITORY images")
    assert not any(r.startswith("duckserve/public/images/") for r in LocalRegistry(home).ensure_running().repositories())
    conn.execute("CREATE IMAGE REPOSITORY images")
    assert rows(conn, "SHOW IMAGES IN IMAGE REPOSITORY images") == []


def test_gpu_requests_fail_clearly_without_gpus(world: dict[str, Any]) -> None:
    conn, reg = world["conn"], world["reg"]
    if any(d.startswith("nvidia") and d[6:].isdigit() for d in os.listdir("/dev")):
        pytest.skip("this host has NVIDIA GPUs")
    conn.execute("CREATE COMPUTE POOL gpool MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'GPU_NV_S' RUNTIME = 'DOCKER'")
    mv = reg.log_model(Tripler(ModelContext()), model_name="gpu_tripler", sample_input_data=pd.DataFrame({"X": [1.0]}))
    before = len(rows(conn, "SHOW SERVICES"))
    with pytest.raises(errors.ProgrammingError, match=r"gpu_requests=1.*no NVIDIA GPU.*NVIDIA Container Toolkit"):
        mv.create_service(service_name="gpu_svc", service_compute_pool="gpool", image_repo="images", gpu_requests="1")
    assert len(rows(conn, "SHOW SERVICES")) == before  # no job, no service


def test_a_container_reaches_nothing_but_its_endpoint(world: dict[str, Any]) -> None:
    """A server on this host, listening on every address, is not reachable from a service container."""
    from duckserve.engine.runtimes.docker import NETWORK
    from duckserve.engine.runtimes.docker_engine import Engine

    engine = Engine()
    network = engine.network(NETWORK)
    assert network is not None and network["Options"]["com.docker.network.bridge.enable_ip_masquerade"] == "false"
    gateway = network["IPAM"]["Config"][0]["Gateway"]
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen(1)
    threading.Thread(target=lambda: listener.accept(), daemon=True).start()
    image = rows(world["conn"], "SHOW IMAGES IN IMAGE REPOSITORY images")
    reference = image[0]["image_path"] if image else "duckserve/base:bookworm-python3.11"
    if engine.image(reference) is None:  # instances run the image by digest: its tag may not be in Docker
        engine.pull(reference)
    probe = (f"import socket; s = socket.socket(); s.settimeout(3)\ntry:\n    s.connect(({gateway!r}, "
             f"{listener.getsockname()[1]})); print('REACHED')\nexcept OSError as e:\n    print('BLOCKED', e)")
    container = engine.create(f"duckserve-probe-{os.getpid()}", {
        "Image": reference, "Entrypoint": ["/usr/bin/python3.11"], "Cmd": ["-c", probe],
        "HostConfig": {"NetworkMode": NETWORK}})
    try:
        engine.start(container)
        engine.wait(container, 60)
        output = engine.logs(container)
    finally:
        engine.remove(container)
        listener.close()
    if os.geteuid() != 0:
        needs.unavailable("the firewall rules need root: run the tests as root")
    assert "BLOCKED" in output, output


def test_create_service_time_is_measured(world: dict[str, Any]) -> None:
    assert world["seconds"] > 0  # the figure goes to bench/, not a timed assertion


def test_a_docker_pool_without_an_engine_fails_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from duckserve.engine.runtimes import _made

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    monkeypatch.setattr("duckserve.engine.runtimes.docker_engine.DEFAULT_SOCKET", str(tmp_path / "none.sock"))
    monkeypatch.delitem(_made, "docker", raising=False)
    conn = duckserve.connect(home=str(tmp_path / "home"))
    try:
        with pytest.raises(errors.OperationalError, match=r"cannot use RUNTIME = 'DOCKER'.*no Docker engine.*dockerd"):
            conn.execute("CREATE COMPUTE POOL dp MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = 'CPU_X64_XS' "
                         "RUNTIME = 'DOCKER'")
        assert rows(conn, "SHOW COMPUTE POOLS") == []
    finally:
        conn.close()
        _made.pop("docker", None)


def test_docker_kill_mid_query_the_instance_comes_back_and_every_row_is_answered(world: dict[str, Any]) -> None:
    """`docker kill` of a service's only container during a 1M-row query: the controller replaces it
    (restart_count 1, last_exit_code 137) and the query's batches wait for it; every row comes back once."""
    conn, reg, model = world["conn"], world["reg"], world["model"]
    mv = reg.get_model("clf").version("v1")
    mv.create_service(service_name="heal_docker_svc", service_compute_pool="dpool", image_repo="images",
                      num_workers=1, max_instances=1, max_batch_rows=50_000)
    victim = rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE heal_docker_svc")[0]
    conn.execute("CREATE OR REPLACE TABLE million AS SELECT range AS id, (range % 97) / 24.0 - 2 AS f1, "
                 "(range % 89) / 22.0 - 2 AS f2, (range % 83) / 20.0 - 2 AS f3 FROM range(1000000)")
    killer = threading.Timer(0.5, subprocess.run, (["docker", "kill", victim["container_id"]],),
                             {"capture_output": True})
    killer.start()
    got = conn.execute("SELECT count(*), count(DISTINCT id), sum(heal_docker_svc!predict(f1, f2, f3)) "
                       "FROM million").fetchone()
    killer.join()
    frame = conn.execute("SELECT f1 AS F1, f2 AS F2, f3 AS F3 FROM million").fetch_pandas_all()
    assert got == (1_000_000, 1_000_000, int(model.predict(frame[["F1", "F2", "F3"]]).sum()))
    deadline = time.monotonic() + 60
    while True:
        seen = rows(conn, "SHOW SERVICE CONTAINERS IN SERVICE heal_docker_svc")[0]
        if seen["restart_count"] == 1 and seen["status"] == "READY":
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.2)
    assert seen["container_id"] != victim["container_id"] and seen["last_exit_code"] == 137
    conn.execute("DROP SERVICE heal_docker_svc")
