"""The planner's two ways of pricing candidates, both through the cost model (no formula lives here):

- `bulk_scores`: every candidate at once on arrays with the code `costmodel.estimate_batch` runs
  (closed-form pipeline `costmodel.step.step_costs`; even or fractional stage splits), with lower
  bounds on what the exact model says for the plan the planner returns;
- `planner.exact.ExactScorer`: one candidate through `costmodel.estimate` (even and balanced splits).

Lower bounds where the exact split differs from the closed form's (uneven layer counts, or a
balanced split that beats the even one): step time >= m * W / pp (the busiest rank does at least the
average work; W from `costmodel.step`'s block and end costs), which holds for any split and any
schedule; peak memory >= the first/last rank's closed-form peak scaled by its share of blocks,
loosened by `MEMORY_SLACK`. tests/test_planner_search.py checks the search against exhaustive
exact scoring."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from costmodel.estimate import comm_model, step_context
from costmodel.specs import ClusterSpec, ModelSpec, ParallelPlan, TrainingSpec
from costmodel.step import Knobs, block_costs, collective_s, end_costs, rank_state, step_costs

from .balance import balanced_split
from .constraints import RECOMPUTES
from .space import Space

__all__ = ["bulk_scores", "MEMORY_SLACK"]

MEMORY_SLACK = 0.10
"""Allowance for the event simulator's peak memory vs the closed form's when bounding a changed split."""


def _unique_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _split_factors(model: ModelSpec, training: TrainingSpec, space: Space,
                   rebalance: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(changed, mu_first, mu_last, blocks) per candidate.

    `changed`: the exact scorer may use a split other than the closed form's even/fractional one.
    `mu_first`, `mu_last`: blocks on the first/last rank, balanced over fractional (capped at 1).
    `blocks`: (n, 2) blocks on the first and last rank under the balanced split (changed rows)."""
    c = space.columns
    n = len(space)
    changed = np.zeros(n, dtype=bool)
    mu0, mul = np.ones(n), np.ones(n)
    blocks = np.zeros((n, 2))
    layers = model.total_layers
    stages = c["pp"] * c["v"]
    maybe = (layers % stages != 0) | (rebalance & (stages > 1))
    if not maybe.any():
        return changed, mu0, mul, blocks
    keys = np.stack([c["pp"], c["v"], c["recompute"], c["mb"]], axis=1)
    uniq, inverse = _unique_rows(keys[maybe])
    vals = np.ones((len(uniq), 5))
    for j, (pp, v, rc, mb) in enumerate(uniq.tolist()):
        plan = ParallelPlan(pp=pp, virtual_stages=v, schedule="interleaved-1f1b" if v > 1 else "1f1b",
                            recompute=RECOMPUTES[rc], micro_batch_size=mb)
        split = balanced_split(model, training, plan)
        if layers % (pp * v) == 0 and split == plan.stage_layers(layers):
            vals[j] = (0, 1, 1, 0, 0)
            continue
        share = layers / pp
        n0, nl = sum(split[0::pp]), sum(split[pp - 1::pp])
        vals[j] = (1, min(1.0, n0 / share), min(1.0, nl / share), n0, nl)
    idx = np.flatnonzero(maybe)
    changed[idx] = vals[inverse, 0] > 0
    mu0[idx], mul[idx] = vals[inverse, 1], vals[inverse, 2]
    blocks[idx] = vals[inverse][:, 3:5]
    return changed, mu0, mul, blocks


def _pipeline_lb_s(work_s: np.ndarray, fwd_s: np.ndarray, m: np.ndarray, pp: int, v: np.ndarray,
                   schedule: np.ndarray) -> np.ndarray:
    """Least makespan of m micro-batches over pp stages of total per-micro-batch work W, for any split.

    Stage k cannot start before micro-batch 0's forward passed stages < k, and (GPipe, 1F1B: its
    last op is the last backward) cannot finish before that backward passed them again; so
    makespan >= phi * sum_{s<k} T_s + m * T_k for every k, with phi = 1 (GPipe, 1F1B) or the forward
    share of the work (zero-bubble, whose backward-weight ops may come last). Minimizing the max
    over k subject to sum T = W equalizes the terms: T_k = R_k / m, R_{k+1} = R_k (1 - phi/m), so
    makespan >= phi * W / (1 - (1 - phi/m)^pp) (= m*W/pp as phi -> 0, the average-work bound). For
    interleaved schedules (chunks spread over ranks) only the average-work bound m*W/pp is used."""
    phi = np.where(schedule == 3, np.minimum(fwd_s / work_s, 1.0), 1.0)
    chain = phi * work_s / (1 - (1 - phi / m) ** pp)
    return np.where(v == 1, np.maximum(chain, m * work_s / pp), m * work_s / pp)


