"""The planner's two ways of pricing candidates, both through the cost model (no formula lives here):

- `bulk_scores`: every candidate at once on arrays with the code `costmodel.estimate_batch` runs
  (closed-form pipeline `costmodel.step.step_costs`; even or fractional stage splits), turned into *lower bounds* on what the exact model says for the
  plan the planner would return (its balanced split may beat the even one, an uneven split may
  cost more or less than the fractional one);
- `ExactScorer`: one candidate through `costmodel.estimate`, with the even split (closed form) and,
  where the layers do not divide or balancing helps, the balanced split (`planner.balance`, event
  simulation); the faster variant that fits wins.

Lower bounds for split-changing variants: with per-stage work w (FLOPs weights of
`balance.layer_weights`), a split whose slowest stage is rho times the fractional-even one's cannot
make the step faster than rho times the bulk figure; memory of pipeline rank 0 scales at most with
its share of blocks (mu). Both are loosened by `SLACK` for the simulator's differences from the
closed form; tests/test_planner_search.py checks the search against exhaustive exact scoring."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from costmodel.estimate import comm_model, estimate, step_context
from costmodel.specs import ClusterSpec, ModelSpec, ParallelPlan, StepEstimate, TrainingSpec
from costmodel.step import Knobs, step_costs

from .balance import balanced_split, layer_weights, stage_costs
from .constraints import RECOMPUTES
from .space import Space

__all__ = ["bulk_scores", "ExactScorer", "TIME_SLACK", "MEMORY_SLACK"]

TIME_SLACK = 0.06
MEMORY_SLACK = 0.06
"""Relative allowances for the event simulator vs the closed form when bounding split variants."""


def _split_factors(model: ModelSpec, training: TrainingSpec, space: Space,
                   rebalance: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(changed, rho, mu_first, mu_last) per candidate.

    `changed`: the exact scorer may use a split other than the closed form's even/fractional one.
    `rho`: the balanced split's slowest pipeline rank over the fractional split's, in FLOPs weights.
    `mu_first`, `mu_last`: blocks on the first/last rank, balanced over fractional (capped at 1)."""
    c = space.columns
    n = len(space)
    changed = np.zeros(n, dtype=bool)
    rho, mu0, mul = np.ones(n), np.ones(n), np.ones(n)
    layers = model.total_layers
    stages = c["pp"] * c["v"]
    maybe = (layers % stages != 0) | (rebalance & (stages > 1))
    if not maybe.any():
        return changed, rho, mu0, mul
    keys = np.stack([c["pp"], c["v"], c["recompute"]], axis=1)
    uniq, inverse = np.unique(keys[maybe], axis=0, return_inverse=True)
    vals = np.ones((len(uniq), 4))
    for j, (pp, v, rc) in enumerate(uniq.tolist()):
        plan = ParallelPlan(pp=pp, virtual_stages=v, schedule="interleaved-1f1b" if v > 1 else "1f1b",
                            recompute=RECOMPUTES[rc])
        costs, first, last = layer_weights(model, training, plan)
        split = balanced_split(model, training, plan)
        if layers % (pp * v) == 0 and split == plan.stage_layers(layers):
            vals[j] = (0, 1, 1, 1)
            continue
        per_stage = stage_costs(split, costs, first_extra=first, last_extra=last)
        bal = max(float(per_stage[r::pp].sum()) for r in range(pp))
        frac = layers / pp * float(costs.mean()) + (max(first, last) if pp > 1 else first + last)
        share = layers / pp
        vals[j] = (1, min(1.0, bal / frac), min(1.0, sum(split[0::pp]) / share),
                   min(1.0, sum(split[pp - 1::pp]) / share))
    idx = np.flatnonzero(maybe)
    changed[idx] = vals[inverse.ravel(), 0] > 0
    rho[idx], mu0[idx], mul[idx] = (vals[inverse.ravel(), k] for k in (1, 2, 3))
    return changed, rho, mu0, mul


