"""The search space: factorizations, structural pruning, constraints, rejection accounting."""

from __future__ import annotations

import numpy as np
import pytest

from costmodel import ParallelPlan, TrainingSpec, get_cluster, load_model, plan_problems
from planner.constraints import DEFAULT_PLACEMENTS, TP_FIRST_PLACEMENTS, Constraints
from planner.space import build_space, world_sizes


def _space(name="gpt3-1.3b", nodes=2, batch=64, seq=2048, **kw):
    model, cluster = load_model(name), get_cluster("dgx-a100", nodes=nodes)
    training = TrainingSpec(global_batch_size=batch, seq_len=seq)
    return model, cluster, training, build_space(model, cluster, training, Constraints.from_kwargs(**kw))


def test_every_candidate_is_a_valid_plan_and_unique():
    model, cluster, training, space = _space(nodes=1, max_micro_batch_size=4)
    plans = [space.plan(i) for i in range(len(space))]
    assert len(set(plans)) == len(plans)
    for plan in plans[::7]:
        split_ok = model.total_layers % (plan.pp * plan.virtual_stages) == 0
        problems = [p.field for p in plan_problems(model, cluster, training, plan)]
        assert problems == ([] if split_ok else ["pp"])  # uneven splits get balanced layers_per_stage


def test_every_factorization_of_the_gpu_count_is_present():
    _, cluster, _, space = _space(name="gpt3-2.7b", nodes=4)  # 32 heads: every power-of-two tp divides
    c = space.columns
    degrees = set(zip(c["dp"], c["tp"], c["pp"], c["cp"], strict=True))
    assert all(d * t * p * k == 32 for d, t, p, k in degrees)
    # 32 = 2^5 into 4 ordered factors: C(8, 3) = 56; cp<=32 divides seq 2048, pp<=32 layers
    assert len(degrees) == 56


def test_accounting_and_structural_pruning():
    _, _, _, space = _space()
    assert space.generated == len(space) + sum(space.rejected.values())
    c = space.columns
    assert not (c["sp"] & (c["tp"] == 1)).any()
    assert not ((c["zero"] > 0) & (c["dp"] == 1)).any()
    assert not ((c["v"] > 1) & (c["schedule"] != 2)).any()
    assert ((c["pp"] > 1) | (c["schedule"] == 1)).all()


def test_placements_are_deduplicated_by_the_axes_that_matter():
    _, _, _, space = _space(tp=8, pp=1, cp=1, dp=2)  # only tp and dp active: one order with tp innermost
    assert set(space.columns["placement"]) == {0}
    _, _, _, space = _space(tp=2, pp=2, cp=1, dp=4, placement="all")
    orders = {space.placements[i] for i in space.columns["placement"]}
    # tp, pp, dp active: 3! distinct relative orders
    assert len({tuple(a for a in o if a != "cp") for o in orders}) == 6 == len(orders)
    assert len(DEFAULT_PLACEMENTS) == 2 and len(TP_FIRST_PLACEMENTS) == 6


def test_constraints_fix_and_bound_knobs():
    _, _, _, space = _space(tp=(2, 4), max_pp=4, micro_batch_size=2, schedule=("1f1b",), recompute="full",
                            zero_stage=(0, 1), sequence_parallel=True)
    c = space.columns
    assert set(c["tp"]) <= {2, 4} and c["pp"].max() <= 4 and set(c["mb"]) == {2}
    assert set(c["recompute"]) == {2} and set(c["zero"]) <= {0, 1} and c["sp"].all()
    assert set(c["schedule"]) == {1}


def test_fewer_gpus():
    cluster = get_cluster("dgx-a100", nodes=3)
    assert world_sizes(cluster, Constraints()) == [24]
    assert world_sizes(cluster, Constraints.from_kwargs(allow_fewer_gpus=True)) == [1, 2, 4, 8, 16, 24]
    assert world_sizes(cluster, Constraints.from_kwargs(allow_fewer_gpus=True, min_gpus=8)) == [8, 16, 24]
    with pytest.raises(ValueError, match="num_gpus"):
        world_sizes(cluster, Constraints.from_kwargs(num_gpus=32))


def test_uneven_stages_can_be_disallowed():
    model, _, _, space = _space(name="megatron-gpt-3.6b", nodes=1)  # 30 layers
    c = space.columns
    assert (model.total_layers % (c["pp"] * c["v"]) != 0).any()
    _, _, _, even = _space(name="megatron-gpt-3.6b", nodes=1, uneven_stages=False)
    c = even.columns
    assert (model.total_layers % (c["pp"] * c["v"]) == 0).all() and even.rejected["pp_uneven"] > 0


@pytest.mark.parametrize("kw,field", [
    (dict(tp=0), "tp"), (dict(pp="4"), "pp"), (dict(max_virtual_stages=0), "max_virtual_stages"),
    (dict(sequence_parallel="yes"), "sequence_parallel"), (dict(allow_fewer_gpus=1), "allow_fewer_gpus"),
    (dict(bogus=1), "bogus"), (dict(placement=("tp", "dp", "pp", "pp")), "placement"),
])
def test_bad_constraints_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        Constraints.from_kwargs(**kw)


def test_plan_roundtrip_matches_columns():
    _, _, _, space = _space(nodes=1)
    i = int(np.argmax(space.columns["v"]))
    plan = space.plan(i)
    assert isinstance(plan, ParallelPlan) and plan.virtual_stages == space.columns["v"][i] > 1
    df = space.frame()
    assert len(df) == len(space) and df.loc[i, "schedule"] == "interleaved-1f1b"


def test_zero_key_groups_exactly_the_candidates_that_differ_only_in_zero():
    _, _, _, space = _space(nodes=2, max_micro_batch_size=4)
    c = space.columns
    rest = np.stack([c[k].astype(np.int64) for k in ("dp", "tp", "pp", "cp", "mb", "v", "schedule", "recompute",
                                                       "sp", "placement")], axis=1)
    _, by_rest = np.unique(rest, axis=0, return_inverse=True)
    _, by_key = np.unique(space.zero_key, return_inverse=True)
    pairs = set(zip(by_rest.ravel().tolist(), by_key.ravel().tolist(), strict=True))
    assert len(pairs) == len(set(by_rest.ravel().tolist())) == len(set(by_key.ravel().tolist()))
    assert len(pairs) < len(space)   # ZeRO stages do share columns
    assert (space.zero_key >= 0).all()
