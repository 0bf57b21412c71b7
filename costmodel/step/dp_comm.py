"""Exposed data-parallel communication of one pipeline rank per step, as the stack runs it.

- ZeRO-0 (DDP): one all-reduce of the gradients, overlapped with the last micro-batch's backward when
  the stack buckets it (`EfficiencyModel.overlap_grad_reduce`); chunked per layer, so one layer's
  chunk stays exposed (NVIDIA NeMo, "Communication Overlap": "exposes only one DP communication chunk").
- ZeRO-1/2: reduce-scatter of the gradients (as above) and all-gather of the updated parameters,
  exposed unless the stack overlaps it with the next forward (`overlap_param_gather`, Megatron's
  distributed optimizer), again one layer's chunk exposed.
- ZeRO-3 / FSDP: per micro-batch the parameters are all-gathered for the forward, again for the backward
  when the stack reshards after the forward, and again for a recomputed forward when its hooks fetch on
  every call (DeepSpeed); gradients are reduce-scattered per micro-batch or once per step (Rajbhandari et
  al. 2020, sec. 5; Zhao et al. 2023, sec. 3). One collective per block and pass, so the ring's latency
  term (n-1) alpha is paid per block: at thousands of ranks this is what small collectives cost. With
  prefetching the traffic hides behind the rank's compute, never below one block's share. When the
  stack's collectives are not aggregated per node (`zero3_nic_bound`) and the group spans nodes, every
  GPU's bytes cross its own share of the node's NICs: (n-1)/n B / (NIC bandwidth per GPU).
The group is the dp x cp replicas: context-parallel ranks hold the same weights and see other tokens,
so the executor wraps FSDP2/DDP over the flattened dp x cp mesh (`replica_collective_s`; no separate
cp all-reduce). Mixture-of-experts ranks reduce their routed experts' gradients over the
expert-data-parallel group (`edp`, the dp*cp/ep ranks holding the same experts, which spans cp;
costmodel.layer.moe) and the rest over the dp x cp replicas. All formulas run on numbers and numpy arrays."""

from __future__ import annotations

from typing import Any

from ..layer.blocks import collective_s
from ..layer.context import Knobs, StepContext, any_set, vmax
from ..layer.moe import expert_shards

__all__ = ["dp_comm_s", "zero3_gathers", "sharded_collective_s", "replica_collective_s"]

Num = Any


def zero3_gathers(ctx: StepContext, recompute: Num) -> Num:
    """Parameter all-gathers per micro-batch under ZeRO-3: forward, backward (resharded after the
    forward), recomputed forward (stacks whose hooks gather on every forward call)."""
    eff = ctx.eff
    return 1 + eff.zero3_regather_backward + eff.zero3_regather_recompute * (recompute == 2)


def replica_collective_s(ctx: StepContext, k: Knobs, comm: Any, op: str, nbytes: Num) -> Num:
    """One data-parallel collective over the dp x cp replicas, priced as its two stages: over the dp
    axis, then over the cp axis (reduce-scatter / all-gather: on the 1/dp shard the first stage
    leaves; all-reduce: the whole buffer). Equal to the dp axis's alone where cp = 1."""
    out = collective_s(ctx, comm, "dp", op, nbytes)
    if any_set(k.cp > 1):   # per row: a one-rank cp axis costs 0
        share = nbytes if op == "all_reduce" else nbytes / k.dp
        out = out + collective_s(ctx, comm, "cp", op, share)
    return out


