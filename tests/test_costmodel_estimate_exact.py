"""`estimate`'s vectorized simulator path (and its memo and batched prefetch) give the same
StepEstimate as the straightforward reference (tests/_estimate_reference.py) to 1e-12."""

from __future__ import annotations

import random

import pytest
from _estimate_reference import reference_estimate

from costmodel import ParallelPlan, TrainingSpec, get_cluster, load_model
from costmodel.step.checks import plan_problems
from costmodel.step.estimate import estimate, prefetch_simulations
from costmodel.step.simulate import _SIMS

SCHEDULES = ("gpipe", "1f1b", "interleaved-1f1b", "zero-bubble")
REL = 1e-12


def _split(rng, layers, stages):
    cuts = sorted(rng.sample(range(1, layers), stages - 1))
    return tuple(b - a for a, b in zip([0, *cuts], [*cuts, layers], strict=True))


def _plans(rng, model, cluster, training, count):
    out = []
    layers, world, gb = model.total_layers, cluster.num_gpus, training.global_batch_size
    while len(out) < count:
        schedule = rng.choice(SCHEDULES)
        pp = rng.choice([2, 3, 4, 8])
        v = rng.choice([1, 2]) if schedule == "interleaved-1f1b" else 1
        tp, cp = rng.choice([1, 2]), rng.choice([1, 1, 2])
        if world % (pp * tp * cp) or layers < pp * v:
            continue
        dp, mb = world // (pp * tp * cp), rng.choice([1, 2])
        if gb % (dp * mb) or (schedule == "interleaved-1f1b" and (gb // (dp * mb)) % pp):
            continue
        plan = (ParallelPlan(dp=dp, tp=tp, pp=pp, cp=cp, micro_batch_size=mb, schedule=schedule,
                                virtual_stages=v, zero_stage=rng.choice([0, 1, 2, 3]),
                                recompute=rng.choice(["none", "selective", "full"]),
                                sequence_parallel=tp > 1 and rng.random() < 0.5,
                                layers_per_stage=_split(rng, layers, pp * v)))
        if not plan_problems(model, cluster, training, plan):
            out.append(plan)
    return out


def _assert_same(got, ref):
    assert got.plan == ref.plan
    assert got.step_time_s == pytest.approx(ref.step_time_s, rel=REL, abs=0)
    for part in type(ref.time).model_fields:
        assert getattr(got.time, part) == pytest.approx(getattr(ref.time, part), rel=REL, abs=1e-18), part
    for mine, theirs in zip((got.memory, *got.stage_memory), (ref.memory, *ref.stage_memory), strict=True):
        for part in type(theirs).model_fields:
            assert getattr(mine, part) == pytest.approx(getattr(theirs, part), rel=REL, abs=0), part
    assert len(got.timeline) == len(ref.timeline)
    for a, b in zip(got.timeline, ref.timeline, strict=True):
        assert (a.stage, a.kind, a.micro_batch, a.chunk) == (b.stage, b.kind, b.micro_batch, b.chunk)
        assert a.start_s == pytest.approx(b.start_s, rel=REL, abs=1e-15)
        assert a.end_s == pytest.approx(b.end_s, rel=REL, abs=1e-15)


@pytest.mark.parametrize("name,cluster,nodes,gb,seq", [
    ("gpt3-13b", "dgx-a100", 4, 64, 2048),
    ("llama3-8b", "dgx-h100", 2, 32, 4096),
    ("t5-base", "dgx-a100", 2, 32, 512),          # encoder-decoder: cross-attention blocks per stage
])
def test_uneven_splits_match_the_reference(name, cluster, nodes, gb, seq):
    rng = random.Random(len(name) * nodes + seq)
    model, cl = load_model(name), get_cluster(cluster, nodes=nodes)
    training = TrainingSpec(global_batch_size=gb, seq_len=seq)
    plans = _plans(rng, model, cl, training, 24)
    for i, plan in enumerate(plans):
        timeline = i % 6 == 0
        _assert_same(estimate(model, cl, training, plan, timeline=timeline),
                     reference_estimate(model, cl, training, plan, timeline=timeline))


def test_prefetch_and_memo_give_the_same_estimates():
    rng = random.Random(4)
    model, cl = load_model("gpt3-13b"), get_cluster("dgx-a100", nodes=4)
    training = TrainingSpec(global_batch_size=64, seq_len=2048)
    plans = _plans(rng, model, cl, training, 30)
    plans += [p.model_copy(update={"zero_stage": (p.zero_stage + 1) % 4}) for p in plans[:10]]  # same stage times
    _SIMS.clear()
    ran = prefetch_simulations(model, cl, training, [*plans, ParallelPlan(dp=32)])   # even split: no simulation
    assert 0 < ran <= len(plans)
    assert len(_SIMS) == ran
    for plan in plans:
        _assert_same(estimate(model, cl, training, plan), reference_estimate(model, cl, training, plan))
    assert len(_SIMS) == ran                   # every estimate found its simulation memoized
    assert prefetch_simulations(model, cl, training, plans) == 0


def test_timeline_runs_fresh_and_matches_the_memoized_figures():
    model, cl = load_model("gpt3-13b"), get_cluster("dgx-a100", nodes=2)
    training = TrainingSpec(global_batch_size=32, seq_len=2048)
    plan = ParallelPlan(dp=2, tp=2, pp=4, recompute="full", layers_per_stage=(13, 9, 9, 9))
    plain = estimate(model, cl, training, plan)
    again = estimate(model, cl, training, plan)
    traced = estimate(model, cl, training, plan, timeline=True)
    assert traced.timeline and not plain.timeline
    assert plain.step_time_s == again.step_time_s == traced.step_time_s
    assert plain.stage_memory == traced.stage_memory
