"""The step-cost core shared by `estimate` (scalars) and `estimate_batch` (numpy arrays).

`StepContext` holds what is fixed for a (model, cluster, training) triple; `Knobs` one plan or a batch
of plans with the same dp/tp/pp/cp degrees (so one CommModel serves them); `block_costs` prices one
block on one GPU for one micro-batch; `step_costs` assembles ranks, the pipeline, data-parallel
communication and the optimizer for even stage splits. Every formula is plain arithmetic, so the
same code runs on Python numbers and on arrays."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any

import numpy as np

from .compute import EfficiencyModel, Rates, attention_core_time_s, gemm_time_s, memory_time_s
from .constants import efficiency_with_constants
from .memory import (
    DTYPE_BYTES,
    inflight_chunks,
    layer_activation_bytes,
    logits_bytes,
    model_state_bytes,
    optimizer_bytes_per_param,
    weight_bytes_per_param,
)
from .params import ModelShape, embedding_params, layer_params, lm_head_params, model_shape
from .specs import ClusterSpec, ModelSpec, TrainingSpec

__all__ = ["StepContext", "Knobs", "BlockCost", "EndCost", "build_context", "block_costs", "end_costs",
           "step_costs", "rank_state", "p2p_time_s", "vmax"]

Num = Any


P2P_EXPOSED_HOPS = 2
"""Transfers per stage boundary on the critical path: the first forward travelling down the pipeline
and the last backward travelling up (steady-state transfers overlap compute, as in the simulator)."""


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
    memo: dict = field(default_factory=dict, compare=False, repr=False)  # per-context cache (step FLOPs)

    @cached_property
    def eff(self) -> EfficiencyModel:
        return self.rates.eff


def build_context(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, *,
                  efficiency: EfficiencyModel, calibration: Any = None) -> StepContext:
    """The StepContext of a model on a cluster's GPU for a training spec."""
    efficiency = efficiency_with_constants(efficiency, calibration)  # closed-loop (issue 6): fitted constants
    shape = model_shape(model)
    gpu = cluster.gpu
    peak = gpu.peak_flops(training.dtype)
    rates = Rates(peak, gpu.hbm_bw_bytes_per_s, efficiency, training.dtype, calibration)
    embed = embedding_params(shape)
    return StepContext(
        shape=shape, seq_len=training.seq_len, global_batch=training.global_batch_size,
        act_bytes=DTYPE_BYTES[training.dtype], weight_bytes=weight_bytes_per_param(training.dtype),
        grad_bytes=DTYPE_BYTES[training.grad_dtype or training.dtype],
        opt_bytes=optimizer_bytes_per_param(training.dtype, training.optimizer),
        flash=training.flash_attention, rates=rates,
        layer_params_enc=layer_params(shape), layer_params_dec=layer_params(shape, cross=True),
        vocab_params=shape.vocab * shape.h, replicated_embed_params=embed - shape.vocab * shape.h,
        head_extra_params=lm_head_params(shape), hbm_bytes=gpu.hbm_bytes, peak_flops_per_s=peak,
    )


