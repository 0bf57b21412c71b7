"""The planner's two ways of pricing candidates, both through the cost model (no formula lives here):

- `bulk_scores`: every candidate at once on arrays with the code `costmodel.estimate_batch` runs
  (closed-form pipeline `costmodel.step.costs.step_costs`, in its phases; even or fractional stage
  splits), with lower bounds on what the exact model says for the plan the planner returns. The
  candidates are priced as a table (`zero_table`): one column per distinct combination of every
  knob but ZeRO, one row per ZeRO stage, because ZeRO changes only the model states, the ZeRO-3
  gather buffer and the data-parallel time; everything else is priced once per column, the rest
  on the (stages x columns) table, and each candidate reads its cell (same figures, bit for bit,
  as pricing each candidate: tests/test_planner_search.py);
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

from costmodel.network.comm_grouped import GroupedComm
from costmodel.specs import ClusterSpec, ModelSpec, ParallelPlan, TrainingSpec
from costmodel.step.costs import Knobs, assemble_step, pipeline_phase, unit_costs
from costmodel.step.estimate import comm_model, step_context
from costmodel.step.rows import at_rows as _at
from costmodel.step.rows import take_knobs, take_units

from .bounds import changed_lb_s, split_layouts, unique_rows
from .space import Space

__all__ = ["bulk_scores", "zero_table", "MEMORY_SLACK", "CHUNK_COLUMNS"]

CHUNK_COLUMNS = 8192
"""Table columns per `assemble_step` / `changed_lb_s` call at most: bounds the size of the (ZeRO
stages x columns) and (columns x pp) temporaries of a big depth (same figures for any size)."""

MEMORY_SLACK = 0.10
"""Allowance for the event simulator's peak memory vs the closed form's when bounding a changed split."""


_TABLE_KNOBS = ("pp", "schedule", "dp", "tp", "cp", "ep", "placement", "mb", "v", "recompute", "sp")
"""Every knob but ZeRO: a table column is one distinct combination of these. Columns are sorted by
depth, then schedule (`planner.bounds` takes zero-bubble columns as a slice)."""


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
    key = space.zero_key
    if key is not None and key.size and int(key.max()) < 8 * key.size + (1 << 16):
        # build_space's key: a lookup table (no sort of the rows), columns then sorted as _TABLE_KNOBS
        seen = np.zeros(int(key.max()) + 1, dtype=bool)
        seen[key] = True
        dense = np.cumsum(seen, dtype=np.int64 if seen.size >= 1 << 31 else np.int32)
        dense -= 1
        column = dense[key]
        first = np.empty(int(dense[-1]) + 1, dtype=np.int64)
        first[column] = np.arange(key.size)
        order = np.argsort(c["pp"][first] * (int(c["schedule"].max()) + 1) + c["schedule"][first], kind="stable")
        first = first[order]
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        column = rank[column]
    else:
        _, first, column = np.unique(_codes([c[name] for name in _TABLE_KNOBS]), return_index=True,
                                     return_inverse=True)
    present = np.bincount(c["zero"])
    zeros = np.flatnonzero(present)
    zpos = (np.cumsum(present > 0) - 1)[c["zero"]]
    return first, column.ravel(), zeros, zpos


@lru_cache(maxsize=8192)
def _group_plan(dp: int, tp: int, pp: int, cp: int, ep: int, placement: tuple[str, ...]) -> ParallelPlan:
    """The ParallelPlan of a degree group (for its CommModel; cached, plans are frozen)."""
    return ParallelPlan(dp=dp, tp=tp, pp=pp, cp=cp, ep=ep, placement=placement)


def _table_knobs(cluster: ClusterSpec, space: Space, cols: dict[str, np.ndarray], zeros: np.ndarray, *,
                 calibration: Any, topology: Any) -> tuple[Knobs, GroupedComm]:
    """Knobs of the table columns `cols` (every knob a per-column array, ZeRO the (stages, 1) column
    `zeros`, pp to be set per depth) and their GroupedComm: one memoized CommModel per distinct
    (dp, tp, pp, cp, ep, placement)."""
    keys = np.stack([cols["pp"], cols["dp"], cols["tp"], cols["cp"], cols["ep"], cols["placement"]], axis=1)
    uniq, inverse = unique_rows(keys)
    comms = [comm_model(cluster, _group_plan(dp, tp, pp, cp, ep, space.placements[pl]), topology=topology,
                        calibration=calibration) for pp, dp, tp, cp, ep, pl in uniq.tolist()]
    k = Knobs(dp=cols["dp"], tp=cols["tp"], pp=0, cp=cols["cp"], mb=cols["mb"], v=cols["v"],
              schedule=cols["schedule"], zero=zeros[:, None], recompute=cols["recompute"],
              sp=cols["sp"].astype(np.int64), ep=cols["ep"])
    return k, GroupedComm(comms, inverse)


def _depths(pp_col: np.ndarray) -> list[tuple[int, int, int]]:
    """(pp, start, stop) of each depth's contiguous range of a pp-sorted column."""
    cuts = np.concatenate([[0], np.flatnonzero(np.diff(pp_col)) + 1, [pp_col.size]]).tolist()
    return [(int(pp_col[a]), a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def _bulk_figures(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, space: Space,
                  table: tuple, rebalance: bool, *, calibration: Any, topology: Any,
                  on_group: Callable[[int], Any] | None) -> dict[str, np.ndarray]:
    """Closed-form figures of every cell of the `zero_table` (ZeRO stages x columns), by
    `costmodel.step.costs.step_costs`'s code in its phases: block, embedding and head costs for all columns
    (`unit_costs`), the pipeline per depth pp (`pipeline_phase`), then memory, data-parallel and
    optimizer time of every column at once (`assemble_step`, pp per column, ZeRO a (stages, 1) column
    that broadcasts); a column's dp, tp, cp and placement priced by one `GroupedComm`. Returns
    `step_time_s`, `peak_bytes`, `peak_bytes_lb`, `step_time_s_lb` (see `bulk_scores`); where the
    split changes and the cell may fit, the bound on the balanced split's exact step time
    (`planner.bounds.changed_lb_s`, per depth).

    This is `costmodel.estimate_batch`'s path (the same `step_context`, `comm_model`, `step_costs`),
    extended to what the planner needs and it does not take: the placement column and layer counts
    that do not divide evenly (`step_costs` then prices the fractional split, L/pp blocks per rank)."""
    first, column, zeros, _ = table
    n = first.size
    cols = space.subset(first)
    changed, mu0, mul, layouts = split_layouts(model, training, cols, rebalance)
    ctx = step_context(model, cluster, training, calibration=calibration)
    cap = cluster.gpu.hbm_bytes
    k_all, comm_all = _table_knobs(cluster, space, cols, zeros, calibration=calibration, topology=topology)
    m_all = ctx.global_batch // (k_all.dp * k_all.mb)
    # blocks and ends read pp only as pp > 1 (a tied head's weights): one pricing for every column
    # as if deep; with a tied head, depth-1 columns (first in the table) are priced again as such
    units_all = unit_costs(ctx, replace(k_all, pp=2), comm_all)
    shape = (zeros.size, n)
    out = {key: np.empty(shape) for key in ("step_time_s", "peak_bytes", "peak_bytes_lb")}
    split_lb = np.zeros(shape)
    per_column = np.bincount(column, minlength=n) if on_group is not None else None
    for pp, a, b in _depths(cols["pp"]):
        k, comm = replace(take_knobs(k_all, slice(a, b)), pp=pp), comm_all.take(slice(a, b))
        tied_head = pp == 1 and ctx.shape.tie   # depth 1 with a tied head: the head holds no weights of its own
        units = unit_costs(ctx, k, comm) if tied_head else take_units(units_all, slice(a, b))
        m = m_all[a:b]
        first_rank, last_rank, busiest, pp_s, bubble = pipeline_phase(ctx, k, comm, m, units)
        ends = (first_rank, last_rank) if pp > 1 else (first_rank,)
        for lo in range(0, b - a, CHUNK_COLUMNS):   # memory-bound array passes: keep them in cache
            c = slice(lo, min(lo + CHUNK_COLUMNS, b - a))
            kc, cc, uc = take_knobs(k, c), comm.take(c), take_units(units, c)
            res = assemble_step(ctx, kc, cc, m[c], uc, tuple(_at_rows(e, c) for e in ends), _at_rows(busiest, c),
                                _at(pp_s, c), _at(bubble, c), memory_breakdown=False)
            t = slice(a + c.start, a + c.stop)
            out["step_time_s"][:, t] = res["step_time_s"]
            peak = out["peak_bytes"][:, t] = res["peak_bytes"]
            ch = changed[t]
            split_peak = np.maximum(res["_ranks"][0]["peak"] * mu0[t],
                                    res["_ranks"][-1]["peak"] * mul[t]) * (1 - MEMORY_SLACK)
            peak_lb = out["peak_bytes_lb"][:, t] = np.where(ch, np.minimum(peak, split_peak), peak)
            sel = ch & (peak_lb <= cap)    # the other cells get no plan from the exact scorer
            sc = np.flatnonzero(sel.any(axis=0))
            if sc.size:
                lb = changed_lb_s(ctx, take_knobs(kc, sc), cc.take(sc), take_units(uc, sc), m[c][sc], layouts,
                                  rows_distinct=True)
                split_lb[:, a + c.start + sc] = np.where(sel[:, sc], lb, 0.0)
        if on_group is not None:
            on_group(int(per_column[a:b].sum()))
    divides = model.total_layers % (cols["pp"] * cols["v"]) == 0   # the exact scorer also tries the even split
    times = out["step_time_s"]
    split = np.where(divides, np.minimum(times, split_lb), split_lb)
    out["step_time_s_lb"] = np.where(changed, split, times)
    return out


def _at_rows(d: dict[str, Any], rows: slice) -> dict[str, Any]:
    """A rank dict's per-row values at `rows` (`costmodel.step.costs.RANK_KEYS` / `CRIT_KEYS` and the rest)."""
    return {key: _at(value, rows) for key, value in d.items()}


def bulk_scores(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, space: Space, *,
                calibration: Any = None, topology: Any = None, rebalance: bool = False,
                on_chunk: Callable[[int], Any] | None = None) -> dict[str, np.ndarray]:
    """Bulk figures of every candidate: `step_time_s`, `peak_bytes` (closed form, even or fractional
    split) and lower bounds `step_time_s_lb`, `peak_bytes_lb` on the exact figures of the plan the
    exact scorer returns (equal to the closed form where the split does not change). Where
    `peak_bytes_lb` exceeds the GPU's memory no variant fits, the exact scorer returns no plan, and
    `step_time_s_lb` is the trivial bound 0 (not worth pricing: the search rejects them as 'oom')."""
    keys = ("step_time_s", "peak_bytes", "step_time_s_lb", "peak_bytes_lb")
    if len(space) == 0:
        return {key: np.zeros(0) for key in keys}
    table = zero_table(space)
    t = _bulk_figures(model, cluster, training, space, table, rebalance, calibration=calibration,
                      topology=topology, on_group=on_chunk)
    first, column, _, zpos = table
    cell = zpos * first.size + column
    return {key: t[key].ravel()[cell] for key in keys}
