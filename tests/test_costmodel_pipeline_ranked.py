"""`pipeline_ranked.ranked_makespan_s` (first / middle / last rank classes) against the event
simulator, and its agreement with the uniform closed forms."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from costmodel.pipeline.ranked import ranked_makespan_s
from costmodel.pipeline.sim import simulate_pipeline
from costmodel.pipeline.uniform import uniform_makespan_s


def _cases(schedule: str, seed: int, n: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        p = int(rng.choice([2, 3, 4, 8]))
        v = int(rng.choice([2, 3])) if schedule == "interleaved-1f1b" else 1
        m = int(rng.choice([1, 2, 3, p, 2 * p, 3 * p + 1]))
        if schedule == "interleaved-1f1b":
            m = p * max(1, m // p)
        f = np.full(p * v, 1.0)
        b = np.full(p * v, rng.uniform(1.5, 3.0))
        f[0] += rng.uniform(0, 0.3)           # embedding and send overheads on the first stage
        b[0] += rng.uniform(0, 0.3)
        f[-1] += rng.uniform(0, 2.0)          # LM head on the last stage
        b[-1] += rng.uniform(0, 4.0)
        c = float(rng.choice([0.0, 0.01, 0.05]))   # a transfer is short next to an op
        yield p, m, v, f, b, c


def _classes(f, b, p):
    rank = lambda r: (float(f[r::p].sum()), float(b[r::p].sum()))  # noqa: E731
    return dict(first=rank(0), middle=rank(1) if p > 2 else (0.0, 0.0), last=rank(p - 1))


@pytest.mark.parametrize("schedule,mean_tol,max_tol", [
    ("gpipe", 1e-9, 1e-9), ("1f1b", 0.005, 0.04), ("interleaved-1f1b", 0.015, 0.06)])
def test_matches_the_simulator_with_heavier_end_ranks(schedule, mean_tol, max_tol):
    errors = []
    for p, m, v, f, b, c in _cases(schedule, 7, 150):
        sim = simulate_pipeline(schedule=schedule, pp=p, num_micro_batches=m, virtual_stages=v,
                                fwd_s=list(f), bwd_s=list(b), p2p_s=c, with_events=False).makespan_s
        closed = ranked_makespan_s(schedule, p, m, v, p2p_s=c, **_classes(f, b, p))
        errors.append(closed / sim - 1)
    errors = np.abs(errors)
    assert errors.mean() <= mean_tol and errors.max() <= max_tol, (errors.mean(), errors.max())


def test_zero_bubble_is_close_to_the_simulator():
    errors = []
    for p, m, _v, f, b, c in _cases("zero-bubble", 3, 100):
        w = 0.5 * b
        sim = simulate_pipeline(schedule="zero-bubble", pp=p, num_micro_batches=m, fwd_s=list(f), bwd_s=list(b),
                                bwd_weight_s=list(w), p2p_s=c, with_events=False).makespan_s
        weights = (w[0], w[1] if p > 2 else 0.0, w[-1])
        closed = ranked_makespan_s("zero-bubble", p, m, 1, p2p_s=c, bwd_weight=weights, **_classes(f, b, p))
        errors.append(closed / sim - 1)
    errors = np.abs(errors)
    assert errors.mean() < 0.1 and errors.max() < 0.45   # an estimate (module docstring)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "interleaved-1f1b"])
def test_uniform_stages_reduce_to_the_uniform_closed_form(schedule):
    for p, m, c in itertools.product([2, 4, 8], [1, 4, 8, 16, 33], [0.0, 0.02, 0.1]):
        v = 2 if schedule == "interleaved-1f1b" else 1
        if schedule == "interleaved-1f1b" and m % p:
            continue
        f, b = 1.0, 2.0
        want = uniform_makespan_s(schedule, p, m, v, f, b, c)
        got = ranked_makespan_s(schedule, p, m, v, first=(v * f, v * b), middle=(v * f, v * b),
                                last=(v * f, v * b), p2p_s=c)
        assert got == pytest.approx(want, rel=1e-12), (p, m, c)


def test_arrays_equal_scalars_and_pp1_has_no_bubble():
    rng = np.random.default_rng(0)
    n = 200
    sched = rng.integers(0, 4, n)
    p = rng.choice([1, 2, 4, 8], n)
    v = np.where(sched == 2, 2, 1)
    m = p * rng.integers(1, 5, n)
    cls = [(rng.uniform(1, 2, n), rng.uniform(2, 4, n)) for _ in range(3)]
    w = tuple(0.5 * c[1] for c in cls)
    c = rng.uniform(0, 0.05, n)
    arr = ranked_makespan_s(sched, p, m, v, first=cls[0], middle=cls[1], last=cls[2], p2p_s=c, bwd_weight=w)
    for i in range(n):
        one = ranked_makespan_s(int(sched[i]), int(p[i]), int(m[i]), int(v[i]),
                                first=(cls[0][0][i], cls[0][1][i]), middle=(cls[1][0][i], cls[1][1][i]),
                                last=(cls[2][0][i], cls[2][1][i]), p2p_s=float(c[i]),
                                bwd_weight=(w[0][i], w[1][i], w[2][i]))
        assert float(arr[i]) == pytest.approx(float(one), rel=1e-12)
        if p[i] == 1:
            assert one == pytest.approx(m[i] * (cls[0][0][i] + cls[0][1][i]))
