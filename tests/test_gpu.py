"""GPU requests, every branch: CPU-only model types fail their build with the seed's message; a request
must fit the pool's instance family (and the host); without NVIDIA GPUs a GPU service deploys and
runs on the CPU, saying so in create_service's result, DESCRIBE SERVICE and its log; with GPUs each
instance gets its own share through CUDA_VISIBLE_DEVICES and one worker by default.

The host's GPU count is set with $DUCKSERVE_HOST_GPUS (what the services read instead of /dev/nvidia*),
so the GPU-host branch runs on machines without GPUs; the instances are real processes whose
environment is read back from /proc.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import duckserve
from duckserve import errors
from duckserve.model import ModelContext
from duckserve.registry import Registry
from tests import model_kinds as K
from tests.conftest import rows
from tests.custom_models import PlusOne

pytestmark = pytest.mark.xdist_group("gpu")

SETUP = """
CREATE COMPUTE POOL IF NOT EXISTS cpu_pool MIN_NODES = 1 MAX_NODES = 2 INSTANCE_FAMILY = 'CPU_X64_XS';
CREATE COMPUTE POOL IF NOT EXISTS gpu_pool MIN_NODES = 1 MAX_NODES = 2 INSTANCE_FAMILY = 'GPU_NV_S';
CREATE COMPUTE POOL IF NOT EXISTS big_gpu_pool MIN_NODES = 1 MAX_NODES = 2 INSTANCE_FAMILY = 'GPU_NV_M';
CREATE IMAGE REPOSITORY IF NOT EXISTS images;
"""


@pytest.fixture(scope="module")
def gpu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("gpu") / "home"
    conn = duckserve.connect(home=str(home))
    conn.cursor().execute(SETUP)
    reg = Registry(conn)
    mv = reg.log_model(PlusOne(ModelContext()), model_name="plus_one", sample_input_data=pd.DataFrame({"X": [1.0]}))
    yield {"conn": conn, "reg": reg, "mv": mv, "tmp": tmp_path_factory.mktemp("gpu_files")}
    for service in rows(conn, "SHOW SERVICES EXCLUDE JOBS"):
        conn.execute(f"DROP SERVICE IF EXISTS {service['name']}")
    conn.close()


def instance_environments(conn: Any, service: str) -> list[dict[str, str]]:
    """The environment variables of each instance's server process, from /proc."""
    found = []
    for container in sorted(rows(conn, f"SHOW SERVICE CONTAINERS IN SERVICE {service}"), key=lambda c: c["instance_id"]):
        raw = Path(f"/proc/{container['pid']}/environ").read_bytes()
        found.append(dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item))
    return found


def log_of(conn: Any, service: str, instance: int = 0) -> str:
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:
        text = conn.execute(f"CALL SYSTEM$GET_SERVICE_LOGS('{service}', {instance}, 'model-inference')").fetchone()[0]
        if "GPU:" in text:
            break
        time.sleep(0.2)
    return text


def test_cpu_only_model_types_fail_their_build_with_gpus(gpu: dict[str, Any]) -> None:
    conn, reg = gpu["conn"], gpu["reg"]
    X, _, label = K.tabular()
    mv = reg.log_model(LogisticRegression().fit(X, label), model_name="clf", sample_input_data=X)
    with pytest.raises(errors.BuildError, match=r"is a sklearn model, which runs on CPU only: the image build fails "
                                                r"when GPUs are requested \(gpu_requests=1\)") as info:
        mv.create_service(service_name="clf_gpu", service_compute_pool="gpu_pool", image_repo="images",
                          gpu_requests="1")
    job = str(info.value).split("SYSTEM$GET_SERVICE_LOGS('")[1].split("'")[0]
    assert rows(conn, f"SELECT status FROM (SHOW SERVICES LIKE '{job}')") == [{"status": "FAILED"}]
    log = conn.execute(f"CALL SYSTEM$GET_SERVICE_LOGS('{job}', 0, 'model-build')").fetchone()[0]
    assert "runs on CPU only" in log
    assert rows(conn, "SHOW SERVICES LIKE 'CLF_GPU'") == []
    # an MLflow model of a CPU-only flavor too
    path = gpu["tmp"] / "mlflow_clf"
    K.save_mlflow_sklearn(path)
    mlflow_mv = reg.log_model(str(path), model_name="mlflow_clf")
    with pytest.raises(errors.BuildError, match="is a mlflow model, which runs on CPU only"):
        mlflow_mv.create_service(service_name="mlflow_gpu", service_compute_pool="gpu_pool", image_repo="images",
                                 gpu_requests=1)