def _bulk_figures(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, space: Space, *,
                  calibration: Any, topology: Any, on_group: Callable[[int], Any] | None) -> tuple[np.ndarray, ...]:
    """Closed-form step time, peak bytes, and peak bytes of the first and last pipeline rank of every
    candidate, grouped by (degrees, placement).

    This is `costmodel.estimate_batch`'s loop (the same `step_context`, `comm_model` and `step_costs`),
    extended to the two things the planner needs and it does not take: the placement column (one
    CommModel per degrees+placement) and layer counts that do not divide evenly (step_costs then
    prices the fractional split L/pp blocks per rank)."""
    c = space.columns
    n = len(space)
    times, peaks, first, last = (np.full(n, np.nan) for _ in range(4))
    ctx = step_context(model, cluster, training, calibration=calibration)
    keys = np.stack([c["dp"], c["tp"], c["pp"], c["cp"], c["placement"]], axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    for g, (dp, tp, pp, cp, pl) in enumerate(uniq.tolist()):
        rows = order[bounds[g]:bounds[g + 1]]
        plan = ParallelPlan(dp=dp, tp=tp, pp=pp, cp=cp, placement=space.placements[pl])
        comm = comm_model(cluster, plan, topology=topology, calibration=calibration)
        k = Knobs(dp=dp, tp=tp, pp=pp, cp=cp, mb=c["mb"][rows], v=c["v"][rows], schedule=c["schedule"][rows],
                  zero=c["zero"][rows], recompute=c["recompute"][rows], sp=c["sp"][rows].astype(np.int64))
        res = step_costs(ctx, k, comm)
        times[rows] = res["step_time_s"]
        peaks[rows] = res["peak_bytes"]
        first[rows] = res["_ranks"][0]["peak"]   # pipeline rank 0 and the last rank
        last[rows] = res["_ranks"][-1]["peak"]
        if on_group is not None:
            on_group(rows.size)
    return times, peaks, first, last


def bulk_scores(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, space: Space, *,
                calibration: Any = None, topology: Any = None, rebalance: bool = True,
                on_chunk: Callable[[int], Any] | None = None) -> dict[str, np.ndarray]:
    """Bulk figures of every candidate: `step_time_s`, `peak_bytes` (closed form) and their lower
    bounds `step_time_s_lb`, `peak_bytes_lb` for the plan the exact scorer returns."""
    times, peaks, first, last = _bulk_figures(model, cluster, training, space, calibration=calibration,
                                              topology=topology, on_group=on_chunk)
    changed, rho, mu0, mul = _split_factors(model, training, space, rebalance)
    time_lb = np.where(changed, np.minimum(times, times * rho * (1 - TIME_SLACK)), times)
    peak_lb = np.where(changed, np.minimum(peaks, np.maximum(first * mu0, last * mul) * (1 - MEMORY_SLACK)), peaks)
    return {"step_time_s": times, "peak_bytes": peaks, "step_time_s_lb": time_lb, "peak_bytes_lb": peak_lb}


class ExactScorer:
    """Exact estimates of candidates (memoized): the best fitting split variant per candidate."""

    def __init__(self, model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, space: Space, *,
                 calibration: Any = None, topology: Any = None, rebalance: bool = True) -> None:
        self.model, self.cluster, self.training, self.space = model, cluster, training, space
        self.calibration, self.topology, self.rebalance = calibration, topology, rebalance
        self.calls = 0
        self._memo: dict[int, tuple[StepEstimate | None, StepEstimate]] = {}

    def variants(self, i: int) -> list:
        """The plans tried for candidate i: even split (when the layers divide) and balanced split."""
        base = self.space.plan(i)
        layers = self.model.total_layers
        stages = base.pp * base.virtual_stages
        out = []
        if layers % stages == 0:
            out.append(base)
        if stages > 1 and (layers % stages or self.rebalance):
            split = balanced_split(self.model, self.training, base)
            if split != base.stage_layers(layers):
                out.append(base.model_copy(update={"layers_per_stage": split}))
        return out

    def _score(self, i: int) -> tuple[StepEstimate | None, StepEstimate]:
        hit = self._memo.get(i)
        if hit is not None:
            return hit
        self.calls += 1
        ests = [estimate(self.model, self.cluster, self.training, p, calibration=self.calibration,
                         topology=self.topology) for p in self.variants(i)]
        fitting = [e for e in ests if e.fits]
        best_fit = min(fitting, key=lambda e: (e.step_time_s, e.memory.peak_bytes)) if fitting else None
        smallest = min(ests, key=lambda e: (e.memory.peak_bytes, e.step_time_s))
        self._memo[i] = (best_fit, smallest)
        return self._memo[i]

    def best(self, i: int, *, require_fit: bool = True) -> StepEstimate | None:
        """The fastest fitting variant of candidate i (None if none fits); with require_fit=False the
        variant needing the least memory."""
        best_fit, smallest = self._score(i)
        return best_fit if require_fit else smallest