def _busiest_rank_lb_s(block_s: np.ndarray, first_s: np.ndarray, last_s: np.ndarray, pp: int,
                       layers: int) -> np.ndarray:
    """Least per-micro-batch time of the busiest of pp ranks over all integer splits of `layers`
    blocks (each >= block_s) with first_s extra on rank 0 and last_s on rank pp-1 (any virtual
    stages: a rank's blocks are whole). The min-max partition (PipeDream, Narayanan et al. 2019,
    sec. 3.1) relaxed to per-rank counts: T* = least T >= max(e_k) with
    sum_k floor((T - e_k) / block)^+ >= L, found by bisection and returned from below (a valid lower bound)."""
    if pp == 1:
        return layers * block_s + first_s + last_s
    extra = np.stack([first_s, last_s] + [np.zeros_like(block_s)] * min(pp - 2, 1))
    weight = np.array([1, 1] + [pp - 2] * min(pp - 2, 1), dtype=float)[:, None]

    def enough(t: np.ndarray) -> np.ndarray:
        fit = np.floor(np.maximum(t - extra, 0.0) / block_s)
        return ((weight * np.where(t >= extra, fit, 0.0)).sum(axis=0) >= layers) & (t >= ends)

    ends = np.maximum(first_s, last_s)  # the end ranks carry their extras whatever their blocks
    lo = np.maximum((layers * block_s + first_s + last_s) / pp, ends)  # never enough below these
    hi = np.ceil(layers / pp) * block_s + ends  # always enough
    lo = np.minimum(lo, hi)
    for _ in range(48):
        mid = (lo + hi) / 2
        ok = enough(mid)
        hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
    return lo * (1 - 1e-9)


def _end_ranks_rest_s(ctx: Any, k: Knobs, comm: Any, enc: Any, embed: Any, head: Any, m: np.ndarray,
                      blocks: np.ndarray) -> np.ndarray:
    """What the exact (simulated) step adds to the pipeline makespan, bounded from below by the first
    and last rank of the balanced split: data-parallel communication and optimizer time (the exact
    step takes the max over all ranks, each priced by `costmodel.step.rank_state` from that rank's
    blocks, forward and backward exactly as `costmodel.estimate` builds them), the step overhead,
    and the context-parallel gradient all-reduce (increasing in the bytes of the largest rank).
    Zero for encoder-decoder models (blocks of two kinds; the makespan bound alone holds)."""
    if ctx.shape.n_dec:
        return np.zeros(np.shape(m))
    share = 1.0 / (2 + (k.recompute == 2))
    ovh = ctx.eff.p2p_overhead_s
    rest = []
    params = []
    for rank, n in ((0, blocks[:, 0]), (k.pp - 1, blocks[:, 1])):
        first, last = rank == 0, rank == k.pp - 1
        ext = n * enc.tp_s + first * embed.tp_s + last * head.tp_s + n * enc.cp_s
        fwd = (n * enc.fwd_s + first * embed.fwd_s + last * head.fwd_s + ext * share
               + (k.v - last) * ovh)
        bwd = (n * (enc.bwd_s + enc.recompute_s) + first * embed.bwd_s + last * head.bwd_s
               + ext * (1 - share) + (k.v - first) * ovh)
        p = n * enc.params + first * embed.params + last * head.params
        st = rank_state(ctx, k, comm, rank, m, n, 0.0, enc, enc, fwd, bwd, p, stored_act_bytes=0.0 * n)
        rest.append((st["dp"], st["opt"]))
        params.append(p)
    out = np.maximum(rest[0][0], rest[1][0]) + np.maximum(rest[0][1], rest[1][1]) + ctx.eff.step_overhead_s
    if k.cp > 1:
        out = out + collective_s(ctx, comm, "cp", "all_reduce", np.maximum(*params) * ctx.grad_bytes)
    return out * (1 - 1e-9)


