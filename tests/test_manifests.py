"""Kubernetes manifests of services (CALL SYSTEM$GET_SERVICE_MANIFESTS, `duckserve manifests`),
validated strictly and offline against Kubernetes' own schemas (PyPI's kubernetes-validate): a CPU
service, a GPU service and a service with ingress, deployed for real on a process pool."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pandas as pd
import pytest
import yaml

import duckserve
from duckserve import errors
from duckserve.engine.services.manifests import KUBERNETES_VERSION, POOL_LABEL
from duckserve.model import ModelContext
from duckserve.registry import Registry
from tests.conftest import rows
from tests.custom_models import PlusOne

pytestmark = pytest.mark.xdist_group("manifests")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("manifests") / "home"
    conn = duckserve.connect(home=str(home))
    conn.execute("""
        CREATE COMPUTE POOL cpu_pool MIN_NODES = 1 MAX_NODES = 3 INSTANCE_FAMILY = 'CPU_X64_S';
        CREATE COMPUTE POOL gpu_pool MIN_NODES = 1 MAX_NODES = 2 INSTANCE_FAMILY = 'GPU_NV_S';
        CREATE IMAGE REPOSITORY images;
    """)
    mv = Registry(conn).log_model(PlusOne(ModelContext()), model_name="plus_one",
                                  sample_input_data=pd.DataFrame({"X": [1.0]}))
    common = dict(image_repo="images", num_workers=1)
    mv.create_service(service_name="cpu_svc", service_compute_pool="cpu_pool", min_instances=1, max_instances=3,
                      cpu_requests="2", memory_requests="4Gi", **common)
    mv.create_service(service_name="gpu_svc", service_compute_pool="gpu_pool", gpu_requests="1", **common)
    mv.create_service(service_name="web_svc", service_compute_pool="cpu_pool", ingress_enabled=True, **common)
    yield {"conn": conn, "home": home}
    for name in ("cpu_svc", "gpu_svc", "web_svc"):
        conn.execute(f"DROP SERVICE IF EXISTS {name}")
    conn.close()


def manifests(conn: Any, service: str) -> list[dict[str, Any]]:
    text = conn.execute(f"CALL SYSTEM$GET_SERVICE_MANIFESTS('{service}')").fetchone()[0]
    return list(yaml.safe_load_all(text))


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {o["kind"]: o for o in objects}
    assert len(found) == len(objects), "one object of each kind"
    return found


def validate_strictly(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("service", ["cpu_svc", "gpu_svc", "web_svc"])
def test_manifests_pass_strict_validation(deployed: dict[str, Any], service: str) -> None:
    objects = manifests(deployed["conn"], service)
    kinds = [o["kind"] for o in objects]
    expected = ["Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    assert kinds == expected + (["Ingress"] if service == "web_svc" else [])
    validate_strictly(objects)


def test_strict_validation_catches_a_wrong_field(deployed: dict[str, Any]) -> None:
    """The validation is strict: a field Kubernetes does not know, or a wrong type, fails it."""
    deployment = by_kind(manifests(deployed["conn"], "cpu_svc"))["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["port"] = 5000   # 'ports' is the field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment = by_kind(manifests(deployed["conn"], "cpu_svc"))["Deployment"]
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_cpu_service(deployed: dict[str, Any]) -> None:
    found = by_kind(manifests(deployed["conn"], "cpu_svc"))
    deployment = found["Deployment"]
    assert deployment["metadata"]["name"] == "cpu-svc"
    assert deployment["metadata"]["namespace"] == "duckserve-public"
    assert deployment["metadata"]["annotations"]["duckserve.io/service"] == "DUCKSERVE.PUBLIC.CPU_SVC"
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["ports"] == [{"name": "http", "containerPort": 5000, "protocol": "TCP"}]
    # the given requests are requests and limits, as the Docker runtime applies them
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["args"][:2] == ["-m", "duckserve.inference_server"]
    assert pod["nodeSelector"] == {POOL_LABEL: "cpu-pool"}
    assert "tolerations" not in pod
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    # the image is the one the build recorded in the repository (SHOW IMAGES)
    images = {r["image_path"] for r in rows(deployed["conn"], "SHOW IMAGES IN IMAGE REPOSITORY images")}
    assert container["image"] in images
    assert found["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 1
    assert found["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 3
    assert found["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == "cpu-svc"
    assert deployment["spec"]["replicas"] == 1
    assert found["Service"]["spec"]["ports"][0]["port"] == 5000
    assert found["Service"]["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert found["PodDisruptionBudget"]["spec"]["selector"] == deployment["spec"]["selector"]


def test_probes_name_routes_the_server_answers(deployed: dict[str, Any]) -> None:
    """The probes' paths are real routes of the inference server: the running instance answers them."""
    container = by_kind(manifests(deployed["conn"], "cpu_svc"))["Deployment"]["spec"]["template"]["spec"][
        "containers"][0]
    endpoint = rows(deployed["conn"], "SHOW SERVICE CONTAINERS IN SERVICE cpu_svc")[0]["endpoint"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert httpx.get(endpoint + container[probe]["httpGet"]["path"], timeout=10).status_code == 200


def test_gpu_service(deployed: dict[str, Any]) -> None:
    deployment = by_kind(manifests(deployed["conn"], "gpu_svc"))["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert resources["requests"]["nvidia.com/gpu"] == "1"
    # no cpu/memory requests: 90% of GPU_NV_S (6 vCPU, 27 GiB) requested, the family's size as the limit
    assert resources["requests"]["cpu"] == "5400m" and resources["limits"]["cpu"] == "6"
    assert resources["limits"]["memory"] == "27Gi"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {POOL_LABEL: "gpu-pool"}
    assert deployment["metadata"]["annotations"]["duckserve.io/gpu-type"] == "NVIDIA A10G"


def test_ingress_service(deployed: dict[str, Any]) -> None:
    found = by_kind(manifests(deployed["conn"], "web_svc"))
    backend = found["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "web-svc", "port": {"name": "http"}}
    assert found["Service"]["metadata"]["name"] == "web-svc"
    assert "programmatic access token" in found["Ingress"]["metadata"]["annotations"]["duckserve.io/authentication"]


def test_cli_writes_the_manifests(deployed: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "gpu.yaml"
    done = subprocess.run([sys.executable, "-m", "duckserve", "manifests", "gpu_svc", "--home", str(deployed["home"]),
                           "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 5 Kubernetes objects" in done.stdout
    objects = list(yaml.safe_load_all(out.read_text()))
    assert objects == manifests(deployed["conn"], "gpu_svc")
    validate_strictly(objects)
    missing = subprocess.run([sys.executable, "-m", "duckserve", "manifests", "no_such_svc", "--home",
                              str(deployed["home"])], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "NO_SUCH_SVC" in missing.stderr


def test_unknown_service_and_wrong_arguments(deployed: dict[str, Any]) -> None:
    conn = deployed["conn"]
    with pytest.raises(errors.ProgrammingError, match="CPU_SVX does not exist; did you mean DUCKSERVE.PUBLIC.CPU_SVC"):
        conn.execute("CALL SYSTEM$GET_SERVICE_MANIFESTS('cpu_svx')")
    with pytest.raises(errors.ProgrammingError, match="SYSTEM\\$GET_SERVICE_MANIFESTS takes"):
        conn.execute("CALL SYSTEM$GET_SERVICE_MANIFESTS('cpu_svc', 2)")
