"""Stage balancing: the DP split is optimal (checked against enumeration) and sensible."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from planner.balance import balance_layers, stage_costs


def _brute_best(costs, stages, first, last, min_layers):
    n = len(costs)
    best = np.inf
    for cuts in itertools.combinations(range(1, n), stages - 1):
        split = np.diff((0, *cuts, n))
        if (split < min_layers).any():
            continue
        best = min(best, stage_costs(split, costs, first_extra=first, last_extra=last).max())
    return best


@pytest.mark.parametrize("seed", range(12))
def test_dp_matches_enumeration(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 11))
    stages = int(rng.integers(1, n + 1))
    costs = rng.uniform(0.5, 2.0, n) if seed % 2 else np.ones(n)
    first, last = rng.uniform(0, 3, 2)
    split = balance_layers(costs, stages, first_extra=first, last_extra=last)
    assert len(split) == stages and sum(split) == n and min(split) >= 1
    got = stage_costs(split, costs, first_extra=first, last_extra=last).max()
    assert got == pytest.approx(_brute_best(costs, stages, first, last, 1))
    assert balance_layers(costs, stages, first_extra=first, last_extra=last) == split  # deterministic


def test_even_split_when_no_extras_and_uniform_layers():
    assert balance_layers(np.ones(96), 8) == (12,) * 8


def test_heavy_head_moves_blocks_off_the_last_stage():
    # Llama 3 405B style: 126 blocks over 16 stages; the LM head costs ~0.65 of a block
    split = balance_layers(np.ones(126), 16, first_extra=0.05, last_extra=0.65)
    assert sum(split) == 126 and len(split) == 16
    assert split[-1] <= min(split[1:-1])
    assert stage_costs(split, np.ones(126), first_extra=0.05, last_extra=0.65).max() <= 8.0 + 1e-9


def test_bad_requests_name_the_problem():
    with pytest.raises(ValueError, match="stages"):
        balance_layers(np.ones(4), 5)
    with pytest.raises(ValueError, match="num_stages"):
        balance_layers(np.ones(4), 0)
