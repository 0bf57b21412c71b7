"""Dependency-driven simulation of one pipeline-parallel step (`simulate_pipeline`).

Each rank runs its op list (`pipeline_schedules.rank_orders`) in order; an op starts when the rank is
free and its input has arrived: a forward needs the previous stage's forward of that micro-batch plus
one p2p transfer, a backward the next stage's backward plus one transfer (the last stage's backward
needs its own forward), a weight-gradient op (W, zero-bubble) its own B. Transfers are asynchronous:
they delay the receiver but occupy no compute on either rank (a send is a separate timeline lane).

The recurrence runs level by level over the schedule's op graph (`pipeline_levels`: numpy over each
level's ops, or a plain loop for narrow graphs), with the sequential recurrence's arithmetic, so
results equal a one-op-at-a-time simulation bit for bit (tests/test_costmodel_pipeline_exact.py).
`simulate_pipelines` runs many steps of one schedule shape in one sweep (the planner's batches).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..specs import TimelineEvent
from .levels import OpGraph, act_peaks, critical_exposed_s, op_graph, sweep_end_s
from .schedules import BWD, FWD, check_schedule_args

__all__ = ["PipelineResult", "simulate_pipeline", "simulate_pipelines"]

_KIND_NAMES = {False: ("fwd", "bwd", "bwd_weight"), True: ("fwd", "bwd_input", "bwd_weight")}


@dataclass(frozen=True)
class PipelineResult:
    """Outcome of one simulated step.

    For the critical rank (the one whose last op ends at `makespan_s`):
    `makespan_s == busy_s[critical_rank] + exposed_p2p_s + bubble_s`. Exposed p2p is the part of the
    rank's idle time spent waiting for a transfer in flight; the rest of its idle time is bubble.
    `peak_in_flight[r]` counts (micro-batch, chunk) pairs whose forward ran on rank r and whose
    activations are not yet freed (by the backward, or by W under zero-bubble); `peak_act_bytes[r]`
    weighs them by `act_bytes[stage]` (None when no act_bytes were given). `makespan_no_p2p_s`: the
    makespan with free transfers (only when asked for)."""

    makespan_s: float
    busy_s: tuple[float, ...]
    bubble_s: float
    exposed_p2p_s: float
    critical_rank: int
    peak_in_flight: tuple[int, ...]
    peak_act_bytes: tuple[float, ...] | None = None
    events: tuple[TimelineEvent, ...] = ()
    makespan_no_p2p_s: float | None = None

    @property
    def bubble_fraction(self) -> float:
        """Bubble relative to the critical rank's compute (Narayanan 2021's (p-1)/(v*m) for uniform stages)."""
        busy = self.busy_s[self.critical_rank]
        return self.bubble_s / busy if busy > 0 else 0.0


def _times(name: str, values: Sequence[float], n: int, *, allow_scalar: bool = False) -> list[float]:
    if allow_scalar and isinstance(values, numbers.Real):
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


def _check_w(b: np.ndarray, w: np.ndarray) -> None:
    bad = np.flatnonzero((w > b).any(axis=0))
    if bad.size:
        j = int(bad[0])
        col = int(np.flatnonzero(w[:, j] > b[:, j])[0])
        raise ValueError(f"bwd_weight_s[{j}]={w[col, j]} exceeds bwd_s[{j}]={b[col, j]}; "
                         "W is the weight-gradient part of the whole backward")


def simulate_pipeline(*, schedule: str, pp: int, num_micro_batches: int, virtual_stages: int = 1,
                      fwd_s: Sequence[float], bwd_s: Sequence[float],
                      bwd_weight_s: Sequence[float] | None = None, p2p_s: float | Sequence[float] = 0.0,
                      act_bytes: float | Sequence[float] | None = None,
                      with_events: bool = True, with_no_p2p: bool = False) -> PipelineResult:
    """Simulate one step of `schedule` over pp ranks and `num_micro_batches` micro-batches.

    `fwd_s`/`bwd_s`: per-(virtual-)stage time of one micro-batch, pp*virtual_stages entries in model
    order; `bwd_s` is the whole backward, `bwd_weight_s` its weight-gradient part W (split off only by
    zero-bubble, Qi et al. 2023). `p2p_s`: one transfer between adjacent stages (scalar, or one per
    boundary). `act_bytes`: activation bytes one micro-batch keeps on each stage (scalar or per stage).
    `with_no_p2p` also computes the makespan with free transfers (`makespan_no_p2p_s`) in the same sweep."""
    check_schedule_args(schedule, pp, num_micro_batches, virtual_stages)
    stages = pp * virtual_stages
    rows = [_times("fwd_s", fwd_s, stages), _times("bwd_s", bwd_s, stages)]
    if bwd_weight_s is not None:
        rows.append(_times("bwd_weight_s", bwd_weight_s, stages))
    c = _times("p2p_s", p2p_s, stages - 1, allow_scalar=True)
    act = None if act_bytes is None else _times("act_bytes", act_bytes, stages, allow_scalar=True)
    return _simulate_many(
        schedule=schedule, pp=pp, num_micro_batches=num_micro_batches, virtual_stages=virtual_stages,
        fwd_s=np.array([rows[0]]), bwd_s=np.array([rows[1]]),
        bwd_weight_s=np.array([rows[2]]) if bwd_weight_s is not None else None, p2p_s=np.array([c]),
        act_bytes=None if act is None else np.array([act]), with_events=with_events,
        with_no_p2p=with_no_p2p)[0]


def simulate_pipelines(*, schedule: str, pp: int, num_micro_batches: int, virtual_stages: int = 1,
                       fwd_s: np.ndarray, bwd_s: np.ndarray, bwd_weight_s: np.ndarray | None = None,
                       p2p_s: np.ndarray, act_bytes: np.ndarray | None = None, with_events: bool = False,
                       with_no_p2p: bool = False) -> list[PipelineResult]:
    """`simulate_pipeline` for K steps of the same schedule shape at once: `fwd_s`, `bwd_s`,
    `bwd_weight_s`, `act_bytes` of shape (K, stages), `p2p_s` (K, stages-1); one numpy sweep
    (`pipeline_levels`) over all of them. Times must be finite and >= 0 (not checked here)."""
    check_schedule_args(schedule, pp, num_micro_batches, virtual_stages)
    return _simulate_many(schedule=schedule, pp=pp, num_micro_batches=num_micro_batches,
                          virtual_stages=virtual_stages, fwd_s=fwd_s, bwd_s=bwd_s, bwd_weight_s=bwd_weight_s,
                          p2p_s=p2p_s, act_bytes=act_bytes, with_events=with_events, with_no_p2p=with_no_p2p)


def _simulate_many(*, schedule: str, pp: int, num_micro_batches: int, virtual_stages: int, fwd_s: np.ndarray,
                   bwd_s: np.ndarray, bwd_weight_s: np.ndarray | None, p2p_s: np.ndarray,
                   act_bytes: np.ndarray | None, with_events: bool, with_no_p2p: bool) -> list[PipelineResult]:
    m, v = num_micro_batches, virtual_stages
    graph = op_graph(schedule, pp, m, v)
    stages = pp * v
    f, b = np.asarray(fwd_s, float), np.asarray(bwd_s, float)
    k_cols = f.shape[0]
    zb = schedule == "zero-bubble"
    w = np.zeros_like(f)
    if bwd_weight_s is not None:
        w = np.asarray(bwd_weight_s, float)
        _check_w(b, w)
    if zb:
        b = b - w
    c = np.asarray(p2p_s, float).reshape(k_cols, stages - 1)
    flat = np.concatenate([f, b, w], axis=1)           # duration of op key kind * stages + stage
    c_ext = np.concatenate([c, np.zeros((k_cols, 1))], axis=1)
    if with_no_p2p:
        flat = np.concatenate([flat, flat])
        c_ext = np.concatenate([c_ext, np.zeros_like(c_ext)])
    ends = _sweep_columns(graph, flat, c_ext)
    per_stage = f + b + (w if zb else 0.0)
    busy_all = np.zeros((k_cols, pp))
    for chunk in range(v):
        busy_all = busy_all + per_stage[:, chunk * pp:(chunk + 1) * pp]
    busy_all = m * busy_all
    out = []
    for col in range(k_cols):
        end_col = ends[col]
        free = end_col[graph.last_op]
        crit = int(np.argmax(free))
        makespan = float(free[crit])
        busy = tuple(busy_all[col].tolist())
        exposed = critical_exposed_s(graph, end_col, c_ext[col], crit)
        bubble = max(0.0, makespan - busy[crit] - exposed)
        act_peak = None if act_bytes is None else act_peaks(graph, np.asarray(act_bytes[col], float))
        events: tuple[TimelineEvent, ...] = ()
        if with_events:
            events = _build_events(graph, end_col.tolist(), flat[col].tolist(), pp, c[col].tolist(), zb)
        no_p2p = float(ends[k_cols + col][graph.last_op].max()) if with_no_p2p else None
        out.append(PipelineResult(makespan_s=makespan, busy_s=busy, bubble_s=bubble, exposed_p2p_s=exposed,
                                  critical_rank=crit, peak_in_flight=graph.in_flight, peak_act_bytes=act_peak,
                                  events=events, makespan_no_p2p_s=no_p2p))
    return out


_MAX_COLUMNS = 32   # columns per sweep: wider ones stop paying off and cost memory


def _sweep_columns(graph: OpGraph, flat: np.ndarray, c_ext: np.ndarray) -> list[np.ndarray]:
    """Each column's op ends (level order, then the 0 and -inf slots), sweeping up to
    `_MAX_COLUMNS` columns at once."""
    out = []
    for lo in range(0, flat.shape[0], _MAX_COLUMNS):
        end = sweep_end_s(graph, flat[lo:lo + _MAX_COLUMNS], c_ext[lo:lo + _MAX_COLUMNS])
        out.extend(end[:, col] for col in range(end.shape[1]))
    return out


def _build_events(graph: OpGraph, end_s: list[float], flat: list[float], pp: int, c: list[float],
                  zb: bool) -> tuple[TimelineEvent, ...]:
    """TimelineEvents, ordered by rank and start (ties: run order); a send sits on the producer's rank."""
    names = _KIND_NAMES[zb]
    make = TimelineEvent
    stages = graph.stages
    raw = [(r, kind, i, j, end_s[n] - flat[key], end_s[n]) for n, (r, kind, i, j, key) in enumerate(zip(
        graph.rank.tolist(), graph.kind.tolist(), graph.micro_batch.tolist(), graph.stage.tolist(),
        graph.key.tolist(), strict=True))]
    out = []
    for r, kind, i, j, start, end in sorted(raw, key=lambda e: (e[0], e[4])):
        out.append(make(stage=r, kind=names[kind], micro_batch=i, chunk=j // pp, start_s=start, end_s=end))
        hop = c[j] if kind == FWD and j < stages - 1 else (c[j - 1] if kind == BWD and j > 0 else 0.0)
        if hop > 0:
            out.append(make(stage=r, kind="send", micro_batch=i, chunk=j // pp, start_s=end, end_s=end + hop))
    return tuple(out)
