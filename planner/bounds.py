"""Lower bounds on the exact step time of candidates whose layer split changes (`split_layouts`,
`changed_lb_s`): the planner re-scores a candidate exactly only while its bound can still beat
the k-th best, so tighter bounds mean fewer event simulations.

Where the layers do not divide pp*v (or `rebalance` asks for it) the exact scorer
(`planner.exact.ExactScorer`) prices `planner.balance.balanced_split`'s split with the event
simulation of `costmodel.pipeline.sim`. That split depends only on (pp, v, recompute, micro-batch),
so its per-rank block counts are known here; with the per-block costs of the bulk pass they give
every rank's per-micro-batch forward/backward exactly as `costmodel.estimate` builds its stages,
and from those a provable bound on the simulated makespan (`pipeline_lb_s`) plus what the step adds
after the pipeline (`end_ranks_rest_s`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from costmodel.layer.blocks import W_SHARE, tp_forward_share
from costmodel.step.costs import Knobs, p2p_time_s, rank_state
from costmodel.step.rows import PIPELINE_KNOBS, distinct_rows, take_knobs, take_units
from costmodel.step.rows import at_rows as _at

from .layouts import Layout, split_layouts, unique_rows

__all__ = ["Layout", "unique_rows", "split_layouts", "changed_lb_s", "pipeline_lb_s", "no_w_lb_s", "split_makespan_lb_s",
           "end_ranks_rest_s"]

_SLACK = 1 - 1e-9   # the bound and the simulator sum the same terms in different orders
BOUND_CELLS = 32768
"""Rows x pp cells per `split_makespan_lb_s` call at most (its float temporaries then stay within a
core's L2 cache; the figures do not depend on it)."""


def pipeline_lb_s(f0: np.ndarray, b0: np.ndarray, w0: np.ndarray, busy: np.ndarray, tail: np.ndarray,
                  p2p_s: np.ndarray) -> np.ndarray:
    """Least makespan of the simulated pipeline (`costmodel.pipeline.sim`), rows x ranks arrays.

    The simulator runs each rank's ops in a fixed order, an op starting when its rank is free and
    its input arrived; so the makespan is the longest path in the op graph, and any one path bounds
    it from below. For every rank k take the path: micro-batch 0's forward through the chunk-0
    stages 0..k-1 with a transfer after each (the fill, sum_{j<k} f0_j + c); then rank k's ops from
    its first op (that forward on stage k, in all four schedules) through its last backward-input op
    (rank k's busy time `busy` minus `tail`, the ops it runs after that one); that op is the last
    micro-batch's backward of stage k (GPipe, 1F1B, ZB-H1, and interleaved with m % pp == 0: its
    backwards visit chunks in reverse, so the last is chunk 0), whose input gradient then passes
    ranks k-1..s (sum_{s<=j<k} B0_j + c, B0 = b0 - w0 the backward-input part) and is followed by
    rank s's remaining ops (`tail`: zero-bubble's deferred weight-gradient ops W). Hence

        makespan >= max_k [fill_k + busy_k - tail_k + drain_k + max_{s<=k} (tail_s - drain_s)],

    drain_k = sum_{j<k} (B0_j + c). With uniform stages and k = pp-1 it is (m + pp - 1)(f + b) for
    1F1B, the schedule's known makespan (Narayanan et al. 2021, sec. 2.2), and it never falls below
    the busiest rank's busy time (the average-work bound). `f0`, `b0`, `w0`: per-micro-batch times
    of chunk-0 stage j (on rank j); `busy`, `tail`: per rank; `p2p_s` per row."""
    c = p2p_s[:, None]
    zero = np.zeros((f0.shape[0], 1))
    fill = np.concatenate([zero, np.cumsum(f0 + c, axis=1)[:, :-1]], axis=1)
    drain = np.concatenate([zero, np.cumsum(b0 - w0 + c, axis=1)[:, :-1]], axis=1)
    after = np.maximum.accumulate(tail - drain, axis=1)
    return (fill + busy - tail + drain + after).max(axis=1)


def end_ranks_rest_s(ctx: Any, k: Knobs, comm: Any, enc: Any, embed: Any, head: Any, m: np.ndarray,
                     n_first: np.ndarray, n_last: np.ndarray) -> np.ndarray:
    """What the exact (simulated) step adds to the pipeline makespan, bounded from below by the first
    and last rank of the balanced split (n_first, n_last blocks): data-parallel communication and
    optimizer time (the exact step takes the max over all ranks, each priced by
    `costmodel.step.costs.rank_state` from that rank's blocks, forward and backward exactly as
    `costmodel.estimate` builds them; the gradient reduction over the dp x cp replicas and the
    experts' over their expert-data-parallel group are in it), and the step overhead. Zero for
    encoder-decoder models."""
    if ctx.shape.n_dec:
        return np.zeros(np.shape(m))
    share = tp_forward_share(k.recompute)
    ovh = ctx.eff.p2p_overhead_s
    rest = []
    for rank, n in ((0, n_first), (k.pp - 1, n_last)):
        first, last = rank == 0, rank == k.pp - 1
        ext = n * enc.tp_s + first * embed.tp_s + last * head.tp_s + n * enc.cp_s + n * enc.ep_s
        fwd = (n * enc.fwd_s + first * embed.fwd_s + last * head.fwd_s + ext * share
               + (k.v - last) * ovh)
        bwd = (n * (enc.bwd_s + enc.recompute_s) + first * embed.bwd_s + last * head.bwd_s
               + ext * (1 - share) + (k.v - first) * ovh)
        p = n * enc.params + first * embed.params + last * head.params
        st = rank_state(ctx, k, comm, rank, m, n, 0.0, enc, enc, fwd, bwd, p, with_memory=False)
        rest.append((st["dp"], st["opt"]))
    return np.maximum(rest[0][0], rest[1][0]) + np.maximum(rest[0][1], rest[1][1]) + ctx.eff.step_overhead_s


def no_w_lb_s(t0: np.ndarray, busy: np.ndarray, p2p_s: np.ndarray) -> np.ndarray:
    """`pipeline_lb_s` without weight-gradient ops (GPipe, 1F1B, interleaved): tail = 0 makes the
    inner max 0 (drain_0 = 0, drain rising), and fill + drain = the exclusive prefix sum of
    t0 + 2c, t0 = f0 + b0 the chunk-0 stage's forward + backward. Fewer array passes, same value."""
    x = t0 + 2 * p2p_s[:, None]
    return (np.cumsum(x, axis=1) - x + busy).max(axis=1)


def changed_lb_s(ctx: Any, k: Knobs, comm: Any, units: tuple, m: np.ndarray, layouts: dict[tuple, Layout], *,
                 rows_distinct: bool = False) -> np.ndarray:
    """Lower bound on the exact step time of the balanced split (`layouts[(pp, v, recompute, mb)]`):
    `split_makespan_lb_s` (on the distinct rows of what the pipeline depends on,
    `costmodel.step.costs.PIPELINE_KNOBS`) plus `end_ranks_rest_s` (every row). Exact step = makespan +
    max_r dp_r + max_r opt_r + overhead (its bubble is max(span0 - busy, 0) >=
    span0 - busy), so the sum is a lower bound. `rows_distinct`: as `costmodel.step.costs.step_costs`'s."""
    distinct = None if rows_distinct else distinct_rows(k, comm, *PIPELINE_KNOBS, repeats=2)
    if distinct is None:
        sub, sub_comm, sub_units, sub_m, inverse = k, comm, units, m, None
    else:
        first, inverse = distinct
        sub, sub_units, sub_m = take_knobs(k, first), take_units(units, first), m[first]
        sub_comm = comm.take(first) if hasattr(comm, "take") else comm
    uniq, which = unique_rows(np.stack([sub.v, sub.recompute, sub.mb], axis=1))
    per_key = [layouts[(k.pp, *key)] for key in uniq.tolist()]
    n, step = which.size, max(64, BOUND_CELLS // k.pp)
    if n <= step:
        span = split_makespan_lb_s(ctx, sub, sub_comm, sub_units, sub_m, per_key, which)
    else:   # rows x pp temporaries: a block of rows at a time stays in cache
        span = np.concatenate([
            split_makespan_lb_s(ctx, take_knobs(sub, r), sub_comm.take(r) if hasattr(sub_comm, "take") else sub_comm,
                                take_units(sub_units, r), sub_m[r], per_key, which[r])
            for r in (slice(lo, min(lo + step, n)) for lo in range(0, n, step))])
    n_first = np.array([lay[0][0] + lay[1][0] for lay in per_key])[which]
    n_last = np.array([lay[0][-1] + lay[1][-1] for lay in per_key])[which]
    if inverse is not None:
        span, n_first, n_last = span[inverse], n_first[inverse], n_last[inverse]
    rest = end_ranks_rest_s(ctx, k, comm, units[0], units[2], units[3], m, n_first, n_last)
    return (span + rest) * _SLACK


def split_makespan_lb_s(ctx: Any, k: Knobs, comm: Any, units: tuple, m: np.ndarray, layouts: Sequence[Layout],
                        which: np.ndarray) -> np.ndarray:
    """`pipeline_lb_s` of the balanced split: per-rank and chunk-0 stage times built from row i's
    layout `layouts[which[i]]` (block counts per rank) and the block/end costs `units` = (enc, dec,
    embed, head) exactly as `costmodel.estimate`'s simulator path builds its stages (exposed TP/CP
    split between forward and backward, a blocking-send overhead on each send: rank r sends
    2v - [r first] - [r last] times). Without interleaving (v = 1) chunk-0 stage j is rank j's only
    chunk, so its times are the rank's (same counts, two sends, the head on rank pp-1)."""
    enc, dec, embed, head = units
    two_kinds = bool(ctx.shape.n_dec)
    v = np.asarray(k.v)
    interleaved = bool((v > 1).any())

    def rows_of(j: int) -> np.ndarray | None:   # rows x pp block counts, only those needed
        if j in (1, 3) and not two_kinds:
            return None
        return np.stack([lay[j] for lay in layouts])[which]

    ne, nd = rows_of(0), rows_of(1)
    pp, ovh = k.pp, ctx.eff.p2p_overhead_s
    zb = np.asarray(k.schedule) == 3
    c = np.broadcast_to(p2p_time_s(ctx, k, comm), np.shape(m))
    col = _col
    # whole per-micro-batch time of a block / the ends (forward + backward + recompute + TP/CP/EP)
    blk_e = enc.fwd_s + enc.bwd_s + enc.recompute_s + enc.tp_s + enc.cp_s + enc.ep_s
    blk_d = dec.fwd_s + dec.bwd_s + dec.recompute_s + dec.tp_s + dec.cp_s + dec.ep_s if two_kinds else 0.0
    emb_t = embed.fwd_s + embed.bwd_s + embed.tp_s
    head_t = head.fwd_s + head.bwd_s + head.tp_s

    def per_rank(e: np.ndarray, d: np.ndarray, syncs: Any, first: Any, last: Any) -> np.ndarray:
        t = e * col(blk_e + 0.0 * m) + col(syncs * ovh + 0.0 * m)
        if two_kinds:
            t = t + d * col(blk_d)
        t[:, 0] += first * (emb_t - ovh)
        t[:, -1] += last * (head_t - ovh)
        return t

    t_rank = per_rank(ne, nd, 2 * v, 1.0, 1.0)
    if interleaved:
        last0 = (v == 1) * 1.0     # chunk-0 stage pp-1 is the model's last stage only without interleaving
        t0 = per_rank(rows_of(2), rows_of(3), 2.0, 1.0, last0)
    else:
        t0 = t_rank
    busy = col(m) * t_rank
    span = np.empty(np.shape(m))
    plain, z = _split_rows(zb)
    if plain is not None:
        span[plain] = no_w_lb_s(t0[plain], busy[plain], c[plain])
    if z is not None:   # ZB-H1 (v = 1): split each rank's time into F, B (input gradient) and W
        share = _at(tp_forward_share(np.asarray(k.recompute)), z)
        ext_e = _at(enc.tp_s + enc.cp_s + enc.ep_s, z)
        f = ne[z] * col(_at(enc.fwd_s, z) + ext_e * share) + col(ovh + 0.0 * share)
        w = ne[z] * col(W_SHARE * _at(enc.bwd_s, z) + 0.0 * share)
        if two_kinds:
            f = f + nd[z] * col(_at(dec.fwd_s, z) + _at(dec.tp_s + dec.cp_s + dec.ep_s, z) * share)
            w = w + nd[z] * col(W_SHARE * _at(dec.bwd_s, z) + 0.0 * share)
        f[:, 0] += _at(embed.fwd_s, z) + _at(embed.tp_s, z) * share
        f[:, -1] += _at(head.fwd_s, z) + _at(head.tp_s, z) * share - ovh
        w[:, -1] += W_SHARE * _at(head.bwd_s, z)
        mz = _at(m, z)
        tail = np.minimum(np.arange(pp)[None, :] + 1, col(mz)) * w   # rank s runs min(s+1, m) W after its last B
        span[z] = pipeline_lb_s(f, t_rank[z] - f, w, busy[z], tail, c[z])
    return span


def _split_rows(flag: np.ndarray) -> tuple[Any, Any]:
    """(rows where `flag` is False, rows where it is True) as slices when the flag is sorted (the
    planner's table lists zero-bubble columns last), else index arrays; None for no rows."""
    n = flag.size
    k = int(np.count_nonzero(flag))
    if k == 0 or k == n:
        return (slice(None), None) if k == 0 else (None, slice(None))
    if not flag[:n - k].any():
        return slice(0, n - k), slice(n - k, n)
    return np.flatnonzero(~flag), np.flatnonzero(flag)




def _col(x: Any) -> Any:
    """Per-row arrays as (rows, 1) columns, so they broadcast over ranks; numbers as they are."""
    return x[:, None] if isinstance(x, np.ndarray) and x.ndim == 1 else x
