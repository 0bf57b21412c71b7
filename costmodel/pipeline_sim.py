"""Dependency-driven simulation of one pipeline-parallel step (`simulate_pipeline`).

Each rank runs its op list (`pipeline_schedules.rank_orders`) in order; an op starts when the rank is
free and its input has arrived: a forward needs the previous stage's forward of that micro-batch plus
one p2p transfer, a backward the next stage's backward plus one transfer (the last stage's backward
needs its own forward), a weight-gradient op (W, zero-bubble) its own B. Transfers are asynchronous:
they delay the receiver but occupy no compute on either rank (a send is a separate timeline lane).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .pipeline_schedules import BWD, FWD, rank_orders
from .specs import TimelineEvent

__all__ = ["PipelineResult", "simulate_pipeline"]

_KIND_NAMES = {False: ("fwd", "bwd", "bwd_weight"), True: ("fwd", "bwd_input", "bwd_weight")}


@dataclass(frozen=True)
class PipelineResult:
    """Outcome of one simulated step.

    For the critical rank (the one whose last op ends at `makespan_s`):
    `makespan_s == busy_s[critical_rank] + exposed_p2p_s + bubble_s`. Exposed p2p is the part of the
    rank's idle time spent waiting for a transfer in flight; the rest of its idle time is bubble.
    `peak_in_flight[r]` counts (micro-batch, chunk) pairs whose forward ran on rank r and whose
    activations are not yet freed (by the backward, or by W under zero-bubble); `peak_act_bytes[r]`
    weighs them by `act_bytes[stage]` (None when no act_bytes were given)."""

    makespan_s: float
    busy_s: tuple[float, ...]
    bubble_s: float
    exposed_p2p_s: float
    critical_rank: int
    peak_in_flight: tuple[int, ...]
    peak_act_bytes: tuple[float, ...] | None = None
    events: tuple[TimelineEvent, ...] = ()

    @property
    def bubble_fraction(self) -> float:
        """Bubble relative to the critical rank's compute (Narayanan 2021's (p-1)/(v*m) for uniform stages)."""
        busy = self.busy_s[self.critical_rank]
        return self.bubble_s / busy if busy > 0 else 0.0


def _times(name: str, values: Sequence[float], n: int, *, allow_scalar: bool = False) -> list[float]:
    if allow_scalar and isinstance(values, (int, float)):
        out = [float(values)] * n
    else:
        try:
            out = [float(x) for x in values]
        except TypeError:
            raise ValueError(f"{name} must be a sequence of {n} times in seconds"
                             + (" or one scalar" if allow_scalar else "")) from None
        if len(out) != n:
            raise ValueError(f"{name} has {len(out)} entries but {n} are needed "
                             f"({'one per stage boundary, pp*virtual_stages-1' if allow_scalar else 'one per (virtual) stage, pp*virtual_stages'})")
    for x in out:
        if not (x >= 0 and math.isfinite(x)):
            raise ValueError(f"{name} must hold finite times >= 0 (got {x})")
    return out


def _peaks(orders, pp: int, act: list[float] | None, *, zero_bubble: bool):
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


def simulate_pipeline(*, schedule: str, pp: int, num_micro_batches: int, virtual_stages: int = 1,
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
    durs = (f, b, w)

    fe = [-1.0] * (stages * m)     # forward end time per (stage, micro-batch)
    be = [-1.0] * (stages * m)     # backward (B) end time
    ptr, free = [0] * pp, [0.0] * pp
    busy, exposed = [0.0] * pp, [0.0] * pp
    last = stages - 1
    raw: list[tuple] = []
    remaining = sum(len(o) for o in orders)
    while remaining:
        progressed = False
        for r in range(pp):
            ops, k, t = orders[r], ptr[r], free[r]
            n, busy_r, exp_r = len(ops), busy[r], exposed[r]
            while k < n:
                kind, j, i, x = ops[k]
                hop = 0.0
                if kind == FWD:
                    if j:
                        pe = fe[x - m]
                        if pe < 0:
                            break
                        hop = c[j - 1]
                    else:
                        pe = 0.0
                elif kind == BWD:
                    if j < last:
                        pe = be[x + m]
                        if pe < 0:
                            break
                        hop = c[j]
                    else:
                        pe = fe[x]
                        if pe < 0:
                            break
                else:
                    pe = be[x]
                    if pe < 0:
                        break
                ready = pe + hop
                if ready > t:
                    if hop:
                        exp_r += ready - (pe if pe > t else t)
                    start = ready
                else:
                    start = t
                d = durs[kind][j]
                t = start + d
                busy_r += d
                if kind == FWD:
                    fe[x] = t
                elif kind == BWD:
                    be[x] = t
                if with_events:
                    raw.append((r, kind, i, j, start, t))
                k += 1
            if k != ptr[r]:
                progressed = True
                remaining -= k - ptr[r]
                ptr[r], free[r], busy[r], exposed[r] = k, t, busy_r, exp_r
        if not progressed:
            raise AssertionError(f"{schedule} deadlocked at pp={pp}, m={m}, v={v}")  # our invariant

    makespan = max(free)
    crit = free.index(makespan)
    bubble = max(0.0, makespan - busy[crit] - exposed[crit])
    in_flight, act_peak = _peaks(orders, pp, act, zero_bubble=zb)
    events: tuple[TimelineEvent, ...] = ()
    if with_events:
        events = _build_events(raw, pp, stages, c, zb)
    return PipelineResult(makespan_s=makespan, busy_s=tuple(busy), bubble_s=bubble,
                          exposed_p2p_s=exposed[crit], critical_rank=crit, peak_in_flight=in_flight,
                          peak_act_bytes=act_peak, events=events)


def _build_events(raw: list[tuple], pp: int, stages: int, c: list[float],
                  zb: bool) -> tuple[TimelineEvent, ...]:
    """TimelineEvents (validated fields built by us, so `model_construct` skips re-validation)."""
    names = _KIND_NAMES[zb]
    make = TimelineEvent.model_construct
    out = []
    for r, kind, i, j, start, end in sorted(raw, key=lambda e: (e[0], e[4])):
        out.append(make(stage=r, kind=names[kind], micro_batch=i, chunk=j // pp, start_s=start, end_s=end))
        hop = c[j] if kind == FWD and j < stages - 1 else (c[j - 1] if kind == BWD and j > 0 else 0.0)
        if hop > 0:
            out.append(make(stage=r, kind="send", micro_batch=i, chunk=j // pp, start_s=end, end_s=end + hop))
    return tuple(out)