@dataclass
class Knobs:
    """One plan (numbers) or many plans (arrays) sharing the degrees dp, tp, pp, cp (plain ints).
    Codes: schedule 0 gpipe / 1 1f1b / 2 interleaved-1f1b / 3 zero-bubble; recompute 0/1/2; sp 0/1."""

    dp: int
    tp: int
    pp: int
    cp: int
    mb: Num
    v: Num
    schedule: Num
    zero: Num
    recompute: Num
    sp: Num


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
    if tp > 1:
        per_point = _tp_point(ctx, comm, k.sp, act_buf)
        points = 3 if cross else 2
        tp_s = per_point * points * (2 + (rc == 2))
    else:
        tp_s = 0.0 * b
    if cp > 1:
        kv = blocks * 2 * e * m * sh.kv_width / tp
        ring = (cp - 1) * _ct(ctx, comm, "cp", "send_recv", kv)
        cp_s = vmax(ring - core_f, 0.0) + vmax(2 * ring - core_bwd_factor * core_f, 0.0)
        cp_s = cp_s * (1 + (rc == 2))
    else:
        cp_s = 0.0 * b
    host = ctx.eff.host_op_s
    if host > 0:
        # Eager frameworks issue every op from the host; the GPU (compute + communication) never runs
        # ahead of it, so a block takes max(GPU time, ops * host_op_s); the slack counts as compute.
        ops = (7 if cross else 4) + blocks * (1 if ctx.flash else 4) + ctx.eff.elementwise_kernels_per_layer + (
            (2 * blocks + cross) * (1 + k.sp) * (tp > 1))
        host_s = ops * host * (3 + (rc == 2))
        hidden_comm = (tp_s + cp_s) * ctx.eff.host_hides_comm
        gpu_s = fwd + bwd + recompute + hidden_comm
        q = ctx.eff.host_overlap_exponent   # smooth max(gpu_s, host_s): the queue is not always full
        slack = (gpu_s**q + host_s**q) ** (1.0 / q) - gpu_s
        fwd = fwd + slack / (3 + (rc == 2))
        bwd = bwd + slack * (2 / (3 + (rc == 2)))
        recompute = recompute + slack * ((rc == 2) / (3 + (rc == 2)))
    act = layer_activation_bytes(sh, b, s_loc, tp=tp, sp=k.sp, recompute_code=rc, flash=ctx.flash,
                                 act_bytes=e, cross=cross)
    act_full = layer_activation_bytes(sh, b, s_loc, tp=tp, sp=k.sp, recompute_code=0, flash=ctx.flash,
                                      act_bytes=e, cross=cross)
    params = (ctx.layer_params_dec if cross else ctx.layer_params_enc) / tp
    return BlockCost(fwd, bwd, recompute, tp_s, cp_s, act, act_full, params)


def _ct(ctx: StepContext, comm: Any, axis: str, op: str, nbytes: Num) -> Num:
    """Seconds of one collective: the CommModel's time / EfficiencyModel.collective_efficiency."""
    return comm.time_s(axis, op, nbytes) / ctx.eff.collective_efficiency


