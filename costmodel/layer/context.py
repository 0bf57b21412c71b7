"""What a step is priced from: `StepContext` (fixed for a model, cluster and training spec) and
`Knobs` (one plan as numbers, or many plans sharing dp/tp/pp/cp as arrays), with the two helpers
that let one formula serve numbers and arrays (`vmax`, `any_set`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from ..calibration.constants import efficiency_with_constants
from ..catalog import check_dtype
from ..specs import ClusterSpec, ModelSpec, TrainingSpec
from ..specs.stack import StackMemorySpec, StackSpec
from ..stacks import get_stack, stack_efficiency
from .compute import REFERENCE_MATMUL_EFFICIENCY, EfficiencyModel, Rates, attention_peak_fraction
from .cp_variant import device_kind
from .elementwise import MEGATRON_ELEMENTWISE, ElementwiseClass, elementwise_classes
from .memory import DTYPE_BYTES, optimizer_bytes_per_param, weight_bytes_per_param
from .params import (
    ModelShape,
    embedding_params,
    end_tensors,
    layer_params,
    layer_tensors,
    lm_head_params,
    model_shape,
)

__all__ = ["StepContext", "Knobs", "build_context", "stack_kernels", "FULL_PRECISION", "FP32_GRAD_ADD_BYTES", "vmax",
           "any_set", "collective_s", "ddp_wrapped", "fsdp_wrapped"]

Num = Any


def vmax(a: Num, b: Num) -> Num:
    """max() for numbers, np.maximum for arrays."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.maximum(a, b)
    return a if a >= b else b


@dataclass(frozen=True)
class StepContext:
    """Everything about a (model, cluster, training) triple that no plan knob changes."""

    shape: ModelShape
    seq_len: int
    global_batch: int
    act_bytes: int
    weight_bytes: int
    grad_bytes: int
    opt_bytes: int
    flash: bool
    rates: Rates
    layer_params_enc: int
    layer_params_dec: int
    vocab_params: int          # token embedding V*h (vocabulary-parallel)
    replicated_embed_params: int  # learned positions / relative biases (replicated over TP)
    head_extra_params: int     # final norms + untied output projection
    hbm_bytes: float
    peak_flops_per_s: float
    stack: StackSpec | None = None
    ew_classes: tuple[ElementwiseClass, ...] = ()
    nic_bw_per_gpu_bytes_per_s: float = 0.0   # one GPU's share of its node's NICs (ClusterSpec)
    nic_latency_s: float = 0.0
    gpus_per_node: int = 1
    sm_count: int | None = None
    dtype: str = "bf16"               # training dtype
    grad_dtype_bytes: int | None = None  # TrainingSpec.grad_dtype's bytes when given (else the stack decides)
    optimizer: str = "adamw"
    moe_imbalance: float = 1.0  # TrainingSpec.moe_load_imbalance (MoE models)
    memo: dict = field(default_factory=dict, compare=False, repr=False)  # per-context cache (step FLOPs)
    device: str = "cuda"       # 'cpu' or 'cuda' (context_parallel.device_kind): what the executor runs there

    @property
    def on_cpu(self) -> bool:
        """The cluster's "GPU" is this host's CPU: no CUDA context, no caching allocator."""
        return self.device == "cpu"

    @cached_property
    def memory(self) -> StackMemorySpec:
        """The stack's memory section (Megatron's defaults without a stack)."""
        return self.stack.memory if self.stack is not None else StackMemorySpec()

    @cached_property
    def eff(self) -> EfficiencyModel:
        return self.rates.eff

    @cached_property
    def comm_contention(self) -> float:
        """Share of compute throughput lost while a collective overlaps it: the collective's SMs over
        the GPU's (EfficiencyModel.collective_sms / GPUSpec.sm_count; 0 when the GPU has no SM count)."""
        return min(1.0, self.eff.collective_sms / self.sm_count) if self.sm_count else 0.0

    @cached_property
    def layer_tensors(self) -> tuple[int, int]:
        """Parameter tensors of a block without and with cross-attention."""
        return layer_tensors(self.shape), layer_tensors(self.shape, cross=True)

    @cached_property
    def end_tensors(self) -> tuple[int, int]:
        """Parameter tensors of the embedding and the head."""
        return end_tensors(self.shape)


