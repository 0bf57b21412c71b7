"""The level-vectorized simulator equals the straightforward sequential one (tests/_pipeline_reference.py)
bit for bit in time (activation peaks to 1e-12), for every schedule, shape and batch layout."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from _pipeline_reference import ref_rank_order_ops, reference_simulate

from costmodel.pipeline import SCHEDULES, simulate_pipeline
from costmodel.pipeline.levels import op_graph
from costmodel.pipeline.schedules import rank_order_arrays
from costmodel.pipeline.sim import simulate_pipelines


def shapes(schedule, pps=(1, 2, 3, 4, 5, 8), ms=(1, 2, 3, 4, 6, 8, 12, 16)):
    for pp, m in itertools.product(pps, ms):
        if schedule == "interleaved-1f1b":
            for v in (1, 2, 3, 4):
                if m % pp == 0:
                    yield pp, m, v
        else:
            yield pp, m, 1


def _inputs(rng, schedule, pp, m, v, *, scalar_c=False):
    s = pp * v
    f = [rng.uniform(0.05, 3.0) for _ in range(s)]
    b = [rng.uniform(0.05, 3.0) for _ in range(s)]
    w = [x * rng.choice([0.0, rng.random(), 1.0]) for x in b]
    c = rng.uniform(0, 0.5) if scalar_c else [rng.choice([0.0, rng.uniform(0, 0.7)]) for _ in range(s - 1)]
    act = [rng.uniform(1e8, 5e9) for _ in range(s)]
    return dict(schedule=schedule, pp=pp, num_micro_batches=m, virtual_stages=v, fwd_s=f, bwd_s=b,
                bwd_weight_s=w if schedule == "zero-bubble" or rng.random() < 0.3 else None, p2p_s=c,
                act_bytes=act)


def _same(got, ref):
    assert got.makespan_s == ref.makespan_s
    assert got.busy_s == ref.busy_s
    assert got.critical_rank == ref.critical_rank
    assert got.exposed_p2p_s == ref.exposed_p2p_s
    assert got.bubble_s == ref.bubble_s
    assert got.peak_in_flight == ref.peak_in_flight
    if ref.peak_act_bytes is None:
        assert got.peak_act_bytes is None
    else:
        assert got.peak_act_bytes == pytest.approx(ref.peak_act_bytes, rel=1e-12, abs=0)
    assert got.events == ref.events


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_op_arrays_equal_the_tuple_orders(schedule):
    for pp, m, v in shapes(schedule, pps=(1, 2, 3, 4, 5, 8, 16), ms=(1, 2, 3, 4, 6, 8, 12, 16, 32)):
        kind, stage, mb = rank_order_arrays(schedule, pp, m, v)
        ref = np.array(ref_rank_order_ops(schedule, pp, m, v))
        assert (kind == ref[..., 0]).all() and (stage == ref[..., 1]).all() and (mb == ref[..., 2]).all()


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_matches_the_sequential_simulator(schedule):
    rng = random.Random(5)
    for pp, m, v in shapes(schedule):
        kw = _inputs(rng, schedule, pp, m, v, scalar_c=rng.random() < 0.3)
        events = rng.random() < 0.5
        _same(simulate_pipeline(**kw, with_events=events), reference_simulate(**kw, with_events=events))
        no_act = {**kw, "act_bytes": None}
        _same(simulate_pipeline(**no_act, with_events=False), reference_simulate(**no_act, with_events=False))


@pytest.mark.parametrize("schedule,pp,m,v", [("zero-bubble", 16, 64, 1), ("1f1b", 32, 64, 1),
                                            ("interleaved-1f1b", 8, 32, 4), ("gpipe", 12, 24, 1)])
def test_matches_on_large_shapes(schedule, pp, m, v):
    rng = random.Random(pp * m)
    kw = _inputs(rng, schedule, pp, m, v)
    _same(simulate_pipeline(**kw, with_events=False), reference_simulate(**kw, with_events=False))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_batch_and_no_p2p_columns_equal_single_runs(schedule):
    rng = random.Random(9)
    for pp, m, v in [(4, 8, 1), (3, 6, 1), (2, 4, 2), (4, 8, 2), (1, 3, 1)]:
        if v > 1 and schedule != "interleaved-1f1b":
            continue
        runs = [_inputs(rng, schedule, pp, m, v) for _ in range(21 if pp == 4 else 5)]  # 42 columns: 2 sweeps
        for r in runs:
            r["bwd_weight_s"] = r["bwd_weight_s"] or [0.0] * (pp * v)
        stack = {key: np.array([r[key] for r in runs]) for key in ("fwd_s", "bwd_s", "bwd_weight_s", "p2p_s",
                                                                   "act_bytes")}
        batch = simulate_pipelines(schedule=schedule, pp=pp, num_micro_batches=m, virtual_stages=v, **stack,
                                   with_no_p2p=True)
        for r, got in zip(runs, batch, strict=True):
            _same(got, reference_simulate(**r, with_events=False))
            free = reference_simulate(**{**r, "p2p_s": 0.0}, with_events=False)
            assert got.makespan_no_p2p_s == free.makespan_s
        one = simulate_pipeline(**runs[0], with_events=False, with_no_p2p=True)
        assert one.makespan_no_p2p_s == batch[0].makespan_no_p2p_s


def test_levels_order_every_input_before_its_consumer():
    for schedule in SCHEDULES:
        for pp, m, v in shapes(schedule, pps=(2, 4), ms=(4, 8)):
            g = op_graph(schedule, pp, m, v)
            level = np.empty(g.n_ops + 2, int)
            level[g.n_ops:] = -1
            for n, (a, b, *_rest) in enumerate(g.levels):
                level[a:b] = n
            ops = np.arange(g.n_ops)
            assert (level[g.prev] < level[ops]).all() and (level[g.dep] < level[ops]).all()
            assert sorted(g.rank.tolist()) == sorted(list(range(pp)) * (g.n_ops // pp))
