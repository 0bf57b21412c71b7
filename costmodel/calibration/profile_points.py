"""The measured points a `CalibrationProfile` holds: GEMMs, attention, streaming and memory-bound
operators, the optimizer step, collectives and the eager host cost (`paraplan profile` measures them)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..specs import Spec

__all__ = ["GemmPoint", "AttentionPoint", "MemBwPoint", "MemOpPoint", "OptimizerPoint", "MEM_OPS", "CollectivePoint",
           "HostPoint"]


class GemmPoint(Spec):
    """C[m,n] = A[m,k] @ B[k,n]: 2mnk FLOPs in `time_s` (best of the profiler's samples)."""

    m: int = Field(gt=0)
    n: int = Field(gt=0)
    k: int = Field(gt=0)
    dtype: str
    time_s: float = Field(gt=0)
    flops_per_s: float = Field(gt=0)


class AttentionPoint(Spec):
    """scaled_dot_product_attention forward: 4 * batch * heads * seq^2 * head_dim FLOPs, halved when
    causal (the kernel skips the masked blocks); `bwd_time_s` the backward, when measured (2.5x the
    forward's FLOPs: 5 matmuls to the forward's 2, Dao 2023, FlashAttention-2, sec. 3.1.2)."""

    batch: int = Field(gt=0)
    heads: int = Field(gt=0)
    seq: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    dtype: str
    time_s: float = Field(gt=0)
    flops_per_s: float = Field(gt=0)
    causal: bool = True
    bwd_time_s: float | None = Field(default=None, gt=0)


class MemBwPoint(Spec):
    """An elementwise kernel streaming `nbytes` (read + write) in `time_s`."""

    nbytes: float = Field(gt=0)
    time_s: float = Field(gt=0)
    bw_bytes_per_s: float = Field(gt=0)


class MemOpPoint(Spec):
    """A memory-bound operator of a block (`op`: one of MEM_OPS) over `nbytes` bytes read + written by its
    forward kernel(s), in `time_s`; `bwd_time_s` its backward when measured."""

    op: str
    nbytes: float = Field(gt=0)
    time_s: float = Field(gt=0)
    bw_bytes_per_s: float = Field(gt=0)
    bwd_time_s: float | None = Field(default=None, gt=0)


class OptimizerPoint(Spec):
    """One AdamW step (`impl`: fused or foreach) over `params` fp32 parameters in `time_s`."""

    impl: Literal["fused", "foreach"]
    params: int = Field(gt=0)
    time_s: float = Field(gt=0)


MEM_OPS = ("norm", "add", "activation", "rope", "cast", "copy", "cross_entropy", "embedding")
"""Memory-bound operator kinds a profile measures and a stack's element-wise classes name
(`costmodel.specs.stack.ElementwiseOp.kind`)."""


class CollectivePoint(Spec):
    """One collective of a `nbytes` buffer (full size, as CommModel.time_s takes it) over
    `group_size` ranks: median and spread of the slowest rank's time."""

    op: Literal["all_reduce", "reduce_scatter", "all_gather", "all_to_all", "send_recv"]
    group_size: int = Field(gt=0)
    nbytes: float = Field(gt=0)
    time_s: float = Field(gt=0)
    time_std_s: float = Field(default=0.0, ge=0)
    samples_s: tuple[float, ...] = Field(default=(), description="every timing (slowest rank), in run order")
    cpu_s: float | None = Field(default=None, ge=0, description="median CPU seconds of the busiest rank (process_time)")


class HostPoint(Spec):
    """Host (CPU) seconds of one Transformer block's forward + backward on a few tokens, where compute
    is negligible: the eager framework's per-block issue cost (costmodel.calibration.profile.host)."""

    tokens: int = Field(gt=0)
    threads: int = Field(gt=0)
    block_s: float = Field(gt=0, description="plain block")
    block_full_recompute_s: float | None = Field(default=None, gt=0)
    block_selective_recompute_s: float | None = Field(default=None, gt=0)
    block_tp_s: float | None = Field(default=None, gt=0, description="tensor parallel (DTensor) block")
    block_tp_sp_s: float | None = Field(default=None, gt=0, description="... with sequence parallelism")
    tp_group_size: int | None = Field(default=None, gt=1)
    tp_token_s: float | None = Field(default=None, ge=0, description="extra CPU s per token of a TP block")
    tp_sp_token_s: float | None = Field(default=None, ge=0, description="... with sequence parallelism")
    aten_ops_per_block: int = Field(default=0, ge=0, description="aten ops of one plain forward + backward")
    concurrency_tokens: int | None = Field(default=None, gt=0)
    block_cpu_s: float | None = Field(default=None, gt=0, description="CPU s per block on concurrency_tokens, alone")
    concurrent_block_cpu_s: dict[int, float] = Field(
        default_factory=dict, description="processes -> CPU s per block while that many run at once")
    fsdp_procs: int | None = Field(default=None, gt=1, description="ranks of the DDP / FSDP2 measurement")
    ddp_block_s: float | None = Field(default=None, ge=0, description="extra CPU s per block and step, DDP")
    fsdp_zero2_block_s: float | None = Field(default=None, ge=0, description="extra CPU s per block and step, FSDP2")
    fsdp_zero3_block_s: float | None = Field(default=None, ge=0, description="... resharding after forward")
    optimizer_tensor_s: float | None = Field(default=None, ge=0, description="AdamW step CPU s per plain tensor")
    optimizer_param_s: float | None = Field(default=None, ge=0, description="AdamW step CPU s per parameter")
    optimizer_tp_tensor_s: float | None = Field(default=None, ge=0, description="... per TP DTensor parameter")
    optimizer_sharded_tensor_s: float | None = Field(default=None, ge=0, description="... per FSDP2 DTensor parameter")
