"""One pipeline rank's memory over a step: what is allocated at each moment that can hold the peak,
the peak, and what the caching allocator reserves for it.

Moments (`MOMENTS`; Korthikanti et al. 2022 sec. 4.2.3 for the in-flight count, the stacks' files for the
rest):
- `forward`: the last stage starts its loss's backward, or any stage has its most micro-batches in flight
  (`inflight_chunks`): model weights at rest and the 16-bit copies the step computes with, optimizer states
  and master weights, gradients if a backward already ran in this step (persistent buffers, or fewer micro-
  batches in flight than the step has), the stored activations of the micro-batches in flight, the final
  norm's and head's inputs (last stage), the larger of the loss's buffers and one recomputed block's
  working set, communication buffers.
- `backward`: the end of the last backward: every gradient, the freshly computed gradient of the largest
  parameter before it is accumulated, weight copies and communication buffers; no activations.
- `optimizer`: the optimizer step: weights, gradients, states and the optimizer's temporaries.

allocated = the largest moment (torch.cuda.max_memory_allocated); reserved = the caching allocator's
reservation for it (`costmodel.layer.overheads.reserved_bytes`); peak = reserved + the CUDA context and
NCCL buffers outside the allocator: what the GPU must hold. Numpy-broadcastable over ranks and plans."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..layer.activations import head_activation_bytes, precision_mode
from ..layer.context import Knobs, StepContext, ddp_wrapped, fsdp_wrapped
from ..layer.memory import inflight_chunks
from ..layer.moe import dispatch_buffer_bytes, expert_shards
from ..layer.overheads import (
    communicator_count,
    context_bytes,
    loss_buffer_bytes,
    loss_hole_bytes,
    pipeline_buffer_bytes,
    reduce_scatter_buffer_bytes,
    reserved_bytes,
    sequence_parallel_buffer_bytes,
    weight_grad_pending_bytes,
)
from ..layer.states import (
    WEIGHT_SCHEMES,
    grad_accumulation_temporary_bytes,
    grad_bytes_per_param,
    gradient_bytes,
    master_weight_bytes,
    optimizer_state_bytes,
    optimizer_temporary_bytes,
    weight_copy_bytes,
    weights_at_rest_bytes,
)

__all__ = ["MOMENTS", "PARTS", "rank_memory", "block_activations", "weight_scheme"]

Num = Any
MOMENTS = ("forward", "backward", "optimizer")
PARTS = ("params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes", "buffers_bytes", "temporaries_bytes")


def weight_scheme(ctx: StepContext, k: Knobs) -> Num:
    """The WEIGHT_SCHEMES code of each plan: the stack's weights (its `fsdp_weights` where the executor would
    wrap the plan with FSDP2)."""
    mem = ctx.memory
    plain = WEIGHT_SCHEMES[mem.weights]
    if mem.fsdp_weights is None:
        return plain + 0 * k.dp
    fsdp = fsdp_wrapped(k)
    return fsdp * WEIGHT_SCHEMES[mem.fsdp_weights] + (1 - fsdp) * plain


def _head_params(ctx: StepContext, k: Knobs) -> Num:
    """Final norm(s) + the output projection's local share (a tied one is held again by the last stage
    when pp > 1)."""
    sh = ctx.shape
    norms = ctx.head_extra_params - (0 if sh.tie else ctx.vocab_params)
    return norms + (ctx.vocab_params / k.tp if (not sh.tie or k.pp > 1) else 0.0 * k.tp)


def _optimizer_kernel(ctx: StepContext) -> str:
    mem, kernels = ctx.memory, (ctx.stack.kernels if ctx.stack is not None else None)
    if ctx.on_cpu and mem.cpu_optimizer is not None:
        return mem.cpu_optimizer
    return kernels.optimizer if kernels is not None else "fused"


def _head_acts(ctx: StepContext, k: Knobs, tokens: Num) -> Num:
    """Final norm / head inputs per micro-batch, by precision mode (FSDP-wrapped rows may differ)."""
    sh, st = ctx.shape, ctx.stack
    plain = head_activation_bytes(st, precision_mode(st, ctx.dtype, fsdp=False), sh, tokens, tp=k.tp, sp=k.sp,
                                  act_bytes=ctx.act_bytes)
    if st is None or st.memory.fsdp_weights is None:
        return plain
    wrapped = head_activation_bytes(st, precision_mode(st, ctx.dtype, fsdp=True), sh, tokens, tp=k.tp, sp=k.sp,
                                    act_bytes=ctx.act_bytes)
    fsdp = fsdp_wrapped(k)
    return fsdp * wrapped + (1 - fsdp) * plain


def block_activations(k: Knobs, enc: Any, dec: Any, *, n_dec: int) -> tuple[Num, Num, Num, Num]:
    """(enc block stored bytes, dec block stored bytes, one block's full set, one block's stored set) in the
    precision mode of each plan (`BlockCost.act_bytes_fsdp` where the executor wraps it with FSDP2)."""
    def pick(plain: Num, wrapped: Num) -> Num:
        if wrapped is None:
            return plain
        fsdp = fsdp_wrapped(k)
        return fsdp * wrapped + (1 - fsdp) * plain

    enc_act = pick(enc.act_bytes, enc.act_bytes_fsdp)
    dec_act = pick(dec.act_bytes, dec.act_bytes_fsdp) if n_dec else enc_act
    unit = dec if n_dec else enc
    return enc_act, dec_act, pick(unit.act_full_bytes, unit.act_full_bytes_fsdp), dec_act if n_dec else enc_act


def _states(ctx: StepContext, k: Knobs, rank: Num, n_enc: Num, n_dec: Num, enc: Any, dec: Any, params: Num,
            experts: Num, mixed: bool) -> dict[str, Num]:
    """Weights at rest and the copies a micro-batch computes with, master weights + optimizer states,
    gradients and their bytes per parameter, the largest parameter and the parameters the optimizer steps
    on this rank. Of the `params` parameters, `experts` are routed experts (MoE): ZeRO shards the dense
    ones over the dp x cp replicas and the experts over their expert-data-parallel group, dp*cp/ep
    (`costmodel.layer.moe.expert_shards`; Megatron-Core's distributed optimizer per parameter group)."""
    sh, mem = ctx.shape, ctx.memory
    tp, zero = k.tp, k.zero
    dense, groups = params - experts, ((k.dp * k.cp, 1.0), (expert_shards(k), 0.0))
    scheme = weight_scheme(ctx, k)
    first, last = rank == 0, rank == k.pp - 1

    def split(fn: Any, *args: Any, **kw: Any) -> Num:
        """fn over the dense parameters with their shards + over the experts with theirs."""
        return sum(fn(dense if is_dense else experts, *args, zero=zero, shards=shards, **kw)
                   for shards, is_dense in groups)

    linear_p = n_enc * enc.params + n_dec * dec.params + last * sh.vocab * sh.h / tp   # autocast casts the head too
    root_p = first * (ctx.vocab_params / tp + ctx.replicated_embed_params) + last * _head_params(ctx, k)
    gb = grad_bytes_per_param(scheme, dtype=ctx.dtype, accumulation=mem.fp32_grad_accumulation,
                              override=ctx.grad_dtype_bytes)
    state_shards = [1 + (zero >= 1) * (shards - 1) for shards, _ in groups]
    return {
        "scheme": scheme, "grad_bytes": gb,
        "weights": split(weights_at_rest_bytes, scheme, mixed=mixed),
        "copies": weight_copy_bytes(scheme, zero=zero, params=params, linear_params=linear_p, unit_params=enc.params,
                                    root_params=root_p, prefetch_units=mem.fsdp_prefetch_units,
                                    autocast_cache=mem.autocast_weight_cache, mixed=mixed),
        "optimizer": (split(master_weight_bytes, scheme, mixed=mixed)
                      + split(lambda p, **kw: optimizer_state_bytes(p, ctx.optimizer, **kw))),
        "grads": split(gradient_bytes, gb, scheme=scheme),
        "largest": np.maximum(sh.h * max(sh.f, sh.q_width) / tp, (first | last) * sh.vocab * sh.h / tp),
        "state_shards": state_shards[0],
        "stepped": dense / state_shards[0] + experts / state_shards[1],   # parameters this rank's optimizer updates
    }


def _in_flight(ctx: StepContext, k: Knobs, rank: Num, m: Num, n_enc: Num, n_dec: Num, enc: Any, dec: Any,
               stored_act_bytes: Num) -> dict[str, Num]:
    """The forward moment's activations: the stored ones of the micro-batches in flight (pp = 1 runs its
    micro-batches one after another), the head's inputs, zero-bubble's pending weight gradients (torch's
    order: at a rank's peak `rank` micro-batches ran B and wait for W), one recomputed block's working set."""
    sh, pp = ctx.shape, k.pp
    last = rank == pp - 1
    chunks = inflight_chunks(k.schedule, rank, pp, m, k.v) if pp > 1 else 1 + 0 * m
    enc_act, dec_act, full, kept = block_activations(k, enc, dec, n_dec=sh.n_dec)
    if stored_act_bytes is None:
        stored_act_bytes = chunks * (n_enc * enc_act + n_dec * dec_act) / k.v
    tokens = k.mb * (ctx.seq_len // k.cp)
    pending = (k.schedule == 3) * (pp > 1) * np.minimum(rank, m)
    extra = last * (chunks / k.v) * _head_acts(ctx, k, tokens) + weight_grad_pending_bytes(
        h=sh.h, q=sh.q_width, kv=sh.kv_width, f=sh.f, gated=sh.gated, vocab=sh.vocab, tokens=tokens, tp=k.tp,
        act_bytes=ctx.act_bytes, blocks=n_enc + n_dec, last=last, pending=pending)
    rc = k.recompute
    return {"chunks": chunks, "tokens": tokens, "stored": stored_act_bytes + extra,
            "working": (rc == 2) * full + (rc == 1) * np.maximum(full - kept, 0.0)}


def rank_memory(ctx: StepContext, k: Knobs, rank: Num, m: Num, n_enc: Num, n_dec: Num, enc: Any, dec: Any,
                params: Num, stored_act_bytes: Num = None, *, experts: Num = 0.0) -> dict[str, Num]:
    """Memory of pipeline rank `rank` holding n_enc + n_dec blocks (and the embedding / head at the ends)
    and `params` parameters: the parts at the peak moment (`PARTS`), `allocated`, `reserved`, `context`,
    `peak` (bytes), `moment` (index into MOMENTS) and `inflight` (micro-batches in flight at the forward
    moment). `stored_act_bytes` overrides the closed-form in-flight activations (the simulator's peak)."""
    sh, mem = ctx.shape, ctx.memory
    dp, tp, pp, cp, zero = k.dp, k.tp, k.pp, k.cp, k.zero
    fp32 = ctx.act_bytes >= 4
    st = _states(ctx, k, rank, n_enc, n_dec, enc, dec, params, experts, mixed=not fp32)
    replicas = dp * cp   # data parallelism wraps the dp x cp replicas
    fl = _in_flight(ctx, k, rank, m, n_enc, n_dec, enc, dec, stored_act_bytes)
    last, tokens = rank == pp - 1, fl["tokens"]
    loss = last * loss_buffer_bytes(mem, tokens=tokens, vocab=sh.vocab, tp=tp, pp=pp, fp32=fp32)
    hole = last * loss_hole_bytes(mem, tokens=tokens, vocab=sh.vocab, tp=tp, pp=pp, fp32=fp32)
    # communication buffers
    fsdp_scheme = st["scheme"] == WEIGHT_SCHEMES["fsdp_mixed_precision"]
    buckets = (replicas > 1) * ((zero == 1) | (zero == 2)) * mem.bucket_bytes
    buffers = (pipeline_buffer_bytes(pp=pp, act_bytes=ctx.act_bytes, tokens=tokens, h=sh.h, tp=tp)
               + sequence_parallel_buffer_bytes(sp=k.sp, act_bytes=ctx.act_bytes, tokens=tokens, h=sh.h)
               + reduce_scatter_buffer_bytes(fsdp=fsdp_scheme * (replicas > 1), zero=zero, unit_params=enc.params,
                                             mixed=not fp32)
               + dispatch_buffer_bytes(ctx, k, tokens)   # an MoE layer's permuted and received token copies
               + buckets)
    # gradients at the forward moment: persistent buffers (DDP's buckets too), or once a backward ran
    ddp = (replicas > 1) & (ddp_wrapped(k) == 1)
    no_sync = ddp * mem.ddp_no_sync_grads * (m > 1)   # torch DDP: .grad accumulates apart under no_sync
    grads, weights = st["grads"], st["weights"]
    grads_f = grads * (((mem.grad_buffer == "persistent") | ddp | (fl["chunks"] < m * k.v)) + no_sync)
    # the three moments: parts in PARTS order
    loss_wins = loss >= fl["working"]
    fwd = (weights + st["copies"], grads_f, st["optimizer"], fl["stored"] + (1 - loss_wins) * fl["working"],
           buffers, loss_wins * loss)
    accum = grad_accumulation_temporary_bytes(st["scheme"], largest_param=st["largest"] / st["state_shards"],
                                              grad_bytes=st["grad_bytes"], micro_batches=m, mixed=not fp32)
    bwd = (weights + st["copies"], grads, st["optimizer"], 0.0 * grads, buffers, accum)
    group = params if mem.foreach_group == "all" else st["largest"]
    opt_tmp = optimizer_temporary_bytes(_optimizer_kernel(ctx), group_params=group / st["state_shards"],
                                        scheme=st["scheme"], grad_bytes=st["grad_bytes"],
                                        local_params=st["stepped"])
    opt = (weights, grads, st["optimizer"], 0.0 * grads, buckets + 0.0 * grads, opt_tmp)
    totals = [sum(parts) for parts in (fwd, bwd, opt)]
    allocated = np.maximum(np.maximum(totals[0], totals[1]), totals[2])
    moment = np.where(totals[0] >= allocated, 0, np.where(totals[1] >= allocated, 1, 2))
    out: dict[str, Num] = {name: np.where(moment == 0, fwd[i], np.where(moment == 1, bwd[i], opt[i]))
                           for i, name in enumerate(PARTS)}
    out["allocated"] = allocated
    out["reserved"] = reserved_bytes(allocated, (moment == 0) * hole, mem, on_cpu=ctx.on_cpu)
    out["context"] = context_bytes(mem, on_cpu=ctx.on_cpu, framework_bytes=ctx.eff.framework_bytes,
                                   groups=communicator_count(dp=dp, tp=tp, pp=pp, cp=cp, ep=k.ep))
    out["peak"] = out["reserved"] + out["context"]
    out["moment"] = moment
    out["inflight"] = fl["chunks"] / k.v + 0.0 * allocated
    if not isinstance(allocated, np.ndarray) or allocated.ndim == 0:
        out = {key: (val.item() if isinstance(val, np.ndarray) else val) for key, val in out.items()}
    return out
