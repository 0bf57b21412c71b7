"""simulate_pipeline: published bubble figures, memory, invariants, event consistency, bad input."""

from __future__ import annotations

import itertools
import random

import pytest

from costmodel.pipeline import SCHEDULES, simulate_pipeline
from costmodel.specs import TimelineEvent

COMPUTE = {"fwd", "bwd", "bwd_input", "bwd_weight"}


def sim(schedule, pp, m, v=1, f=1.0, b=2.0, w=None, c=0.0, **kw):
    s = pp * v
    fs = f if isinstance(f, list) else [f] * s
    bs = b if isinstance(b, list) else [b] * s
    ws = None if w is None else (w if isinstance(w, list) else [w] * s)
    return simulate_pipeline(schedule=schedule, pp=pp, num_micro_batches=m, virtual_stages=v,
                             fwd_s=fs, bwd_s=bs, bwd_weight_s=ws, p2p_s=c, **kw)


def shapes(schedule):
    for pp, m in itertools.product([1, 2, 3, 4, 6], [1, 2, 3, 4, 6, 8, 12]):
        if schedule == "interleaved-1f1b":
            if m % pp == 0:
                for v in (1, 2, 3):
                    yield pp, m, v
        else:
            yield pp, m, 1


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_single_stage_has_no_bubble(schedule):
    for m in (1, 3, 8):
        r = sim(schedule, 1, m, f=1.5, b=2.5, w=1.0, c=0.3)
        assert r.bubble_s == 0 and r.exposed_p2p_s == 0
        assert r.makespan_s == pytest.approx(m * 4.0)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_gpipe_and_1f1b_bubble_is_p_minus_1_stage_times(schedule):
    for pp, m in itertools.product([2, 4, 8], [1, 4, 8, 32]):
        r = sim(schedule, pp, m, f=1.0, b=2.0)
        assert r.bubble_s == pytest.approx((pp - 1) * 3.0)
        assert r.bubble_fraction == pytest.approx((pp - 1) / m)
        assert r.makespan_s == pytest.approx(r.busy_s[r.critical_rank] + r.bubble_s)


def test_interleaved_bubble_fraction_narayanan():
    """Narayanan et al. 2021 (SC21): bubble fraction (p-1)/(v m) with v chunks of 1/v the work."""
    for pp, k, v in itertools.product([2, 4, 8], [1, 2, 4], [1, 2, 4]):
        m = k * pp
        r = sim("interleaved-1f1b", pp, m, v, f=1.0 / v, b=2.0 / v)
        assert r.bubble_fraction == pytest.approx((pp - 1) / (v * m))
        plain = sim("1f1b", pp, m, f=1.0, b=2.0)
        assert r.makespan_s <= plain.makespan_s + 1e-9


def test_zero_bubble_beats_1f1b_when_w_positive():
    for pp, m in itertools.product([2, 3, 4, 8], [1, 2, 4, 8, 16]):
        zb = sim("zero-bubble", pp, m, f=1.0, b=2.0, w=1.0)
        ref = sim("1f1b", pp, m, f=1.0, b=2.0)
        assert zb.bubble_s < ref.bubble_s
        assert sum(zb.busy_s) == pytest.approx(sum(ref.busy_s))
        # same memory as 1F1B: the most loaded rank holds the same number of micro-batches
        assert max(zb.peak_in_flight) == max(ref.peak_in_flight)
    # Qi et al. 2023: ZB-H1 bubble (p-1)(T_F + T_B - T_W) when T_W <= T_B; F=B=W gives 1/3 of 1F1B's
    zb = sim("zero-bubble", 4, 16, f=1.0, b=2.0, w=1.0)
    assert zb.bubble_s == pytest.approx(3 * (1.0 + 1.0 - 1.0))
    assert zb.bubble_s == pytest.approx(sim("1f1b", 4, 16, f=1.0, b=2.0).bubble_s / 3)