FULL_PRECISION = ("fp32", "tf32")
"""Training dtypes without autocast: no 16-bit copies of weights, inputs or gradients exist."""
FP32_GRAD_ADD_BYTES = 12.0
"""Bytes per parameter of adding a later micro-batch's fp32 weight gradient into .grad in place (read
both, write one; torch's AccumulateGrad keeps the first micro-batch's gradient as .grad)."""


def stack_kernels(efficiency: EfficiencyModel, stack: StackSpec, shape: ModelShape,
                  dtype: str) -> tuple[EfficiencyModel, tuple[ElementwiseClass, ...]]:
    """(efficiency, element-wise kernel classes) of `stack` for a step in `dtype`: the constants its file
    states over `efficiency` (`costmodel.stacks.stack_efficiency`) and its kernels for this model. In full
    precision (fp32, tf32) autocast does not run, so what a stack states for its 16-bit casts drops out:
    no weight casts, no input casts (classes of kind 'cast'), one host op per GEMM, and weight gradients
    land in fp32 .grad directly (`FP32_GRAD_ADD_BYTES` for later micro-batches). PyTorch AMP docs,
    "Automatic Mixed Precision package - torch.amp": autocast casts per op and only inside its region."""
    efficiency = stack_efficiency(efficiency, stack)
    ops = stack.kernels.elementwise or MEGATRON_ELEMENTWISE
    if dtype in FULL_PRECISION:
        ops = {name: op for name, op in ops.items() if op.kind != "cast"}
        efficiency = replace(efficiency, weight_cast_bytes=0.0, host_ops_per_gemm=1.0,
                             grad_accumulate_bytes=FP32_GRAD_ADD_BYTES if efficiency.grad_accumulate_bytes else 0.0)
    classes = elementwise_classes(ops, shape)
    if stack.kernels.elementwise:
        efficiency = replace(efficiency, elementwise_kernels_per_layer=sum(c.kernels for c in classes))
    return efficiency, classes


def build_context(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, *,
                  efficiency: EfficiencyModel, calibration: Any = None) -> StepContext:
    """The StepContext of a model on a cluster's GPU for a training spec: the stack named by
    `training.stack` sets its constants over `efficiency` (`costmodel.stacks.stack_efficiency`), then a
    calibration's fitted constants apply; GEMM rates scale by the GPU's measured matmul efficiency
    relative to the A100 the constants were fitted on, attention by the stack's kernel on this GPU."""
    stack = get_stack(training.stack)
    shape = model_shape(model)
    efficiency, classes = stack_kernels(efficiency, stack, shape, training.dtype)
    measured_opt = calibration.optimizer_param_s(stack.kernels.optimizer) if getattr(calibration, "optimizer", ()) else None
    if measured_opt:   # the profile's AdamW step of the stack's implementation (seconds per parameter)
        efficiency = replace(efficiency, optimizer_param_s=measured_opt)
    efficiency = efficiency_with_constants(efficiency, calibration)  # fitted constants
    gpu = cluster.gpu
    check_dtype(gpu, training.dtype)
    peak = gpu.peak_flops(training.dtype)
    kernel = stack.kernels.attention_kernel
    fp8 = training.dtype == "fp8"
    matmul = (gpu.fp8_matmul_efficiency if fp8 else None) or gpu.matmul_efficiency or REFERENCE_MATMUL_EFFICIENCY
    # fp8 training (Transformer Engine, torchao float8) runs the Linear layers' GEMMs in fp8; attention
    # stays in 16 bits, at the 16-bit peak
    attention_peak = gpu.peak_flops("bf16") if fp8 else peak
    rates = Rates(peak, gpu.hbm_bw_bytes_per_s, efficiency, training.dtype, calibration,
                  matmul_scale=matmul / REFERENCE_MATMUL_EFFICIENCY,
                  attention_fraction=attention_peak_fraction(gpu.attention_efficiency, kernel) * attention_peak / peak)
    embed = embedding_params(shape)
    return StepContext(
        shape=shape, seq_len=training.seq_len, global_batch=training.global_batch_size,
        act_bytes=DTYPE_BYTES[training.dtype], weight_bytes=weight_bytes_per_param(training.dtype),
        grad_bytes=DTYPE_BYTES[training.grad_dtype or training.dtype],
        opt_bytes=optimizer_bytes_per_param(training.dtype, training.optimizer),
        flash=training.flash_attention and kernel != "unfused", rates=rates,
        layer_params_enc=layer_params(shape), layer_params_dec=layer_params(shape, cross=True),
        vocab_params=shape.vocab * shape.h, replicated_embed_params=embed - shape.vocab * shape.h,
        head_extra_params=lm_head_params(shape), hbm_bytes=gpu.hbm_bytes, peak_flops_per_s=peak,
        device=device_kind(cluster),
        stack=stack, ew_classes=classes, nic_bw_per_gpu_bytes_per_s=cluster.inter_node_bw_per_gpu_bytes_per_s,
        nic_latency_s=cluster.inter_node_link.latency_s, gpus_per_node=cluster.gpus_per_node, sm_count=gpu.sm_count,
        dtype=training.dtype, grad_dtype_bytes=DTYPE_BYTES[training.grad_dtype] if training.grad_dtype else None,
        optimizer=training.optimizer, moe_imbalance=training.moe_load_imbalance,
    )


