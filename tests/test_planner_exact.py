"""ExactScorer: batched prefetch of the pipeline simulations changes the cost of exact re-scoring,
never its figures, its call count or what counts as scored; the search with prefetch (several
batches) still returns exactly what exhaustive scoring returns, Pareto fronts included."""

from __future__ import annotations

import pytest

from costmodel import TrainingSpec, get_cluster, load_model
from costmodel.step.simulate import _SIMS
from planner import search, search_exhaustive
from planner.constraints import Constraints
from planner.exact import ExactScorer
from planner.space import build_space

ONE_PLACEMENT = [("tp", "cp", "dp", "pp")]


def _setup(rebalance=True):
    # 30 layers: pp=4 and pp=8 need balanced splits; rebalance tries them everywhere
    model = load_model("megatron-gpt-3.6b")
    cluster = get_cluster("dgx-a100-40gb", nodes=1)
    training = TrainingSpec(global_batch_size=32, seq_len=2048)
    space = build_space(model, cluster, training, Constraints.from_kwargs(zero_stage=(0, 1), cp=1,
                                                                           placement=ONE_PLACEMENT))
    return model, cluster, training, space


def test_prefetch_changes_no_figure_and_scores_nothing():
    model, cluster, training, space = _setup()
    n = len(space)
    _SIMS.clear()
    plain = ExactScorer(model, cluster, training, space, rebalance=True)
    ref = [plain.best(i, require_fit=False) for i in range(n)]
    _SIMS.clear()
    fetched = ExactScorer(model, cluster, training, space, rebalance=True)
    ran = fetched.prefetch(range(n))
    assert ran > 0 and fetched.calls == 0 and fetched.scored() == []
    assert fetched.prefetch(range(n)) == 0          # all memoized now
    got = [fetched.best(i, require_fit=False) for i in range(n)]
    assert fetched.calls == plain.calls == n
    simulated = 0
    for a, b in zip(got, ref, strict=True):
        assert a.plan == b.plan
        assert a.step_time_s == b.step_time_s
        assert a.time == b.time and a.memory == b.memory and a.stage_memory == b.stage_memory
        simulated += a.plan.layers_per_stage is not None
    assert simulated > 10


@pytest.mark.parametrize("top_k", [1, 40])
def test_search_with_prefetch_equals_exhaustive(top_k):
    model, cluster, training, _ = _setup()
    cons = dict(zero_stage=(0, 1), cp=1, placement=ONE_PLACEMENT)
    _SIMS.clear()
    fast = search(model, cluster, training, top_k=top_k, rebalance=True, **cons)
    slow = search_exhaustive(model, cluster, training, top_k=top_k, rebalance=True, **cons)
    assert fast.complete and len(fast.plans) == len(slow) > 0
    for a, b in zip(fast.plans, slow, strict=True):
        assert a.plan == b.plan and a.estimate.step_time_s == b.estimate.step_time_s
    assert any(r.plan.layers_per_stage is not None for r in fast.plans) or top_k == 1
    # the front is built from what was scored; the same search without any memo gives the same front
    _SIMS.clear()
    again = search(model, cluster, training, top_k=top_k, rebalance=True, **cons)
    assert [r.plan for r in again.pareto_memory] == [r.plan for r in fast.pareto_memory]
    assert [r.estimate.step_time_s for r in again.pareto_memory] == [r.estimate.step_time_s
                                                                     for r in fast.pareto_memory]
