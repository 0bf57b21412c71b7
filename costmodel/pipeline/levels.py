"""The op graph of one pipeline schedule, grouped in dependency levels, and the numpy timing sweep
over it (what `pipeline_sim.simulate_pipeline` runs).

An op's end time is `max(end[rank predecessor], end[cross-stage input] + p2p) + duration`: a
longest path through a DAG (max-plus recurrence). Ops are grouped by level (the longest chain of
dependencies before them, so every input lies in an earlier level) and the sweep computes one
level at a time with numpy, for one or several columns of durations at once (e.g. with and
without p2p, or many candidates of the same schedule shape). The arithmetic per op is the
sequential recurrence's, so results are identical to it, bit for bit.

Per-rank activation peaks need no times: ops on a rank run one at a time, so the in-flight count
per (rank, chunk) along the rank's op order is fixed by the schedule; its distinct count vectors
are cached per shape and the peak is a max over `counts @ act_bytes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .schedules import BWD, FWD, WGT, rank_order_arrays

__all__ = ["OpGraph", "op_graph", "sweep_end_s", "critical_exposed_s", "act_peaks"]


@dataclass(frozen=True, eq=False)
class OpGraph:
    """Ops of one (schedule, pp, m, v) in level order (within a level: by rank). Index arrays
    point into an end-time array with two extra slots: `n_ops` holds 0 (the start of the step, the
    'predecessor' of a rank's first op) and `n_ops + 1` holds -inf (the input of an op without a
    cross-stage input)."""

    n_ops: int
    stages: int
    rank: np.ndarray        # per op: its rank
    kind: np.ndarray        # FWD / BWD / WGT
    stage: np.ndarray       # virtual stage j
    micro_batch: np.ndarray
    key: np.ndarray         # kind * stages + stage: index into the per-call duration table
    prev: np.ndarray        # rank predecessor (n_ops if none)
    dep: np.ndarray         # cross-stage input (n_ops + 1 if none)
    hop: np.ndarray         # boundary its transfer crosses (stages - 1, a zero slot, if none)
    levels: tuple[tuple[int, int, np.ndarray, np.ndarray], ...]   # (start, stop, prev, dep) per level
    rank_ops: tuple[np.ndarray, ...]     # per rank: its ops in run order
    last_op: np.ndarray                  # per rank: its last op
    in_flight: tuple[int, ...]           # per rank: peak (micro-batch, chunk) pairs held
    count_rows: tuple[np.ndarray, ...]   # per rank: distinct in-flight counts per chunk, (rows, v)

    def quads(self) -> list[tuple[int, int, int, int]]:
        """(prev, dep, key, hop) of every op as a Python list (cached), for the plain-loop sweep."""
        hit = self.__dict__.get("_quads")
        if hit is None:
            hit = list(zip(self.prev.tolist(), self.dep.tolist(), self.key.tolist(), self.hop.tolist(), strict=True))
            object.__setattr__(self, "_quads", hit)
        return hit


@lru_cache(maxsize=64)
def op_graph(schedule: str, pp: int, m: int, v: int) -> OpGraph:
    """The level-ordered op graph of a schedule shape (cached; about 10 ms at pp=64, m=256)."""
    kind, stage, mb = rank_order_arrays(schedule, pp, m, v)
    stages, per_rank = pp * v, kind.shape[1]
    n = pp * per_rank
    last = stages - 1
    ident = (kind * stages + stage) * m + mb          # unique id of every op: (kind, stage, mb)
    n_ids = 3 * stages * m
    # inputs by id: F(j, i) <- F(j-1, i) over boundary j-1; B(j, i) <- B(j+1, i) over boundary j;
    # same-rank inputs (last stage's F before its B, B before W) only order the levels
    k_, j_, i_ = kind.ravel(), stage.ravel(), mb.ravel()
    cross = np.full(n_ids, -1, np.int64)
    hop = np.full(n_ids, last, np.int64)
    f_in = (k_ == FWD) & (j_ > 0)
    b_in = (k_ == BWD) & (j_ < last)
    ids = ident.ravel()
    cross[ids[f_in]] = ids[f_in] - m
    hop[ids[f_in]] = j_[f_in] - 1
    cross[ids[b_in]] = ids[b_in] + m
    hop[ids[b_in]] = j_[b_in]
    inp = cross.copy()                                # every op has at most one input
    b_last, w_op = (k_ == BWD) & (j_ == last), k_ == WGT
    inp[ids[b_last]] = ids[b_last] - stages * m       # F of the same (stage, micro-batch)
    inp[ids[w_op]] = ids[w_op] - stages * m           # B of the same (stage, micro-batch)
    rnd = _levels(ident, inp, n_ids, (schedule, pp, m, v))
    rank_of = np.repeat(np.arange(pp), per_rank)
    level_of = rnd[ids]                               # ids are rank-major: a stable sort keeps rank order
    order = np.argsort(level_of.astype(np.int16) if level_of.max() < 2 ** 15 else level_of, kind="stable")
    pos = np.empty(n_ids, np.int64)
    pos[ids[order]] = np.arange(n)
    posmat = pos[ident]                               # (pp, per_rank): level position of each op
    prev = np.full(n, n, np.int64)
    prev[posmat[:, 1:].ravel()] = posmat[:, :-1].ravel()
    sid = ids[order]
    dep = np.where(cross[sid] >= 0, pos[np.maximum(cross[sid], 0)], n + 1)
    counts = np.bincount(rnd[sid])
    bounds = np.concatenate([[0], np.cumsum(counts)])
    key, hop_l = (k_ * stages + j_)[order], hop[sid]
    levels = tuple((a, b, prev[a:b], dep[a:b]) for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
    in_flight, rows = _count_rows(kind, stage, pp, v, free_kind=WGT if schedule == "zero-bubble" else BWD)
    graph = OpGraph(n_ops=n, stages=stages, rank=rank_of[order], kind=k_[order], stage=j_[order],
                    micro_batch=i_[order], key=key, prev=prev, dep=dep, hop=hop_l,
                    levels=levels, rank_ops=tuple(posmat), last_op=posmat[:, -1].copy(), in_flight=in_flight,
                    count_rows=rows)
    return graph


def _levels(ident: np.ndarray, inp: np.ndarray, n_ids: int, shape: tuple) -> np.ndarray:
    """Level of every op id: each round, every rank runs its next op if its input ran in an
    earlier round, so an op's round is 1 + the latest of its rank predecessor's and its input's."""
    pp, per_rank = ident.shape
    width = per_rank + 1                              # each rank's ops, then a stuck slot
    n_pos = pp * width
    done, stuck = n_pos, n_pos + 1
    pos_of = np.empty(n_ids, np.int64)
    pos_of[ident.ravel()] = (np.arange(pp)[:, None] * width + np.arange(per_rank)).ravel()
    inp_pos = np.full((pp, width), stuck, np.int64)   # a finished rank waits on `stuck` forever
    src = inp[ident]
    inp_pos[:, :-1] = np.where(src < 0, done, pos_of[np.maximum(src, 0)])
    inp_pos = np.append(inp_pos.ravel(), [done, stuck])
    rnd = np.full(n_pos + 2, np.iinfo(np.int64).max, np.int64)
    rnd[done] = -1                                    # "no input": ran before round 0
    pos = np.arange(pp) * width
    end_sum, r, seen = int((pos + per_rank).sum()), 0, -1
    while True:
        ok = rnd[inp_pos[pos]] < r
        rnd[pos[ok]] = r
        pos += ok
        r += 1
        if r % 32 == 0:                               # progress check every 32 rounds
            now = int(pos.sum())
            if now == end_sum:
                break
            if now == seen:
                raise AssertionError(f"{shape} deadlocked")   # our invariant: the schedules are valid
            seen = now
    out = np.full(n_ids + 2, np.iinfo(np.int64).max, np.int64)
    out[ident.ravel()] = rnd[:n_pos].reshape(pp, width)[:, :-1].ravel()
    return out