@dataclass
class Knobs:
    """One plan (numbers) or many plans (arrays). `pp` is always a plain int; dp, tp, cp are ints
    (plans sharing the degrees, one CommModel) or per-row int arrays (then the comm is a
    `costmodel.network.comm_grouped.GroupedComm`, each row priced by its own group's CommModel).
    Codes: schedule 0 gpipe / 1 1f1b / 2 interleaved-1f1b / 3 zero-bubble; recompute 0/1/2; sp 0/1;
    cp_attn 0 auto / 1 all-gather / 2 ring (context_parallel.CP_ATTENTION_CODES).
    `ep` (expert parallelism, MoE models) divides dp; like dp, tp and cp an int or a per-row array."""

    dp: Num
    tp: Num
    pp: int
    cp: Num
    mb: Num
    v: Num
    schedule: Num
    zero: Num
    recompute: Num
    sp: Num
    cp_attn: Num = 0
    ep: Num = 1


def collective_s(ctx: StepContext, comm: Any, axis: str, op: str, nbytes: Num) -> Num:
    """Seconds of one collective: the CommModel's time / EfficiencyModel.collective_efficiency."""
    return comm.time_s(axis, op, nbytes) / ctx.eff.collective_efficiency


def any_set(flag: Num) -> bool:
    """Whether a 0/1 flag (number or array) is set anywhere: skip work no plan needs."""
    return bool(np.any(flag)) if isinstance(flag, np.ndarray) else bool(flag)


def ddp_wrapped(k: Knobs) -> Num:
    """1 where data parallelism is DDP-style (plain tensors, bucketed all-reduce; ZeroRedundancyOptimizer
    for ZeRO-1): ZeRO-0/1 without TP and PP, as `executor.parallelize.dp_wrapper` applies it; 0 where it is
    FSDP2-style (per-block sharding or replicate, DTensor parameters; also with ep > 1, whose experts
    reduce over another group than the rest)."""
    return (k.zero <= 1) * (k.tp == 1) * (k.pp == 1) * (k.ep == 1)


def fsdp_wrapped(k: Knobs) -> Num:
    """1 where paraplan's executor wraps the plan with FSDP2 (fully_shard or replicate): more than one dp x cp
    replica, not DDP."""
    return (k.dp * k.cp > 1) * (1 - ddp_wrapped(k))
