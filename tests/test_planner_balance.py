"""Stage balancing: the DP split is optimal (checked against enumeration) and sensible."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costmodel.pipeline.balance import _balance
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


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(costs=st.lists(st.sampled_from([0.0, 1.0, 1.0, 1.0, 1.3, 2.5]) | st.floats(0, 10), min_size=1, max_size=48),
       stages=st.integers(1, 48), min_layers=st.integers(0, 2), first=st.sampled_from([0.0, 0.05, 1.0, 7.5]),
       last=st.sampled_from([0.0, 0.65, 2.0, 11.0]))
def test_the_fast_rows_give_the_dp_split_bit_for_bit(costs, stages, min_layers, first, last):
    """`_balance` finds each DP row by bisection where the previous row is non-decreasing; forcing
    the plain O(L^2) DP gives the same split on every input, ties included (uniform costs)."""
    stages = min(stages, len(costs))
    if min_layers * stages > len(costs):
        min_layers = 0
    args = (tuple(costs), stages, first, last, min_layers)
    assert _balance(*args) == _balance(*args, dp_only=True)


def test_a_thousand_layers_balance_with_the_optimal_slowest_stage():
    split = balance_layers(np.ones(1000), 64, first_extra=0.05, last_extra=0.65)   # 0.1 s; the O(L^2) DP 8 s
    assert sum(split) == 1000 and len(split) == 64
    assert max(stage_costs(split, np.ones(1000), first_extra=0.05, last_extra=0.65)) == 16.0   # ceil(1000/64)
