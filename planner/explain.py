"""Why a search returned nothing, with numbers, and what would make a plan fit."""

from __future__ import annotations

from collections.abc import Callable

from costmodel.specs import ClusterSpec, ModelSpec, ParallelPlan, StepEstimate

from .constraints import Constraints
from .result import GIB
from .rules import RULES

__all__ = ["explain_invalid", "explain_oom", "explain_experts", "RULE_HINTS"]

RULE_HINTS = {
    "tp_heads": "pick a tp that divides num_heads",
    "tp_kv_heads": "pick a tp that divides num_kv_heads",
    "tp_ffn": "pick a tp that divides ffn_hidden_size",
    "gpus": "lower the degrees or add nodes",
    "seq_len": "lower --seq-len to the model's max_seq_len",
    "cp_seq": "pick a cp that divides seq_len",
    "cp_arch": "use cp=1 for encoder or encoder-decoder models",
    "ep_dp": "pick an ep that divides dp*cp",
    "ep_moe": "use ep=1 for a dense model",
    "ep_experts": "pick an ep that divides num_experts",
    "pp_layers": "use fewer pipeline stages",
    "pp_uneven": "allow uneven stages or pick pp*v dividing the layers",
    "batch": "pick a global batch divisible by dp*micro_batch_size",
    "interleave_mb": "use more micro-batches or another schedule",
    "sp_seq": "pick a tp that divides seq_len/cp or turn sequence parallelism off",
}
LABELS = {r.code: r.label for r in RULES}


def explain_invalid(rejected: dict[str, int], num_candidates: int, constraints: Constraints) -> str:
    """Message for a space in which every candidate breaks a rule."""
    if num_candidates == 0:
        return ("no candidate plans: the constraints leave no factorization of the GPU count "
                "(check --dp/--tp/--pp/--cp/--ep, their --max-* bounds and the cluster size)")
    top = sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    reasons = "; ".join(f"{LABELS.get(c, c)}: {n:,} ({RULE_HINTS.get(c, '')})" for c, n in top)
    return f"no valid plan: all {num_candidates:,} candidates break a rule - {reasons}"


def explain_experts(model: ModelSpec, cluster: ClusterSpec, est: StepEstimate, *, topology: object = None) -> str:
    """One line on what expert parallelism does in a mixture-of-experts plan: experts per GPU, where the
    all-to-all runs and what it costs, and over how many ranks the expert gradients reduce."""
    from costmodel.network.comm import build_comm_model

    plan = est.plan
    if not model.is_moe:
        return ""
    per_gpu = model.num_experts // plan.ep
    line = (f"experts: ep={plan.ep} puts {per_gpu} of the {model.num_experts} experts of each MoE layer (top-"
            f"{model.experts_per_token}) on every GPU")
    if plan.ep == 1:
        return line + "; no all-to-all (every GPU holds every expert)"
    link = build_comm_model(cluster, plan, **({"topology": topology} if topology is not None else {})).links["ep"]
    where = f"across {link.num_servers} servers" if link.crosses_nodes else "inside one server"
    share = est.time.ep_comm_s / est.step_time_s
    return (f"{line}; its all-to-alls (dispatch + combine, forward and backward) run {where} and take "
            f"{est.time.ep_comm_s:.3f} s of the {est.step_time_s:.3f} s step ({share:.1%}); expert gradients "
            f"reduce over dp*cp/ep={plan.edp} ranks")


def explain_oom(*, min_peak_bytes: float, min_plan: ParallelPlan, cluster: ClusterSpec,
                constraints: Constraints, fits_with_gpus: Callable[[int], bool] | None = None,
                max_growth: int = 1024) -> str:
    """Message for a space in which no valid plan fits: the smallest memory any plan needs vs the
    capacity, and the changes that would help (more GPUs, recompute, ZeRO-3, smaller micro-batch).

    `fits_with_gpus(n_nodes)` answers whether some plan fits on the same cluster with `n_nodes`
    nodes; it is tried for 2x, 4x, ... up to `max_growth`x the nodes."""
    cap = cluster.gpu.hbm_bytes
    msg = (f"no plan fits in memory: the smallest any plan needs is {min_peak_bytes / GIB:.1f} GiB per GPU "
           f"({min_plan.short()}); each {cluster.gpu.name} GPU has {cap / GIB:.1f} GiB")
    hints = []
    if constraints.recompute is not None and "full" not in constraints.recompute:
        hints.append("allow recompute=full")
    if constraints.zero_stage is not None and 3 not in constraints.zero_stage:
        hints.append("allow ZeRO-3 (zero_stage=3)")
    if constraints.micro_batch_size is not None and min(constraints.micro_batch_size) > 1:
        hints.append("a smaller micro-batch (micro_batch_size=1)")
    for axis in ("tp", "pp", "dp", "ep"):
        if getattr(constraints, axis) is not None or getattr(constraints, f"max_{axis}") is not None:
            hints.append(f"relax the {axis} constraint")
    if fits_with_gpus is not None:
        growth = 2
        while growth <= max_growth and not fits_with_gpus(cluster.num_nodes * growth):
            growth *= 2
        if growth <= max_growth:
            n = cluster.num_nodes * growth
            hints.append(f"more GPUs: a plan fits on {n} nodes ({n * cluster.gpus_per_node} GPUs)")
        else:
            hints.append(f"more GPUs do not suffice up to {max_growth}x the nodes; a GPU with more memory "
                         "or a shorter sequence/smaller model is needed")
    if not hints:
        hints.append("more GPUs or GPUs with more memory")
    return msg + ". To fit: " + "; ".join(hints) + "."
