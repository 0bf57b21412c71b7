"""Compute time of one GPU's share of a block: a roofline per operation with an efficiency model.

Each GEMM of shape (m, n, k) takes max(2mnk / (peak * eff(m,n,k)), bytes / (hbm_bw * mem_eff)) plus a
kernel-launch overhead (Williams et al. 2009, "Roofline"); the efficiency falls off for thin
dimensions: eff = gemm_max_efficiency * prod_x x / (x + gemm_half_dim), a saturating fit of the
tile-quantisation loss measured for cuBLAS (NVIDIA, "Matrix Multiplication Background User's Guide").
Element-wise work (norms, activations, dropout, residuals, softmax, loss) is memory-bound: bytes moved
/ (hbm_bw * mem_eff). The backward pass of every op costs twice its forward (dgrad + wgrad); a
FlashAttention backward 2.5x (Dao 2023, FlashAttention-2, sec. 3). A `CalibrationProfile`
(duck-typed: `gemm_flops_per_s`, `attention_flops_per_s`, `mem_bw_bytes_per_s`, each returning None
when not measured) replaces the default efficiencies with measured rates.
All functions are numpy-broadcastable in their numeric arguments."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

__all__ = ["EfficiencyModel", "DEFAULT_EFFICIENCY", "Rates", "gemm_time_s", "attention_core_time_s",
           "attention_core_bwd_time_s", "memory_time_s", "gemm_efficiency", "block_host_ops", "block_host_s", "REFERENCE_MATMUL_EFFICIENCY",
           "attention_peak_fraction", "DEFAULT_ATTENTION_FRACTION"]

Num = Any


@dataclass(frozen=True)
class EfficiencyModel:
    """Software constants of the time model (no hardware numbers: those come from GPUSpec). One set
    for every GPU and run, fitted once by a coordinate search over the three published sets of
    `make validate` (Megatron-LM SC21 Table 1, vTrain multi- and single-node; docs/VALIDATION.md)."""

    gemm_max_efficiency: float = 0.70
    """fraction of dense peak a large, well-shaped GEMM reaches on the A100 (the fit's GPU); another GPU
    scales it by its measured matmul efficiency (`GPUSpec.matmul_efficiency` / REFERENCE_MATMUL_EFFICIENCY)"""
    gemm_half_dim: float = 16.0
    """a GEMM dimension of this size halves the efficiency along it"""
    attention_efficiency: float = 0.75
    """share of the attention kernel's published peak fraction on the GPU (`GPUSpec.attention_efficiency`:
    FlashAttention-2 0.73 on an A100, so 0.55 of dense peak there) reached in training at long sequences"""
    mem_efficiency: float = 0.80
    """fraction of HBM bandwidth reached by memory-bound kernels"""
    kernel_overhead_s: float = 0.0
    """GPU-side launch + tail time added to every kernel"""
    host_op_s: float = 6.0e-5
    """host (CPU) time to issue one op in eager frameworks; a block never runs faster than its ops
    are issued: time ~ max(GPU time, ops * host_op_s), see host_overlap_exponent"""
    host_overlap_exponent: float = 4.0
    """a block takes (gpu^q + host^q)^(1/q): q -> infinity is a hard max(GPU, host) with a queue that
    always hides the smaller; finite q blends them near the crossover"""
    host_tp_factor: float = 1.0
    """host time of a tensor-parallel block / that of a plain one (eager DTensor dispatch; 1 = same
    cost per op; `paraplan profile` measures it on a CPU host, costmodel.calibration.profile.host)"""
    host_sp_factor: float = 1.0
    """extra host factor of a TP block under sequence parallelism (on top of host_tp_factor)"""
    host_full_recompute_factor: float = 4.0 / 3.0
    """host time of a fully recomputed block / a plain one: 4/3 = one more forward of 3 passes"""
    host_selective_recompute_factor: float = 1.0
    """host time of a selectively recomputed block / a plain one (torch's per-op checkpoint policy)"""
    host_tp_token_s: float = 0.0
    """host seconds per token of a TP block's forward + backward beyond host_tp_factor's per-op cost
    (DTensor redistributions and the collectives' copies grow with the activations; measured on a CPU
    host, 0 elsewhere)"""
    host_sp_token_s: float = 0.0
    """the same under sequence parallelism"""
    host_ddp_block_s: float = 0.0
    """host seconds per block and step of a DDP-style data-parallel wrapper (bucketed all-reduce hooks,
    collectives' CPU included; measured on a CPU host, 0 elsewhere)"""
    host_fsdp_block_s: float = 0.0
    """the same for per-block sharding (FSDP2: all-gather, reduce-scatter, copy-in/out, hooks)"""
    host_fsdp_reshard_block_s: float = 0.0
    """the same when parameters are resharded after the forward (ZeRO-3)"""
    host_optimizer_tensor_s: float = 0.0
    """host seconds per parameter tensor of one optimizer step (multi-tensor AdamW), plain tensors"""
    host_optimizer_tp_tensor_s: float = 0.0
    """the same for tensor-parallel DTensor parameters"""
    host_optimizer_sharded_tensor_s: float = 0.0
    """the same for FSDP-sharded DTensor parameters"""
    optimizer_param_s: float = 0.0
    """seconds per parameter of one optimizer step when measured (`paraplan profile`); 0: the fused
    kernel's memory traffic at the achievable bandwidth"""
    host_hides_comm: float = 0.25
    """share of TP/CP communication that runs while the host is still issuing ops (0..1)"""
    elementwise_kernels_per_layer: int = 4
    """memory-bound kernels of a block's forward (2 norms, 2 fused bias-dropout-adds; the activation is
    fused with its bias)"""
    collective_efficiency: float = 0.90
    """fraction of the alpha-beta collective bandwidth reached in practice (divides comm times)"""
    p2p_overhead_s: float = 2.0e-3
    """fixed host/sync time per pipeline send/recv on the critical path"""
    overlap_grad_reduce: bool = True
    """hide the DP gradient reduction behind the last micro-batch's backward (bucketed DDP, ZeRO)"""
    framework_bytes: float = -1.0
    """device memory outside the caching allocator per GPU (CUDA context, NCCL buffers); negative: the stack's
    (`StackMemorySpec.cuda_context_bytes` + `nccl_bytes_per_group` per communicator); 0 from a CPU profile"""
    step_overhead_s: float = 0.0
    """fixed time per optimizer step (data loading, logging, launch of the step)"""
    # ---- what the software stack does (costmodel.stacks maps a StackSpec onto these; defaults: Megatron-LM)
    tp_overlap_with_sp: bool = False
    """TP collectives split into tp chunks and overlapped with the block's GEMMs when sequence parallelism
    is on (Transformer Engine userbuffers): exposed max(C / tp, C - G (tp-1)/tp) of C comm, G GEMM time"""
    overlap_param_gather: bool = False
    """ZeRO-1/2 parameter all-gather overlapped with the next step's forward (Megatron distributed optimizer)"""
    zero3_regather_backward: bool = True
    """ZeRO-3: parameters freed after the forward and all-gathered again for the backward"""
    zero3_regather_recompute: bool = False
    """ZeRO-3: a recomputed forward all-gathers the parameters once more (module hooks, DeepSpeed)"""
    zero3_reduce_scatter_per_micro_batch: bool = True
    """ZeRO-3: gradients reduce-scattered after every micro-batch (else once per step)"""
    zero3_nic_bound: bool = False
    """ZeRO-3: every GPU's gathered / reduced bytes cross its own share of the node's NICs when the
    data-parallel group spans nodes (no hierarchical, node-aggregated collectives)"""
    weight_cast_bytes: float = 0.0
    """bytes moved per parameter per forward pass to cast master weights to 16 bits (autocast: 4 + 2)"""
    grad_accumulate_bytes: float = 0.0
    """bytes moved per parameter per micro-batch to fold a 16-bit weight gradient into an fp32 .grad"""
    optimizer_bytes_per_param: float = 0.0
    """HBM bytes one AdamW step moves per parameter; 0: the fused kernel's traffic (states read and
    written once, gradient read, 16-bit weight written)"""
    host_ops_per_gemm: float = 1.0
    """host ops issued per GEMM (eager autocast adds a cast and views)"""
    collective_sms: float = 32.0
    """SMs a NCCL collective occupies while it runs: one CUDA block per channel, at most 32 channels
    (NCCL's MAXCHANNELS; NCCL_MAX_NCHANNELS / NCCL_MAX_CTAS lower it). Compute overlapped with a
    collective runs on the other SMs: it loses collective_sms / GPUSpec.sm_count of its throughput"""


DEFAULT_EFFICIENCY = EfficiencyModel()

REFERENCE_MATMUL_EFFICIENCY = 0.869
"""Maximum achievable bf16 matmul FLOP/s of an A100 SXM / its dense peak (271.2 / 312; S. Bekman, Machine
Learning Engineering, MAMF table): the GPU `gemm_max_efficiency` was fitted on."""
DEFAULT_ATTENTION_FRACTION = 0.73
"""Share of dense peak of FlashAttention-2's forward on an A100 (Dao 2023, sec. 4.1), for GPUs without data."""


def attention_peak_fraction(table: dict[str, float], kernel: str) -> float:
    """The share of dense peak `kernel` reaches on a GPU (its `attention_efficiency` table), falling
    back to FlashAttention-2's entry, then to DEFAULT_ATTENTION_FRACTION."""
    return float(table.get(kernel) or table.get("flash2") or DEFAULT_ATTENTION_FRACTION)


@dataclass(frozen=True)
class Rates:
    """Hardware rates for one GPU and dtype, plus the efficiency model and an optional calibration.
    `matmul_scale`: the GPU's measured matmul efficiency relative to the A100's; `attention_fraction`:
    the share of dense peak the stack's attention kernel reaches on this GPU."""

    peak_flops_per_s: float
    hbm_bw_bytes_per_s: float
    eff: EfficiencyModel
    dtype: str
    calibration: Any = None
    matmul_scale: float = 1.0
    attention_fraction: float = DEFAULT_ATTENTION_FRACTION

    @cached_property
    def mem_bw_bytes_per_s(self) -> float:
        """Achievable HBM bandwidth: measured when calibrated, else peak * mem_efficiency."""
        if self.calibration is not None:
            bw = self.calibration.mem_bw_bytes_per_s()
            if bw:
                return float(bw)
        return self.hbm_bw_bytes_per_s * self.eff.mem_efficiency


def gemm_efficiency(m: Num, n: Num, k: Num, eff: EfficiencyModel) -> Num:
    """eff_max * m/(m+d0) * n/(n+d0) * k/(k+d0): fraction of peak a GEMM of this shape reaches."""
    d0 = eff.gemm_half_dim
    return eff.gemm_max_efficiency * (m / (m + d0)) * (n / (n + d0)) * (k / (k + d0))


def _measured(fn: Any, args: tuple[Num, ...], dtype: str) -> Num:
    """Call a calibration method on scalars, or once per unique argument tuple of arrays;
    NaN where it returns None."""
    if not any(isinstance(a, np.ndarray) and a.ndim for a in args):
        out = fn(*(int(a) for a in args), dtype)
        return np.nan if out is None else float(out)
    arrays = np.broadcast_arrays(*(np.asarray(a) for a in args))
    stacked = np.stack([a.ravel() for a in arrays], axis=1).astype(np.int64)
    uniq, inverse = np.unique(stacked, axis=0, return_inverse=True)
    vals = np.array([np.nan if (r := fn(*(int(x) for x in row), dtype)) is None else float(r)
                     for row in uniq])
    return vals[inverse.ravel()].reshape(arrays[0].shape)


def _pick(measured: Num, default: Num) -> Num:
    if isinstance(measured, np.ndarray):
        return np.where(np.isnan(measured), default, measured)
    return default if measured != measured else measured  # NaN check for floats


def gemm_time_s(m: Num, n: Num, k: Num, rates: Rates, *, count: Num = 1) -> Num:
    """Seconds for `count` GEMMs of (m x k) @ (k x n) in 16-bit: roofline + launch overhead."""
    flops = 2.0 * m * n * k
    eff = rates.eff
    rate = rates.peak_flops_per_s * rates.matmul_scale * gemm_efficiency(m, n, k, eff)
    if rates.calibration is not None:
        rate = _pick(_measured(rates.calibration.gemm_flops_per_s, (m, n, k), rates.dtype), rate)
    if isinstance(flops, np.ndarray) or isinstance(rate, np.ndarray):
        with np.errstate(divide="ignore", invalid="ignore"):
            t_compute = np.where(flops > 0, flops / rate, 0.0)
    else:   # an empty GEMM (e.g. a vocabulary smaller than tp leaves a rank no columns) costs no compute
        t_compute = flops / rate if flops > 0 else 0.0
    t_memory = 2.0 * (m * k + k * n + m * n) / rates.mem_bw_bytes_per_s
    t = np.maximum(t_compute, t_memory) if isinstance(t_compute, np.ndarray) else max(t_compute, t_memory)
    return count * (t + eff.kernel_overhead_s)


def attention_core_time_s(b: Num, heads: Num, s_q: Num, s_kv: Num, head_dim: int, rates: Rates, *,
                          flash: bool, act_bytes: int = 2, causal: bool = False) -> Num:
    """Forward seconds of softmax(Q K^T) V for b sequences and `heads` local heads.

    Flash: fused kernel at peak * the kernel's share on this GPU * attention_efficiency (or the
    calibrated rate, measured causal); a causal flash kernel skips the masked half of the score blocks
    (Dao 2023, FlashAttention-2, sec. 3.1.1: FLOPs counted as half for causal). Otherwise two batched
    GEMMs plus a memory-bound scale-mask-softmax and dropout over the b*heads*s_q*s_kv scores (read and
    write 16-bit scores twice, write a 1-byte mask), the full square computed whatever the mask."""
    flops = 4.0 * b * heads * s_q * s_kv * head_dim
    if flash:
        if causal:
            flops = flops / 2
        rate = (rates.peak_flops_per_s * rates.attention_fraction * rates.eff.attention_efficiency
                * (s_kv / (s_kv + 4 * head_dim)))
        if rates.calibration is not None:
            measured = _measured(rates.calibration.attention_flops_per_s, (b, heads, s_kv, head_dim), rates.dtype)
            rate = _pick(measured, rate)
        return flops / rate + rates.eff.kernel_overhead_s
    bmm = gemm_time_s(s_q, s_kv, head_dim, rates, count=2 * b * heads)
    bmm = bmm - (2 * b * heads - 2) * rates.eff.kernel_overhead_s  # one batched launch each for QK^T, PV
    scores = b * heads * s_q * s_kv
    softmax = scores * (4 * act_bytes + 1) / rates.mem_bw_bytes_per_s + 2 * rates.eff.kernel_overhead_s
    return bmm + softmax


def attention_core_bwd_time_s(b: Num, heads: Num, s_q: Num, s_kv: Num, head_dim: int, rates: Rates, *,
                              causal: bool = False) -> Num:
    """Backward seconds of a fused attention kernel from a profile's measured backward rate: 2.5x the
    forward's FLOPs (halved when causal) at `CalibrationProfile.attention_bwd_flops_per_s`; where the
    profile has no backward point, 2.5x the forward time."""
    flops = 2.5 * 4.0 * b * heads * s_q * s_kv * head_dim / (2 if causal else 1)
    measured = _measured(rates.calibration.attention_bwd_flops_per_s, (b, heads, s_kv, head_dim), rates.dtype)
    fallback = 2.5 * attention_core_time_s(b, heads, s_q, s_kv, head_dim, rates, flash=True, causal=causal)
    rate = _pick(measured, np.nan)
    out = flops / rate + rates.eff.kernel_overhead_s
    if isinstance(out, np.ndarray):
        return np.where(np.isnan(out), fallback, out)
    return fallback if out != out else out


def memory_time_s(nbytes: Num, rates: Rates, *, kernels: Num = 1) -> Num:
    """Seconds to stream `nbytes` through HBM in `kernels` memory-bound kernels."""
    return nbytes / rates.mem_bw_bytes_per_s + kernels * rates.eff.kernel_overhead_s


def block_host_ops(eff: EfficiencyModel, *, cross: Num, flash: bool, tp: Num, sp: Num) -> Num:
    """Ops the host issues for one block's forward: 4 GEMMs (7 with cross-attention), the attention
    core (1 fused kernel, or QK^T, softmax, dropout, PV), the element-wise kernels, and the TP
    communication calls (one per all-reduce point, two under sequence parallelism)."""
    blocks = 2 if cross else 1
    return ((7 if cross else 4) * eff.host_ops_per_gemm + blocks * (1 if flash else 4) + eff.elementwise_kernels_per_layer
            + (2 * blocks + cross) * (1 + sp) * (tp > 1))


def block_host_s(eff: EfficiencyModel, ops: Num, *, tp: Num, sp: Num, recompute: Num, tokens: Num = 0) -> Num:
    """Host seconds to issue one block's forward + backward (+ recomputed forward): ops * host_op_s *
    3 passes (the backward issues twice the forward's ops), times the measured host factors of
    tensor parallelism (DTensor dispatch), sequence parallelism and recomputation (checkpoint
    wrappers), plus a TP block's per-token host cost on `tokens` (the micro-batch's tokens). With the
    default factors (1, 1, 4/3, 1) and no per-token cost this is ops * host_op_s * (3 + full)."""
    factor = 1.0 + (tp > 1) * ((eff.host_tp_factor - 1.0) + sp * eff.host_tp_factor * (eff.host_sp_factor - 1.0))
    # recomputation replays the block's ops, DTensor dispatch included: a factor on the TP block too
    # (measured, 2 Gloo ranks, 8 tokens: TP + selective 30.8 ms = 0.89x TP 14.4 ms x the plain ratio 2.43)
    rc = ((recompute == 2) * (eff.host_full_recompute_factor - 1.0)
          + (recompute == 1) * (eff.host_selective_recompute_factor - 1.0))
    per_token = (tp > 1) * (sp * eff.host_sp_token_s + (1 - sp) * eff.host_tp_token_s)
    return ops * eff.host_op_s * 3.0 * factor * (1.0 + rc) + per_token * tokens
