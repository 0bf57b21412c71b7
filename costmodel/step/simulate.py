"""`estimate`'s simulator path: per-(virtual-)stage times from the block costs, the pipeline
simulation (`pipeline_sim`), and the breakdown and per-rank memory built from them, on numpy arrays
over stages and ranks.

The simulation is memoized on its inputs (plans that differ only in ZeRO stage share stage times),
and `prefetch` runs the simulations of many plans at once, one numpy sweep per schedule shape, into
that memo, so a planner can re-score candidates one by one at the batch's cost. Either way the
numbers are the ones a single `simulate_pipeline` call gives.

Time and memory stay bounded: a step of more than `MAX_SIM_OPS` ops (forward, backward and, under
zero-bubble, weight-gradient ops of every micro-batch on every stage; ~200 bytes each) is not simulated
op by op but priced by the closed form `pipeline_ranked.ranked_makespan_s` on the first rank, the
slowest middle rank and the last rank (what even splits use), with in-flight activations from
`memory.inflight_chunks`; a timeline is drawn for at most `MAX_TIMELINE_OPS` ops."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..layer.blocks import W_SHARE, tp_forward_share
from ..layer.memory import SCHEDULE_CODES, inflight_chunks
from ..pipeline.ranked import ranked_makespan_s
from ..pipeline.sim import simulate_pipeline, simulate_pipelines
from .costs import BlockCost, EndCost, Knobs, StepContext, block_costs, end_costs, p2p_time_s, rank_state
from .memory import block_activations

__all__ = ["StageTimes", "stage_times", "cached_stage_times", "simulated_costs", "prefetch", "sim_ops",
           "check_timeline", "MAX_SIM_OPS", "MAX_TIMELINE_OPS"]

_SIMS: dict[tuple, tuple] = {}
_STAGES: dict[tuple, tuple] = {}
_MAX_SIMS = 4096
MAX_SIM_OPS = 1 << 20
"""Ops above which a step is priced in closed form instead of simulated (~300 MB, ~1.5 s on one core)."""
MAX_TIMELINE_OPS = 1 << 16
"""Ops a timeline may draw (~2 events each, ~1.2 kB per event in memory, ~150 B in the trace file)."""
_SWEEP_VALUES = 1 << 23
"""Op-times a batched sweep holds at once (ops x columns): bounds `prefetch`'s memory."""


def sim_ops(schedule: str, pp: int, v: int, m: int) -> int:
    """Ops the simulator runs for one step: a forward and a backward (zero-bubble: and a weight
    gradient) per micro-batch and (virtual) stage."""
    return (3 if schedule == "zero-bubble" else 2) * pp * v * m


def check_timeline(schedule: str, pp: int, v: int, m: int) -> None:
    """Raise ValueError naming the knobs when a timeline of this step would exceed `MAX_TIMELINE_OPS`."""
    ops = sim_ops(schedule, pp, v, m)
    if ops > MAX_TIMELINE_OPS:
        raise ValueError(f"timeline: {m:,} micro-batches x {pp * v} stages are {ops:,} ops, more than the "
                         f"{MAX_TIMELINE_OPS:,} a timeline draws; raise micro_batch_size or dp, or lower the "
                         "global batch (the estimate without --timeline is not limited)")


@dataclass(frozen=True, eq=False)
class StageTimes:
    """Per-(virtual-)stage inputs of the simulation (arrays of pp*v) and what the breakdown needs."""

    schedule: str
    pp: int
    v: int
    m: int
    f: np.ndarray
    b: np.ndarray
    w: np.ndarray | None
    act: np.ndarray
    comp: np.ndarray
    fwd_compute: np.ndarray
    bwd_compute: np.ndarray
    tp: np.ndarray
    cp: np.ndarray
    ep: np.ndarray
    sync: np.ndarray
    n_enc: np.ndarray
    n_dec: np.ndarray
    p2p_s: float
    units: tuple[BlockCost, BlockCost, EndCost, EndCost]

    def key(self) -> tuple:
        w = b"" if self.w is None else self.w.tobytes()
        return (self.schedule, self.pp, self.m, self.v, self.f.tobytes(), self.b.tobytes(), w, self.p2p_s,
                self.act.tobytes())


