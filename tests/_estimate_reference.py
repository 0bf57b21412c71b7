"""Test helper: `estimate`'s simulator path as it was before the vectorized one (a Python loop over
stages and ranks, two sequential simulations for the p2p split), the reference the fast path must
match to 1e-12."""

from __future__ import annotations

from typing import Any

from _pipeline_reference import reference_simulate

from costmodel.specs import ParallelPlan
from costmodel.step.checks import check_plan
from costmodel.step.costs import Knobs, StepContext, block_costs, end_costs, p2p_time_s, rank_state
from costmodel.step.estimate import (
    _membreak,
    _to_estimate,
    comm_model,
    knobs_from_plan,
    step_context,
    step_end_events,
)

__all__ = ["reference_estimate"]


def reference_estimate(model, cluster, training, plan, *, calibration: Any = None, timeline: bool = False):
    """The StepEstimate of `plan` through the reference simulator path."""
    check_plan(model, cluster, training, plan)
    ctx = step_context(model, cluster, training, calibration=calibration)
    comm = comm_model(cluster, plan, calibration=calibration)
    out, stage_mem, events = _simulated(ctx, knobs_from_plan(plan), comm, plan, timeline=timeline)
    return _to_estimate(ctx, plan, out, stage_mem, events)


def _simulated(ctx: StepContext, k: Knobs, comm: Any, plan: ParallelPlan, *, timeline: bool):
    """Per-(virtual-)stage times from the block costs, run through the pipeline simulator."""
    sh = ctx.shape
    pp, v = k.pp, k.v
    m = ctx.global_batch // (k.dp * k.mb)
    enc = block_costs(ctx, k, comm, cross=False)
    dec = block_costs(ctx, k, comm, cross=True) if sh.n_dec else enc
    embed, head = end_costs(ctx, k, comm)
    layers = plan.stage_layers(sh.num_layers)
    stages = pp * v
    tp_fwd_share = 1.0 / (2 + (k.recompute == 2))
    f, b, w, act, comp, tps, cps, eps, syncs, fc, bc = [], [], [], [], [], [], [], [], [], [], []
    n_enc_st, n_dec_st = [], []
    start = 0
    for j in range(stages):
        n = layers[j]
        nd = max(0, min(start + n, sh.num_layers) - max(start, sh.n_enc)) if sh.n_dec else 0
        ne = n - nd
        start += n
        first, last = j == 0, j == stages - 1
        fwd_c = ne * enc.fwd_s + nd * dec.fwd_s + first * embed.fwd_s + last * head.fwd_s
        bwd_c = (ne * (enc.bwd_s + enc.recompute_s) + nd * (dec.bwd_s + dec.recompute_s)
                 + first * embed.bwd_s + last * head.bwd_s)
        tp_s = ne * enc.tp_s + nd * dec.tp_s + first * embed.tp_s + last * head.tp_s
        cp_s = ne * enc.cp_s + nd * dec.cp_s
        ep_s = ne * enc.ep_s + nd * dec.ep_s
        sync_f = (j < stages - 1) * ctx.eff.p2p_overhead_s     # blocking send of the forward output
        sync_b = (j > 0) * ctx.eff.p2p_overhead_s              # ... and of the input gradient
        f.append(fwd_c + (tp_s + cp_s + ep_s) * tp_fwd_share + sync_f)
        b.append(bwd_c + (tp_s + cp_s + ep_s) * (1 - tp_fwd_share) + sync_b)
        syncs.append(sync_f + sync_b)
        w.append(0.5 * (ne * enc.bwd_s + nd * dec.bwd_s + last * head.bwd_s) if k.schedule == 3 else 0.0)
        act.append(ne * enc.act_bytes + nd * dec.act_bytes)
        comp.append(fwd_c + bwd_c)
        fc.append(fwd_c)
        bc.append(bwd_c)
        tps.append(tp_s)
        cps.append(cp_s)
        eps.append(ep_s)
        n_enc_st.append(ne)
        n_dec_st.append(nd)
    p2p = float(p2p_time_s(ctx, k, comm)) if pp > 1 else 0.0
    sim = dict(schedule=plan.schedule, pp=pp, num_micro_batches=m, virtual_stages=v, fwd_s=f, bwd_s=b,
               bwd_weight_s=w if k.schedule == 3 else None)
    res = reference_simulate(**sim, p2p_s=p2p, act_bytes=act, with_events=timeline)
    span0 = reference_simulate(**sim, p2p_s=0.0, with_events=False).makespan_s if p2p > 0 else res.makespan_s
    ranks = []
    for r in range(pp):
        idx = range(r, stages, pp)
        first, last = r == 0, r == pp - 1
        ne, nd = sum(n_enc_st[j] for j in idx), sum(n_dec_st[j] for j in idx)
        params = ne * enc.params + nd * dec.params + first * embed.params + last * head.params
        fwd = sum(fc[j] for j in idx)   # compute only: the window that hides the gradient reduction,
        bwd = sum(bc[j] for j in idx)   # as step_costs' closed form has it
        peak_act = res.peak_act_bytes[r] if res.peak_act_bytes is not None else 0.0
        ranks.append(rank_state(ctx, k, comm, r, m, ne, nd, enc, dec, fwd, bwd, params, stored_act_bytes=peak_act))
        ranks[-1].update(comp=sum(comp[j] for j in idx), tp=sum(tps[j] for j in idx), cp=sum(cps[j] for j in idx),
                         ep=sum(eps[j] for j in idx),
                         sync=sum(syncs[j] for j in idx))
    # the same breakdown as step_costs: the busiest rank's work, what transfers add, the rest is bubble
    busy_rank = max(range(pp), key=lambda r: (res.busy_s[r], -r))
    crit = ranks[busy_rank]
    out = {
        "num_micro_batches": m,
        "compute_s": m * crit["comp"], "tp_comm_s": m * crit["tp"],
        "cp_comm_s": m * crit["cp"],   # the cp gradient reduction is in dp_comm_s (dp x cp replicas)
        "ep_comm_s": m * crit["ep"],
        "dp_comm_s": max(r["dp"] for r in ranks),
        "pp_comm_s": m * crit["sync"] + (res.makespan_s - span0),
        "bubble_s": max(span0 - res.busy_s[busy_rank], 0.0),
        "optimizer_s": max(r["opt"] for r in ranks) + ctx.eff.step_overhead_s,
    }
    top = max(ranks, key=lambda r: r["peak"])
    out.update({
        "parameters_bytes": top["params_bytes"], "gradients_bytes": top["grads_bytes"],
        "optimizer_bytes": top["optimizer_bytes"], "activations_bytes": top["activations_bytes"],
        "buffers_bytes": top["buffers_bytes"], "temporaries_bytes": top["temporaries_bytes"],
        "allocated_bytes": top["allocated"], "reserved_bytes": top["reserved"], "context_bytes": top["context"],
        "peak_bytes": top["peak"], "peak_stage": ranks.index(top), "peak_moment": top["moment"],
        "inflight_micro_batches": top["inflight"],
    })
    out["step_time_s"] = sum(out[key] for key in ("compute_s", "tp_comm_s", "cp_comm_s", "ep_comm_s", "dp_comm_s",
                                                  "pp_comm_s", "bubble_s", "optimizer_s"))
    events = (*res.events, *step_end_events(res.events, out, pp=pp)) if timeline else ()
    return out, tuple(_membreak(r, i) for i, r in enumerate(ranks)), events
