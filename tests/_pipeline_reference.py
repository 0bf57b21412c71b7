"""Test helper: the straightforward sequential pipeline simulator (one Python loop over the ops in
a topological order found by running the ranks round-robin; activation peaks by walking every
op), as it was before the level-vectorized sweep. The fast simulator must agree with it to 1e-12.

Original module doc:

Each rank runs its op list (`pipeline_schedules.rank_orders`) in order; an op starts when the rank is
free and its input has arrived: a forward needs the previous stage's forward of that micro-batch plus
one p2p transfer, a backward the next stage's backward plus one transfer (the last stage's backward
needs its own forward), a weight-gradient op (W, zero-bubble) its own B. Transfers are asynchronous:
they delay the receiver but occupy no compute on either rank (a send is a separate timeline lane).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from costmodel.pipeline.schedules import BWD, FWD, rank_orders
from costmodel.pipeline.sim import (  # the result type and input checks are not what is compared
    PipelineResult,
    _times,
)
from costmodel.specs import TimelineEvent

__all__ = ["reference_simulate", "ref_rank_order_ops"]

_KIND_NAMES = {False: ("fwd", "bwd", "bwd_weight"), True: ("fwd", "bwd_input", "bwd_weight")}


@lru_cache(maxsize=256)
def _topo_order(schedule: str, pp: int, m: int, v: int) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """All ops as (rank, kind, stage, micro_batch, dep, hop) in an order where every op follows its
    rank predecessor and its cross-stage input `dep` (a position in this order, -1 if none) whose
    transfer crosses boundary `hop`. Same-rank inputs (the last stage's F before its B, B before
    W) are implied by the rank order. Found once per shape by running the ranks until all are done."""
    orders = rank_orders(schedule, pp, m, v)
    last = pp * v - 1
    pos_f: dict[int, int] = {}
    pos_b: dict[int, int] = {}
    ptr = [0] * pp
    out: list[tuple[int, int, int, int, int, int]] = []
    total = sum(len(o) for o in orders)
    while len(out) < total:
        before = len(out)
        for r in range(pp):
            ops, k = orders[r], ptr[r]
            while k < len(ops):
                kind, j, i, x = ops[k]
                dep = hop = -1
                if kind == FWD and j:
                    dep, hop = pos_f.get(x - m, -2), j - 1
                elif kind == BWD and j < last:
                    dep, hop = pos_b.get(x + m, -2), j
                elif kind == BWD and x not in pos_f:
                    dep = -2
                if dep == -2:
                    break
                (pos_f if kind == FWD else pos_b if kind == BWD else {})[x] = len(out)
                out.append((r, kind, j, i, dep, hop))
                k += 1
            ptr[r] = k
        if len(out) == before:
            raise AssertionError(f"{schedule} deadlocked at pp={pp}, m={m}, v={v}")  # our invariant
    return tuple(out)


@lru_cache(maxsize=256)
def _fast_order(schedule: str, pp: int, m: int, v: int) -> tuple[tuple[int, int, int, int], ...]:
    """`_topo_order` reduced to what the timing loop reads: (rank, duration key, dep, hop)."""
    stages = pp * v
    return tuple((r, kind * stages + j, dep, hop) for r, kind, j, _i, dep, hop in _topo_order(schedule, pp, m, v))


@lru_cache(maxsize=256)
def _in_flight_peaks(schedule: str, pp: int, m: int, v: int) -> tuple[int, ...]:
    return _peaks(rank_orders(schedule, pp, m, v), pp, None, zero_bubble=schedule == "zero-bubble")[0]


def _peaks(orders, pp: int, act: list[float] | None, *, zero_bubble: bool):
    """Per rank: peak in-flight count and peak activation bytes (ops on a rank run one at a time,
    so the peak follows from the op order alone). Freed by the backward, under zero-bubble by W."""
    free_kind = 2 if zero_bubble else BWD
    in_flight, act_peak = [], []
    for r in range(pp):
        count = peak = 0
        cur = peak_b = 0.0
        for kind, j, _i, _x in orders[r]:
            if kind == FWD:
                count += 1
                peak = max(peak, count)
                if act is not None:
                    cur += act[j]
                    peak_b = max(peak_b, cur)
            elif kind == free_kind:
                count -= 1
                if act is not None:
                    cur -= act[j]
        in_flight.append(peak)
        act_peak.append(peak_b)
    return tuple(in_flight), (tuple(act_peak) if act is not None else None)


def reference_simulate(*, schedule: str, pp: int, num_micro_batches: int, virtual_stages: int = 1,
                      fwd_s: Sequence[float], bwd_s: Sequence[float],
                      bwd_weight_s: Sequence[float] | None = None, p2p_s: float | Sequence[float] = 0.0,
                      act_bytes: float | Sequence[float] | None = None,
                      with_events: bool = True) -> PipelineResult:
    """Simulate one step of `schedule` over pp ranks and `num_micro_batches` micro-batches.

    `fwd_s`/`bwd_s`: per-(virtual-)stage time of one micro-batch, pp*virtual_stages entries in model
    order; `bwd_s` is the whole backward, `bwd_weight_s` its weight-gradient part W (split off only by
    zero-bubble, Qi et al. 2023). `p2p_s`: one transfer between adjacent stages (scalar, or one per
    boundary). `act_bytes`: activation bytes one micro-batch keeps on each stage (scalar or per stage)."""
    m, v = num_micro_batches, virtual_stages
    orders = rank_orders(schedule, pp, m, v)
    topo = _topo_order(schedule, pp, m, v)
    stages = pp * v
    f = _times("fwd_s", fwd_s, stages)
    b = _times("bwd_s", bwd_s, stages)
    zb = schedule == "zero-bubble"
    w = [0.0] * stages
    if bwd_weight_s is not None:
        w = _times("bwd_weight_s", bwd_weight_s, stages)
        for j in range(stages):
            if w[j] > b[j]:
                raise ValueError(f"bwd_weight_s[{j}]={w[j]} exceeds bwd_s[{j}]={b[j]}; "
                                 "W is the weight-gradient part of the whole backward")
    if zb:
        b = [b[j] - w[j] for j in range(stages)]
    c = _times("p2p_s", p2p_s, stages - 1, allow_scalar=True)
    act = None if act_bytes is None else _times("act_bytes", act_bytes, stages, allow_scalar=True)
    flat = f + b + w                       # duration of op key kind * stages + stage
    free, exposed = [0.0] * pp, [0.0] * pp
    end_s = [0.0] * len(topo)
    for n, (r, key, dep, hop) in enumerate(_fast_order(schedule, pp, m, v)):
        t = free[r]
        if dep >= 0:                       # cross-stage input: producer's end + one transfer
            pe = end_s[dep]
            ready = pe + c[hop]
            if ready > t:
                exposed[r] += ready - (pe if pe > t else t)
                t = ready
        end_s[n] = free[r] = t + flat[key]
    per_stage = [f[j] + b[j] + (w[j] if zb else 0.0) for j in range(stages)]
    busy = [m * sum(per_stage[rank::pp]) for rank in range(pp)]

    makespan = max(free)
    crit = free.index(makespan)
    bubble = max(0.0, makespan - busy[crit] - exposed[crit])
    if act is None:
        in_flight, act_peak = _in_flight_peaks(schedule, pp, m, v), None
    else:
        in_flight, act_peak = _peaks(orders, pp, act, zero_bubble=zb)
    events: tuple[TimelineEvent, ...] = ()
    if with_events:
        raw = [(r, kind, i, j, end_s[n] - flat[kind * stages + j], end_s[n])
               for n, (r, kind, j, i, _dep, _hop) in enumerate(topo)]
        events = _build_events(raw, pp, stages, c, zb)
    return PipelineResult(makespan_s=makespan, busy_s=tuple(busy), bubble_s=bubble,
                          exposed_p2p_s=exposed[crit], critical_rank=crit, peak_in_flight=in_flight,
                          peak_act_bytes=act_peak, events=events)


def _build_events(raw: list[tuple], pp: int, stages: int, c: list[float],
                  zb: bool) -> tuple[TimelineEvent, ...]:
    """TimelineEvents, ordered by rank and start; a send sits on the producer's rank."""
    names = _KIND_NAMES[zb]
    make = TimelineEvent
    out = []
    for r, kind, i, j, start, end in sorted(raw, key=lambda e: (e[0], e[4])):
        out.append(make(stage=r, kind=names[kind], micro_batch=i, chunk=j // pp, start_s=start, end_s=end))
        hop = c[j] if kind == FWD and j < stages - 1 else (c[j - 1] if kind == BWD and j > 0 else 0.0)
        if hop > 0:
            out.append(make(stage=r, kind="send", micro_batch=i, chunk=j // pp, start_s=end, end_s=end + hop))
    return tuple(out)


def ref_rank_order_ops(schedule: str, pp: int, m: int, v: int) -> list[list[tuple[int, int, int]]]:
    """(kind, stage, micro_batch) of every rank's ops, from the tuple-based `rank_orders`."""
    return [[op[:3] for op in ops] for ops in rank_orders(schedule, pp, m, v)]