def _bulk_figures(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, space: Space,
                  changed: np.ndarray, blocks: np.ndarray, *, calibration: Any, topology: Any,
                  on_group: Callable[[int], Any] | None) -> dict[str, np.ndarray]:
    """Closed-form figures of every candidate, grouped by (degrees, placement): `step_time_s`,
    `peak_bytes`, the peak of the first and last pipeline rank, and for `changed` candidates
    `work_lb_s`, the busiest rank's least possible busy time: m * W / pp, W being the whole model's
    per-micro-batch work (every block, embedding and head; `costmodel.step`'s sum_t). Any split
    leaves some rank at least the average work, so no schedule finishes sooner.

    This is `costmodel.estimate_batch`'s loop (the same `step_context`, `comm_model`, `step_costs`),
    extended to what the planner needs and it does not take: the placement column (one CommModel
    per degrees+placement) and layer counts that do not divide evenly (`step_costs` then prices the
    fractional split, L/pp blocks per rank)."""
    c = space.columns
    n = len(space)
    out = {k: np.full(n, np.nan) for k in ("step_time_s", "peak_bytes", "first_peak", "last_peak")}
    out["work_lb_s"] = np.zeros(n)
    ctx = step_context(model, cluster, training, calibration=calibration)
    sh = ctx.shape
    keys = np.stack([c["dp"], c["tp"], c["pp"], c["cp"], c["placement"]], axis=1)
    uniq, inverse = _unique_rows(keys)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    for g, (dp, tp, pp, cp, pl) in enumerate(uniq.tolist()):
        rows = order[bounds[g]:bounds[g + 1]]
        plan = ParallelPlan(dp=dp, tp=tp, pp=pp, cp=cp, placement=space.placements[pl])
        comm = comm_model(cluster, plan, topology=topology, calibration=calibration)
        k = Knobs(dp=dp, tp=tp, pp=pp, cp=cp, mb=c["mb"][rows], v=c["v"][rows], schedule=c["schedule"][rows],
                  zero=c["zero"][rows], recompute=c["recompute"][rows], sp=c["sp"][rows].astype(np.int64))
        res = step_costs(ctx, k, comm)
        out["step_time_s"][rows] = res["step_time_s"]
        out["peak_bytes"][rows] = res["peak_bytes"]
        out["first_peak"][rows] = res["_ranks"][0]["peak"]
        out["last_peak"][rows] = res["_ranks"][-1]["peak"]
        if changed[rows].any():
            enc = block_costs(ctx, k, comm, cross=False)
            dec = block_costs(ctx, k, comm, cross=True) if sh.n_dec else enc
            embed, head = end_costs(ctx, k, comm)
            work = (sh.n_enc * (enc.fwd_s + enc.bwd_s + enc.recompute_s + enc.tp_s + enc.cp_s)
                    + sh.n_dec * (dec.fwd_s + dec.bwd_s + dec.recompute_s + dec.tp_s + dec.cp_s)
                    + embed.fwd_s + embed.bwd_s + embed.tp_s + head.fwd_s + head.bwd_s + head.tp_s)
            fwd = (sh.n_enc * enc.fwd_s + sh.n_dec * dec.fwd_s + embed.fwd_s + head.fwd_s)
            m = training.global_batch_size // (dp * c["mb"][rows])
            chain = _pipeline_lb_s(work, fwd, m, pp, c["v"][rows], c["schedule"][rows])
            block = np.minimum(enc.fwd_s + enc.bwd_s + enc.recompute_s + enc.tp_s + enc.cp_s,
                               dec.fwd_s + dec.bwd_s + dec.recompute_s + dec.tp_s + dec.cp_s)
            busiest = _busiest_rank_lb_s(block + 0.0 * work, embed.fwd_s + embed.bwd_s + embed.tp_s + 0.0 * work,
                                         head.fwd_s + head.bwd_s + head.tp_s + 0.0 * work, pp, sh.num_layers)
            out["work_lb_s"][rows] = (np.maximum(chain, m * busiest)
                                      + _end_ranks_rest_s(ctx, k, comm, enc, embed, head, m, blocks[rows]))
        if on_group is not None:
            on_group(rows.size)
    return out


def bulk_scores(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, space: Space, *,
                calibration: Any = None, topology: Any = None, rebalance: bool = False,
                on_chunk: Callable[[int], Any] | None = None) -> dict[str, np.ndarray]:
    """Bulk figures of every candidate: `step_time_s`, `peak_bytes` (closed form, even or fractional
    split) and lower bounds `step_time_s_lb`, `peak_bytes_lb` on the exact figures of the plan the
    exact scorer returns (equal to the closed form where the split does not change)."""
    changed, mu0, mul, blocks = _split_factors(model, training, space, rebalance)
    b = _bulk_figures(model, cluster, training, space, changed, blocks, calibration=calibration, topology=topology,
                      on_group=on_chunk)
    times, peaks = b["step_time_s"], b["peak_bytes"]
    time_lb = np.where(changed, np.minimum(times, b["work_lb_s"]), times)
    split_peak = np.maximum(b["first_peak"] * mu0, b["last_peak"] * mul) * (1 - MEMORY_SLACK)
    peak_lb = np.where(changed, np.minimum(peaks, split_peak), peaks)
    return {"step_time_s": times, "peak_bytes": peaks, "step_time_s_lb": time_lb, "peak_bytes_lb": peak_lb}