def test_in_flight_and_activation_peaks():
    for pp, m in itertools.product([1, 2, 4, 8], [1, 2, 4, 8, 16]):
        r = sim("1f1b", pp, m, act_bytes=5.0)
        assert r.peak_in_flight == tuple(min(pp - k, m) for k in range(pp))
        assert r.peak_act_bytes == tuple(5.0 * n for n in r.peak_in_flight)
        assert sim("gpipe", pp, m).peak_in_flight == (m,) * pp
    uneven = sim("1f1b", 3, 6, act_bytes=[1.0, 10.0, 100.0])
    assert uneven.peak_act_bytes == (3.0, 20.0, 100.0)
    inter = sim("interleaved-1f1b", 2, 4, 2, act_bytes=[1.0, 2.0, 10.0, 20.0])
    assert inter.peak_in_flight[0] == 5          # (v-1)p + 2(p-1) warm-up forwards + 1
    assert inter.peak_act_bytes[0] <= 4 * (1.0 + 10.0)
    assert sim("1f1b", 2, 4).peak_act_bytes is None


def _random_times(rng, n):
    return [rng.uniform(0.2, 3.0) for _ in range(n)]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_uneven_stages_events_and_dependencies(schedule):
    rng = random.Random(7)
    for pp, m, v in shapes(schedule):
        s = pp * v
        f, b = _random_times(rng, s), _random_times(rng, s)
        w = [x * rng.uniform(0, 1) for x in b]
        c = [rng.uniform(0, 0.5) for _ in range(s - 1)]
        r = sim(schedule, pp, m, v, f=f, b=b, w=w, c=c)
        stage_work = [m * sum(f[j] + b[j] for j in range(rank, s, pp)) for rank in range(pp)]
        assert r.busy_s == pytest.approx(stage_work)
        assert r.makespan_s >= max(stage_work) - 1e-9
        crit = r.critical_rank
        assert r.makespan_s == pytest.approx(r.busy_s[crit] + r.exposed_p2p_s + r.bubble_s)
        assert all(isinstance(e, TimelineEvent) for e in r.events)
        compute = [e for e in r.events if e.kind in COMPUTE]
        assert len(compute) == (3 if schedule == "zero-bubble" else 2) * m * s
        assert max(e.end_s for e in compute) == pytest.approx(r.makespan_s)
        for rank in range(pp):
            mine = sorted((e for e in compute if e.stage == rank), key=lambda e: e.start_s)
            for a, z in zip(mine, mine[1:], strict=False):
                assert z.start_s >= a.end_s - 1e-9, (schedule, pp, m, v, a, z)
        end = {(e.kind, e.micro_batch, e.chunk * pp + e.stage): e.end_s for e in compute}
        start = {(e.kind, e.micro_batch, e.chunk * pp + e.stage): e.start_s for e in compute}
        bk = "bwd_input" if schedule == "zero-bubble" else "bwd"
        for i, j in itertools.product(range(m), range(s)):
            if j:
                assert start[("fwd", i, j)] >= end[("fwd", i, j - 1)] + c[j - 1] - 1e-9
            if j < s - 1:
                assert start[(bk, i, j)] >= end[(bk, i, j + 1)] + c[j] - 1e-9
            assert start[(bk, i, j)] >= end[("fwd", i, j)] - 1e-9
            if schedule == "zero-bubble":
                assert start[("bwd_weight", i, j)] >= end[(bk, i, j)] - 1e-9
        sends = [e for e in r.events if e.kind == "send"]
        assert len(sends) == (2 * m * (s - 1) if pp > 1 else sum(x > 0 for x in c) * 2 * m)
        assert not r.events or sim(schedule, pp, m, v, f=f, b=b, w=w, c=c, with_events=False).events == ()


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_more_p2p_never_faster_and_no_p2p_exposes_none(schedule):
    rng = random.Random(11)
    for pp, m, v in shapes(schedule):
        s = pp * v
        f, b = _random_times(rng, s), _random_times(rng, s)
        w = [x / 2 for x in b]
        prev = None
        for c in (0.0, 0.01, 0.1, 0.5, 2.0):
            r = sim(schedule, pp, m, v, f=f, b=b, w=w, c=c, with_events=False)
            if c == 0:
                assert r.exposed_p2p_s == 0
            if prev is not None:
                assert r.makespan_s >= prev - 1e-9
            prev = r.makespan_s
        base = sim(schedule, pp, m, v, f=f, b=b, w=w, c=[0.1] * (s - 1), with_events=False).makespan_s
        for k in range(s - 1):
            more = [0.1] * (s - 1)
            more[k] = 0.4
            assert sim(schedule, pp, m, v, f=f, b=b, w=w, c=more, with_events=False).makespan_s >= base - 1e-9