def _count_rows(kind: np.ndarray, stage: np.ndarray, pp: int, v: int, *,
                free_kind: int) -> tuple[tuple[int, ...], tuple[np.ndarray, ...]]:
    """Per rank: peak in-flight count, and the distinct per-chunk in-flight counts right after each
    forward (where every peak is reached). A forward adds one pair to its chunk; the backward
    (under zero-bubble the W) frees it."""
    if v == 1:                  # one chunk: the peak count is all there is (all ranks at once)
        count = np.cumsum((kind == FWD).astype(np.int64) - (kind == free_kind), axis=1)
        peak = count.max(axis=1, initial=0).tolist()
        return tuple(peak), tuple(np.array([[float(x)]]) for x in peak)
    peaks, rows = [], []
    steps = np.arange(kind.shape[1])
    for r in range(pp):
        is_fwd = kind[r] == FWD
        delta = np.zeros((kind.shape[1], v), np.int64)
        delta[steps, stage[r] // pp] = is_fwd.astype(np.int64) - (kind[r] == free_kind)
        after_fwd = np.cumsum(delta, axis=0)[is_fwd]
        if (int(after_fwd.max()) + 1) ** v >= 2 ** 62:
            distinct = np.unique(after_fwd, axis=0)
        else:   # distinct rows via one integer key per row (counts are < base)
            base = int(after_fwd.max()) + 1
            codes = after_fwd @ (base ** np.arange(v, dtype=np.int64))
            distinct = after_fwd[np.unique(codes, return_index=True)[1]]
        peaks.append(int(distinct.sum(axis=1).max()))
        rows.append(distinct.astype(float))
    return tuple(peaks), tuple(rows)


def sweep_end_s(graph: OpGraph, dur_s: np.ndarray, p2p_s: np.ndarray) -> np.ndarray:
    """End time of every op for K columns at once: `dur_s` (K, 3*stages), the duration of an op of
    kind k on stage j at [:, k*stages + j]; `p2p_s` (K, stages), one transfer over boundary j at
    [:, j] (the last entry is unused). Returns (n_ops + 2, K): the ends in level order, then the
    two slots 0 and -inf."""
    cols, n = dur_s.shape[0], graph.n_ops
    if cols == 1 and n < _PY_OPS_PER_LEVEL * len(graph.levels):
        end = _sweep_lists(graph, dur_s[0].tolist(), p2p_s[0].tolist())
        return np.fromiter(end, float, n + 2)[:, None]
    dur, cop = dur_s.T[graph.key], p2p_s.T[graph.hop]   # per op (level order) x column
    if cols == 1:
        dur, cop = dur.ravel(), cop.ravel()
    end = np.empty((n + 2, cols) if cols > 1 else n + 2)
    end[n] = 0.0
    end[n + 1] = -np.inf
    maximum, take = np.maximum, end.take         # the method: np.take's Python wrapper costs more
    for a, b, prev, dep in graph.levels:   # rows of the 2-d array for K > 1: take(axis=0) is fastest
        x = take(dep, 0)
        x += cop[a:b]
        maximum(x, take(prev, 0), out=x)
        x += dur[a:b]
        end[a:b] = x
    return end if cols > 1 else end[:, None]


_PY_OPS_PER_LEVEL = 16   # below this many ops per level a plain loop beats numpy's per-call cost


def _sweep_lists(graph: OpGraph, dur: list[float], p2p: list[float]) -> list[float]:
    """`sweep_end_s` for one column as a plain loop over the level order (same arithmetic);
    `dur`/`p2p` are the column's duration and transfer tables."""
    n = graph.n_ops
    end = [0.0] * (n + 2)
    end[n + 1] = -math.inf
    for i, (p, d, k, h) in enumerate(graph.quads()):
        t = end[p]
        x = end[d] + p2p[h]
        if x > t:
            t = x
        end[i] = t + dur[k]
    return end


def critical_exposed_s(graph: OpGraph, end_s: np.ndarray, p2p_s: np.ndarray, rank: int) -> float:
    """Time `rank` waited on transfers in flight: per op, the part of its input's arrival
    (producer end + p2p) after both the rank got free and the producer finished; summed in run order.
    `end_s`: one column of `sweep_end_s`; `p2p_s`: that column's per-boundary transfer times."""
    ops = graph.rank_ops[rank]
    t, pe = end_s[graph.prev[ops]], end_s[graph.dep[ops]]
    ready = pe + p2p_s[graph.hop[ops]]
    waited = np.where(ready > t, ready - np.maximum(pe, t), 0.0)
    return float(np.cumsum(waited)[-1])


def act_peaks(graph: OpGraph, act_bytes: np.ndarray) -> tuple[float, ...]:
    """Per rank: peak activation bytes held, given `act_bytes` per (virtual) stage."""
    pp = len(graph.count_rows)
    return tuple(float((rows @ act_bytes[r::pp]).max()) for r, rows in enumerate(graph.count_rows))
