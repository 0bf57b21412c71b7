"""The bulk pass's lower bounds hold: never above the exact score of the plan the exact scorer
returns (what lets `search` stop re-scoring early), and the busiest-rank bound equals brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from costmodel import TrainingSpec, get_cluster, load_model
from planner.constraints import Constraints
from planner.exact import ExactScorer
from planner.scoring import _busiest_rank_lb_s, bulk_scores
from planner.space import build_space


def _brute_minmax(block: float, first: float, last: float, pp: int, layers: int) -> float:
    best = float("inf")
    for split in itertools.product(range(layers + 1), repeat=pp):
        if sum(split) != layers:
            continue
        t = [n * block for n in split]
        t[0] += first
        t[-1] += last
        best = min(best, max(t))
    return best


@pytest.mark.parametrize(("pp", "layers"), [(1, 5), (2, 5), (3, 7), (4, 6), (4, 9), (5, 7)])
def test_busiest_rank_bound_is_the_integer_minmax(pp: int, layers: int) -> None:
    rng = np.random.default_rng(pp * 100 + layers)
    block = rng.uniform(0.5, 2.0, 6)
    first, last = rng.uniform(0, 3, 6), rng.uniform(0, 3, 6)
    first[0] = last[0] = 0.0
    got = _busiest_rank_lb_s(block, first, last, pp, layers)
    want = np.array([_brute_minmax(b, f, la, pp, layers) for b, f, la in zip(block, first, last, strict=True)])
    assert np.all(got <= want) and np.allclose(got, want, rtol=1e-7)


CASES = [
    # 30 layers over pp 4/8 (and interleaved stages): uneven, balanced splits
    ("megatron-gpt-3.6b", "dgx-a100-40gb", 1, 32, 2048, dict(zero_stage=(1,), recompute=("selective", "full"),
                                                             cp=1, placement=[("tp", "cp", "dp", "pp")])),
    ("gpt3-1.3b", "dgx-a100", 2, 64, 2048, dict(zero_stage=(0, 3), recompute=("full",), tp=1, cp=1,
                                               sequence_parallel=False, max_micro_batch_size=2,
                                               placement=[("tp", "cp", "dp", "pp")])),
    # context parallel (its gradient all-reduce), ZeRO-2, interleaved stages
    ("megatron-gpt-3.6b", "dgx-a100", 2, 32, 2048, dict(zero_stage=(2,), recompute=("selective", "full"), tp=2,
                                                        cp=2, sequence_parallel=True, max_micro_batch_size=4,
                                                        placement=[("tp", "cp", "dp", "pp")])),
]


@pytest.mark.parametrize("rebalance", [False, True])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bulk_lower_bounds_never_exceed_the_exact_scores(case, rebalance) -> None:
    name, preset, nodes, batch, seq, cons = case
    model, cluster = load_model(name), get_cluster(preset, nodes=nodes)
    training = TrainingSpec(global_batch_size=batch, seq_len=seq)
    space = build_space(model, cluster, training, Constraints.from_kwargs(**cons))
    bulk = bulk_scores(model, cluster, training, space, rebalance=rebalance)
    scorer = ExactScorer(model, cluster, training, space, rebalance=rebalance)
    checked = 0
    for i in range(len(space)):
        best = scorer.best(i)
        if best is not None:
            assert bulk["step_time_s_lb"][i] <= best.step_time_s * (1 + 1e-12), space.plan(i)
            assert bulk["peak_bytes_lb"][i] <= best.memory.peak_bytes * (1 + 1e-12), space.plan(i)
            checked += 1
    assert checked > 10