def test_faster_stage_never_slows_the_step():
    rng = random.Random(3)
    for schedule in SCHEDULES:
        for pp, m, v in shapes(schedule):
            s = pp * v
            f, b = _random_times(rng, s), _random_times(rng, s)
            base = sim(schedule, pp, m, v, f=f, b=b, c=0.05, with_events=False).makespan_s
            j = rng.randrange(s)
            f2 = list(f)
            f2[j] *= 0.5
            assert sim(schedule, pp, m, v, f=f2, b=b, c=0.05, with_events=False).makespan_s <= base + 1e-9


def test_uniform_1f1b_exposes_p2p_on_the_critical_rank():
    r = sim("1f1b", 4, 8, c=0.1)
    assert r.critical_rank == 0 and r.exposed_p2p_s > 0
    assert r.makespan_s == pytest.approx(8 * 3.0 + r.exposed_p2p_s + r.bubble_s)


def test_event_kinds_and_chunks():
    r = sim("zero-bubble", 2, 4, w=1.0, c=0.1)
    assert {e.kind for e in r.events} == {"fwd", "bwd_input", "bwd_weight", "send"}
    r = sim("interleaved-1f1b", 2, 4, 3, c=0.0)
    assert {e.kind for e in r.events} == {"fwd", "bwd"}
    assert {e.chunk for e in r.events} == {0, 1, 2}


@pytest.mark.parametrize("kwargs, field", [
    (dict(schedule="pipedream"), "schedule"),
    (dict(schedule="1f1b", virtual_stages=2), "virtual_stages"),
    (dict(schedule="interleaved-1f1b", num_micro_batches=3), "num_micro_batches"),
    (dict(schedule="1f1b", pp=0), "pp"),
    (dict(schedule="1f1b", fwd_s=[1.0]), "fwd_s"),
    (dict(schedule="1f1b", bwd_s=[1.0, -1.0]), "bwd_s"),
    (dict(schedule="zero-bubble", bwd_weight_s=[3.0, 3.0]), "bwd_weight_s"),
    (dict(schedule="1f1b", p2p_s=[0.1, 0.1]), "p2p_s"),
    (dict(schedule="1f1b", act_bytes=[1.0]), "act_bytes"),
])
def test_bad_input_names_the_field(kwargs, field):
    args = dict(schedule="1f1b", pp=2, num_micro_batches=4, virtual_stages=1, fwd_s=[1.0, 1.0],
                bwd_s=[2.0, 2.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=field):
        simulate_pipeline(**args)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_each_rank_runs_each_of_its_ops_once(schedule):
    from costmodel.pipeline import rank_orders

    for pp, m, v in shapes(schedule):
        orders = rank_orders(schedule, pp, m, v)
        kinds = (0, 1, 2) if schedule == "zero-bubble" else (0, 1)
        for rank, ops in enumerate(orders):
            want = {(k, j, i) for k in kinds for j in range(rank, pp * v, pp) for i in range(m)}
            assert sorted((k, j, i) for k, j, i, _ in ops) == sorted(want)


def test_numpy_inputs_are_accepted():
    import numpy as np

    r = simulate_pipeline(schedule="1f1b", pp=2, num_micro_batches=4, fwd_s=np.array([1.0, 1.0]),
                          bwd_s=np.array([2.0, 2.0]), p2p_s=np.float64(0.0), act_bytes=np.int64(3))
    assert r.makespan_s == pytest.approx(5 * 3.0)
    assert r.peak_act_bytes == (6.0, 3.0)
