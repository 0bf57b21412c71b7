"""Closed forms for uniform stages equal the simulator over grids; bounds hold; numpy broadcasting."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from costmodel.pipeline import (
    SCHEDULES,
    simulate_pipeline,
    uniform_bubble_s,
    uniform_makespan_bounds_s,
    uniform_makespan_s,
    uniform_peak_in_flight,
)


def sim(schedule, pp, m, v, f, b, c, w):
    s = pp * v
    return simulate_pipeline(schedule=schedule, pp=pp, num_micro_batches=m, virtual_stages=v, fwd_s=[f] * s,
                             bwd_s=[b] * s, bwd_weight_s=[w] * s, p2p_s=c, with_events=False)


def grid(schedule):
    for pp, m in itertools.product([1, 2, 3, 4, 5, 8], [1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 24]):
        if schedule == "interleaved-1f1b":
            if m % pp == 0:
                for v in (1, 2, 3, 4):
                    yield pp, m, v
        else:
            yield pp, m, 1


def times(rng):
    """f, b log-uniform over three decades; w (weight-gradient part of b) anywhere in [0, b]."""
    f, b = 10 ** rng.uniform(-1.5, 1.5), 10 ** rng.uniform(-1.5, 1.5)
    return f, b, b * rng.choice([0.0, rng.random(), rng.random(), 1.0])


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_closed_form_equals_simulator_without_p2p(schedule):
    rng = random.Random(1)
    for pp, m, v in grid(schedule):
        for _ in range(4):
            f, b, w = times(rng)
            r = sim(schedule, pp, m, v, f, b, 0.0, w)
            u = uniform_makespan_s(schedule, pp, m, v, f, b, 0.0, w)
            assert u == pytest.approx(r.makespan_s, rel=1e-12), (schedule, pp, m, v, f, b, w)
            assert uniform_bubble_s(schedule, pp, m, v, f, b, 0.0, w) == pytest.approx(
                r.bubble_s + r.exposed_p2p_s, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "interleaved-1f1b"])
def test_closed_form_equals_simulator_with_p2p(schedule):
    """Exact at any p2p for gpipe/1f1b; for interleaved while p2p <= min(f, b)."""
    rng = random.Random(2)
    for pp, m, v in grid(schedule):
        for ratio in (0.01, 0.3, 1.0) + ((3.0, 20.0) if schedule != "interleaved-1f1b" else ()):
            f, b, _ = times(rng)
            c = ratio * min(f, b)
            r = sim(schedule, pp, m, v, f, b, c, 0.0)
            u = uniform_makespan_s(schedule, pp, m, v, f, b, c)
            assert u == pytest.approx(r.makespan_s, rel=1e-12), (schedule, pp, m, v, f, b, c)
            assert uniform_bubble_s(schedule, pp, m, v, f, b, c) == pytest.approx(
                r.bubble_s + r.exposed_p2p_s, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("schedule", ["interleaved-1f1b", "zero-bubble"])
def test_bounds_hold_and_zero_bubble_estimate_error(schedule):
    """Documented in pipeline_uniform: lower <= simulated <= upper for any p2p; the zero-bubble
    estimate's relative error stays within 0.4 * p2p_s / min(f, b) for p2p_s <= min(f, b)."""
    rng = random.Random(3)
    for pp, m, v in grid(schedule):
        for ratio in (0.02, 0.1, 0.3, 1.0, 5.0):
            f, b, w = times(rng)
            if schedule == "interleaved-1f1b":
                w = 0.0
            c = ratio * min(f, b)
            got = sim(schedule, pp, m, v, f, b, c, w).makespan_s
            low, high = uniform_makespan_bounds_s(schedule, pp, m, v, f, b, c, w)
            assert low * (1 - 1e-12) <= got <= high * (1 + 1e-12), (schedule, pp, m, v, f, b, w, c)
            if schedule == "zero-bubble" and ratio <= 1.0:
                est = uniform_makespan_s(schedule, pp, m, v, f, b, c, w)
                assert abs(est - got) / got <= 0.4 * ratio, (pp, m, f, b, w, c, est, got)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_peak_in_flight_closed_form(schedule):
    for pp, m, v in grid(schedule):
        peaks = sim(schedule, pp, m, v, 1.0, 2.0, 0.0, 0.5).peak_in_flight
        assert uniform_peak_in_flight(schedule, pp, m, v) == peaks[0] == max(peaks), (pp, m, v, peaks)


def test_single_stage_no_bubble_in_closed_form():
    for schedule in SCHEDULES:
        assert uniform_bubble_s(schedule, 1, 8, 1, 1.0, 2.0, 0.5, 1.0) == pytest.approx(0.0)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_broadcasts_over_arrays(schedule):
    rng = np.random.default_rng(0)
    n = 64
    pp = rng.choice([1, 2, 4, 8], n)
    v = rng.choice([1, 2, 3], n) if schedule == "interleaved-1f1b" else np.ones(n, dtype=int)
    m = pp * rng.integers(1, 5, n)
    f, b = rng.uniform(0.1, 2, n), rng.uniform(0.1, 2, n)
    c, w = rng.uniform(0, 0.05, n), b * rng.uniform(0, 1, n)
    out = uniform_makespan_s(schedule, pp, m, v, f, b, c, w)
    assert out.shape == (n,)
    for k in range(n):
        assert out[k] == pytest.approx(uniform_makespan_s(schedule, int(pp[k]), int(m[k]), int(v[k]), f[k], b[k],
                                                          c[k], w[k]))
    peaks = uniform_peak_in_flight(schedule, pp, m, v)
    assert peaks.shape == (n,)
    assert isinstance(uniform_makespan_s(schedule, 4, 8, 1, 1.0, 2.0), float)


def test_unknown_schedule_is_a_value_error():
    with pytest.raises(ValueError, match="schedule"):
        uniform_makespan_s("pipedream", 4, 8, 1, 1.0, 2.0)
    with pytest.raises(ValueError, match="schedule"):
        uniform_peak_in_flight("pipedream", 4, 8)
