"""The planner's two ways of pricing candidates, both through the cost model (no formula lives here):

- `bulk_scores`: every candidate at once on arrays with the code `costmodel.estimate_batch` runs
  (closed-form pipeline `costmodel.step.step_costs`; even or fractional stage splits), with lower
  bounds on what the exact model says for the plan the planner returns;
- `planner.exact.ExactScorer`: one candidate through `costmodel.estimate` (even and balanced splits).

Lower bounds where the exact split differs from the closed form's (uneven layer counts, or a
balanced split that beats the even one): the balanced split's per-rank times give a provable bound
on the simulated step (`planner.bounds`); peak memory >= the first/last rank's closed-form peak
scaled by its share of blocks, loosened by `MEMORY_SLACK`. tests/test_planner_bounds.py checks the
bounds against the exact scorer, tests/test_planner_search.py the search against exhaustive exact
scoring."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from typing import Any

import numpy as np

from costmodel.comm_grouped import GroupedComm
from costmodel.estimate import comm_model, step_context
from costmodel.specs import ClusterSpec, ModelSpec, ParallelPlan, TrainingSpec
from costmodel.step import Knobs, step_costs
from costmodel.step_rows import take_knobs, take_units

from .bounds import changed_lb_s, split_layouts, unique_rows
from .space import Space

__all__ = ["bulk_scores", "grouped_knobs", "zero_table", "MEMORY_SLACK"]

MEMORY_SLACK = 0.10
"""Allowance for the event simulator's peak memory vs the closed form's when bounding a changed split."""


_TABLE_KNOBS = ("pp", "dp", "tp", "cp", "placement", "mb", "v", "schedule", "recompute", "sp")
"""Every knob but ZeRO, pp first: a table column is one distinct combination of these."""


def _codes(cols: list[np.ndarray]) -> np.ndarray:
    """One int64 per row, equal for equal rows of `cols` (small non-negative integers), ordered
    like the rows' tuples: mixed-radix digits, re-densified (np.unique) before they could overflow."""
    code = np.zeros(cols[0].shape[0], dtype=np.int64)
    radix = 1
    for col in cols:
        col = col.astype(np.int64, copy=False)
        base = int(col.max()) + 1 if col.size else 1
        if radix * base >= 1 << 62:
            _, code = np.unique(code, return_inverse=True)
            code, radix = code.ravel(), int(code.max()) + 1
        code, radix = code * base + col, radix * base
    return code


