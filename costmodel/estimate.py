"""`estimate`: the predicted step time and memory of one plan (`StepEstimate`).

Even stage splits use the closed-form pipeline of `costmodel.step` (the same code `estimate_batch`
runs on arrays); explicit `layers_per_stage` or `timeline=True` run the event simulation of
`costmodel.pipeline_sim` on per-(virtual-)stage times built from the same block costs."""

from __future__ import annotations

from typing import Any

import numpy as np

from .checks import check_plan
from .comm import build_comm_model
from .compute import DEFAULT_EFFICIENCY, EfficiencyModel
from .flops import RECOMPUTE_CODES, step_flops
from .memory import SCHEDULE_CODES, inflight_chunks
from .pipeline_sim import simulate_pipeline
from .specs import (
    ClusterSpec,
    MemoryBreakdown,
    ModelSpec,
    ParallelPlan,
    StepEstimate,
    TimeBreakdown,
    TrainingSpec,
)
from .step import (
    Knobs,
    StepContext,
    _cross_layers_on_rank,
    block_costs,
    build_context,
    end_costs,
    p2p_time_s,
    rank_state,
    step_costs,
)

__all__ = ["estimate", "knobs_from_plan", "step_context", "comm_model", "MemoComm"]

_CTX: dict[tuple, tuple[tuple, StepContext]] = {}
_COMM: dict[tuple, tuple[tuple, Any]] = {}
_TOPO: dict[tuple, tuple[tuple, Any]] = {}
_FAST_COMM: dict[tuple, tuple] = {}


def _remember(cache: dict, key: tuple, keep: tuple, make: Any) -> Any:
    """Memoize by object identities; `keep` holds the objects so their ids stay theirs."""
    hit = cache.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], keep, strict=True)):
        return hit[1]
    if len(cache) > 4096:
        cache.clear()
    value = make()
    cache[key] = (keep, value)
    return value


def step_context(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, *,
                 efficiency: EfficiencyModel = DEFAULT_EFFICIENCY, calibration: Any = None) -> StepContext:
    """The (memoized) StepContext of a model, cluster and training spec."""
    keep = (model, cluster, training, efficiency, calibration)
    return _remember(_CTX, tuple(map(id, keep)), keep, lambda: build_context(
        model, cluster, training, efficiency=efficiency, calibration=calibration))


def comm_model(cluster: ClusterSpec, plan: ParallelPlan, *, topology: Any = None, calibration: Any = None) -> Any:
    """The CommModel for `plan`'s degrees and placement, memoized; the topology graph is built once
    per (cluster, calibration) and shared by every degree combination."""
    fast = (id(cluster), id(topology), id(calibration), plan.tp, plan.cp, plan.dp, plan.pp, plan.placement)
    hit = _FAST_COMM.get(fast)
    if hit is not None and hit[0] is cluster and hit[1] is topology and hit[2] is calibration:
        return hit[3]
    kw: dict[str, Any] = {}
    if calibration is not None:
        kw["calibration"] = calibration
    if topology is None:
        keep = (cluster, calibration)
        probe = _remember(_TOPO, tuple(map(id, keep)), keep, lambda: build_comm_model(
            cluster, ParallelPlan(), **kw))
        topology = getattr(probe, "topology", None)
    if topology is not None:
        kw["topology"] = topology
    given_topology = fast[1]
    keep = (cluster, topology, calibration)
    key = (*map(id, keep), plan.tp, plan.cp, plan.dp, plan.pp, plan.placement)
    comm = _remember(_COMM, key, keep, lambda: MemoComm(build_comm_model(cluster, plan, **kw)))
    if len(_FAST_COMM) > 4096:
        _FAST_COMM.clear()
    _FAST_COMM[fast] = (cluster, topology if given_topology != id(None) else None, calibration, comm)
    return comm


