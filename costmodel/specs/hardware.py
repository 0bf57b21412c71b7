"""Hardware specs: a GPU, a link, and a cluster of nodes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ._base import Spec
from .limits import MAX_GPUS, MAX_GPUS_PER_NODE, MAX_NICS_PER_NODE, Number, Whole, number_in, whole_up_to

__all__ = ["GPUSpec", "LinkSpec", "ClusterSpec", "Dtype"]

Dtype = Literal["fp32", "tf32", "bf16", "fp16", "fp8"]


class GPUSpec(Spec):
    """One accelerator: dense peak FLOP/s per dtype, HBM capacity and bandwidth (vendor datasheets)."""

    name: str
    peak_flops_per_s: dict[Dtype, number_in("flops")] = Field(description="dense peak FLOP/s by dtype (no sparsity)")
    hbm_bytes: number_in("bytes") = Field(gt=0)
    hbm_bw_bytes_per_s: number_in("bw") = Field(gt=0)
    matmul_efficiency: Number | None = Field(
        default=None, gt=0, le=1,
        description="maximum achievable 16-bit matmul FLOP/s / dense peak, as measured (MAMF); None = the "
                    "A100's 0.869, the GPU the cost model's GEMM constants were fitted on")
    fp8_matmul_efficiency: Number | None = Field(
        default=None, gt=0, le=1, description="the same for fp8 (e4m3) matmuls; None = matmul_efficiency")
    attention_efficiency: dict[str, Number] = Field(
        default_factory=dict,
        description="attention kernel (flash2, flash3, cudnn) -> share of dense peak its forward reaches at long "
                    "sequences, as published; a kernel not listed falls back to flash2, then to 0.73 (FA2 on A100)")
    sm_count: Whole | None = Field(default=None, gt=0, description="streaming multiprocessors (compute units), datasheet")
    source: str | None = None

    @model_validator(mode="after")
    def _check(self) -> GPUSpec:
        if not self.peak_flops_per_s:
            raise ValueError(f"GPU {self.name!r}: peak_flops_per_s needs at least one dtype")
        for dtype, flops in self.peak_flops_per_s.items():
            if flops <= 0:
                raise ValueError(f"GPU {self.name!r}: peak_flops_per_s[{dtype}]={flops} must be > 0")
        for kernel, share in self.attention_efficiency.items():
            if not 0 < share <= 1:
                raise ValueError(f"GPU {self.name!r}: attention_efficiency[{kernel}]={share} must be in (0, 1]")
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
