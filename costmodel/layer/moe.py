"""Mixture-of-experts layers on one GPU: parameters, time, activations and buffers (`moe_costs`), and
the model states of the experts (`expert_state_bytes`; their data-parallel traffic over the
expert-data-parallel group is `costmodel.step.dp_comm`'s).

An MoE layer replaces a block's MLP with a router (an h x E GEMM, softmax and top-k), the routed
experts and optional shared experts (Shazeer et al. 2017; Lepikhin et al. 2021, GShard; Dai et al.
2024, DeepSeekMoE). It is priced as Megatron-Core's all-to-all dispatcher runs it (Megatron-Core MoE
README; Liu et al. 2025, "MoE Parallel Folding"):
- experts split over the `ep` ranks of each data-parallel group (E/ep local experts), each expert's
  MLP over the TP group (expert TP = tp); with TP the layer's input is sequence-parallel, so each TP
  rank routes m/tp of the micro-batch's m tokens;
- dispatch: permute the rank's m*k/tp token copies by expert, all-to-all over the EP group, all-gather
  over TP (every TP rank then holds the A = m*k*imbalance copies its experts take); combine: the
  reverse (reduce-scatter over TP, all-to-all, un-permute and the top-k weighted sum). Forward and
  backward each run one dispatch and one combine, a full recompute a third pair; exposed, not
  overlapped with compute;
- imbalance: the busiest EP rank receives `TrainingSpec.moe_load_imbalance` times the mean; with a
  capacity factor c an expert keeps at most c times its fair share (dropped tokens are not computed,
  Megatron-Core's default without padding), so the busiest rank takes min(imbalance, c);
- expert GEMMs: E/ep GEMMs of A/(E/ep) rows each (a grouped GEMM of thin per-expert batches, priced by
  `gemm_time_s` per expert); shared experts are one MLP of n_shared expert widths over all m tokens.
A model whose layers are partly dense (DeepSeek's first layers, `moe_layer_freq`) is priced as an
average block: dense and MoE terms weighted by the share of MoE layers (exact when every layer is an
MoE layer, as in Mixtral and Qwen-MoE; DeepSeek-V3's 3 dense layers of 61 are spread evenly over the
pipeline stages). All functions are numpy-broadcastable in the plan's knobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .compute import gemm_time_s
from .context import Knobs, StepContext, any_set, collective_s
from .memory import model_state_bytes
from .params import ModelShape, mlp_params, moe_layer_params

__all__ = ["MoETerms", "moe_layer_params", "block_params", "routed_share", "moe_costs", "dispatch_buffer_bytes",
           "expert_state_bytes", "expert_shards", "moe_host_ops"]

Num = Any


def block_params(shape: ModelShape, *, cross: bool) -> tuple[float, float]:
    """(dense part minus the dense MLP's share, routed experts) of an average block: what an average
    block adds to `layer_params` and its routed-expert parameters (the MoE-layer share of them)."""
    if shape.moe is None:
        return 0.0, 0.0
    share = shape.moe.share(shape, cross=cross)
    dense_mlp = mlp_params(shape.h, shape.f, gated=shape.gated, bias=shape.bias)
    other, experts = moe_layer_params(shape)
    return share * (other - dense_mlp), share * experts


def routed_share(ctx: StepContext) -> float:
    """How many of a token's k copies the busiest EP rank computes per token, relative to k:
    min(imbalance, capacity factor), the imbalance when dropless."""
    imb, cap = ctx.moe_imbalance, ctx.shape.moe.capacity
    return min(imb, cap) if cap else imb


@dataclass
class MoETerms:
    """What an average block's MoE layers change on one GPU for one micro-batch (forward GEMM and
    element-wise deltas against the dense MLP, exposed TP delta and EP all-to-alls for forward +
    backward (+ recompute), activation deltas, parameters)."""

    gemm_f_s: Num
    ew_bytes: Num
    tp_s: Num
    ep_s: Num
    act_bytes: Num
    act_full_bytes: Num
    params: Num
    expert_params: Num
    host_ops: Num


def moe_costs(ctx: StepContext, k: Knobs, comm: Any, *, cross: bool, tokens: Num, dense_gemm_f_s: Num,
              dense_tp_point_s: Num) -> MoETerms:
    """The MoE terms of an average block (see the module docstring). `tokens` = m, the micro-batch's
    tokens on this GPU (b*s/cp); `dense_gemm_f_s`: the dense MLP's forward GEMM seconds and
    `dense_tp_point_s` its TP synchronisation point, both as `block_costs` prices them."""
    sh, r, e = ctx.shape, ctx.rates, ctx.act_bytes
    moe = sh.moe
    share = moe.share(sh, cross=cross)
    tp, ep, rc = k.tp, k.ep, k.recompute
    h, n_e, f_e, top = sh.h, moe.experts, moe.f_e, moe.topk
    up = 2 if sh.gated else 1
    local = n_e / ep
    copies = tokens * top * routed_share(ctx)          # A: routed token copies the busiest rank's experts take
    f_sh = moe.shared * f_e
    gemm = (gemm_time_s(tokens / tp, n_e, h, r)                                   # router (sequence shard)
            + gemm_time_s(copies / local, up * f_e / tp, h, r, count=local)        # experts: fc1 (+ gate)
            + gemm_time_s(copies / local, h, f_e / tp, r, count=local))            # experts: fc2
    if f_sh:
        gemm = gemm + gemm_time_s(tokens, up * f_sh / tp, h, r) + gemm_time_s(tokens, h, f_sh / tp, r)
    mlp_act = (3 if sh.gated else 2) * e
    ew = (mlp_act * copies * f_e / tp + mlp_act * tokens * f_sh / tp      # activation (x gate) of the experts
          + 4 * e * h * tokens * top / tp                                # permute + un-permute (read + write)
          + 12 * tokens * n_e / tp                                       # fp32 logits, softmax, top-k
          - mlp_act * tokens * sh.f / tp)                                # ... instead of the dense MLP's
    passes = 2 + (rc == 2)
    nbytes = e * h * copies                                               # the gathered copies (full buffer)
    tp_s = 0.0 * tokens
    if any_set(tp > 1):
        point = collective_s(ctx, comm, "tp", "all_gather", nbytes) + collective_s(ctx, comm, "tp", "reduce_scatter",
                                                                                 nbytes)
        tp_s = share * passes * (point - (0.0 if f_sh else dense_tp_point_s))
    ep_s = 0.0 * tokens
    if any_set(ep > 1):
        ep_s = share * passes * 2 * collective_s(ctx, comm, "ep", "all_to_all", nbytes / tp)
    # stored for backward (Korthikanti et al. 2022 sec. 4 applied to the MoE layer): fp32 logits and
    # probabilities, the gathered expert inputs, the experts' f-wide tensors, their outputs for the
    # weighted combine, the shared experts' f-wide tensors; instead of the dense MLP's f-wide tensors
    moe_act = (8 * tokens * n_e / tp + e * h * copies * (1 + 1 / tp) + mlp_act * copies * f_e / tp
               + mlp_act * tokens * f_sh / tp)
    act_full = share * (moe_act - mlp_act * tokens * sh.f / tp)
    other, experts = block_params(sh, cross=cross)
    return MoETerms(
        gemm_f_s=share * (gemm - dense_gemm_f_s), ew_bytes=share * ew, tp_s=tp_s, ep_s=ep_s,
        act_bytes=(rc != 2) * act_full, act_full_bytes=act_full,
        params=other / tp + experts / (tp * ep), expert_params=experts / (tp * ep),
        host_ops=share * moe_host_ops(local, ep=ep, shared=bool(f_sh)))


def moe_host_ops(local_experts: Num, *, ep: Num, shared: bool) -> Num:
    """Ops an eager framework issues for one MoE layer's forward beyond a dense MLP's: the router
    (GEMM, softmax, top-k, normalisation), the permutation (sort, gather, count), three ops per local
    expert (fc1, activation x gate, fc2 are counted as the dense MLP's; + slicing), the un-permute and
    the weighted sum, and with EP the four all-to-all calls (counts, dispatch; combine) and their
    splits."""
    return 8 + 2 * local_experts + (ep > 1) * 6 + (2 if shared else -2)


def dispatch_buffer_bytes(ctx: StepContext, k: Knobs, tokens: Num) -> Num:
    """Transient bytes of one MoE layer's dispatch on one GPU: the permuted copies it sends and the
    copies it receives (2 e h m k imbalance / tp), alive for one layer at a time."""
    sh = ctx.shape
    if sh.moe is None or not (sh.moe.layers_enc + sh.moe.layers_dec):
        return 0.0
    return 2 * ctx.act_bytes * sh.h * tokens * sh.moe.topk * routed_share(ctx) / k.tp


def expert_shards(k: Knobs) -> Num:
    """Ranks that hold copies of the same experts and shard their ZeRO states: dp*cp/ep (the expert
    data-parallel group with the CP ranks, which see other tokens)."""
    return k.dp * k.cp // k.ep


def expert_state_bytes(params: Num, experts: Num, k: Knobs, *, weight_bytes: int, grad_bytes: int,
                       optimizer_bytes: int) -> tuple[Num, Num, Num]:
    """(weights, gradients, optimizer states) of `params` parameters of which `experts` are routed
    experts: ZeRO shards the dense part over dp*cp ranks, the experts over dp*cp/ep
    (Rajbhandari et al. 2020, applied per parameter group as Megatron-Core's distributed optimizer
    does)."""
    dense = model_state_bytes(params - experts, zero_stage=k.zero, shards=k.dp * k.cp, weight_bytes=weight_bytes,
                              grad_bytes=grad_bytes, optimizer_bytes=optimizer_bytes)
    exp = model_state_bytes(experts, zero_stage=k.zero, shards=expert_shards(k), weight_bytes=weight_bytes,
                            grad_bytes=grad_bytes, optimizer_bytes=optimizer_bytes)
    return dense[0] + exp[0], dense[1] + exp[1], dense[2] + exp[2]