class MemoComm:
    """A CommModel whose scalar `time_s` answers are memoized (a pure function of its arguments);
    array queries pass through."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.links = getattr(inner, "links", None)
        self._memo: dict[tuple, float] = {}
        self.unit_memo: dict[tuple, tuple] = {}

    def time_s(self, axis: str, op: str, nbytes: Any) -> Any:
        if isinstance(nbytes, np.ndarray):
            return self.inner.time_s(axis, op, nbytes)
        key = (axis, op, nbytes)
        hit = self._memo.get(key)
        if hit is None:
            if len(self._memo) > 65536:
                self._memo.clear()
            hit = self._memo[key] = float(self.inner.time_s(axis, op, nbytes))
        return hit

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def knobs_from_plan(plan: ParallelPlan) -> Knobs:
    """The plan's knobs as the numbers `costmodel.step` reads."""
    return Knobs(dp=plan.dp, tp=plan.tp, pp=plan.pp, cp=plan.cp, mb=plan.micro_batch_size,
                 v=plan.virtual_stages, schedule=SCHEDULE_CODES[plan.schedule], zero=plan.zero_stage,
                 recompute=RECOMPUTE_CODES[plan.recompute], sp=int(plan.sequence_parallel))


def estimate(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, plan: ParallelPlan, *,
             calibration: Any = None, topology: Any = None, timeline: bool = False,
             efficiency: EfficiencyModel = DEFAULT_EFFICIENCY) -> StepEstimate:
    """Predict one optimizer step of `plan`: time breakdown (parts sum to `step_time_s`), memory of
    the most loaded GPU, per-rank memory, and with `timeline=True` the simulated pipeline events.

    Raises PlanError (a ValueError naming the field) for an invalid plan; a plan that does not fit
    still gets its estimate (`est.fits` is False; `costmodel.evaluate` turns it into a Rejection)."""
    check_plan(model, cluster, training, plan)
    ctx = step_context(model, cluster, training, efficiency=efficiency, calibration=calibration)
    comm = comm_model(cluster, plan, topology=topology, calibration=calibration)
    k = knobs_from_plan(plan)
    if plan.layers_per_stage is None and not timeline:
        out = step_costs(ctx, k, comm, memo=getattr(comm, "unit_memo", None))
        stage_mem = _closed_form_stage_memory(ctx, k, comm, out)
        events: tuple = ()
    else:
        out, stage_mem, events = _simulated(ctx, k, comm, plan, timeline=timeline)
    return _to_estimate(ctx, plan, out, stage_mem, events)


def _construct(cls: Any, **values: Any) -> Any:
    """A spec instance from values valid by construction, without validation: what
    `model_construct` does for fully specified fields, at a fraction of its cost (hot path)."""
    obj = object.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def _membreak(rank: dict[str, Any]) -> MemoryBreakdown:
    return _construct(MemoryBreakdown,
        parameters_bytes=float(rank["params_bytes"]), gradients_bytes=float(rank["grads_bytes"]),
        optimizer_bytes=float(rank["optimizer_bytes"]), activations_bytes=float(rank["activations_bytes"]),
        buffers_bytes=float(rank["buffers_bytes"]), peak_bytes=float(rank["peak"]))