def zero_table(space: Space) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(first, column, zeros, zpos): the bulk pass prices a table whose columns are the distinct
    combinations of every knob but ZeRO (`_TABLE_KNOBS`; `first`: a row of each, columns sorted by
    pp, so each depth is a contiguous range) and whose rows are the ZeRO stages present (`zeros`).
    Candidate i is cell (zpos[i], column[i]). Only the optimizer states, the ZeRO-3 gather buffer and
    the data-parallel time depend on ZeRO, so everything else is priced once per column."""
    c = space.columns
    _, first, column = np.unique(_codes([c[name] for name in _TABLE_KNOBS]), return_index=True,
                                 return_inverse=True)
    present = np.bincount(c["zero"])
    zeros = np.flatnonzero(present)
    zpos = (np.cumsum(present > 0) - 1)[c["zero"]]
    return first, column.ravel(), zeros, zpos


@lru_cache(maxsize=8192)
def _group_plan(dp: int, tp: int, pp: int, cp: int, placement: tuple[str, ...]) -> ParallelPlan:
    """The ParallelPlan of a degree group (for its CommModel; cached, plans are frozen)."""
    return ParallelPlan(dp=dp, tp=tp, pp=pp, cp=cp, placement=placement)


def grouped_knobs(cluster: ClusterSpec, space: Space, rows: np.ndarray, pp: int, *, calibration: Any,
                  topology: Any) -> tuple[Knobs, GroupedComm]:
    """Knobs (dp/tp/cp per row, pp scalar) and the GroupedComm of candidates `rows` (all of depth
    pp): one memoized CommModel per distinct (dp, tp, cp, placement)."""
    c = space.columns
    keys = np.stack([c["dp"][rows], c["tp"][rows], c["cp"][rows], c["placement"][rows]], axis=1)
    uniq, inverse = unique_rows(keys)
    comms = [comm_model(cluster, _group_plan(dp, tp, pp, cp, space.placements[pl]), topology=topology,
                        calibration=calibration) for dp, tp, cp, pl in uniq.tolist()]
    k = Knobs(dp=c["dp"][rows], tp=c["tp"][rows], pp=pp, cp=c["cp"][rows], mb=c["mb"][rows], v=c["v"][rows],
              schedule=c["schedule"][rows], zero=c["zero"][rows], recompute=c["recompute"][rows],
              sp=c["sp"][rows].astype(np.int64))
    return k, GroupedComm(comms, inverse)


def _bulk_figures(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, space: Space,
                  table: tuple, rebalance: bool, *, calibration: Any, topology: Any,
                  on_group: Callable[[int], Any] | None) -> dict[str, np.ndarray]:
    """Closed-form figures of every cell of the `zero_table` (ZeRO stages x columns), one
    `step_costs` call per pipeline depth pp (a column's dp, tp, cp, placement priced by a
    `GroupedComm`, ZeRO a (stages, 1) column that broadcasts): `step_time_s`, `peak_bytes`,
    `peak_bytes_lb` and `step_time_s_lb` (see `bulk_scores`); where the split changes and the cell
    may fit, the bound on the balanced split's exact step time (`planner.bounds.changed_lb_s`).

    This is `costmodel.estimate_batch`'s path (the same `step_context`, `comm_model`, `step_costs`),
    extended to what the planner needs and it does not take: the placement column and layer counts
    that do not divide evenly (`step_costs` then prices the fractional split, L/pp blocks per rank)."""
    first, column, zeros, _ = table
    shape = (zeros.size, first.size)
    out = {k: np.full(shape, np.nan) for k in ("step_time_s", "peak_bytes", "peak_bytes_lb")}
    split_lb = np.zeros(shape)
    cols = space.subset(first)
    changed, mu0, mul, layouts = split_layouts(model, training, cols, rebalance)
    ctx = step_context(model, cluster, training, calibration=calibration)
    cap = cluster.gpu.hbm_bytes
    pp_col = cols["pp"]
    cuts = np.flatnonzero(np.diff(pp_col)) + 1
    per_column = np.bincount(column, minlength=first.size) if on_group is not None else None
    for a, b in zip(np.concatenate([[0], cuts]).tolist(), np.concatenate([cuts, [first.size]]).tolist(), strict=True):
        pp = int(pp_col[a])
        k, comm = grouped_knobs(cluster, space, first[a:b], pp, calibration=calibration, topology=topology)
        k = replace(k, zero=zeros[:, None])
        res = step_costs(ctx, k, comm)
        peak = np.broadcast_to(res["peak_bytes"], (zeros.size, b - a))
        out["step_time_s"][:, a:b] = res["step_time_s"]
        out["peak_bytes"][:, a:b] = peak
        ch = changed[a:b]
        split_peak = np.maximum(res["_ranks"][0]["peak"] * mu0[a:b],
                                res["_ranks"][-1]["peak"] * mul[a:b]) * (1 - MEMORY_SLACK)
        peak_lb = np.where(ch, np.minimum(peak, split_peak), peak)
        out["peak_bytes_lb"][:, a:b] = peak_lb
        sel = ch & (peak_lb <= cap)    # the other cells get no plan from the exact scorer
        sc = np.flatnonzero(sel.any(axis=0))
        if sc.size:
            units = take_units(res["_units"], sc)
            m = np.broadcast_to(res["num_micro_batches"], (b - a,))[sc]
            lb = changed_lb_s(ctx, take_knobs(k, sc), comm.take(sc), units, m, layouts)
            split_lb[:, a + sc] = np.where(sel[:, sc], lb, 0.0)
        if on_group is not None:
            on_group(int(per_column[a:b].sum()))
    divides = model.total_layers % (cols["pp"] * cols["v"]) == 0   # the exact scorer also tries the even split
    times = out["step_time_s"]
    split = np.where(divides, np.minimum(times, split_lb), split_lb)
    out["step_time_s_lb"] = np.where(changed, split, times)
    return out


def bulk_scores(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, space: Space, *,
                calibration: Any = None, topology: Any = None, rebalance: bool = False,
                on_chunk: Callable[[int], Any] | None = None) -> dict[str, np.ndarray]:
    """Bulk figures of every candidate: `step_time_s`, `peak_bytes` (closed form, even or fractional
    split) and lower bounds `step_time_s_lb`, `peak_bytes_lb` on the exact figures of the plan the
    exact scorer returns (equal to the closed form where the split does not change). Where
    `peak_bytes_lb` exceeds the GPU's memory no variant fits, the exact scorer returns no plan, and
    `step_time_s_lb` is the trivial bound 0 (not worth pricing: the search rejects them as 'oom')."""
    table = zero_table(space)
    t = _bulk_figures(model, cluster, training, space, table, rebalance, calibration=calibration,
                      topology=topology, on_group=on_chunk)
    first, column, _, zpos = table
    cell = zpos * first.size + column
    return {key: t[key].ravel()[cell] for key in ("step_time_s", "peak_bytes", "step_time_s_lb", "peak_bytes_lb")}