def test_gpu_requests_must_fit_the_family_and_the_host(gpu: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    mv = gpu["mv"]

    def create(pool: str, gpus: Any) -> None:
        mv.create_service(service_name="nope", service_compute_pool=pool, image_repo="images", gpu_requests=gpus)

    with pytest.raises(errors.ProgrammingError, match="compute pool CPU_POOL has instance family CPU_X64_XS, which "
                                                      "has no GPU: run it on a pool of a GPU family"):
        create("cpu_pool", "1")
    with pytest.raises(errors.ProgrammingError, match=r"gpu_requests=2 exceeds the 1 GPU\(s\) of instance family "
                                                      r"GPU_NV_S"):
        create("gpu_pool", "2")
    with pytest.raises(errors.ProgrammingError, match="'one' is not a number of GPUs"):
        create("gpu_pool", "one")
    monkeypatch.setenv("DUCKSERVE_HOST_GPUS", "1")
    with pytest.raises(errors.ProgrammingError, match=r"gpu_requests=2 exceeds the 1 NVIDIA GPU\(s\) of this host"):
        create("big_gpu_pool", "2")
    assert rows(gpu["conn"], "SHOW SERVICES LIKE 'NOPE'") == []


def test_without_nvidia_gpus_a_gpu_service_runs_on_the_cpu(gpu: dict[str, Any],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUCKSERVE_HOST_GPUS", "0")
    conn, mv = gpu["conn"], gpu["mv"]
    info = mv.create_service(service_name="gpu_on_cpu", service_compute_pool="gpu_pool", image_repo="images",
                             gpu_requests="1")
    note = "gpu_requests=1, but this host has no NVIDIA GPU: the service runs on the CPU"
    assert note in info["note"] and info["num_workers"] == 1 and info["status"] == "RUNNING"
    described = rows(conn, "SELECT gpu_requests, gpu_note, num_workers FROM (DESCRIBE SERVICE gpu_on_cpu)")[0]
    assert described["gpu_requests"] == "1" and note in described["gpu_note"] and described["num_workers"] == 1
    assert note in log_of(conn, "gpu_on_cpu")
    (environment,) = instance_environments(conn, "gpu_on_cpu")
    assert environment["CUDA_VISIBLE_DEVICES"] == "" and environment["DUCKSERVE_DEVICE"] == "cpu"
    assert conn.execute("SELECT gpu_on_cpu!predict(41.0)").fetchone() == (42.0,)
    build = conn.execute(f"CALL SYSTEM$GET_SERVICE_LOGS('{info['build_job']}', 0, 'model-build')").fetchone()[0]
    assert "accelerator:  cpu" in build or "build skipped" in build
    conn.execute("DROP SERVICE gpu_on_cpu")


def test_with_nvidia_gpus_each_instance_gets_its_share(gpu: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUCKSERVE_HOST_GPUS", "4")
    conn, mv = gpu["conn"], gpu["mv"]
    info = mv.create_service(service_name="shared_gpus", service_compute_pool="big_gpu_pool", image_repo="images",
                             gpu_requests="2", max_instances=2)
    assert "note" not in info and info["num_workers"] == 1
    environments = instance_environments(conn, "shared_gpus")
    assert [e["CUDA_VISIBLE_DEVICES"] for e in environments] == ["0,1", "2,3"]
    assert {e["DUCKSERVE_DEVICE"] for e in environments} == {"cuda"}
    assert "serving on CUDA devices 2,3" in log_of(conn, "shared_gpus", 1)
    build = conn.execute(f"CALL SYSTEM$GET_SERVICE_LOGS('{info['build_job']}', 0, 'model-build')").fetchone()[0]
    assert "accelerator:  gpu" in build  # the index's CUDA builds on a GPU host
    assert conn.execute("SELECT sum(shared_gpus!predict(range::DOUBLE)) FROM range(100)").fetchone() == (5050.0,)
    conn.execute("DROP SERVICE shared_gpus")
    # more GPUs asked than the host has for all instances: they share, and the service says so
    crowded = mv.create_service(service_name="crowded_gpus", service_compute_pool="big_gpu_pool", image_repo="images",
                                gpu_requests="4", max_instances=2, num_workers=2)
    assert "instances share GPUs" in crowded["note"] and crowded["num_workers"] == 2  # num_workers overrides
    assert [e["CUDA_VISIBLE_DEVICES"] for e in instance_environments(conn, "crowded_gpus")] == ["0,1,2,3"] * 2
    conn.execute("DROP SERVICE crowded_gpus")
    # a service without gpu_requests sees no GPU at all
    cpu = mv.create_service(service_name="no_gpus", service_compute_pool="cpu_pool", image_repo="images",
                            num_workers=1)
    assert "note" not in cpu
    (environment,) = instance_environments(conn, "no_gpus")
    assert environment["CUDA_VISIBLE_DEVICES"] == "" and environment["DUCKSERVE_DEVICE"] == "cpu"
    conn.execute("DROP SERVICE no_gpus")