def _closed_form_stage_memory(ctx: StepContext, k: Knobs, comm: Any, out: dict) -> tuple[MemoryBreakdown, ...]:
    """Memory of every pipeline rank; middle ranks of a decoder-only model differ from each other
    only in their in-flight activations, so one full rank state serves them all."""
    ranks = out["_ranks"]
    if k.pp <= 2:
        return tuple(_membreak(r) for r in ranks)
    sh = ctx.shape
    enc, dec = out["_blocks"]
    per_rank = sh.num_layers / k.pp
    m = out["num_micro_batches"]
    mids = []
    if sh.n_dec:
        for rank in range(1, k.pp - 1):
            n_dec = float(_cross_layers_on_rank(rank, k.pp, k.v, sh.n_enc, sh.num_layers))
            n_enc = per_rank - n_dec
            params = n_enc * enc.params + n_dec * dec.params
            mids.append(_membreak(rank_state(ctx, k, comm, rank, m, n_enc, n_dec, enc, dec, 0.0, 0.0, params,
                                             with_time=False)))
        return (_membreak(ranks[0]), *mids, _membreak(ranks[-1]))
    # rank 0 differs from a middle rank only by the embedding's parameters (states are linear in the
    # parameter count) and its in-flight count; buffers are equal (no logits on either)
    r0 = ranks[0]
    scale = per_rank * enc.params / r0["params"]
    per_chunk = per_rank * enc.act_bytes / k.v
    working = r0["activations_bytes"] - inflight_chunks(k.schedule, 0, k.pp, m, k.v) * per_chunk
    w, g, o = (float(r0["params_bytes"] * scale), float(r0["grads_bytes"] * scale),
               float(r0["optimizer_bytes"] * scale))
    buf = float(r0["buffers_bytes"])
    fixed_peak = w + g + o + buf
    new, put, pp, v, sched = object.__new__, object.__setattr__, k.pp, k.v, k.schedule
    fields_set = set(MemoryBreakdown.model_fields)   # shared: frozen instances never change it
    for rank in range(1, pp - 1):   # inflight_chunks and _construct inlined: this loop is the hot path
        if sched == 2:
            chunks = min((v - 1) * pp + 2 * (pp - rank - 1) + 1, m * v)
        else:
            chunks = m if sched == 0 else (min(pp, m) if sched == 3 else min(pp - rank, m))
        acts = float(chunks * per_chunk + working)
        values = {"parameters_bytes": w, "gradients_bytes": g, "optimizer_bytes": o, "activations_bytes": acts,
                  "buffers_bytes": buf, "peak_bytes": fixed_peak + acts}
        obj = new(MemoryBreakdown)
        put(obj, "__dict__", values)
        put(obj, "__pydantic_fields_set__", fields_set)
        put(obj, "__pydantic_extra__", None)
        put(obj, "__pydantic_private__", None)
        mids.append(obj)
    return (_membreak(ranks[0]), *mids, _membreak(ranks[-1]))


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
    f, b, w, act, comp, tps, cps, syncs = [], [], [], [], [], [], [], []
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
        sync_f = (j < stages - 1) * ctx.eff.p2p_overhead_s     # blocking send of the forward output
        sync_b = (j > 0) * ctx.eff.p2p_overhead_s              # ... and of the input gradient
        f.append(fwd_c + (tp_s + cp_s) * tp_fwd_share + sync_f)
        b.append(bwd_c + (tp_s + cp_s) * (1 - tp_fwd_share) + sync_b)
        syncs.append(sync_f + sync_b)
        w.append(0.5 * (ne * enc.bwd_s + nd * dec.bwd_s + last * head.bwd_s) if k.schedule == 3 else 0.0)
        act.append(ne * enc.act_bytes + nd * dec.act_bytes)
        comp.append(fwd_c + bwd_c)
        tps.append(tp_s)
        cps.append(cp_s)
        n_enc_st.append(ne)
        n_dec_st.append(nd)
    p2p = float(p2p_time_s(ctx, k, comm)) if pp > 1 else 0.0
    sim = dict(schedule=plan.schedule, pp=pp, num_micro_batches=m, virtual_stages=v, fwd_s=f, bwd_s=b,
               bwd_weight_s=w if k.schedule == 3 else None)
    res = simulate_pipeline(**sim, p2p_s=p2p, act_bytes=act, with_events=timeline)
    span0 = simulate_pipeline(**sim, p2p_s=0.0, with_events=False).makespan_s if p2p > 0 else res.makespan_s
    ranks = []
    for r in range(pp):
        idx = range(r, stages, pp)
        first, last = r == 0, r == pp - 1
        ne, nd = sum(n_enc_st[j] for j in idx), sum(n_dec_st[j] for j in idx)
        params = ne * enc.params + nd * dec.params + first * embed.params + last * head.params
        fwd = sum(f[j] for j in idx)
        bwd = sum(b[j] for j in idx)
        peak_act = res.peak_act_bytes[r] if res.peak_act_bytes is not None else 0.0
        ranks.append(rank_state(ctx, k, comm, r, m, ne, nd, enc, dec, fwd, bwd, params, stored_act_bytes=peak_act))
        ranks[-1].update(comp=sum(comp[j] for j in idx), tp=sum(tps[j] for j in idx), cp=sum(cps[j] for j in idx),
                         sync=sum(syncs[j] for j in idx))
    # the same breakdown as step_costs: the busiest rank's work, what transfers add, the rest is bubble
    busy_rank = max(range(pp), key=lambda r: (res.busy_s[r], -r))
    crit = ranks[busy_rank]
    cp_grad = float(comm.time_s("cp", "all_reduce", max(r["params"] for r in ranks) * ctx.grad_bytes)
                    / ctx.eff.collective_efficiency) if k.cp > 1 else 0.0
    out = {
        "num_micro_batches": m,
        "compute_s": m * crit["comp"], "tp_comm_s": m * crit["tp"],
        "cp_comm_s": m * crit["cp"] + cp_grad,
        "dp_comm_s": max(r["dp"] for r in ranks),
        "pp_comm_s": m * crit["sync"] + (res.makespan_s - span0),
        "bubble_s": max(span0 - res.busy_s[busy_rank], 0.0),
        "optimizer_s": max(r["opt"] for r in ranks) + ctx.eff.step_overhead_s,
    }
    top = max(ranks, key=lambda r: r["peak"])
    out.update({
        "parameters_bytes": top["params_bytes"], "gradients_bytes": top["grads_bytes"],
        "optimizer_bytes": top["optimizer_bytes"], "activations_bytes": top["activations_bytes"],
        "buffers_bytes": top["buffers_bytes"], "peak_bytes": top["peak"],
    })
    out["step_time_s"] = sum(out[key] for key in ("compute_s", "tp_comm_s", "cp_comm_s", "dp_comm_s",
                                                  "pp_comm_s", "bubble_s", "optimizer_s"))
    return out, tuple(_membreak(r) for r in ranks), res.events


