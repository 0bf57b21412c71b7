"""`StackSpec`: the software that executes a plan (Megatron-LM, DeepSpeed, PyTorch FSDP, ...), as data.

A plan's step time depends on more than the hardware: which kernels run (fused or eager element-wise
ops, which attention kernel), how much the host spends issuing them, which communication the stack
overlaps with compute, and how it shards (ZeRO-3 re-gathers, reduce-scatter cadence). A stack file
(`costmodel/data/stacks/<name>.yaml`) states these assumptions and the public sources they come from;
`TrainingSpec.stack` names one, and every estimate says which one it assumed.

Where a stack leaves a value unset (None), the cost model's documented default (`EfficiencyModel`)
applies. The `memory` section is where the allocator-level memory model (gradient dtype kept, fp32
gradient accumulation buffers, optimizer temporaries, communication buckets, allocator reserve) adds
its fields; it only holds what the time model already uses today."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ._base import Spec

__all__ = ["SourceRef", "ElementwiseOp", "KernelSpec", "Zero3Spec", "CommSpec", "StackMemorySpec", "StackSpec",
           "ATTENTION_KERNELS", "ELEMENTWISE_WIDTHS"]

ATTENTION_KERNELS = ("flash1", "flash2", "flash3", "cudnn", "unfused")
"""Attention implementations a stack can name; `GPUSpec.attention_efficiency` gives each one's share of peak."""

ELEMENTWISE_WIDTHS = ("h", "f", "qk", "qkv", "q")
"""What an element-wise kernel streams per token: the hidden state (h, replicated over TP unless sequence
parallel), the MLP's intermediate (f / tp), the rotated query + key (qk / tp), Q, K and V (qkv / tp), or the
attention output (q / tp)."""


class SourceRef(Spec):
    """A public source and what it supports in this stack file."""

    title: str
    url: str | None = None
    supports: str = Field(description="which values of the stack this source supports")


class ElementwiseOp(Spec):
    """One class of memory-bound kernels of a block's forward: `kernels` launches, each streaming
    `passes` reads + writes of an activation element over `width` per token (plus `extra_bytes` per
    token and width element, e.g. a 1-byte dropout mask, or the extra half of an fp32 element). The
    backward streams about twice the forward's bytes (input and weight paths)."""

    kind: Literal["norm", "add", "activation", "rope", "cast", "copy"] = Field(
        description="the profiled memory-bound operator that prices it (CalibrationProfile.mem_ops)")
    kernels: int = Field(ge=0)
    passes: float = Field(ge=0, description="activation-element reads + writes per token per width element")
    width: Literal["h", "f", "qk", "qkv", "q"]
    extra_bytes: float = Field(default=0.0, ge=0, description="bytes per token per width element beyond passes * act_bytes")
    gated_passes: float | None = Field(default=None, ge=0, description="passes for gated MLPs (SwiGLU/GeGLU)")
    gated_kernels: int | None = Field(default=None, ge=0, description="kernels for gated MLPs")


class KernelSpec(Spec):
    """Which kernels the stack runs and how fast they are where no GPU profile says otherwise."""

    gemm_efficiency: float | None = Field(default=None, gt=0, le=1,
                                          description="share of the GPU's achievable matmul FLOP/s (GPUSpec.matmul_efficiency)")
    attention_kernel: Literal["flash1", "flash2", "flash3", "cudnn", "unfused"] = "flash2"
    attention_efficiency: float | None = Field(default=None, gt=0, le=1,
                                               description="share of the attention kernel's peak on the GPU")
    memory_efficiency: float | None = Field(default=None, gt=0, le=1, description="share of HBM bandwidth of memory-bound kernels")
    elementwise: dict[str, ElementwiseOp] = Field(default_factory=dict, description="memory-bound kernels of a block's forward")
    host_op_s: float | None = Field(default=None, ge=0, description="host seconds to issue one op (eager dispatch)")
    host_ops_per_gemm: float = Field(default=1.0, ge=0, description="host ops per GEMM (autocast casts, views)")
    weight_cast_passes: float = Field(default=0.0, ge=0,
                                      description="bytes moved per parameter per micro-batch forward to cast master weights "
                                                  "(autocast: read fp32 + write 16-bit = 6)")
    grad_accumulate_bytes: float = Field(default=0.0, ge=0,
                                         description="bytes moved per parameter per micro-batch to add a 16-bit weight gradient "
                                                     "into an fp32 .grad (cast + add)")
    optimizer: Literal["fused", "foreach"] = Field(
        default="fused", description="AdamW implementation: one fused kernel, or torch's multi-tensor (foreach) ops")
    clip_grad_norm_bytes: float = Field(default=0.0, ge=0,
                                        description="bytes per parameter per step of a separate gradient-norm "
                                                    "and clipping pass (read for the norm, read + write to scale)")


class Zero3Spec(Spec):
    """How the stack shards parameters (ZeRO-3 / FSDP FULL_SHARD)."""

    regather_backward: bool = Field(default=True, description="parameters freed after forward, all-gathered again for backward")
    regather_recompute: bool = Field(default=False, description="recomputed forward all-gathers again (module hooks)")
    reduce_scatter: Literal["micro_batch", "step"] = "micro_batch"
    network: Literal["topology", "nic"] = Field(
        default="topology",
        description="'topology': collectives priced on the topology graph (NVLink + rails); 'nic': every "
                    "GPU's gathered and reduced bytes cross its own share of the node's NICs")
    prefetch: bool = Field(default=True, description="the next block's gather overlaps the current block's compute")


class CommSpec(Spec):
    """Which communication the stack overlaps with compute."""

    tp_overlap: Literal["none", "with_sp"] = Field(
        default="none", description="'with_sp': TP collectives are split into tp chunks and overlapped with the "
                                    "GEMMs when sequence parallelism is on (Transformer Engine userbuffers)")
    overlap_grad_reduce: bool | None = None
    overlap_param_gather: bool = Field(default=False, description="ZeRO-1/2 parameter all-gather overlapped with the next forward")
    p2p_overhead_s: float | None = Field(default=None, ge=0)
    zero3: Zero3Spec = Field(default_factory=Zero3Spec)


class StackMemorySpec(Spec):
    """Memory the stack allocates beyond model states and activations (the memory model adds fields)."""

    framework_bytes: float | None = Field(default=None, ge=0, description="CUDA context, NCCL and allocator reserve per GPU")


class StackSpec(Spec):
    """A named software stack: its kernels, overlap, sharding behaviour, memory overheads and sources."""

    name: str
    title: str
    description: str
    kernels: KernelSpec = Field(default_factory=KernelSpec)
    communication: CommSpec = Field(default_factory=CommSpec)
    memory: StackMemorySpec = Field(default_factory=StackMemorySpec)
    step_overhead_s: float | None = Field(default=None, ge=0)
    sources: tuple[SourceRef, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> StackSpec:
        if not self.sources:
            raise ValueError(f"stack {self.name!r}: list the public sources of its assumptions under 'sources'")
        return self