def p2p_time_s(ctx: StepContext, k: Knobs, comm: Any) -> Num:
    """One pipeline transfer of a micro-batch's boundary activations, b*s*h/t (Megatron's
    scatter/gather optimisation, Narayanan 2021 sec. 4.1). The sender's fixed cost per transfer
    (EfficiencyModel.p2p_overhead_s) is charged to the sending rank, not to the transfer."""
    nbytes = ctx.act_bytes * k.mb * (ctx.seq_len // k.cp) * ctx.shape.h / k.tp
    return _ct(ctx, comm, "pp", "send_recv", nbytes)


def _tp_point(ctx: StepContext, comm: Any, sp: Num, nbytes: Num) -> Num:
    """One TP synchronisation point: an all-reduce, or all-gather + reduce-scatter with SP."""
    out = 0.0 * nbytes
    if _any(sp):
        out = out + sp * (_ct(ctx, comm, "tp", "all_gather", nbytes) + _ct(ctx, comm, "tp", "reduce_scatter", nbytes))
    if _any(1 - sp):
        out = out + (1 - sp) * _ct(ctx, comm, "tp", "all_reduce", nbytes)
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
    if tp > 1:
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


def _cross_layers_on_rank(rank: int, pp: int, v: Num, n_enc: int, n_layers: int) -> Num:
    """Blocks with cross-attention (decoder blocks after n_enc encoder blocks) on `rank` when the
    n_layers blocks split evenly into pp*v chunks, chunk c on rank c % pp."""
    vmax_int = int(np.max(v))
    total = 0.0 * v
    for j in range(vmax_int):
        per = n_layers / (pp * v)
        c = rank + j * pp
        dec = np.clip((c + 1) * per - n_enc, 0, per)
        total = total + (j < v) * dec
    return total


def step_costs(ctx: StepContext, k: Knobs, comm: Any, *, memo: dict | None = None) -> dict[str, Num]:
    """Time and memory breakdown of one step for even stage splits (closed-form pipeline).

    Pipeline (Narayanan et al. 2021, sec. 2.2): with T_r the per-micro-batch time of rank r, the step
    takes m*max(T) + (sum(T) - max(T))/v (= (p-1)/(v*m) bubble for uniform stages); ZB-H1 shrinks
    the bubble by F/(F+B) (Qi et al. 2023). P2P: blocking sends charge p2p_overhead_s per transfer to
    the sending rank, and 2(p-1) transfers of b*s*h/t are exposed (pipeline fill and drain). DP: all-reduce (ZeRO-0), reduce-scatter + all-gather (ZeRO-1/2), per-micro-batch all-gathers
    + reduce-scatter (ZeRO-3), overlapped with backward when EfficiencyModel.overlap_grad_reduce."""
    sh, eff = ctx.shape, ctx.eff
    dp, pp, cp = k.dp, k.pp, k.cp
    m = ctx.global_batch // (dp * k.mb)
    enc, dec, embed, head = _unit_costs(ctx, k, comm, memo)
    n_layers = sh.num_layers
    per_rank = n_layers / pp
    out_ranks = []
    for rank in (0, pp - 1) if pp > 1 else (0,):
        n_dec = _cross_layers_on_rank(rank, pp, k.v, sh.n_enc, n_layers) if sh.n_dec else 0.0
        n_enc = per_rank - n_dec
        first, last = rank == 0, rank == pp - 1
        fwd = n_enc * enc.fwd_s + n_dec * dec.fwd_s + first * embed.fwd_s + last * head.fwd_s
        bwd = (n_enc * (enc.bwd_s + enc.recompute_s) + n_dec * (dec.bwd_s + dec.recompute_s)
               + first * embed.bwd_s + last * head.bwd_s)
        tp_s = n_enc * enc.tp_s + n_dec * dec.tp_s + first * embed.tp_s + last * head.tp_s
        cp_s = n_enc * enc.cp_s + n_dec * dec.cp_s
        params = n_enc * enc.params + n_dec * dec.params + first * embed.params + last * head.params
        out_ranks.append(rank_state(ctx, k, comm, rank, m, n_enc, n_dec, enc, dec, fwd, bwd, params))
        # blocking sends: a rank pays the per-transfer overhead for each chunk's forward output and
        # backward gradient it sends (all but the very first and very last stage send both)
        sync = (pp > 1) * (2 * k.v - first - last) * eff.p2p_overhead_s
        out_ranks[-1].update(fwd=fwd, bwd=bwd, tp=tp_s, cp=cp_s, sync=sync, T=fwd + bwd + tp_s + cp_s + sync)
    r0 = out_ranks[0]
    rl = out_ranks[-1]
    sum_t = (sh.n_enc * (enc.fwd_s + enc.bwd_s + enc.recompute_s + enc.tp_s + enc.cp_s)
             + sh.n_dec * (dec.fwd_s + dec.bwd_s + dec.recompute_s + dec.tp_s + dec.cp_s)
             + embed.fwd_s + embed.bwd_s + embed.tp_s + head.fwd_s + head.bwd_s + head.tp_s
             + (pp > 1) * (2 * k.v * pp - 2) * eff.p2p_overhead_s)
    slow_last = rl["T"] > r0["T"]
    if isinstance(slow_last, np.ndarray):
        crit = {key: np.where(slow_last, rl[key], r0[key]) for key in ("fwd", "bwd", "tp", "cp", "sync", "T")}
    else:
        crit = rl if slow_last else r0
    zb = (k.schedule == 3) * crit["fwd"] / (crit["fwd"] + crit["bwd"]) + (k.schedule != 3)
    bubble = vmax(sum_t - crit["T"], 0.0) / k.v * zb if pp > 1 else 0.0 * k.mb
    if pp > 1:
        pp_s = m * crit["sync"] + P2P_EXPOSED_HOPS * (pp - 1) * p2p_time_s(ctx, k, comm)
    else:
        pp_s = 0.0 * k.mb
    cp_grad = _ct(ctx, comm, "cp", "all_reduce", vmax(r0["params"], rl["params"]) * ctx.grad_bytes) if cp > 1 else 0.0
    mem_last = rl["peak"] > r0["peak"]
    if isinstance(mem_last, np.ndarray):
        mem = {key: np.where(mem_last, rl[key], r0[key]) for key in
               ("params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes", "buffers_bytes", "peak")}
    else:
        mem = rl if mem_last else r0
    out = {
        "num_micro_batches": m + 0 * k.mb,
        "compute_s": m * (crit["fwd"] + crit["bwd"]),
        "tp_comm_s": m * crit["tp"],
        "cp_comm_s": m * crit["cp"] + cp_grad,
        "dp_comm_s": vmax(r0["dp"], rl["dp"]),
        "pp_comm_s": pp_s,
        "bubble_s": bubble,
        "optimizer_s": vmax(r0["opt"], rl["opt"]) + eff.step_overhead_s,
        "parameters_bytes": mem["params_bytes"],
        "gradients_bytes": mem["grads_bytes"],
        "optimizer_bytes": mem["optimizer_bytes"],
        "activations_bytes": mem["activations_bytes"],
        "buffers_bytes": mem["buffers_bytes"],
        "peak_bytes": mem["peak"],
    }
    out["step_time_s"] = (out["compute_s"] + out["tp_comm_s"] + out["cp_comm_s"] + out["dp_comm_s"]
                          + out["pp_comm_s"] + out["bubble_s"] + out["optimizer_s"])
    out["_ranks"] = out_ranks
    out["_blocks"] = (enc, dec)
    return out


def _unit_costs(ctx: StepContext, k: Knobs, comm: Any, memo: dict | None) -> tuple:
    """Block, cross-block, embedding and head costs; with `memo` (a dict owned by one CommModel, so
    fixed degrees) scalar knobs reuse earlier results: they depend on (mb, sp, recompute) only."""
    key = None
    if memo is not None and not isinstance(k.mb, np.ndarray):
        key = (id(ctx), k.mb, k.sp, k.recompute)
        hit = memo.get(key)
        if hit is not None and hit[0] is ctx:
            return hit[1]
    if isinstance(k.mb, np.ndarray) and k.mb.size > 64:
        # arrays: price each distinct (mb, sp, recompute) once and expand (same numbers, fewer ops)
        code = (np.asarray(k.mb) * 4 + np.asarray(k.sp)) * 4 + np.asarray(k.recompute)
        uniq, first, inverse = np.unique(code, return_index=True, return_inverse=True)
        if uniq.size * 8 < code.size:
            small = replace(k, mb=k.mb[first], sp=k.sp[first], recompute=k.recompute[first])
            inverse = inverse.ravel()
            return tuple(_expand(u, inverse) for u in _unit_costs(ctx, small, comm, None))
    enc = block_costs(ctx, k, comm, cross=False)
    dec = block_costs(ctx, k, comm, cross=True) if ctx.shape.n_dec else enc
    units = (enc, dec, *end_costs(ctx, k, comm))
    if key is not None:
        if len(memo) > 4096:
            memo.clear()
        memo[key] = (ctx, units)
    return units


def _expand(unit: Any, inverse: np.ndarray) -> Any:
    """A BlockCost/EndCost of unique knob rows, indexed back to every row."""
    return type(unit)(**{f.name: (v[inverse] if isinstance(v := getattr(unit, f.name), np.ndarray) and v.ndim
                                  else v) for f in fields(unit)})


def _any(flag: Num) -> bool:
    """Whether a 0/1 flag (number or array) is set anywhere: skip work no plan needs."""
    return bool(np.any(flag)) if isinstance(flag, np.ndarray) else bool(flag)


def rank_state(ctx: StepContext, k: Knobs, comm: Any, rank: int, m: Num, n_enc: Num, n_dec: Num,
               enc: BlockCost, dec: BlockCost, fwd: Num, bwd: Num, params: Num,
               stored_act_bytes: Num = None, *, with_time: bool = True) -> dict[str, Num]:
    """Memory of pipeline rank `rank` and (with_time) its exposed data-parallel communication and
    optimizer time. `stored_act_bytes` overrides the closed-form in-flight activations (e.g. the
    simulator's peak)."""
    sh, eff, e = ctx.shape, ctx.eff, ctx.act_bytes
    dp, tp, pp, cp = k.dp, k.tp, k.pp, k.cp
    shards = dp * cp
    w, g, o = model_state_bytes(params, zero_stage=k.zero, shards=shards, weight_bytes=ctx.weight_bytes,
                                grad_bytes=ctx.grad_bytes, optimizer_bytes=ctx.opt_bytes)
    if stored_act_bytes is None:
        chunks = inflight_chunks(k.schedule, rank, pp, m, k.v)
        stored_act_bytes = chunks * (n_enc * enc.act_bytes + n_dec * dec.act_bytes) / k.v
    working = (k.recompute == 2) * (dec.act_full_bytes if sh.n_dec else enc.act_full_bytes)
    acts = stored_act_bytes + working
    tokens = k.mb * (ctx.seq_len // cp)
    last = rank == pp - 1
    buffers = (last * logits_bytes(sh, k.mb, ctx.seq_len // cp, tp=tp)
               + (pp > 1) * 2 * e * tokens * sh.h / tp
               + k.sp * e * tokens * sh.h
               + (k.zero == 3) * 2 * enc.params * ctx.weight_bytes
               + eff.framework_bytes)
    peak = w + g + o + acts + buffers
    out = {"params_bytes": w, "grads_bytes": g, "optimizer_bytes": o, "activations_bytes": acts,
           "buffers_bytes": buffers, "peak": peak, "params": params}
    if not with_time:
        return out
    # data-parallel gradient / parameter traffic of this rank
    zero = k.zero
    dp_s = 0.0 * k.mb
    if dp > 1:
        gbytes, wbytes = params * ctx.grad_bytes, params * ctx.weight_bytes
        window = bwd if eff.overlap_grad_reduce else 0.0 * bwd
        if _any(zero == 0):
            ar = _ct(ctx, comm, "dp", "all_reduce", gbytes)
            dp_s = dp_s + (zero == 0) * vmax(ar - window, 0.0)
        if _any(zero >= 1):
            rs = _ct(ctx, comm, "dp", "reduce_scatter", gbytes)
            ag = _ct(ctx, comm, "dp", "all_gather", wbytes)
            dp_s = dp_s + ((zero == 1) | (zero == 2)) * (vmax(rs - window, 0.0) + ag)
            if _any(zero == 3):
                z3_total = m * (2 * ag + rs)
                z3_window = m * (fwd + bwd) if eff.overlap_grad_reduce else 0.0 * bwd
                z3 = vmax(z3_total - z3_window, z3_total / (m * vmax(n_enc + n_dec, 1.0)))
                dp_s = dp_s + (zero == 3) * z3
    shard_params = params / (1 + (zero >= 1) * (shards - 1))
    opt_traffic = shard_params * (2 * ctx.opt_bytes + ctx.grad_bytes + ctx.weight_bytes)
    out["dp"] = dp_s
    out["opt"] = memory_time_s(opt_traffic, ctx.rates, kernels=4)
    return out