def _to_estimate(ctx: StepContext, plan: ParallelPlan, out: dict, stage_mem: tuple,
                 events: tuple) -> StepEstimate:
    """Assemble the StepEstimate (fields computed here are valid by construction)."""
    gpus = plan.world_size
    step = float(out["step_time_s"])
    rc = RECOMPUTE_CODES[plan.recompute]
    flops = ctx.memo.get(("flops", rc))
    if flops is None:
        flops = ctx.memo[("flops", rc)] = step_flops(ctx.shape, ctx.global_batch, ctx.seq_len, rc)
    model_flops, hw_flops = flops
    per_gpu = step * gpus
    time = _construct(TimeBreakdown,
        compute_s=float(out["compute_s"]), tp_comm_s=float(out["tp_comm_s"]), cp_comm_s=float(out["cp_comm_s"]),
        dp_comm_s=float(out["dp_comm_s"]), pp_comm_s=float(out["pp_comm_s"]), bubble_s=float(out["bubble_s"]),
        optimizer_s=float(out["optimizer_s"]))
    memory = _construct(MemoryBreakdown,
        parameters_bytes=float(out["parameters_bytes"]), gradients_bytes=float(out["gradients_bytes"]),
        optimizer_bytes=float(out["optimizer_bytes"]), activations_bytes=float(out["activations_bytes"]),
        buffers_bytes=float(out["buffers_bytes"]), peak_bytes=float(out["peak_bytes"]))
    return _construct(StepEstimate,
        plan=plan, num_gpus=gpus, step_time_s=step, tokens_per_s=ctx.global_batch * ctx.seq_len / step,
        model_tflops_per_gpu=model_flops / per_gpu / 1e12, hardware_tflops_per_gpu=hw_flops / per_gpu / 1e12,
        mfu=model_flops / per_gpu / ctx.peak_flops_per_s, hfu=hw_flops / per_gpu / ctx.peak_flops_per_s,
        time=time, memory=memory, stage_memory=stage_mem, capacity_bytes=float(ctx.hbm_bytes),
        timeline=tuple(events))

