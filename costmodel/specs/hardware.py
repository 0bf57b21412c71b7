"""Hardware specs: a GPU, a link, and a cluster of nodes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ._base import Spec
from .limits import MAX_GPUS, MAX_GPUS_PER_NODE, MAX_NICS_PER_NODE, number_in, whole_up_to

__all__ = ["GPUSpec", "LinkSpec", "ClusterSpec", "Dtype"]

Dtype = Literal["fp32", "tf32", "bf16", "fp16", "fp8"]


class GPUSpec(Spec):
    """One accelerator: dense peak FLOP/s per dtype, HBM capacity and bandwidth (vendor datasheets)."""

    name: str
    peak_flops_per_s: dict[Dtype, number_in("flops")] = Field(description="dense peak FLOP/s by dtype (no sparsity)")
    hbm_bytes: number_in("bytes") = Field(gt=0)
    hbm_bw_bytes_per_s: number_in("bw") = Field(gt=0)
    source: str | None = None

    @model_validator(mode="after")
    def _check(self) -> GPUSpec:
        if not self.peak_flops_per_s:
            raise ValueError(f"GPU {self.name!r}: peak_flops_per_s needs at least one dtype")
        for dtype, flops in self.peak_flops_per_s.items():
            if flops <= 0:
                raise ValueError(f"GPU {self.name!r}: peak_flops_per_s[{dtype}]={flops} must be > 0")
        return self

    def peak_flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for `dtype`. A dtype the GPU has no rate for (no tensor-core support, e.g.
        fp8 before Hopper, bf16 on V100) raises ValueError: another dtype's rate would be a wrong answer."""
        rate = self.peak_flops_per_s.get(dtype)  # type: ignore[call-overload]
        if rate is None:
            raise ValueError(f"dtype: GPU {self.name!r} has no {dtype} rate (it computes in "
                             f"{', '.join(self.peak_flops_per_s)})")
        return rate


class LinkSpec(Spec):
    """A link class: unidirectional bandwidth available to one endpoint, and per-message latency."""

    name: str
    bw_bytes_per_s: number_in("bw") = Field(gt=0)
    latency_s: number_in("latency") = Field(ge=0)


class ClusterSpec(Spec):
    """`num_nodes` identical nodes of `gpus_per_node` GPUs. `intra_node_link` is one GPU's bandwidth to
    the node fabric (NVLink/NVSwitch, PCIe); `inter_node_link` is one NIC, `nics_per_node` of them per node."""

    name: str = "custom"
    gpu: GPUSpec
    num_nodes: whole_up_to(MAX_GPUS, "nodes") = Field(gt=0)
    gpus_per_node: whole_up_to(MAX_GPUS_PER_NODE, "GPUs per node") = Field(gt=0)
    intra_node_link: LinkSpec
    inter_node_link: LinkSpec
    nics_per_node: whole_up_to(MAX_NICS_PER_NODE, "NICs per node") = Field(default=8, gt=0)
    intra_node_topology: Literal["nvswitch", "cube-mesh", "pcie", "none"] = "nvswitch"
    network: Literal["rail-optimized", "fat-tree", "leaf-spine"] = "rail-optimized"
    oversubscription: number_in("oversubscription") = Field(default=1.0, ge=1.0, description="leaf/spine oversubscription ratio")
    source: str | None = None

    @model_validator(mode="after")
    def _check_size(self) -> ClusterSpec:
        if self.num_gpus > MAX_GPUS:
            raise ValueError(
                f"num_nodes: {self.num_nodes:,} nodes x {self.gpus_per_node} GPUs = {self.num_gpus:,} GPUs exceeds the "
                f"{MAX_GPUS:,} GPUs paraplan models; use at most {MAX_GPUS // self.gpus_per_node:,} nodes (docs/LIMITS.md)")
        return self

    @property
    def num_gpus(self) -> int:
        return self.num_nodes * self.gpus_per_node

    @property
    def inter_node_bw_per_gpu_bytes_per_s(self) -> float:
        """NIC bandwidth one GPU gets when all GPUs of a node talk off-node at once."""
        return self.inter_node_link.bw_bytes_per_s * self.nics_per_node / self.gpus_per_node / self.oversubscription
