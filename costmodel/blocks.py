"""One block, the embedding and the LM head priced on one GPU for one micro-batch (`block_costs`,
`end_costs`), and the collectives they wait for (`collective_s`, `p2p_time_s`). Numbers or arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .compute import attention_core_time_s, block_host_ops, block_host_s, gemm_time_s, memory_time_s
from .memory import layer_activation_bytes
from .stepctx import Knobs, StepContext, any_set, vmax

__all__ = ["BlockCost", "EndCost", "block_costs", "end_costs", "collective_s", "p2p_time_s", "tp_forward_share",
           "W_SHARE"]

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


def block_costs(ctx: StepContext, k: Knobs, comm: Any, *, cross: bool) -> BlockCost:
    """Price one block (with cross-attention when `cross`) for micro-batch k.mb on one GPU.

    TP: Megatron's f/g operators, 2 all-reduces forward and 2 backward (all-gather + reduce-scatter
    pairs under sequence parallelism; Korthikanti 2022, sec. 4.2.2), repeated when the forward is
    recomputed; exposed (not overlapped). CP: ring attention passes K/V around cp ranks, cp-1 steps
    forward and 2x that backward (K/V + their gradients), hidden behind the attention core (Liu et
    al. 2023, "Ring Attention")."""
    sh, r, e = ctx.shape, ctx.rates, ctx.act_bytes
    tp, cp = k.tp, k.cp
    b = k.mb
    s_loc = ctx.seq_len // cp
    m = b * s_loc
    blocks = 2 if cross else 1
    heads = sh.a // tp
    gemm_f = (gemm_time_s(m, (sh.q_width + 2 * sh.kv_width) // tp, sh.h, r)
              + gemm_time_s(m, sh.h, sh.q_width // tp, r)
              + gemm_time_s(m, sh.f * (2 if sh.gated else 1) // tp, sh.h, r)
              + gemm_time_s(m, sh.h, sh.f // tp, r))
    if cross:
        gemm_f = gemm_f + (gemm_time_s(m, sh.q_width // tp, sh.h, r) + gemm_time_s(m, 2 * sh.kv_width // tp, sh.h, r)
                           + gemm_time_s(m, sh.h, sh.q_width // tp, r))
    core_f = blocks * attention_core_time_s(b, heads, s_loc, ctx.seq_len, sh.d, r, flash=ctx.flash, act_bytes=e)
    seq_shard = 1 + k.sp * (tp - 1)
    ew_bytes = m * ((10 * e + 2) * sh.h * (blocks if cross else 1) / seq_shard
                    + (3 if sh.gated else 2) * e * sh.f / tp)
    ew_f = memory_time_s(ew_bytes, r, kernels=ctx.eff.elementwise_kernels_per_layer + 2 * cross)
    core_bwd_factor = 2.5 if ctx.flash else 2.0
    fwd = gemm_f + core_f + ew_f
    bwd = 2 * (gemm_f + ew_f) + core_bwd_factor * core_f
    rc = k.recompute
    recompute = (rc == 2) * fwd + (rc == 1) * core_f
    # tensor parallelism: per all-reduce point an AR, or AG + RS under sequence parallelism
    act_buf = e * m * sh.h
    if any_set(tp > 1):   # per row: a one-rank axis costs 0 (CommModel / GroupedComm)
        per_point = _tp_point(ctx, comm, k.sp, act_buf)
        points = 3 if cross else 2
        tp_s = per_point * points * (2 + (rc == 2))
    else:
        tp_s = 0.0 * b
    if any_set(cp > 1):
        kv = blocks * 2 * e * m * sh.kv_width / tp
        ring = (cp - 1) * collective_s(ctx, comm, "cp", "send_recv", kv)
        cp_s = vmax(ring - core_f, 0.0) + vmax(2 * ring - core_bwd_factor * core_f, 0.0)
        cp_s = cp_s * (1 + (rc == 2))
    else:
        cp_s = 0.0 * b
    host = ctx.eff.host_op_s
    if host > 0:
        # Eager frameworks issue every op from the host; the GPU (compute + communication) never runs
        # ahead of it, so a block takes max(GPU time, ops * host_op_s); the slack counts as compute.
        ops = block_host_ops(ctx.eff, cross=cross, flash=ctx.flash, tp=tp, sp=k.sp)
        host_s = block_host_s(ctx.eff, ops, tp=tp, sp=k.sp, recompute=rc, tokens=m)   # measured host factors (issue 6)
        hidden_comm = (tp_s + cp_s) * ctx.eff.host_hides_comm
        gpu_s = fwd + bwd + recompute + hidden_comm
        q = ctx.eff.host_overlap_exponent   # smooth max(gpu_s, host_s): the queue is not always full
        top = vmax(gpu_s, host_s)   # scaled by the larger, so that no power overflows
        unit = top + (top == 0)
        slack = top * ((gpu_s / unit) ** q + (host_s / unit) ** q) ** (1.0 / q) - gpu_s
        fwd = fwd + slack / (3 + (rc == 2))
        bwd = bwd + slack * (2 / (3 + (rc == 2)))
        recompute = recompute + slack * ((rc == 2) / (3 + (rc == 2)))
    act = layer_activation_bytes(sh, b, s_loc, tp=tp, sp=k.sp, recompute_code=rc, flash=ctx.flash,
                                 act_bytes=e, cross=cross)
    act_full = layer_activation_bytes(sh, b, s_loc, tp=tp, sp=k.sp, recompute_code=0, flash=ctx.flash,
                                      act_bytes=e, cross=cross)
    params = (ctx.layer_params_dec if cross else ctx.layer_params_enc) / tp
    return BlockCost(fwd, bwd, recompute, tp_s, cp_s, act, act_full, params)


def collective_s(ctx: StepContext, comm: Any, axis: str, op: str, nbytes: Num) -> Num:
    """Seconds of one collective: the CommModel's time / EfficiencyModel.collective_efficiency."""
    return comm.time_s(axis, op, nbytes) / ctx.eff.collective_efficiency


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
    norms = ctx.head_extra_params - (0 if sh.tie else ctx.vocab_params)
    head_params = norms + (ctx.vocab_params / tp if (not sh.tie or k.pp > 1) else 0)
    head = EndCost(vmax(head_gemm + memory_time_s(3 * loss_bytes, r, kernels=3), 8 * host),
                   vmax(2 * head_gemm + memory_time_s(2 * loss_bytes, r, kernels=2), 16 * host), point, head_params)
    return embed, head
