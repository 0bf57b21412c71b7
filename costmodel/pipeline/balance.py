"""Pipeline stage balancing: split the Transformer blocks over pp*v (virtual) stages so that the slowest
stage is as fast as possible, with the embedding on the first stage and the LM head + loss on the last.

This is the min-max linear partition problem, solved exactly by dynamic programming over prefix sums
(e.g. Narayanan et al. 2019, PipeDream, section 3.1; Llama 3 Herd of Models, section 3.3.2, moves
layers off the first and last stages for the same reason):

    best[s][j] = min_{i<j} max(best[s-1][i], cost(i, j) + extra_s)

where cost(i, j) is the cost of blocks i..j-1 and extra_s the embedding (first stage) or head+loss
(last stage) cost. Each DP row is found in O(L log L) by bisection where the previous row is
non-decreasing, else by a vectorized numpy min-max over an L x L matrix (the same rows, bit for bit).

It lives in the cost model because both `costmodel.estimate` (which balances a plan whose stages do not
divide the layers, `costmodel.step.split`) and the planner (`planner.balance` re-exports it) use it."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from ..layer.flops import RECOMPUTE_CODES, layer_fwd_flops, lm_head_fwd_flops, recompute_fwd_flops
from ..layer.params import model_shape
from ..specs import ModelSpec, ParallelPlan, TrainingSpec

__all__ = ["balance_layers", "stage_costs", "layer_weights", "balanced_split"]


def stage_costs(layers_per_stage: Sequence[int], layer_costs: Sequence[float] | np.ndarray, *,
                first_extra: float = 0.0, last_extra: float = 0.0) -> np.ndarray:
    """Cost of each stage for a split (blocks in order), with the extras on the first/last stage."""
    costs = np.asarray(layer_costs, dtype=float)
    bounds = np.concatenate([[0], np.cumsum(layers_per_stage)])
    if bounds[-1] != costs.size:
        raise ValueError(f"layers_per_stage sums to {bounds[-1]} but there are {costs.size} layers")
    prefix = np.concatenate([[0.0], np.cumsum(costs)])
    out = prefix[bounds[1:]] - prefix[bounds[:-1]]
    out[0] += first_extra
    out[-1] += last_extra
    return out


def balance_layers(layer_costs: Sequence[float] | np.ndarray, num_stages: int, *, first_extra: float = 0.0,
                   last_extra: float = 0.0, min_layers: int = 1) -> tuple[int, ...]:
    """Blocks per stage minimizing the slowest stage's cost (exact DP).

    `layer_costs` holds one cost per block (any unit, e.g. seconds of forward+backward); each stage
    gets at least `min_layers` blocks. Ties are broken deterministically: walking back from the last
    stage, each stage takes the fewest blocks an optimal split allows (the LM head sits there)."""
    costs = tuple(float(c) for c in np.asarray(layer_costs, dtype=float).ravel())
    if num_stages < 1:
        raise ValueError(f"num_stages={num_stages} must be >= 1")
    if min_layers < 0 or min_layers * num_stages > len(costs):
        raise ValueError(f"cannot give {num_stages} stages at least {min_layers} of {len(costs)} layers each; "
                         "use fewer stages")
    if any(c < 0 for c in costs) or first_extra < 0 or last_extra < 0:
        raise ValueError("layer_costs, first_extra and last_extra must be >= 0")
    return _balance(costs, num_stages, float(first_extra), float(last_extra), min_layers)


@lru_cache(maxsize=4096)
def _balance(costs: tuple[float, ...], stages: int, first: float, last: float, min_layers: int, *,
             dp_only: bool = False) -> tuple[int, ...]:
    """The DP, one stage count at a time. A stage's row is found by `_stage_fast` (O(L log L): the
    previous row is non-decreasing in the blocks it covers and a segment's cost non-increasing in
    its start, so each cell's best split sits at their crossing) wherever the previous row is
    non-decreasing, else by `_stage_dp` (the plain O(L^2) min over all starts); both give the same
    row and the same choices, bit for bit (tests/test_planner_balance.py). `dp_only` forces the DP."""
    n = len(costs)
    prefix = np.concatenate([[0.0], np.cumsum(costs)])
    idx = np.arange(n + 1)
    # best[j]: min over splits of blocks 0..j-1 into s stages of the max stage cost
    best = np.where(idx >= min_layers, prefix + first, np.inf)
    choice = [np.zeros(n + 1, dtype=np.int64)]
    for s in range(1, stages):
        extra = last if s == stages - 1 else 0.0
        lo = s * min_layers   # best[i] is finite from here on
        window = best[lo:]
        if not dp_only and bool(np.all(window[1:] >= window[:-1])):
            arg, best = _stage_fast(best, prefix, extra, lo=lo, gap=min_layers)
        else:
            arg, best = _stage_dp(best, prefix, extra, gap=min_layers)
        choice.append(arg)
    if stages == 1:
        return (n,)
    # walk back from j = n
    split = []
    j = n
    for s in range(stages - 1, 0, -1):
        i = int(choice[s][j])
        split.append(j - i)
        j = i
    split.append(j)
    return tuple(reversed(split))


def _stage_dp(best: np.ndarray, prefix: np.ndarray, extra: float, *, gap: int) -> tuple[np.ndarray, np.ndarray]:
    """(choice, new row): new[j] = min over i <= j - gap of max(best[i], cost(i, j) + extra), the
    largest such i among ties (earlier stages take more blocks, the last stage fewer)."""
    n = prefix.size - 1
    idx = np.arange(n + 1)
    seg = prefix[None, :] - prefix[:, None]  # seg[i, j] = cost of blocks i..j-1 (j >= i)
    cand = np.maximum(best[:, None], seg + extra)
    cand = np.where(idx[None, :] - idx[:, None] >= max(gap, 0), cand, np.inf)
    arg = n - np.argmin(cand[::-1, :], axis=0)
    return arg, cand[arg, idx]


def _stage_fast(best: np.ndarray, prefix: np.ndarray, extra: float, *, lo: int, gap: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """`_stage_dp`'s result when best[lo:] is non-decreasing (finite from `lo`): for each j, over
    the starts i in [lo, j - gap], max(best[i], cost(i, j) + extra) falls then rises; the crossing
    c = first i with best[i] >= cost(i, j) + extra is found by a bisection run for every j at once,
    the minimum is at c - 1 or c, and the largest i attaining it is c - 1, or the last i >= c whose
    best[i] equals it. The same float expressions as `_stage_dp`, so the same values and ties."""
    n = prefix.size - 1
    j = np.arange(n + 1)
    hi = j - gap
    left, right = np.full(n + 1, lo), np.maximum(hi + 1, lo)   # search [left, right)
    pj = prefix[j]
    while True:
        live = left < right
        if not live.any():
            break
        mid = np.where(live, (left + right) // 2, lo)
        cond = best[mid] >= (pj - prefix[mid]) + extra
        right = np.where(live & cond, mid, right)
        left = np.where(live & ~cond, mid + 1, left)
    c = left
    inf = np.inf
    has_left = (c - 1 >= lo) & (c - 1 <= hi)
    has_right = c <= hi
    cl, cr = np.clip(c - 1, 0, n), np.clip(c, 0, n)
    val_left = np.where(has_left, np.maximum(best[cl], (pj - prefix[cl]) + extra), inf)
    val_right = np.where(has_right, np.maximum(best[cr], (pj - prefix[cr]) + extra), inf)
    new = np.minimum(val_left, val_right)
    # largest start attaining the minimum: right of the crossing the value is best[i] (non-decreasing)
    last_equal = lo + np.searchsorted(best[lo:], new, side="right") - 1
    arg = np.where(has_right & (val_right == new), np.minimum(last_equal, hi), c - 1)
    arg = np.where(np.isinf(new), n, arg)   # no valid start: what the plain DP's argmin gives
    return arg.astype(np.int64), new


def layer_weights(model: ModelSpec, training: TrainingSpec, plan: ParallelPlan) -> tuple[np.ndarray, float, float]:
    """(cost per block, first-stage extra, last-stage extra) for balancing `plan`'s stages.

    Relative costs are the step's FLOPs per block and of the LM head from `costmodel.layer.flops`
    (forward + backward = 3x forward, plus the recomputed forward of the plan's policy; Narayanan et
    al. 2021, sec. 5.1). The embedding lookup does no matrix work, so the first stage's extra is 0."""
    shape = model_shape(model)
    code = RECOMPUTE_CODES[plan.recompute]
    b, s = plan.micro_batch_size, training.seq_len
    enc = 3 * layer_fwd_flops(shape, b, s) + recompute_fwd_flops(shape, b, s, code)
    dec = 3 * layer_fwd_flops(shape, b, s, cross=True) + recompute_fwd_flops(shape, b, s, code, cross=True)
    costs = np.concatenate([np.full(shape.n_enc, float(enc)), np.full(shape.n_dec, float(dec))])
    return costs, 0.0, float(3 * lm_head_fwd_flops(shape, b, s))


def balanced_split(model: ModelSpec, training: TrainingSpec, plan: ParallelPlan) -> tuple[int, ...]:
    """The layer split `balance_layers` gives `plan` (pp * virtual_stages stages)."""
    costs, first, last = layer_weights(model, training, plan)
    return balance_layers(costs, plan.pp * plan.virtual_stages, first_extra=first, last_extra=last)
