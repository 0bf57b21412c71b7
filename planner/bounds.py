"""Lower bounds on the exact step time of candidates whose layer split changes (`split_layouts`,
`changed_lb_s`): the planner re-scores a candidate exactly only while its bound can still beat
the k-th best, so tighter bounds mean fewer event simulations.

Where the layers do not divide pp*v (or `rebalance` asks for it) the exact scorer
(`planner.exact.ExactScorer`) prices `planner.balance.balanced_split`'s split with the event
simulation of `costmodel.pipeline_sim`. That split depends only on (pp, v, recompute, micro-batch),
so its per-rank block counts are known here; with the per-block costs of the bulk pass they give
every rank's per-micro-batch forward/backward exactly as `costmodel.estimate` builds its stages,
and from those a provable bound on the simulated makespan (`pipeline_lb_s`) plus what the step adds
after the pipeline (`end_ranks_rest_s`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from costmodel.params import model_shape
from costmodel.specs import ModelSpec, ParallelPlan, TrainingSpec
from costmodel.step import Knobs, collective_s, p2p_time_s, rank_state
from costmodel.step_rows import PIPELINE_KNOBS, distinct_rows, take_knobs, take_units
from costmodel.stepctx import any_set

from .balance import balanced_split
from .constraints import RECOMPUTES
from .space import Space

__all__ = ["Layout", "unique_rows", "split_layouts", "changed_lb_s", "pipeline_lb_s", "no_w_lb_s", "split_makespan_lb_s",
           "end_ranks_rest_s"]

Layout = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""(encoder blocks per rank, decoder blocks per rank, encoder blocks of chunk-0 stage j, decoder
blocks of chunk-0 stage j), each of length pp; chunk-0 stage j lives on rank j."""

_SLACK = 1 - 1e-9   # the bound and the simulator sum the same terms in different orders


