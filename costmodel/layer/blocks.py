"""One block, the embedding and the LM head priced on one GPU for one micro-batch (`block_costs`,
`end_costs`), and the collectives they wait for (`collective_s`, `p2p_time_s`). Numbers or arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .activations import block_activation_bytes, precision_mode
from .compute import (
    attention_core_bwd_time_s,
    attention_core_time_s,
    block_host_ops,
    block_host_s,
    gemm_time_s,
    memory_time_s,
)
from .context import FULL_PRECISION, Knobs, StepContext, any_set, collective_s, vmax
from .context_parallel import cp_attention_s, cp_host_ops
from .elementwise import BACKWARD_PER_FORWARD, elementwise_bytes, profiled_elementwise_s
from .moe import moe_costs

__all__ = ["BlockCost", "EndCost", "block_costs", "end_costs", "collective_s", "p2p_time_s", "tp_forward_share",
           "tp_overlap_hidden_s", "cross_entropy_bytes", "W_SHARE"]

Num = Any

W_SHARE = 0.5
"""Weight-gradient part W of a block's (and the head's) backward, as zero-bubble splits it off (Qi et
al. 2023: B and W each about one forward's GEMMs)."""


def tp_forward_share(recompute: Num) -> Num:
    """Share of a block's exposed TP/CP traffic that falls in its forward pass: 1 of 2 collective
    rounds (forward, backward), 1 of 3 when full recomputation repeats the forward."""
    return 1.0 / (2 + (recompute == 2))


@dataclass
class BlockCost:
    """One block, one GPU, one micro-batch: times in s, bytes, parameters on the GPU."""

    fwd_s: Num
    bwd_s: Num
    recompute_s: Num
    tp_s: Num
    cp_s: Num
    act_bytes: Num
    act_full_bytes: Num  # without any recomputation (the working set while recomputing one block)
    params: Num
    ep_s: Num = 0.0          # expert-parallel all-to-alls (MoE layers)
    expert_params: Num = 0.0  # routed-expert parameters among `params` (sharded over ep)
    act_bytes_fsdp: Num = None       # the same where the executor wraps the plan with FSDP2 (another precision
    act_full_bytes_fsdp: Num = None  # mode: StackMemorySpec.fsdp_weights); None: as act_bytes / act_full_bytes


def block_costs(ctx: StepContext, k: Knobs, comm: Any, *, cross: bool) -> BlockCost:
    """Price one block (with cross-attention when `cross`) for micro-batch k.mb on one GPU.

    TP: Megatron's f/g operators, 2 all-reduces forward and 2 backward (all-gather + reduce-scatter
    pairs under sequence parallelism; Korthikanti 2022, sec. 4.2.2), repeated when the forward is
    recomputed; exposed (not overlapped). CP: the keys' and values' traffic of the variant the
    executor runs on the device (`context_parallel.cp_attention_s`: all-gather + reduce-scatter, or
    ring attention hidden behind the attention core's steps)."""
    sh, r, e = ctx.shape, ctx.rates, ctx.act_bytes
    tp, cp = k.tp, k.cp
    b = k.mb
    s_loc = ctx.seq_len // cp
    m = b * s_loc
    blocks = 2 if cross else 1
    heads = sh.a // tp
    shapes = [(m, (sh.q_width + 2 * sh.kv_width) // tp, sh.h), (m, sh.h, sh.q_width // tp),
              (m, sh.f * (2 if sh.gated else 1) // tp, sh.h), (m, sh.h, sh.f // tp)]
    if cross:
        shapes += [(m, sh.q_width // tp, sh.h), (m, 2 * sh.kv_width // tp, sh.h), (m, sh.h, sh.q_width // tp)]
    gemm_f = sum(gemm_time_s(mm, n, kk, r) for mm, n, kk in shapes)
    cal = r.calibration
    if cal is not None and cal.gemm:
        # measured GEMMs: the backward's own shapes, input gradient (m x n)(n x k) and weight gradient
        # (k x m)(m x n), each interpolated in the profile (a wide-m wgrad runs at its own rate)
        gemm_b = sum(gemm_time_s(mm, kk, n, r) + gemm_time_s(kk, n, mm, r) for mm, n, kk in shapes)
    else:
        gemm_b = 2 * gemm_f   # the roofline efficiency is symmetric in (m, n, k): dgrad + wgrad = 2 fwd
    act_buf = e * m * sh.h
    per_point = _tp_point(ctx, comm, k.sp, act_buf) if any_set(tp > 1) else 0.0 * b
    moe = None
    if sh.moe is not None:   # MoE layers replace the MLP (costmodel.layer.moe)
        mlp_f = sum(gemm_time_s(mm, n, kk, r) for mm, n, kk in shapes[2:4])
        moe = moe_costs(ctx, k, comm, cross=cross, tokens=m, dense_gemm_f_s=mlp_f, dense_tp_point_s=per_point)
        gemm_f = gemm_f + moe.gemm_f_s
        gemm_b = gemm_b + 2 * moe.gemm_f_s
    core_f = blocks * attention_core_time_s(b, heads, s_loc, ctx.seq_len, sh.d, r, flash=ctx.flash, act_bytes=e,
                                            causal=sh.causal)
    core_bwd_factor = 2.5 if ctx.flash else 2.0
    core_b = core_bwd_factor * core_f
    if ctx.flash and cal is not None and any(pt.bwd_time_s for pt in cal.attention):
        core_b = blocks * attention_core_bwd_time_s(b, heads, s_loc, ctx.seq_len, sh.d, r, causal=sh.causal)
    seq_shard = 1 + k.sp * (tp - 1)
    eff = ctx.eff
    kernels = eff.elementwise_kernels_per_layer + 2 * cross
    if cal is not None and cal.mem_ops:   # each memory-bound operator at its measured bandwidth and backward
        ew_args = dict(tp=tp, seq_shard=seq_shard, act_bytes=e, cross=cross, default_bw=r.mem_bw_bytes_per_s)
        ew_f = profiled_elementwise_s(ctx.ew_classes, sh, m, cal, **ew_args) + kernels * eff.kernel_overhead_s
        ew_b = (profiled_elementwise_s(ctx.ew_classes, sh, m, cal, backward=True, **ew_args)
                + BACKWARD_PER_FORWARD * kernels * eff.kernel_overhead_s)
    else:
        ew_bytes, _ = elementwise_bytes(ctx.ew_classes, sh, m, tp=tp, seq_shard=seq_shard, act_bytes=e, cross=cross)
        ew_f = memory_time_s(ew_bytes, r, kernels=kernels)
        ew_b = BACKWARD_PER_FORWARD * ew_f
    if moe is not None:   # router, permutation and expert activations stream their own bytes
        moe_ew = memory_time_s(moe.ew_bytes, r, kernels=0)
        ew_f, ew_b = ew_f + moe_ew, ew_b + BACKWARD_PER_FORWARD * moe_ew
    params = (ctx.layer_params_dec if cross else ctx.layer_params_enc) / tp
    # the stack's per-micro-batch weight traffic: casting master weights for the forward (autocast) and
    # folding 16-bit weight gradients into fp32 .grad buffers in the backward
    weights = params + (moe.params if moe is not None else 0.0)   # this GPU's share of the block's weights
    cast_f = memory_time_s(weights * eff.weight_cast_bytes, r, kernels=0) if eff.weight_cast_bytes else 0.0
    accumulate = eff.grad_accumulate_bytes
    if accumulate and ctx.dtype in FULL_PRECISION:   # the first micro-batch's gradient becomes .grad as it is
        accumulate = accumulate * vmax(1.0 - k.dp * b / ctx.global_batch, 0.0)
    accumulate_b = memory_time_s(weights * accumulate, r, kernels=0) if eff.grad_accumulate_bytes else 0.0
    if r.dtype == "fp8":
        # per-tensor scaled fp8 GEMMs (NVIDIA Transformer Engine FP8 primer): each GEMM's input and weight
        # are cast from 16 bits to fp8 (read 2 + write 1 byte per element) in the forward, each output
        # gradient in the backward; the casts are memory-bound kernels of their own
        cast_f = cast_f + memory_time_s(3 * (sum(mm * kk for mm, _, kk in shapes) + params), r, kernels=2 * len(shapes))
        accumulate_b = accumulate_b + memory_time_s(3 * sum(mm * n for mm, n, _ in shapes), r, kernels=len(shapes))
    fwd = gemm_f + core_f + ew_f + cast_f
    bwd = gemm_b + ew_b + core_b + accumulate_b
    rc = k.recompute
    recompute = (rc == 2) * fwd + (rc == 1) * core_f
    # tensor parallelism: per all-reduce point an AR, or AG + RS under sequence parallelism
    if any_set(tp > 1):   # per row: a one-rank axis costs 0 (CommModel / GroupedComm)
        points = 3 if cross else 2
        tp_s = per_point * points * (2 + (rc == 2))
        if eff.tp_overlap_with_sp and any_set(k.sp):
            # userbuffers exchange the chunks over NVLink peer memory: a TP group inside one server
            # (the default placement puts TP innermost)
            in_node = tp <= ctx.gpus_per_node
            tp_s = tp_s - k.sp * in_node * tp_overlap_hidden_s(tp_s, gemm_f * (3 + (rc == 2)), tp)
    else:
        tp_s = 0.0 * b
    ep_s = 0.0
    if moe is not None:
        tp_s, ep_s = tp_s + moe.tp_s, moe.ep_s
    if any_set(cp > 1):
        cp_s = cp_attention_s(ctx, k, comm, core_f_s=core_f, core_b_s=core_b, blocks=blocks)
    else:
        cp_s = 0.0 * b
    host = eff.host_op_s
    if host > 0:
        # Eager frameworks issue every op from the host; the GPU (compute + communication) never runs
        # ahead of it, so a block takes max(GPU time, ops * host_op_s); the slack counts as compute.
        ops = block_host_ops(eff, cross=cross, flash=ctx.flash, tp=tp, sp=k.sp) + cp_host_ops(ctx, k)
        if moe is not None:
            ops = ops + moe.host_ops
        host_s = block_host_s(eff, ops, tp=tp, sp=k.sp, recompute=rc, tokens=m)   # measured host factors
        hidden_comm = (tp_s + cp_s + ep_s) * eff.host_hides_comm
        gpu_s = fwd + bwd + recompute + hidden_comm
        q = eff.host_overlap_exponent   # smooth max(gpu_s, host_s): the queue is not always full
        top = vmax(gpu_s, host_s)   # scaled by the larger, so that no power overflows
        unit = top + (top == 0)
        slack = top * ((gpu_s / unit) ** q + (host_s / unit) ** q) ** (1.0 / q) - gpu_s
        fwd = fwd + slack / (3 + (rc == 2))
        bwd = bwd + slack * (2 / (3 + (rc == 2)))
        recompute = recompute + slack * ((rc == 2) / (3 + (rc == 2)))
    # stored activations as the stack keeps them; an MoE layer's (router, dispatched copies, experts)
    # replace the dense MLP's (costmodel.layer.moe), in every precision mode
    moe_act, moe_full = (moe.act_bytes, moe.act_full_bytes) if moe is not None else (0.0, 0.0)
    act, act_full = (_activation_bytes(ctx, k, b, s_loc, code, cross=cross, fsdp=False) for code in (rc, 0))
    out = BlockCost(fwd, bwd, recompute, tp_s, cp_s, act + moe_act, act_full + moe_full, params)
    if moe is not None:
        out.params, out.ep_s, out.expert_params = params + moe.params, ep_s, moe.expert_params
    st = ctx.stack
    if st is not None and st.memory.fsdp_weights is not None:   # a second precision mode under FSDP2
        act_f, full_f = (_activation_bytes(ctx, k, b, s_loc, code, cross=cross, fsdp=True) for code in (rc, 0))
        out.act_bytes_fsdp, out.act_full_bytes_fsdp = act_f + moe_act, full_f + moe_full
    return out


def _activation_bytes(ctx: StepContext, k: Knobs, b: Num, s_loc: Num, rc: Num, *, cross: bool, fsdp: bool) -> Num:
    """One block's stored activations as the stack keeps them (`costmodel.layer.activations`) in the precision
    mode of plain (or, with `fsdp`, FSDP2-wrapped) plans."""
    st = ctx.stack
    return block_activation_bytes(st, precision_mode(st, ctx.dtype, fsdp=fsdp), ctx.shape, b, s_loc, tp=k.tp,
                                  sp=k.sp, recompute_code=rc, flash=ctx.flash, act_bytes=ctx.act_bytes, cross=cross)


def tp_overlap_hidden_s(comm_s: Num, gemm_s: Num, tp: Num) -> Num:
    """TP communication hidden behind the GEMMs by chunked overlap (Transformer Engine userbuffers with
    sequence parallelism; Wang et al. 2023, "Overlap Communication with Dependent Computation via
    Decomposition", ASPLOS): each all-gather / reduce-scatter is split into tp ring steps that run under
    the GEMM's chunks, so the first of the tp chunks stays exposed and no more than the GEMM time hides:
    hidden = min(C (tp-1)/tp, G). Only inside a server: the chunks move through NVLink peer memory."""
    hidden = comm_s * (tp - 1) / vmax(tp, 1)
    if isinstance(hidden, np.ndarray) or isinstance(gemm_s, np.ndarray):
        return np.minimum(hidden, gemm_s)
    return min(hidden, gemm_s)


def p2p_time_s(ctx: StepContext, k: Knobs, comm: Any) -> Num:
    """One pipeline transfer of a micro-batch's boundary activations, b*s*h/t (Megatron's
    scatter/gather optimisation, Narayanan 2021 sec. 4.1). The sender's fixed cost per transfer
    (EfficiencyModel.p2p_overhead_s) is charged to the sending rank, not to the transfer."""
    nbytes = ctx.act_bytes * k.mb * (ctx.seq_len // k.cp) * ctx.shape.h / k.tp
    return collective_s(ctx, comm, "pp", "send_recv", nbytes)


def _tp_point(ctx: StepContext, comm: Any, sp: Num, nbytes: Num) -> Num:
    """One TP synchronisation point: an all-reduce, or all-gather + reduce-scatter with SP."""
    out = 0.0 * nbytes
    if any_set(sp):
        out = out + sp * (collective_s(ctx, comm, "tp", "all_gather", nbytes) + collective_s(ctx, comm, "tp", "reduce_scatter", nbytes))
    if any_set(1 - sp):
        out = out + (1 - sp) * collective_s(ctx, comm, "tp", "all_reduce", nbytes)
    return out


@dataclass
class EndCost:
    """Embedding (first rank) or LM head + loss (last rank) for one micro-batch."""

    fwd_s: Num
    bwd_s: Num
    tp_s: Num
    params: Num


def end_costs(ctx: StepContext, k: Knobs, comm: Any) -> tuple[EndCost, EndCost]:
    """(embedding, head) costs. The vocabulary-parallel embedding all-reduces its output over TP; the
    head is a (tokens x h) @ (h x V/t) GEMM followed by a fused fp32 cross-entropy (Megatron-LM)."""
    sh, r, e, tp = ctx.shape, ctx.rates, ctx.act_bytes, k.tp
    m = k.mb * (ctx.seq_len // k.cp)
    emb_bytes = 3 * e * m * sh.h
    if any_set(tp > 1):
        point = _tp_point(ctx, comm, k.sp, e * m * sh.h)
    else:
        point = 0.0 * m
    host = ctx.eff.host_op_s   # host floor as in block_costs: ~3 ops embed, ~8 ops head + loss forward
    embed = EndCost(vmax(memory_time_s(emb_bytes, r, kernels=2), 3 * host),
                    vmax(memory_time_s(emb_bytes, r, kernels=2), 6 * host), point,
                    ctx.vocab_params / tp + ctx.replicated_embed_params)
    head_gemm = gemm_time_s(m, sh.vocab // tp, sh.h, r)
    loss_bytes = 4 * m * sh.vocab / tp
    loss_f = memory_time_s(3 * loss_bytes, r, kernels=3)
    loss_b = memory_time_s(2 * loss_bytes, r, kernels=2)
    cal = r.calibration
    if cal is not None and cal.has_mem_op("cross_entropy"):   # the measured fp32 cross-entropy over the vocabulary
        bw = cal.mem_op_bw_bytes_per_s("cross_entropy", cross_entropy_bytes(m, sh.vocab / tp))
        loss_f, loss_b = 3 * loss_bytes / bw, 2 * loss_bytes / bw
    norms = ctx.head_extra_params - (0 if sh.tie else ctx.vocab_params)
    head_params = norms + (ctx.vocab_params / tp if (not sh.tie or k.pp > 1) else 0)
    head = EndCost(vmax(head_gemm + loss_f, 8 * host), vmax(2 * head_gemm + loss_b, 16 * host), point, head_params)
    return embed, head


def cross_entropy_bytes(tokens: Num, vocab: Num) -> Num:
    """Bytes a fused fp32 cross-entropy forward moves over `tokens` x `vocab` logits: read the logits,
    write and read the fp32 log-probabilities, 3 x 4 bytes per logit (the profiler's `cross_entropy`
    operator is measured with this count)."""
    return 3 * 4 * tokens * vocab
