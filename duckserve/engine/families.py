"""Compute pool instance families: Snowflake's names with their vCPU, memory and GPU counts.

A pool's family sizes its instances: the default worker count of an inference server is
2 x vCPU + 1 for CPU families (bounded by the host's cores) and 1 for GPU families.
"""

from __future__ import annotations

from dataclasses import dataclass

from duckserve.errors import ProgrammingError


@dataclass(frozen=True)
class InstanceFamily:
    name: str
    vcpu: int
    memory_gib: int
    gpu: int
    gpu_type: str = ""
    cloud: str = "AWS, Azure"

    @property
    def is_gpu(self) -> bool:
        return self.gpu > 0


FAMILIES: dict[str, InstanceFamily] = {
    f.name: f
    for f in (
        InstanceFamily("CPU_X64_XS", 1, 6, 0),
        InstanceFamily("CPU_X64_S", 3, 13, 0),
        InstanceFamily("CPU_X64_M", 6, 28, 0),
        InstanceFamily("CPU_X64_SL", 14, 54, 0),
        InstanceFamily("CPU_X64_L", 28, 116, 0),
        InstanceFamily("HIGHMEM_X64_S", 6, 58, 0),
        InstanceFamily("HIGHMEM_X64_M", 28, 240, 0),
        InstanceFamily("HIGHMEM_X64_L", 124, 984, 0),
        InstanceFamily("GPU_NV_S", 6, 27, 1, "NVIDIA A10G", "AWS"),
        InstanceFamily("GPU_NV_M", 44, 178, 4, "NVIDIA A10G", "AWS"),
        InstanceFamily("GPU_NV_L", 92, 1112, 8, "NVIDIA A100", "AWS"),
        InstanceFamily("GPU_NV_XS", 3, 26, 1, "NVIDIA T4", "Azure"),
        InstanceFamily("GPU_NV_SM", 32, 424, 1, "NVIDIA A10", "Azure"),
        InstanceFamily("GPU_NV_2M", 68, 858, 2, "NVIDIA A10", "Azure"),
        InstanceFamily("GPU_NV_3M", 44, 424, 2, "NVIDIA A100", "Azure"),
        InstanceFamily("GPU_NV_SL", 92, 858, 4, "NVIDIA A100", "Azure"),
    )
}


def instance_family(name: str) -> InstanceFamily:
    """Look a family up by name (case-insensitive); an unknown name lists the valid ones."""
    family = FAMILIES.get(name.upper())
    if family is None:
        raise ProgrammingError(
            f"unknown INSTANCE_FAMILY {name!r}: use one of {', '.join(FAMILIES)}"
        )
    return family
