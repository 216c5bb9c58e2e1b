"""GPUs and workers of a service: what ``gpu_requests`` asks for, what this host has, who gets which."""

from __future__ import annotations

import os
from typing import Any

from duckserve.engine.families import FAMILIES
from duckserve.errors import ProgrammingError

#: model handlers known to run on the CPU only (their image build fails when GPUs are requested)
CPU_ONLY_HANDLERS = ("sklearn",)


def default_workers(family_name: str, cpu_requests: str | float | None, gpu: bool) -> int:
    """The seed's default: 2 x vCPU + 1 for CPU models (vCPU bounded by this host), 1 for GPU."""
    if gpu:
        return 1
    vcpu = FAMILIES[family_name].vcpu
    if cpu_requests is not None:
        vcpu = max(1, int(float(cpu_requests)))
    host = os.cpu_count() or 1
    return 2 * min(vcpu, host) + 1


def gpu_count(gpu_requests: str | int | None, service: str) -> int:
    """The GPUs each instance asks for: ``gpu_requests`` is a count ("1", 2), None or "" for none."""
    if gpu_requests in (None, ""):
        return 0
    try:
        count = int(str(gpu_requests).strip())
    except ValueError:
        raise ProgrammingError(f"service {service}: gpu_requests={gpu_requests!r} is not a number of GPUs: "
                               "pass a whole number such as gpu_requests=\"1\"") from None
    if count < 0:
        raise ProgrammingError(f"service {service}: gpu_requests={gpu_requests!r} cannot be negative")
    return count


def check_gpu_request(gpus: int, family: str, family_gpus: int, pool: str, service: str) -> None:
    if family_gpus == 0:
        raise ProgrammingError(
            f"service {service}: gpu_requests={gpus}, but compute pool {pool} has instance family {family}, which "
            "has no GPU: run it on a pool of a GPU family (CREATE COMPUTE POOL ... INSTANCE_FAMILY = 'GPU_NV_S') "
            "or call create_service without gpu_requests"
        )
    if gpus > family_gpus:
        raise ProgrammingError(
            f"service {service}: gpu_requests={gpus} exceeds the {family_gpus} GPU(s) of instance family {family} "
            f"(compute pool {pool}): request at most {family_gpus}, or use a pool of a larger GPU family"
        )
    host = host_gpus()
    if host and gpus > host:
        raise ProgrammingError(
            f"service {service}: gpu_requests={gpus} exceeds the {host} NVIDIA GPU(s) of this host: request at "
            f"most {host}"
        )


def runs_on_cpu_only(manifest: Any) -> bool:
    from duckserve.inference_server.handlers import get_handler

    if manifest.handler in CPU_ONLY_HANDLERS:
        return True
    try:
        return get_handler(manifest.handler).runs_on_cpu_only(manifest)
    except KeyError:
        return False


def gpu_note(gpus: int, instances: int) -> str | None:
    """What create_service, DESCRIBE SERVICE and the instance logs say about a GPU request."""
    if not gpus:
        return None
    host = host_gpus()
    if host == 0:
        return (f"gpu_requests={gpus}, but this host has no NVIDIA GPU: the service runs on the CPU "
                "(for local development; its results are the same, only slower)")
    if gpus * instances > host:
        return (f"{instances} instance(s) x {gpus} GPU(s) exceed the {host} NVIDIA GPU(s) of this host: "
                "instances share GPUs")
    return None


def gpu_devices(props: dict[str, Any], instance_id: int) -> tuple[str, ...]:
    """The host GPUs of one instance: instance i gets GPUs i*g .. i*g+g-1, wrapping around; none
    when the service asks for none or the host has none."""
    gpus = int(props.get("gpu_requests") or 0)
    host = host_gpus()
    if not gpus or not host:
        return ()
    return tuple(str((instance_id * gpus + k) % host) for k in range(gpus))


def gpu_environment(props: dict[str, Any], instance_id: int) -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES and DUCKSERVE_DEVICE of one instance: its share of the host's GPUs, or none."""
    devices = gpu_devices(props, instance_id)
    env = ({"CUDA_VISIBLE_DEVICES": ",".join(devices), "DUCKSERVE_DEVICE": "cuda"} if devices
           else {"CUDA_VISIBLE_DEVICES": "", "DUCKSERVE_DEVICE": "cpu"})
    if props.get("gpu_requests") and props.get("gpu_note"):
        env["DUCKSERVE_GPU_NOTE"] = props["gpu_note"]
    return env


def host_gpus() -> int:
    """NVIDIA GPUs on this host (/dev/nvidia0, ...); $DUCKSERVE_HOST_GPUS overrides the count (for hosts
    whose devices are not visible under /dev, and for tests)."""
    override = os.environ.get("DUCKSERVE_HOST_GPUS", "").strip()
    if override:
        return int(override)
    try:
        return len([d for d in os.listdir("/dev") if d.startswith("nvidia") and d[6:].isdigit()])
    except OSError:
        return 0
