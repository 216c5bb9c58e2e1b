"""What one instance of a service runs: the inference server from the service's image or
environment, with its workers, queue, timeouts, GPUs and labels, as a runtime's ``InstanceSpec``.
The service's ingress is an instance too, always a local process beside the catalog."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from duckserve.engine.catalog import CatalogObject
from duckserve.engine.families import FAMILIES
from duckserve.engine.runtimes import Artifact, InstanceHandle, InstanceSpec, Resources
from duckserve.engine.services.gpus import gpu_devices, gpu_environment

DEFAULT_MAX_QUEUE = 16
DEFAULT_REQUEST_TIMEOUT = 297.0
#: labels that tell what an instance is (Docker shows them in ``docker ps``)
LABEL_PREFIX = "io.duckserve."


def artifact_of(service: CatalogObject) -> Artifact:
    """What the service's instances run: the image its build pushed, or the environment it built."""
    p = service.props
    if p.get("image_reference"):
        return Artifact.image(p["image_reference"], p.get("image_digest", ""))
    return Artifact.environment(p["env_python"])


def memory_bytes(memory_requests: str | None) -> int | None:
    """``memory_requests`` as bytes: "4Gi", "512Mi", "2G", "1000000" (Kubernetes-style quantities)."""
    if not memory_requests:
        return None
    text = str(memory_requests).strip()
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for suffix, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(float(text))


def labels_of(account_home: Path, service: CatalogObject, instance_id: int | str) -> dict[str, str]:
    return {f"{LABEL_PREFIX}home": str(account_home), f"{LABEL_PREFIX}service": service.key,
            f"{LABEL_PREFIX}instance": str(instance_id), f"{LABEL_PREFIX}model": str(service.props.get("model")),
            f"{LABEL_PREFIX}version": str(service.props.get("version")),
            f"{LABEL_PREFIX}compute-pool": str(service.props.get("compute_pool"))}


def same_instance(record: dict[str, Any], handle: InstanceHandle) -> bool:
    """Is the stored handle ``record`` (a dict) the instance ``handle`` (same start, same runtime fields)?"""
    return record.get("started_at") == handle.started_at and record.get("data") == handle.data \
        and record.get("name") == handle.name


def server_spec(home: Path, service: CatalogObject, directory: Path, package_dir: Path, instance_id: int
                ) -> InstanceSpec:
    """Instance ``instance_id`` of a model service."""
    p = service.props
    artifact = artifact_of(service)
    args = ["-m", "duckserve.inference_server",
            "--workers", str(p["num_workers"]), "--max-queue", str(p.get("max_queue", DEFAULT_MAX_QUEUE)),
            "--request-timeout", str(DEFAULT_REQUEST_TIMEOUT), "--instance-id", str(instance_id)]
    if artifact.kind == "environment":
        args += ["--package", str(package_dir)]  # an image carries its package
    if p.get("auto_suspend_secs"):
        args += ["--idle-timeout", str(p["auto_suspend_secs"])]
    env: dict[str, Any] = {
        "PYTHONUNBUFFERED": "1", "DUCKSERVE_SERVICE": service.key,
        # a model package holds its files: nothing is fetched from a hub at load time
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        **gpu_environment(p, instance_id),
    }
    if artifact.kind == "environment":
        env["PYTHONDONTWRITEBYTECODE"] = ""  # write bytecode (empty unsets it): later starts import faster
    else:
        env.pop("CUDA_VISIBLE_DEVICES", None)  # the engine's device requests decide what a container sees
    family = FAMILIES.get(str(p.get("instance_family")))
    resources = Resources(cpus=float(p["cpu_requests"]) if p.get("cpu_requests") else None,
                          memory_bytes=memory_bytes(p.get("memory_requests")),
                          gpus=int(p.get("gpu_requests") or 0), gpu_devices=gpu_devices(p, instance_id),
                          node_cpus=float(family.vcpu) if family else None,
                          node_memory_bytes=family.memory_gib * 2**30 if family else None)
    return InstanceSpec(name=f"{service.key}/{instance_id}", artifact=artifact, args=args, env=env,
                        log_path=directory / f"instance-{instance_id}.log", state_dir=directory,
                        resources=resources, labels=labels_of(home, service, instance_id), exchange=True)


def ingress_spec(home: Path, service: CatalogObject, directory: Path, label: str) -> InstanceSpec:
    """The service's public endpoint, a local process reading the catalog in ``home``."""
    return InstanceSpec(name=f"{service.key}/ingress", artifact=Artifact.environment(sys.executable),
                        args=["-m", "duckserve.fronts.ingress", "--home", str(home), "--service", label],
                        env={"PYTHONUNBUFFERED": "1"}, log_path=directory / "ingress.log", state_dir=directory,
                        ready_path="/healthz", labels=labels_of(home, service, "ingress"))
