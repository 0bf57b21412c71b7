"""The step-cost core shared by `estimate` (scalars) and `estimate_batch` (numpy arrays).

`StepContext` / `Knobs` (costmodel.layer.context) say what is priced: a (model, cluster, training) triple
and one plan, or a batch of plans of one pipeline depth pp (dp/tp/cp per row, collectives priced by
each row's own CommModel through a `costmodel.network.comm_grouped.GroupedComm`; `costmodel.step.rows`
prices blocks and the pipeline once per distinct row);
`block_costs` / `end_costs` (costmodel.layer.blocks) price one block, the embedding and the head on one GPU
for one micro-batch; `step_costs` here assembles pipeline ranks, the pipeline, data-parallel
communication and the optimizer for even stage splits, and `rank_state` one rank's memory. Every
formula is plain arithmetic, so the same code runs on Python numbers and on arrays; the names above
are re-exported here."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..layer.blocks import (
    W_SHARE,
    BlockCost,
    EndCost,
    block_costs,
    end_costs,
    p2p_time_s,
    tp_forward_share,
)
from ..layer.compute import memory_time_s
from ..layer.context import Knobs, StepContext, any_set, build_context, vmax
from ..layer.memory import inflight_chunks, logits_bytes, model_state_bytes
from ..layer.moe import dispatch_buffer_bytes, expert_shards, expert_state_bytes
from ..pipeline.ranked import ranked_makespan_s
from .dp_comm import dp_comm_s
from .rows import PIPELINE_KNOBS, UNIT_KNOBS, at_rows, distinct_rows, take_knobs, take_units

__all__ = ["StepContext", "Knobs", "BlockCost", "EndCost", "build_context", "block_costs", "end_costs",
           "step_costs", "optimizer_time_s", "ddp_wrapped", "unit_costs", "pipeline_phase", "assemble_step", "RANK_KEYS",
           "CRIT_KEYS", "rank_state", "p2p_time_s", "vmax"]

Num = Any


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


def step_costs(ctx: StepContext, k: Knobs, comm: Any, *, memo: dict | None = None,
               units: tuple | None = None, rows_distinct: bool = False) -> dict[str, Num]:
    """Time and memory breakdown of one step for even stage splits (closed-form pipeline).

    Pipeline: `pipeline_ranked.ranked_makespan_s` on the per-micro-batch forward/backward of the first,
    a middle and the last rank, built exactly as `estimate`'s simulator path builds its stages (exposed
    TP/CP traffic split between forward and backward, blocking-send overhead p2p_overhead_s on each
    send, one boundary transfer of b*s*h/t), so the two agree (tests/test_costmodel_estimate.py).
    Breakdown (both paths): compute/TP/CP of the busiest rank over m micro-batches; pp_comm its
    blocking-send time plus what the transfers add to the makespan; bubble the rest of the makespan.
    DP: all-reduce (ZeRO-0), reduce-scatter + all-gather (ZeRO-1/2), per-micro-batch all-gathers +
    reduce-scatter (ZeRO-3), overlapped with backward when EfficiencyModel.overlap_grad_reduce.
    `units`: the (enc, dec, embed, head) costs of these rows if already priced (`unit_costs`);
    `rows_distinct`: no two rows share every knob but ZeRO (do not look for repeats to price once)."""
    dp, pp = k.dp, k.pp
    m = ctx.global_batch // (dp * k.mb)
    enc, dec, embed, head = _unit_costs(ctx, k, comm, memo) if units is None else units
    key = None
    if memo is not None and not isinstance(k.mb, np.ndarray):
        key = ("pipe", id(ctx), k.mb, k.sp, k.recompute, k.v, k.schedule, k.cp_attn)   # ZeRO does not change it
        hit = memo.get(key)
    if key is None or hit is None or hit[0] is not ctx:
        distinct = None if rows_distinct else distinct_rows(k, comm, *PIPELINE_KNOBS, repeats=2)   # not ZeRO, dp links
        if distinct is None:
            hit = (ctx, _pipeline(ctx, k, comm, m, enc, dec, embed, head))
        else:
            first, inverse = distinct
            units = take_units((enc, dec, embed, head), first)
            sub = _pipeline(ctx, take_knobs(k, first), comm.take(first) if hasattr(comm, "take") else comm,
                            m[first], *units)
            hit = (ctx, _expand_pipeline(sub, inverse))
        if key is not None:
            memo[key] = hit
    classes, crit, pp_s, bubble = hit[1]
    ends = (classes[0], classes[-1]) if pp > 1 else (classes[0],)
    return assemble_step(ctx, k, comm, m, (enc, dec, embed, head), ends, crit, pp_s, bubble)


def pipeline_phase(ctx: StepContext, k: Knobs, comm: Any, m: Num, units: tuple) -> tuple:
    """(first rank, last rank, busiest rank, pp_comm_s, bubble_s): `step_costs`'s closed-form pipeline
    on rows of one depth k.pp, every row priced (no search for repeats); the rank dicts hold at
    least `RANK_KEYS` / `CRIT_KEYS`. With `assemble_step` it is `step_costs` in two phases, so a
    caller may price the pipeline per depth and the rest on rows of every depth at once."""
    classes, crit, pp_s, bubble = _pipeline(ctx, k, comm, m, *units)
    return classes[0], classes[-1], crit, pp_s, bubble


def assemble_step(ctx: StepContext, k: Knobs, comm: Any, m: Num, units: tuple, ends: tuple, crit: dict[str, Num],
                  pp_s: Num, bubble: Num, *, memory_breakdown: bool = True) -> dict[str, Num]:
    """`step_costs`'s result from its pipeline (`ends`: the first and last rank's dicts, or the one
    rank of pp = 1; `crit` the busiest rank's; `pp_s`, `bubble`): memory and data-parallel time of
    the end ranks (`rank_state`, the gradient reduction over the dp x cp replicas included), the
    breakdown. Any knob may vary along a second axis that broadcasts (the planner's ZeRO stages, a (stages, 1) column). Without
    `memory_breakdown` the memory parts of the busier rank are left out (its `peak_bytes` and each
    rank's in `_ranks` remain)."""
    eff = ctx.eff
    enc, dec = units[0], units[1]
    ranks = []
    for rs in ends:
        ranks.append(rank_state(ctx, k, comm, rs["rank"], m, rs["n_enc"], rs["n_dec"], enc, dec, rs["fwd"], rs["bwd"],
                                rs["params"]))
        ranks[-1].update(rs)
    r0, rl = ranks[0], ranks[-1]
    mem_last = rl["peak"] > r0["peak"]
    parts = ("params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes", "buffers_bytes")
    if isinstance(mem_last, np.ndarray):
        mem = {key: np.where(mem_last, rl[key], r0[key]) for key in (*parts, "peak") if memory_breakdown or key == "peak"}
    else:
        mem = rl if mem_last else r0
    out = {
        "num_micro_batches": m + 0 * k.mb,
        "compute_s": m * (crit["fwd"] + crit["bwd"]),
        "tp_comm_s": m * crit["tp"],
        "cp_comm_s": m * crit["cp"],
        "ep_comm_s": m * crit["ep"],
        "dp_comm_s": vmax(r0["dp"], rl["dp"]),
        "pp_comm_s": pp_s,
        "bubble_s": bubble,
        "optimizer_s": vmax(r0["opt"], rl["opt"]) + eff.step_overhead_s,
        "peak_bytes": mem["peak"],
    }
    if memory_breakdown:
        out.update(parameters_bytes=mem["params_bytes"], gradients_bytes=mem["grads_bytes"],
                   optimizer_bytes=mem["optimizer_bytes"], activations_bytes=mem["activations_bytes"],
                   buffers_bytes=mem["buffers_bytes"])
    out["step_time_s"] = (out["compute_s"] + out["tp_comm_s"] + out["cp_comm_s"] + out["ep_comm_s"] + out["dp_comm_s"]
                          + out["pp_comm_s"] + out["bubble_s"] + out["optimizer_s"])
    out["_ranks"] = ranks
    out["_blocks"] = (enc, dec)
    out["_units"] = units
    return out


def _pipeline(ctx: StepContext, k: Knobs, comm: Any, m: Num, enc: BlockCost, dec: BlockCost, embed: EndCost,
              head: EndCost) -> tuple:
    """(rank classes, busiest class, pp_comm_s, bubble_s): the closed-form pipeline of step_costs."""
    sh, eff, pp = ctx.shape, ctx.eff, k.pp
    per_rank = sh.num_layers / pp
    tp_fwd_share = tp_forward_share(k.recompute)
    ovh = eff.p2p_overhead_s
    classes = [_rank_times(ctx, k, 0, enc, dec, embed, head, per_rank, first=True, last=pp == 1)]
    if pp > 2:
        mids = [_rank_times(ctx, k, r, enc, dec, embed, head, per_rank, first=False, last=False)
                for r in ((1,) if not sh.n_dec else range(1, pp - 1))]
        mid = mids[0]
        for other in mids[1:]:
            mid = _slower(mid, other)
        classes.append(mid)
    if pp > 1:
        classes.append(_rank_times(ctx, k, pp - 1, enc, dec, embed, head, per_rank, first=False, last=True))
    for rs in classes:
        ext = rs["tp"] + rs["cp"] + rs["ep"]
        rs["f"] = rs["fwd"] + ext * tp_fwd_share + rs["sync_f"] * ovh
        rs["b"] = rs["bwd"] + ext * (1 - tp_fwd_share) + rs["sync_b"] * ovh
        rs["sync"] = (rs["sync_f"] + rs["sync_b"]) * ovh
        rs["T"] = rs["f"] + rs["b"]
    crit = classes[0]
    for rs in classes[1:]:
        crit = _slower(crit, rs, CRIT_KEYS + ("T",))   # what the step reads of the busiest rank
    if pp == 1:
        return classes, crit, 0.0 * k.mb, 0.0 * k.mb
    mid = classes[1] if pp > 2 else {"f": 0.0, "b": 0.0, "w": 0.0}
    r0, rl = classes[0], classes[-1]
    args = dict(first=(r0["f"], r0["b"]), middle=(mid["f"], mid["b"]), last=(rl["f"], rl["b"]),
                bwd_weight=(r0["w"], mid["w"], rl["w"]))
    c = p2p_time_s(ctx, k, comm)
    span = ranked_makespan_s(k.schedule, pp, m, k.v, p2p_s=c, **args)
    span0 = ranked_makespan_s(k.schedule, pp, m, k.v, p2p_s=0.0, **args) if any_set(c) else span
    return classes, crit, m * crit["sync"] + (span - span0), vmax(span0 - m * crit["T"], 0.0)


def _rank_times(ctx: StepContext, k: Knobs, rank: int, enc: BlockCost, dec: BlockCost, embed: EndCost,
                head: EndCost, per_rank: float, *, first: bool, last: bool) -> dict[str, Num]:
    """Per-micro-batch compute, exposed TP/CP, sends and parameters of pipeline rank `rank` (its v
    chunks together). A rank sends each chunk's forward output but the last stage's, and each
    chunk's input gradient but the first stage's (blocking sends, EfficiencyModel.p2p_overhead_s)."""
    sh = ctx.shape
    n_dec = _cross_layers_on_rank(rank, k.pp, k.v, sh.n_enc, sh.num_layers) if sh.n_dec else 0.0
    n_enc = per_rank - n_dec
    fwd = n_enc * enc.fwd_s + n_dec * dec.fwd_s + first * embed.fwd_s + last * head.fwd_s
    bwd = (n_enc * (enc.bwd_s + enc.recompute_s) + n_dec * (dec.bwd_s + dec.recompute_s)
           + first * embed.bwd_s + last * head.bwd_s)
    multi = k.pp > 1
    return {
        "rank": rank, "n_enc": n_enc, "n_dec": n_dec, "fwd": fwd, "bwd": bwd,
        "tp": n_enc * enc.tp_s + n_dec * dec.tp_s + first * embed.tp_s + last * head.tp_s,
        "cp": n_enc * enc.cp_s + n_dec * dec.cp_s,
        "ep": n_enc * enc.ep_s + n_dec * dec.ep_s,
        "params": n_enc * enc.params + n_dec * dec.params + first * embed.params + last * head.params,
        "sync_f": multi * (k.v - last), "sync_b": multi * (k.v - first),
        # weight-gradient part W of the backward (zero-bubble), half of the blocks' backward as in
        # estimate's simulator path
        "w": (k.schedule == 3) * W_SHARE * (n_enc * enc.bwd_s + n_dec * dec.bwd_s + last * head.bwd_s),
    }


def _slower(a: dict[str, Num], b: dict[str, Num], keys: tuple[str, ...] | None = None) -> dict[str, Num]:
    """The rank dict with the larger per-micro-batch time "T" (elementwise for arrays: only `keys`,
    default every key both have)."""
    key = "T" if "T" in a else "fwd"
    ta = a[key] if key == "T" else a["fwd"] + a["bwd"] + a["tp"] + a["cp"] + a["ep"]
    tb = b[key] if key == "T" else b["fwd"] + b["bwd"] + b["tp"] + b["cp"] + b["ep"]
    pick_b = tb > ta
    if isinstance(pick_b, np.ndarray):
        return {key2: np.where(pick_b, b[key2], a[key2]) for key2 in (keys or a) if key2 in b}
    return b if pick_b else a


def unit_costs(ctx: StepContext, k: Knobs, comm: Any) -> tuple:
    """(enc, dec, embed, head): one block, one cross-attention block, the embedding and the head
    for one micro-batch on one GPU (`block_costs`, `end_costs`); on arrays each distinct row of
    what they depend on (`step_rows.UNIT_KNOBS`) is priced once. Of pp they only read pp > 1 (a
    tied head's weights), so rows of every depth > 1 may share one call."""
    return _unit_costs(ctx, k, comm, None)


def _unit_costs(ctx: StepContext, k: Knobs, comm: Any, memo: dict | None) -> tuple:
    """Block, cross-block, embedding and head costs; with `memo` (a dict owned by one CommModel, so
    fixed degrees) scalar knobs reuse earlier results: they depend on (mb, sp, recompute) only."""
    key = None
    if memo is not None and not isinstance(k.mb, np.ndarray):
        key = (id(ctx), k.mb, k.sp, k.recompute, k.cp_attn)
        hit = memo.get(key)
        if hit is not None and hit[0] is ctx:
            return hit[1]
    # arrays: price each distinct (mb, sp, recompute, tp, cp, their links) once and expand (same
    # numbers, fewer ops); blocks and ends do not depend on dp, the schedule or ZeRO
    distinct = distinct_rows(k, comm, *UNIT_KNOBS, repeats=8)
    if distinct is not None:
        first, inverse = distinct
        units = _unit_costs(ctx, take_knobs(k, first), comm.take(first) if hasattr(comm, "take") else comm, None)
        return take_units(units, inverse)
    enc = block_costs(ctx, k, comm, cross=False)
    dec = block_costs(ctx, k, comm, cross=True) if ctx.shape.n_dec else enc
    units = (enc, dec, *end_costs(ctx, k, comm))
    if key is not None:
        if len(memo) > 4096:
            memo.clear()
        memo[key] = (ctx, units)
    return units


RANK_KEYS = ("rank", "n_enc", "n_dec", "fwd", "bwd", "params", "tp", "cp", "ep")
"""What `assemble_step` (and the planner) read of an end rank's dict."""
CRIT_KEYS = ("fwd", "bwd", "tp", "cp", "ep", "sync")
"""What `assemble_step` reads of the busiest rank's dict."""


def _expand_pipeline(sub: tuple, inverse: np.ndarray) -> tuple:
    """`_pipeline`'s result for distinct rows, indexed back to every row: the end ranks' and the
    busiest rank's figures `step_costs` reads (`RANK_KEYS`, `CRIT_KEYS`)."""
    classes, crit, pp_s, bubble = sub
    ends = [classes[0], classes[-1]] if len(classes) > 1 else [classes[0]]
    take = lambda d, keys: {key: at_rows(d[key], inverse) for key in keys}  # noqa: E731
    return ([take(rs, RANK_KEYS) for rs in ends], take(crit, CRIT_KEYS), at_rows(pp_s, inverse),
            at_rows(bubble, inverse))





def rank_state(ctx: StepContext, k: Knobs, comm: Any, rank: int, m: Num, n_enc: Num, n_dec: Num,
               enc: BlockCost, dec: BlockCost, fwd: Num, bwd: Num, params: Num,
               stored_act_bytes: Num = None, *, with_time: bool = True, with_memory: bool = True) -> dict[str, Num]:
    """Memory of pipeline rank `rank` (with_memory) and (with_time) its exposed data-parallel
    communication and optimizer time. `stored_act_bytes` overrides the closed-form in-flight
    activations (e.g. the simulator's peak)."""
    sh, eff, e = ctx.shape, ctx.eff, ctx.act_bytes
    dp, tp, pp, cp = k.dp, k.tp, k.pp, k.cp
    shards = dp * cp
    experts = n_enc * enc.expert_params + n_dec * dec.expert_params   # routed experts (MoE), sharded over ep
    moe = any_set(experts)
    out = {"params": params}
    if with_memory:
        if moe:
            w, g, o = expert_state_bytes(params, experts, k, weight_bytes=ctx.weight_bytes, grad_bytes=ctx.grad_bytes,
                                         optimizer_bytes=ctx.opt_bytes)
        else:
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
        if moe:
            buffers = buffers + dispatch_buffer_bytes(ctx, k, tokens)
        peak = w + g + o + acts + buffers
        out.update({"params_bytes": w, "grads_bytes": g, "optimizer_bytes": o, "activations_bytes": acts,
                    "buffers_bytes": buffers, "peak": peak})
    if not with_time:
        return out
    # data-parallel gradient / parameter traffic of this rank (costmodel.step.dp_comm), over the dp x cp
    # replicas (the executor wraps FSDP2/DDP over the flattened dp x cp mesh: context-parallel ranks hold
    # the same weights); routed experts over their expert-data-parallel group, which spans cp
    zero = k.zero
    replicas = dp * cp
    dp_s = dp_comm_s(ctx, k, comm, m, params, fwd, bwd, n_enc + n_dec, experts=experts if moe else 0.0)
    blocks = n_enc + n_dec
    if eff.host_ddp_block_s or eff.host_fsdp_block_s or eff.host_fsdp_reshard_block_s:
        # the wrapper's host cost per block (+1 unit: embedding / head), collectives' CPU included
        ddp = ddp_wrapped(k)
        per_block = ddp * eff.host_ddp_block_s + (1 - ddp) * ((zero == 3) * eff.host_fsdp_reshard_block_s
                                                              + (zero != 3) * eff.host_fsdp_block_s)
        dp_s = vmax(dp_s, (replicas > 1) * (blocks + 1) * per_block)
    shard_params = params / (1 + (zero >= 1) * (shards - 1))
    if moe:
        shard_params = (params - experts) / (1 + (zero >= 1) * (shards - 1)) + experts / (
            1 + (zero >= 1) * (expert_shards(k) - 1))
    out["dp"] = dp_s
    out["opt"] = optimizer_time_s(ctx, k, rank, n_enc, n_dec, shard_params)
    return out


def ddp_wrapped(k: Knobs) -> Num:
    """1 where data parallelism is DDP-style (plain tensors, bucketed all-reduce; ZeroRedundancyOptimizer
    for ZeRO-1): ZeRO-0/1 without TP and PP, as `executor.parallelize.dp_wrapper` applies it; 0 where it is
    FSDP2-style (per-block sharding or replicate, DTensor parameters; also with ep > 1, whose experts
    reduce over another group than the rest)."""
    return (k.zero <= 1) * (k.tp == 1) * (k.pp == 1) * (k.ep == 1)


def optimizer_time_s(ctx: StepContext, k: Knobs, rank: Num, n_enc: Num, n_dec: Num, shard_params: Num) -> Num:
    """One optimizer step of a rank holding n_enc + n_dec blocks (without / with cross-attention; + the
    embedding on the first rank, the head on the last) and updating `shard_params` parameters: the fused
    kernel's traffic (m, v, gradient, weight) at the achievable bandwidth, or the measured seconds per
    parameter (`optimizer_param_s`), plus the measured host cost per parameter tensor (plain, TP or
    FSDP-sharded DTensors; ZeroRedundancyOptimizer steps a 1/dp share of whole tensors)."""
    eff = ctx.eff
    if eff.optimizer_param_s:
        out = shard_params * eff.optimizer_param_s
    else:   # the stack's AdamW traffic per parameter, or the fused kernel's (m, v, master, gradient, weight)
        per_param = eff.optimizer_bytes_per_param or (2 * ctx.opt_bytes + ctx.grad_bytes + ctx.weight_bytes)
        out = memory_time_s(shard_params * per_param, ctx.rates, kernels=4)
    if eff.host_optimizer_tensor_s or eff.host_optimizer_tp_tensor_s or eff.host_optimizer_sharded_tensor_s:
        embed_t, head_t = ctx.end_tensors
        tensors = (n_enc * ctx.layer_tensors[0] + n_dec * ctx.layer_tensors[1]
                   + (rank == 0) * embed_t + (rank == k.pp - 1) * head_t)
        ddp = ddp_wrapped(k)
        replicas = k.dp * k.cp > 1   # data parallelism wraps the dp x cp replicas
        fsdp = replicas * (1 - ddp)   # FSDP2 / replicate hold DTensor parameters
        zero1_ddp = replicas * (k.zero == 1) * ddp
        per_tensor = ((k.tp > 1) * eff.host_optimizer_tp_tensor_s
                      + (k.tp == 1) * (fsdp * eff.host_optimizer_sharded_tensor_s
                                       + (1 - fsdp) * eff.host_optimizer_tensor_s))
        out = out + tensors / (1 + zero1_ddp * (k.dp * k.cp - 1)) * per_tensor
    return out