def stage_times(ctx: StepContext, k: Knobs, comm: Any, schedule: str, layers: tuple[int, ...]) -> StageTimes:
    """Stage j runs `layers[j]` blocks (decoder blocks after the encoder's), the embedding on the first
    and the head on the last stage; exposed TP/CP traffic is split between forward and backward by
    their GEMM count (backward x2, recompute +1), each send adds `p2p_overhead_s` to its sender."""
    sh = ctx.shape
    stages = k.pp * k.v
    m = ctx.global_batch // (k.dp * k.mb)
    enc = block_costs(ctx, k, comm, cross=False)
    dec = block_costs(ctx, k, comm, cross=True) if sh.n_dec else enc
    embed, head = end_costs(ctx, k, comm)
    n = np.array(layers, dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    if sh.n_dec:
        nd = np.maximum(0, np.minimum(start + n, sh.num_layers) - np.maximum(start, sh.n_enc))
    else:
        nd = np.zeros(stages, np.int64)
    ne = n - nd
    j = np.arange(stages)
    first, last = j == 0, j == stages - 1
    tp_fwd_share = tp_forward_share(k.recompute)
    fwd_c = ne * enc.fwd_s + nd * dec.fwd_s + first * embed.fwd_s + last * head.fwd_s
    bwd_c = (ne * (enc.bwd_s + enc.recompute_s) + nd * (dec.bwd_s + dec.recompute_s)
             + first * embed.bwd_s + last * head.bwd_s)
    tp_s = ne * enc.tp_s + nd * dec.tp_s + first * embed.tp_s + last * head.tp_s
    cp_s = ne * enc.cp_s + nd * dec.cp_s
    ep_s = ne * enc.ep_s + nd * dec.ep_s     # expert-parallel all-to-alls, exposed like TP/CP
    sync_f = (j < stages - 1) * ctx.eff.p2p_overhead_s     # blocking send of the forward output
    sync_b = (j > 0) * ctx.eff.p2p_overhead_s              # ... and of the input gradient
    zb = k.schedule == 3
    w = W_SHARE * (ne * enc.bwd_s + nd * dec.bwd_s + last * head.bwd_s) if zb else None
    p2p = float(p2p_time_s(ctx, k, comm)) if k.pp > 1 else 0.0
    enc_act, dec_act, _, _ = block_activations(k, enc, dec, n_dec=sh.n_dec)   # the plan's precision mode
    as_f = np.asarray
    return StageTimes(schedule=schedule, pp=k.pp, v=k.v, m=m,
                      f=as_f(fwd_c + (tp_s + cp_s + ep_s) * tp_fwd_share + sync_f, float),
                      b=as_f(bwd_c + (tp_s + cp_s + ep_s) * (1 - tp_fwd_share) + sync_b, float),
                      w=None if w is None else as_f(w, float), act=as_f(ne * enc_act + nd * dec_act, float),
                      comp=as_f(fwd_c + bwd_c, float), fwd_compute=as_f(fwd_c, float), bwd_compute=as_f(bwd_c, float),
                      tp=as_f(tp_s, float), cp=as_f(cp_s, float), ep=as_f(ep_s, float),
                      sync=as_f(sync_f + sync_b, float), n_enc=ne, n_dec=nd, p2p_s=p2p,
                      units=(enc, dec, embed, head))


def cached_stage_times(ctx: StepContext, k: Knobs, comm: Any, schedule: str, layers: tuple[int, ...]) -> StageTimes:
    """`stage_times`, memoized on the context and comm objects (kept alive with the entry) and the
    knobs: a prefetch and the estimate that follows build them once."""
    key = (id(ctx), id(comm), k.dp, k.tp, k.pp, k.cp, k.ep, k.mb, k.v, k.schedule, k.zero, k.recompute, k.sp,
           k.cp_attn, schedule, layers)
    hit = _STAGES.get(key)
    if hit is not None and hit[0] is ctx and hit[1] is comm:
        return hit[2]
    st = stage_times(ctx, k, comm, schedule, layers)
    if len(_STAGES) >= 4096:
        _STAGES.clear()
    _STAGES[key] = (ctx, comm, st)
    return st


def _simulate(st: StageTimes, *, timeline: bool) -> tuple[float, tuple, tuple, float, tuple]:
    """(makespan, busy per rank, peak activation bytes per rank, makespan without p2p, events)."""
    key = None if timeline else st.key()
    hit = _SIMS.get(key) if key is not None else None
    if hit is not None:
        return hit
    if timeline:
        check_timeline(st.schedule, st.pp, st.v, st.m)
    elif sim_ops(st.schedule, st.pp, st.v, st.m) > MAX_SIM_OPS:
        out = _closed_form(st)
        _store(key, out)
        return out
    res = simulate_pipeline(schedule=st.schedule, pp=st.pp, num_micro_batches=st.m, virtual_stages=st.v,
                            fwd_s=st.f, bwd_s=st.b, bwd_weight_s=st.w, p2p_s=st.p2p_s, act_bytes=st.act,
                            with_events=timeline, with_no_p2p=st.p2p_s > 0)
    out = _summary(res, st)
    if key is not None:
        _store(key, out)
    return out


def _summary(res: Any, st: StageTimes) -> tuple:
    span0 = res.makespan_no_p2p_s if st.p2p_s > 0 else res.makespan_s
    return (res.makespan_s, res.busy_s, res.peak_act_bytes, span0, res.events)


def _closed_form(st: StageTimes) -> tuple:
    """`_simulate`'s summary without simulating: `ranked_makespan_s` on rank 0, the slowest middle
    rank and the last rank (per-rank sums over chunks), busy time m (f + b) per rank, and peak
    activations of `inflight_chunks` chunks of the rank's mean chunk (exact for uniform stages)."""
    pp, v, m = st.pp, st.v, st.m
    f, b = _rank_sums(st.f, pp, v), _rank_sums(st.b, pp, v)
    w = _rank_sums(st.w, pp, v) if st.w is not None else np.zeros(pp)
    mid = 1 + int(np.argmax((f + b)[1:-1])) if pp > 2 else 0
    code = SCHEDULE_CODES[st.schedule]
    args = dict(first=(float(f[0]), float(b[0])), middle=(float(f[mid]), float(b[mid])),
                last=(float(f[-1]), float(b[-1])), bwd_weight=(float(w[0]), float(w[mid]), float(w[-1])))
    span = float(ranked_makespan_s(code, pp, m, v, p2p_s=st.p2p_s, **args))
    span0 = float(ranked_makespan_s(code, pp, m, v, p2p_s=0.0, **args)) if st.p2p_s > 0 else span
    busy = tuple((m * (f + b)).tolist())
    act = _rank_sums(st.act, pp, v) / v
    peaks = tuple(float(inflight_chunks(code, r, pp, m, v) * act[r]) for r in range(pp))
    return (max(span, max(busy)), busy, peaks, max(span0, max(busy)), ())


def _store(key: tuple, value: tuple) -> None:
    if len(_SIMS) >= _MAX_SIMS:
        _SIMS.clear()
    _SIMS[key] = value


def prefetch(items: Iterable[StageTimes], *, max_columns: int = 64) -> int:
    """Simulate every not yet memoized StageTimes, one batched sweep per schedule shape (at most
    `max_columns` at once); returns how many were simulated."""
    groups: dict[tuple, dict[tuple, StageTimes]] = {}
    for st in items:
        if sim_ops(st.schedule, st.pp, st.v, st.m) > MAX_SIM_OPS:
            continue   # priced in closed form when asked for (`_simulate`)
        key = st.key()
        if key not in _SIMS:
            groups.setdefault((st.schedule, st.pp, st.m, st.v, st.w is None), {})[key] = st
    done = 0
    for (schedule, pp, m, v, no_w), todo in groups.items():
        keys, sts = list(todo), list(todo.values())
        step = max(1, min(max_columns, _SWEEP_VALUES // sim_ops(schedule, pp, v, m)))
        for lo in range(0, len(sts), step):
            part = sts[lo:lo + step]
            results = simulate_pipelines(
                schedule=schedule, pp=pp, num_micro_batches=m, virtual_stages=v,
                fwd_s=np.array([s.f for s in part]), bwd_s=np.array([s.b for s in part]),
                bwd_weight_s=None if no_w else np.array([s.w for s in part]),
                p2p_s=np.array([[s.p2p_s] * (pp * v - 1) for s in part]).reshape(len(part), pp * v - 1),
                act_bytes=np.array([s.act for s in part]), with_no_p2p=True)
            for key, st, res in zip(keys[lo:lo + step], part, results, strict=True):
                _store(key, _summary(res, st))
            done += len(part)
    return done


def _rank_sums(x: np.ndarray, pp: int, v: int) -> np.ndarray:
    """Per rank the sum over its chunks (stages r, r+pp, ...), added in chunk order."""
    total = 0
    for c in range(v):
        total = total + x[c * pp:(c + 1) * pp]
    return total


def simulated_costs(ctx: StepContext, k: Knobs, comm: Any, st: StageTimes, *,
                    timeline: bool) -> tuple[dict[str, Any], dict[str, np.ndarray], tuple]:
    """(breakdown, per-rank memory arrays, events): the busiest rank's work, what the transfers add
    to the makespan (pp_comm), the rest of the no-transfer makespan is bubble (as `step_costs`)."""
    pp, v, m = k.pp, k.v, st.m
    enc, dec, embed, head = st.units
    makespan, busy_s, peak_act, span0, events = _simulate(st, timeline=timeline)
    ranks = np.arange(pp)
    first, last = ranks == 0, ranks == pp - 1
    ne, nd = _rank_sums(st.n_enc, pp, v), _rank_sums(st.n_dec, pp, v)
    params = ne * enc.params + nd * dec.params + first * embed.params + last * head.params
    # the compute-only forward and backward, as `step_costs` passes them: the window that hides the
    # gradient reduction is the same on both paths
    state = rank_state(ctx, k, comm, ranks, m, ne, nd, enc, dec, _rank_sums(st.fwd_compute, pp, v),
                       _rank_sums(st.bwd_compute, pp, v), params, stored_act_bytes=np.array(peak_act, dtype=float))
    state = {key: np.broadcast_to(np.asarray(val), (pp,)) for key, val in state.items()}
    busy = np.array(busy_s)
    crit = int(np.argmax(busy))
    comp, tps, cps, eps, sync = (_rank_sums(x, pp, v)[crit] for x in (st.comp, st.tp, st.cp, st.ep, st.sync))
    out: dict[str, Any] = {
        "num_micro_batches": m,
        "compute_s": m * comp, "tp_comm_s": m * tps, "cp_comm_s": m * cps, "ep_comm_s": m * eps,
        "dp_comm_s": state["dp"].max(),
        "pp_comm_s": m * sync + (makespan - span0),
        "bubble_s": max(span0 - busy_s[crit], 0.0),
        "optimizer_s": state["opt"].max() + ctx.eff.step_overhead_s,
    }
    top = int(np.argmax(state["peak"]))
    out.update({
        "parameters_bytes": state["params_bytes"][top], "gradients_bytes": state["grads_bytes"][top],
        "optimizer_bytes": state["optimizer_bytes"][top], "activations_bytes": state["activations_bytes"][top],
        "buffers_bytes": state["buffers_bytes"][top], "temporaries_bytes": state["temporaries_bytes"][top],
        "allocated_bytes": state["allocated"][top], "reserved_bytes": state["reserved"][top],
        "context_bytes": state["context"][top], "peak_bytes": state["peak"][top], "peak_stage": top,
        "peak_moment": state["moment"][top], "inflight_micro_batches": state["inflight"][top],
    })
    out["step_time_s"] = sum(out[key] for key in ("compute_s", "tp_comm_s", "cp_comm_s", "ep_comm_s", "dp_comm_s",
                                                  "pp_comm_s", "bubble_s", "optimizer_s"))
    return out, state, events