def sharded_collective_s(ctx: StepContext, k: Knobs, comm: Any, op: str, nbytes: Num, *, blocks: Num) -> Num:
    """One pass of a ZeRO-3 `op` over a rank's `nbytes`, as one collective per block: the topology's
    time for the bytes plus (blocks - 1) more latency terms; with `zero3_nic_bound` and a group that
    spans nodes, at least the bytes through one GPU's NIC share."""
    t = (replica_collective_s(ctx, k, comm, op, nbytes)
         + vmax(blocks - 1, 0.0) * replica_collective_s(ctx, k, comm, op, 1.0))
    if not ctx.eff.zero3_nic_bound:
        return t
    n = k.dp * k.cp   # the replica group
    crosses = (n > 1) & (k.tp * n > ctx.gpus_per_node)
    nic = ((n - 1) / vmax(n, 1) * nbytes / (ctx.nic_bw_per_gpu_bytes_per_s * ctx.eff.collective_efficiency)
           + (n - 1) * ctx.nic_latency_s * vmax(blocks, 1.0))
    return t + crosses * vmax(nic - t, 0.0)


def dp_comm_s(ctx: StepContext, k: Knobs, comm: Any, m: Num, params: Num, fwd: Num, bwd: Num, blocks: Num, *,
              experts: Num = 0.0) -> Num:
    """Exposed DP seconds per step of a rank holding `params` parameters (`experts` of them routed
    experts) in `blocks` blocks, whose micro-batch forward and backward (+ recompute) take `fwd` and `bwd`
    seconds, over `m` micro-batches."""
    eff, zero, replicas = ctx.eff, k.zero, k.dp * k.cp
    out = 0.0 * k.mb
    moe = any_set(experts)
    # per row: one replica (and a one-rank expert-data-parallel group) costs 0, so every term below is 0 there
    if not (any_set(replicas > 1) or (moe and any_set(expert_shards(k) > 1))):
        return out
    dense = params - experts
    gbytes, wbytes = dense * ctx.grad_bytes, dense * ctx.weight_bytes

    def coll(op: str, per_param_bytes: int) -> Num:   # experts reduce over the expert-data-parallel group
        out = replica_collective_s(ctx, k, comm, op, dense * per_param_bytes)
        if moe:
            out = out + collective_s(ctx, comm, "edp", op, experts * per_param_bytes)
        return out
    chunks = vmax(blocks, 1.0)
    window = bwd if eff.overlap_grad_reduce else 0.0 * bwd

    kappa = ctx.comm_contention

    def exposed(total: Num, hide: Num, overlapped: bool) -> Num:
        # compute under a collective runs on the SMs it leaves free: T = max(C, W + kappa C) for C of
        # communication hidden behind W of compute, one chunk at least exposed
        return vmax(vmax(total - hide, kappa * total), total / chunks) if overlapped else total

    if any_set(zero == 0):
        ar = coll("all_reduce", ctx.grad_bytes)
        out = out + (zero == 0) * exposed(ar, window, eff.overlap_grad_reduce)
    if any_set((zero == 1) | (zero == 2)):
        rs = coll("reduce_scatter", ctx.grad_bytes)
        ag = coll("all_gather", ctx.weight_bytes)
        z12 = exposed(rs, window, eff.overlap_grad_reduce) + exposed(ag, m * fwd, eff.overlap_param_gather)
        out = out + ((zero == 1) | (zero == 2)) * z12
    if any_set(zero == 3):
        ag3 = sharded_collective_s(ctx, k, comm, "all_gather", wbytes, blocks=blocks)
        rs3 = sharded_collective_s(ctx, k, comm, "reduce_scatter", gbytes, blocks=blocks)
        if moe:
            ag3 = ag3 + collective_s(ctx, comm, "edp", "all_gather", experts * ctx.weight_bytes)
            rs3 = rs3 + collective_s(ctx, comm, "edp", "reduce_scatter", experts * ctx.grad_bytes)
        per_mb = eff.zero3_reduce_scatter_per_micro_batch
        total = m * (zero3_gathers(ctx, k.recompute) * ag3 + per_mb * rs3) + (not per_mb) * rs3
        hide = m * (fwd + bwd) if eff.overlap_grad_reduce else 0.0 * bwd
        z3 = vmax(vmax(total - hide, kappa * total * (hide > 0)), total / (m * chunks))
        out = out + (zero == 3) * z3
    return out
