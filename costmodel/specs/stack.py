"""`StackSpec`: the software that executes a plan (Megatron-LM, DeepSpeed, PyTorch FSDP, ...), as data.

A plan's step time depends on more than the hardware: which kernels run (fused or eager element-wise
ops, which attention kernel), how much the host spends issuing them, which communication the stack
overlaps with compute, and how it shards (ZeRO-3 re-gathers, reduce-scatter cadence). A stack file
(`costmodel/data/stacks/<name>.yaml`) states these assumptions and the public sources they come from;
`TrainingSpec.stack` names one, and every estimate says which one it assumed.

Where a stack leaves a value unset (None), the cost model's documented default (`EfficiencyModel`)
applies. The `memory` section says how the stack allocates (`costmodel.layer.states`,
`costmodel.layer.activations`, `costmodel.layer.overheads`, assembled per rank by
`costmodel.step.memory`): which copies of the weights it keeps and in which dtype, how it accumulates
gradients, which tensors autograd keeps per block under each precision and recomputation mode, the loss's
buffers, its optimizer's temporaries, its communication buffers, the CUDA context and NCCL, and the caching
allocator's reserve."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ._base import Spec

__all__ = ["SourceRef", "ElementwiseOp", "KernelSpec", "Zero3Spec", "CommSpec", "SavedTensor", "ActivationTable",
           "StackMemorySpec", "StackSpec", "ATTENTION_KERNELS", "ELEMENTWISE_WIDTHS", "PRECISION_MODES"]

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


PRECISION_MODES = ("autocast", "half", "fp32")
"""How a block computes: `autocast` (fp32 parameters and residual stream, torch.autocast casting each matmul's
inputs to 16 bits), `half` (16-bit parameters and activations: Megatron's Float16Module, DeepSpeed's bf16/fp16
engine, FSDP's MixedPrecisionPolicy), `fp32` (no mixed precision: CPU runs)."""


class SavedTensor(Spec):
    """Tensors autograd keeps for the backward pass, per token: `bytes` per element of `width` (the hidden
    size h, the query width q = heads x head_dim, the key/value width kv, the MLP's f, or one value per
    attention head). h-wide tensors sit in the sequence-parallel region (replicated over TP unless sequence
    parallel); the others are split over TP."""

    width: Literal["h", "q", "kv", "f", "heads"]
    bytes: float = Field(ge=0, description="bytes per token per width element")
    gated_bytes: float | None = Field(default=None, ge=0, description="for gated MLPs (SwiGLU / GeGLU)")
    rmsnorm_bytes: float | None = Field(default=None, ge=0, description="for RMSNorm models")


class ActivationTable(Spec):
    """What one block keeps per token under each recomputation mode, and what the last stage keeps for
    its final norm and head (the loss's buffers are `StackMemorySpec.loss_bytes_per_logit`)."""

    none: dict[str, SavedTensor]
    selective: dict[str, SavedTensor]
    full: dict[str, SavedTensor]
    head: dict[str, SavedTensor] = Field(default_factory=dict)


class StackMemorySpec(Spec):
    """How the stack allocates memory on a GPU (defaults: Megatron-LM's bf16 training)."""

    weights: Literal["autocast", "fsdp_mixed_precision", "half_params"] = Field(
        default="half_params",
        description="'half_params': 16-bit model weights, fp32 master copy in the optimizer (Megatron, DeepSpeed); "
                    "'autocast': fp32 parameters are the master weights, autocast casts each matmul's weight "
                    "to 16 bits; 'fsdp_mixed_precision': fp32 sharded parameters, 16-bit unsharded copies of "
                    "the units in flight (FSDP MixedPrecisionPolicy)")
    fsdp_weights: Literal["autocast", "fsdp_mixed_precision", "half_params"] | None = Field(
        default=None, description="weights of plans the stack wraps with FSDP2 (per-block sharding or replicate), "
                                  "when they differ from `weights`")
    autocast_weight_cache: bool = Field(
        default=False, description="autocast's 16-bit weight copies live through the backward (it runs inside "
                                   "the autocast context, whose cast cache holds them)")
    fp32_grad_accumulation: Literal["always", "bf16", "never"] = Field(
        default="bf16", description="gradients kept and accumulated in fp32 (Megatron forces it for bf16)")
    grad_buffer: Literal["persistent", "per_step"] = Field(
        default="persistent", description="'persistent': contiguous gradient buffers allocated once (Megatron, "
                                          "DeepSpeed, DDP buckets); 'per_step': .grad created by the first "
                                          "backward of a step and freed after the optimizer (set_to_none)")
    activations: dict[Literal["autocast", "half", "fp32"], ActivationTable] = Field(
        default_factory=dict, description="saved tensors per precision mode; a mode without a table uses "
                                          "Korthikanti et al. 2022's Table 2 (Megatron's kernels)")
    ddp_no_sync_grads: bool = Field(
        default=False, description="torch DDP under no_sync (gradient accumulation) accumulates into .grad tensors "
                                   "apart from its buckets, which hold the gradients from the synchronized backward")
    loss_bytes_per_logit: float = Field(
        default=6.0, ge=0, description="bytes per logit at the loss's peak on the last stage (16-bit training)")
    loss_bytes_per_logit_fp32: float | None = Field(default=None, ge=0, description="... in fp32 training")
    vocab_parallel_loss_bytes_per_logit: float | None = Field(
        default=None, ge=0, description="... of the vocabulary-parallel loss with tp > 1 (None: as without TP)")
    loss_hole_bytes_per_logit: float = Field(
        default=0.0, ge=0, description="bytes per logit freed just before the loss's larger fp32 buffers are "
                                       "allocated, which the caching allocator cannot reuse for them (reserved, "
                                       "not allocated)")
    logits_gathered_with_pp: bool = Field(
        default=False, description="with tp > 1 and pp > 1 the logits are gathered (full vocabulary per rank) "
                                   "instead of a vocabulary-parallel loss")
    foreach_group: Literal["all", "largest_param"] = Field(
        default="all", description="what one multi-tensor (foreach) AdamW step covers: its sqrt(v) temporary is "
                                   "4 bytes per parameter of it")
    cpu_optimizer: Literal["fused", "foreach"] | None = Field(
        default=None, description="the AdamW implementation on a CPU host, when it differs from kernels.optimizer")
    fsdp_prefetch_units: int = Field(default=1, ge=0, description="FSDP units gathered ahead of the one computing")
    bucket_bytes: float = Field(default=0.0, ge=0, description="ZeRO-1/2 gradient reduce / parameter all-gather "
                                                              "buckets per GPU (DeepSpeed reduce_bucket_size)")
    cuda_context_bytes: float = Field(default=1.0 * 2**30, ge=0, description="CUDA context and kernels per GPU "
                                                                          "(outside the caching allocator)")
    nccl_bytes_per_group: float = Field(default=256 * 2**20, ge=0, description="NCCL buffers per communicator the "
                                                                              "GPU uses (outside the allocator)")
    allocator_reserve_fraction: float = Field(
        default=0.02, ge=0, description="caching allocator's reserved-but-unallocated share at the peak (block "
                                        "rounding, split segments)")
    framework_bytes: float | None = Field(default=None, ge=0, description="overrides CUDA context + NCCL per GPU")


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
