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

__all__ = ["bulk_scores", "grouped_knobs", "MEMORY_SLACK"]

MEMORY_SLACK = 0.10
"""Allowance for the event simulator's peak memory vs the closed form's when bounding a changed split."""


def _pp_groups(space: Space) -> list[tuple[int, np.ndarray]]:
    """(pp, rows) for each pipeline depth in the space, rows ascending."""
    pp_col = space.columns["pp"]
    order = np.argsort(pp_col, kind="stable")
    cuts = np.flatnonzero(np.diff(pp_col[order])) + 1
    return [(int(pp_col[rows[0]]), rows) for rows in np.split(order, cuts) if rows.size]


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
                  changed: np.ndarray, mu: tuple[np.ndarray, np.ndarray], layouts: dict, *, calibration: Any,
                  topology: Any, on_group: Callable[[int], Any] | None) -> dict[str, np.ndarray]:
    """Closed-form figures of every candidate, one `step_costs` call per pipeline depth pp (dp, tp,
    cp and the placement per row, priced by a `GroupedComm`): `step_time_s`, `peak_bytes`,
    `peak_bytes_lb` (see `bulk_scores`), and for `changed` candidates that may fit `split_lb_s`, a
    lower bound on the exact step time of the balanced split (`planner.bounds.changed_lb_s`; 0 elsewhere).

    This is `costmodel.estimate_batch`'s path (the same `step_context`, `comm_model`, `step_costs`),
    extended to what the planner needs and it does not take: the placement column and layer counts
    that do not divide evenly (`step_costs` then prices the fractional split, L/pp blocks per rank)."""
    n = len(space)
    out = {k: np.full(n, np.nan) for k in ("step_time_s", "peak_bytes", "peak_bytes_lb")}
    out["split_lb_s"] = np.zeros(n)
    ctx = step_context(model, cluster, training, calibration=calibration)
    cap = cluster.gpu.hbm_bytes
    for pp, rows in _pp_groups(space):
        k, comm = grouped_knobs(cluster, space, rows, pp, calibration=calibration, topology=topology)
        res = step_costs(ctx, k, comm)
        peak = np.broadcast_to(res["peak_bytes"], rows.shape)
        out["step_time_s"][rows] = res["step_time_s"]
        out["peak_bytes"][rows] = peak
        ch = changed[rows]
        split_peak = np.maximum(res["_ranks"][0]["peak"] * mu[0][rows],
                                res["_ranks"][-1]["peak"] * mu[1][rows]) * (1 - MEMORY_SLACK)
        peak_lb = np.where(ch, np.minimum(peak, split_peak), peak)
        out["peak_bytes_lb"][rows] = peak_lb
        sel = np.flatnonzero(ch & (peak_lb <= cap))   # the others get no plan from the exact scorer
        if sel.size:
            units = take_units(res["_units"], sel)
            m = np.broadcast_to(res["num_micro_batches"], rows.shape)[sel]
            out["split_lb_s"][rows[sel]] = changed_lb_s(ctx, take_knobs(k, sel), comm.take(sel), units, m, layouts)
        if on_group is not None:
            on_group(rows.size)
    return out


def bulk_scores(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, space: Space, *,
                calibration: Any = None, topology: Any = None, rebalance: bool = False,
                on_chunk: Callable[[int], Any] | None = None) -> dict[str, np.ndarray]:
    """Bulk figures of every candidate: `step_time_s`, `peak_bytes` (closed form, even or fractional
    split) and lower bounds `step_time_s_lb`, `peak_bytes_lb` on the exact figures of the plan the
    exact scorer returns (equal to the closed form where the split does not change). Where
    `peak_bytes_lb` exceeds the GPU's memory no variant fits, the exact scorer returns no plan, and
    `step_time_s_lb` is the trivial bound 0 (not worth pricing: the search rejects them as 'oom')."""
    changed, mu0, mul, layouts = split_layouts(model, training, space, rebalance)
    b = _bulk_figures(model, cluster, training, space, changed, (mu0, mul), layouts, calibration=calibration,
                      topology=topology, on_group=on_chunk)
    times, peaks, peak_lb = b["step_time_s"], b["peak_bytes"], b["peak_bytes_lb"]
    c = space.columns
    divides = model.total_layers % (c["pp"] * c["v"]) == 0   # the exact scorer also tries the even split
    split_lb = np.where(divides, np.minimum(times, b["split_lb_s"]), b["split_lb_s"])
    time_lb = np.where(changed, split_lb, times)
    return {"step_time_s": times, "peak_bytes": peaks, "step_time_s_lb": time_lb, "peak_bytes_lb": peak_lb}