def unique_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`np.unique(keys, axis=0, return_inverse=True)` for small non-negative integer columns, via one
    mixed-radix integer per row (same sorted rows and inverse, without the slow row sort)."""
    keys = np.asarray(keys, dtype=np.int64)
    if keys.shape[0] == 0:
        return keys.reshape(0, keys.shape[1]), np.zeros(0, dtype=np.int64)
    code = np.zeros(keys.shape[0], dtype=np.int64)
    for j in range(keys.shape[1]):
        code = code * (int(keys[:, j].max()) + 1) + keys[:, j]
    _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    return keys[first], inverse.ravel()


def _layout(split: tuple[int, ...], pp: int, n_enc: int, n_dec: int) -> Layout:
    """Per-rank and chunk-0 encoder/decoder block counts of a split (decoder blocks after n_enc, as
    `costmodel.estimate`'s simulator path counts them)."""
    layers = n_enc + n_dec
    counts = np.asarray(split, dtype=float)
    start = np.concatenate([[0.0], np.cumsum(counts)[:-1]])
    nd = np.clip(np.minimum(start + counts, layers) - np.maximum(start, n_enc), 0, None) if n_dec else 0 * counts
    ne = counts - nd
    return ne.reshape(-1, pp).sum(axis=0), nd.reshape(-1, pp).sum(axis=0), ne[:pp], nd[:pp]


_MEMO: dict[tuple[int, int], tuple[tuple, dict]] = {}


def _memo(model: ModelSpec, training: TrainingSpec) -> dict:
    """The balanced splits' figures already derived for (model, training) (specs are frozen; the
    entry keeps them alive so their ids stay theirs)."""
    hit = _MEMO.get((id(model), id(training)))
    if hit is None or hit[0][0] is not model or hit[0][1] is not training:
        if len(_MEMO) > 64:
            _MEMO.clear()
        hit = _MEMO[(id(model), id(training))] = ((model, training), {})
    return hit[1]


def split_layouts(model: ModelSpec, training: TrainingSpec, space: Space | dict[str, np.ndarray],
                  rebalance: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[tuple, Layout]]:
    """(changed, mu_first, mu_last, layouts) per candidate of `space` (a Space or its columns).

    `changed`: the exact scorer may use the balanced split instead of the closed form's even (or,
    layers not dividing, fractional) one. `mu_first`, `mu_last`: blocks on the first/last rank of
    the balanced split over the fractional share (capped at 1). `layouts[(pp, v, recompute, mb)]`:
    the balanced split's `Layout`, for every key of a changed candidate."""
    c = space.columns if isinstance(space, Space) else space
    n = c["pp"].shape[0]
    changed = np.zeros(n, dtype=bool)
    mu0, mul = np.ones(n), np.ones(n)
    layouts: dict[tuple, Layout] = {}
    layers = model.total_layers
    stages = c["pp"] * c["v"]
    maybe = (layers % stages != 0) | (rebalance & (stages > 1))
    if not maybe.any():
        return changed, mu0, mul, layouts
    n_dec = model_shape(model).n_dec
    keys = np.stack([c["pp"], c["v"], c["recompute"], c["mb"]], axis=1)
    uniq, inverse = unique_rows(keys[maybe])
    vals = np.ones((len(uniq), 3))
    memo = _memo(model, training)
    for j, key in enumerate(map(tuple, uniq.tolist())):
        hit = memo.get(key)
        if hit is None:
            pp, v, rc, mb = key
            plan = ParallelPlan(pp=pp, virtual_stages=v, schedule="interleaved-1f1b" if v > 1 else "1f1b",
                                recompute=RECOMPUTES[rc], micro_batch_size=mb)
            split = balanced_split(model, training, plan)
            if layers % (pp * v) == 0 and split == plan.stage_layers(layers):
                hit = memo[key] = ((0, 1, 1), None)
            else:
                share = layers / pp
                n0, nl = sum(split[0::pp]), sum(split[pp - 1::pp])
                hit = memo[key] = ((1, min(1.0, n0 / share), min(1.0, nl / share)),
                                   _layout(split, pp, layers - n_dec, n_dec))
        vals[j] = hit[0]
        if hit[1] is not None:
            layouts[key] = hit[1]
    idx = np.flatnonzero(maybe)
    changed[idx] = vals[inverse, 0] > 0
    mu0[idx], mul[idx] = vals[inverse, 1], vals[inverse, 2]
    return changed, mu0, mul, layouts


def pipeline_lb_s(f0: np.ndarray, b0: np.ndarray, w0: np.ndarray, busy: np.ndarray, tail: np.ndarray,
                  p2p_s: np.ndarray) -> np.ndarray:
    """Least makespan of the simulated pipeline (`costmodel.pipeline_sim`), rows x ranks arrays.

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
    `costmodel.step.rank_state` from that rank's blocks, forward and backward exactly as
    `costmodel.estimate` builds them), the step overhead, and the context-parallel gradient
    all-reduce (increasing in the bytes of the largest rank). Zero for encoder-decoder models."""
    if ctx.shape.n_dec:
        return np.zeros(np.shape(m))
    share = 1.0 / (2 + (k.recompute == 2))
    ovh = ctx.eff.p2p_overhead_s
    rest = []
    params = []
    for rank, n in ((0, n_first), (k.pp - 1, n_last)):
        first, last = rank == 0, rank == k.pp - 1
        ext = n * enc.tp_s + first * embed.tp_s + last * head.tp_s + n * enc.cp_s
        fwd = (n * enc.fwd_s + first * embed.fwd_s + last * head.fwd_s + ext * share
               + (k.v - last) * ovh)
        bwd = (n * (enc.bwd_s + enc.recompute_s) + first * embed.bwd_s + last * head.bwd_s
               + ext * (1 - share) + (k.v - first) * ovh)
        p = n * enc.params + first * embed.params + last * head.params
        st = rank_state(ctx, k, comm, rank, m, n, 0.0, enc, enc, fwd, bwd, p, with_memory=False)
        rest.append((st["dp"], st["opt"]))
        params.append(p)
    out = np.maximum(rest[0][0], rest[1][0]) + np.maximum(rest[0][1], rest[1][1]) + ctx.eff.step_overhead_s
    if any_set(k.cp > 1):   # rows with cp = 1 cost 0
        out = out + collective_s(ctx, comm, "cp", "all_reduce", np.maximum(*params) * ctx.grad_bytes)
    return out


def no_w_lb_s(t0: np.ndarray, busy: np.ndarray, p2p_s: np.ndarray) -> np.ndarray:
    """`pipeline_lb_s` without weight-gradient ops (GPipe, 1F1B, interleaved): tail = 0 makes the
    inner max 0 (drain_0 = 0, drain rising), and fill + drain = the exclusive prefix sum of
    t0 + 2c, t0 = f0 + b0 the chunk-0 stage's forward + backward. Fewer array passes, same value."""
    x = t0 + 2 * p2p_s[:, None]
    return (np.cumsum(x, axis=1) - x + busy).max(axis=1)


def changed_lb_s(ctx: Any, k: Knobs, comm: Any, units: tuple, m: np.ndarray, layouts: dict[tuple, Layout]) -> np.ndarray:
    """Lower bound on the exact step time of the balanced split (`layouts[(pp, v, recompute, mb)]`):
    `split_makespan_lb_s` (on the distinct rows of what the pipeline depends on,
    `costmodel.step.PIPELINE_KNOBS`) plus `end_ranks_rest_s` (every row). Exact step = makespan +
    cp gradient + max_r dp_r + max_r opt_r + overhead (its bubble is max(span0 - busy, 0) >=
    span0 - busy), so the sum is a lower bound."""
    distinct = distinct_rows(k, comm, *PIPELINE_KNOBS, repeats=2)
    if distinct is None:
        first, inverse = np.arange(np.size(m)), None
    else:
        first, inverse = distinct
    sub = take_knobs(k, first)
    keys = np.stack([sub.v, sub.recompute, sub.mb], axis=1)
    uniq, which = unique_rows(keys)
    per_key = [layouts[(k.pp, *key)] for key in uniq.tolist()]
    layout = tuple(np.stack([lay[j] for lay in per_key])[which] for j in range(4))
    span = split_makespan_lb_s(ctx, sub, comm.take(first) if hasattr(comm, "take") else comm,
                               take_units(units, first), m[first], layout)
    n_first, n_last = layout[0][:, 0] + layout[1][:, 0], layout[0][:, -1] + layout[1][:, -1]
    if inverse is not None:
        span, n_first, n_last = span[inverse], n_first[inverse], n_last[inverse]
    rest = end_ranks_rest_s(ctx, k, comm, units[0], units[2], units[3], m, n_first, n_last)
    return (span + rest) * _SLACK


def split_makespan_lb_s(ctx: Any, k: Knobs, comm: Any, units: tuple, m: np.ndarray, layout: Layout) -> np.ndarray:
    """`pipeline_lb_s` of the balanced split: per-rank and chunk-0 stage times built from `layout`
    (rows x pp block counts) and the block/end costs `units` = (enc, dec, embed, head) exactly as
    `costmodel.estimate`'s simulator path builds its stages (exposed TP/CP split between forward and
    backward, a blocking-send overhead on each send: rank r sends 2v - [r first] - [r last] times)."""
    enc, dec, embed, head = units
    ne, nd, ne0, nd0 = layout
    pp, ovh = k.pp, ctx.eff.p2p_overhead_s
    two_kinds = bool(ctx.shape.n_dec)
    v = np.asarray(k.v)
    zb = np.asarray(k.schedule) == 3
    c = np.broadcast_to(p2p_time_s(ctx, k, comm), np.shape(m))
    col = _col
    # whole per-micro-batch time of a block / the ends (forward + backward + recompute + TP/CP)
    blk_e = enc.fwd_s + enc.bwd_s + enc.recompute_s + enc.tp_s + enc.cp_s
    blk_d = dec.fwd_s + dec.bwd_s + dec.recompute_s + dec.tp_s + dec.cp_s if two_kinds else 0.0
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
    last0 = (v == 1) * 1.0     # chunk-0 stage pp-1 is the model's last stage only without interleaving
    t0 = per_rank(ne0, nd0, 2.0, 1.0, last0)
    busy = col(m) * t_rank
    span = np.empty(np.shape(m))
    plain = np.flatnonzero(~zb)
    if plain.size:
        span[plain] = no_w_lb_s(t0[plain], busy[plain], c[plain])
    z = np.flatnonzero(zb)
    if z.size:   # ZB-H1 (v = 1): split each rank's time into F, B (input gradient) and W
        share = _at(1.0 / (2 + (np.asarray(k.recompute) == 2)), z)
        ext_e = _at(enc.tp_s + enc.cp_s, z)
        f = ne[z] * col(_at(enc.fwd_s, z) + ext_e * share) + col(ovh + 0.0 * share)
        w = ne[z] * col(0.5 * _at(enc.bwd_s, z) + 0.0 * share)
        if two_kinds:
            f = f + nd[z] * col(_at(dec.fwd_s, z) + _at(dec.tp_s + dec.cp_s, z) * share)
            w = w + nd[z] * col(0.5 * _at(dec.bwd_s, z) + 0.0 * share)
        f[:, 0] += _at(embed.fwd_s, z) + _at(embed.tp_s, z) * share
        f[:, -1] += _at(head.fwd_s, z) + _at(head.tp_s, z) * share - ovh
        w[:, -1] += 0.5 * _at(head.bwd_s, z)
        mz = _at(m, z)
        tail = np.minimum(np.arange(pp)[None, :] + 1, col(mz)) * w   # rank s runs min(s+1, m) W after its last B
        span[z] = pipeline_lb_s(f, t_rank[z] - f, w, busy[z], tail, c[z])
    return span


def _at(x: Any, rows: np.ndarray) -> Any:
    """x[rows] for per-row arrays; numbers as they are."""
    return x[rows] if isinstance(x, np.ndarray) and x.ndim else x


def _col(x: Any) -> Any:
    """Per-row arrays as (rows, 1) columns, so they broadcast over ranks; numbers as they are."""
    return x[:, None] if isinstance(x, np.ndarray) and x.ndim == 1 else x
