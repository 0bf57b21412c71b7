"""Closed forms of `simulate_pipeline` for UNIFORM stages, broadcasting over numpy arrays.

All stages take `fwd_s` forward and `bwd_s` backward per micro-batch (per virtual stage under
interleaving), `bwd_weight_s` of which is the weight-gradient part W (zero-bubble only), and every
stage boundary costs `p2p_s`. With p = pp, m = micro-batches, v = virtual stages, f, b, w, c:

- gpipe:  (m + p - 1)(f + b) + 2(p - 1)c                                   (Huang et al. 2019)
- 1f1b:   (m + p - 1)(f + b) + 2c[(p - 1) + (m - 2) - floor((m - 2)/p)]    (Narayanan et al. 2021)
  The second c term is the steady state: a forward on rank r waits for the round trip
  r -> r+1 -> r of the previous pair, so p2p is exposed on all but one micro-batch in p.
- interleaved-1f1b, c = 0: (m v + p - 1)(f + b), i.e. bubble (p-1)/(v m) of the ideal m v (f + b)
  (Narayanan et al. 2021, SC21, sec. 2.2.2).
- zero-bubble (ZB-H1), c = 0, B = b - w: the maximum of the three critical paths
  (m + p - 1)(f + B) + max(m - p + 1, 1) w    (the 1F1B path; W fills all but m - p + 1 slots)
  (m + p - 1) f + max(m, p) B + m w           (the last rank after its first forward)
  max(m, p) f + (m + p - 1) B + m w           (rank 0 after its first backward returns).
  For m >= p the bubble is (p - 1)(f + max(B - w, 0)): Qi et al. 2023's (p-1)(T_F + T_B - T_W)
  when T_W <= T_B.

Exactness (tests/test_costmodel_pipeline_uniform.py sweeps grids against the simulator):
- gpipe, 1f1b: exact for every c.
- interleaved-1f1b: (m v + p - 1)(f + b) + 2(p v - 1)c, the first micro-batch crossing every boundary
  forward and back; exact while c <= min(f, b) (a transfer is no longer than an op), a lower bound
  beyond, where zig-zag paths take over.
- zero-bubble with c > 0: no closed form (the longest path switches among hundreds of zig-zag
  paths). We add transfers to the three c = 0 paths: 2(p - 1)c (the first micro-batch's round trip)
  to the last two, and to the 1F1B path the mean of that and 1F1B's steady-state exposure,
  [2(p - 1) + (m - 2) - floor((m - 2)/p)]c, since W ops absorb part of the zig-zag waits. An
  empirical fit, not a derivation: its error vs the simulator (`python -m benchmarks pipeline`,
  docs/BENCHMARKS.md) is about +-0.6% at c = 0.02 min(f, b), +-3% at 0.1, +-8% at 0.3; the tests
  bound it by 0.4 c / min(f, b) for c <= min(f, b).
`uniform_makespan_bounds_s` gives proven bounds: the c = 0 form below (the makespan never
decreases with c) and the c = 0 form at f + c, B + c above (a path enters each F or B op through
at most one transfer).
"""

from __future__ import annotations

import numpy as np

__all__ = ["uniform_makespan_s", "uniform_peak_in_flight", "uniform_bubble_s", "uniform_makespan_bounds_s"]

ArrayLike = float | int | np.ndarray


def _check_schedule(schedule: str) -> None:
    if schedule not in ("gpipe", "1f1b", "interleaved-1f1b", "zero-bubble"):
        raise ValueError(f"schedule={schedule!r} is unknown; use gpipe, 1f1b, interleaved-1f1b or zero-bubble")


def _zb(p: np.ndarray, m: np.ndarray, f: np.ndarray, bi: np.ndarray, w: np.ndarray,
        c: np.ndarray) -> np.ndarray:
    """ZB-H1 makespan from its three critical paths (exact at c = 0; see the module docstring)."""
    round_trip = 2 * (p - 1) * c
    steady = (2 * (p - 1) + (m - 2) - np.floor_divide(m - 2, p)) * c
    one_f_one_b = (m + p - 1) * (f + bi) + np.maximum(m - p + 1, 1) * w + steady
    last_rank = (m + p - 1) * f + np.maximum(m, p) * bi + m * w + round_trip
    first_rank = np.maximum(m, p) * f + (m + p - 1) * bi + m * w + round_trip
    return np.maximum(np.maximum(one_f_one_b, last_rank), first_rank)


def uniform_makespan_s(schedule: str, pp: ArrayLike, m: ArrayLike, v: ArrayLike = 1, fwd_s: ArrayLike = 0.0,
                       bwd_s: ArrayLike = 0.0, p2p_s: ArrayLike = 0.0,
                       bwd_weight_s: ArrayLike = 0.0) -> ArrayLike:
    """Makespan of one step with uniform stages (see the module docstring for the formulas).

    Exact for gpipe and 1f1b at any p2p, for interleaved-1f1b while p2p_s <= min(fwd_s, bwd_s), for
    zero-bubble at p2p_s = 0; an estimate otherwise (`uniform_makespan_bounds_s` gives both sides). `bwd_weight_s` only matters for
    zero-bubble. Broadcasts over numpy arrays; returns a float for scalar inputs."""
    _check_schedule(schedule)
    p = np.asarray(pp, dtype=np.int64)
    mm = np.asarray(m, dtype=np.int64)
    vv = np.asarray(v, dtype=np.int64)
    f, b = np.asarray(fwd_s, dtype=float), np.asarray(bwd_s, dtype=float)
    c, w = np.asarray(p2p_s, dtype=float), np.asarray(bwd_weight_s, dtype=float)
    if schedule == "gpipe":
        out = (mm + p - 1) * (f + b) + 2 * (p - 1) * c
    elif schedule == "1f1b":
        out = (mm + p - 1) * (f + b) + 2 * c * ((p - 1) + (mm - 2) - np.floor_divide(mm - 2, p))
    elif schedule == "interleaved-1f1b":
        out = (mm * vv + p - 1) * (f + b) + 2 * (p * vv - 1) * c
    else:
        out = _zb(p, mm, f, b - w, w, c)
    return out[()] if isinstance(out, np.ndarray) else out


def uniform_makespan_bounds_s(schedule: str, pp: ArrayLike, m: ArrayLike, v: ArrayLike = 1,
                              fwd_s: ArrayLike = 0.0, bwd_s: ArrayLike = 0.0, p2p_s: ArrayLike = 0.0,
                              bwd_weight_s: ArrayLike = 0.0) -> tuple[ArrayLike, ArrayLike]:
    """(lower, upper) bounds of the simulated makespan; equal where the closed form is exact.

    Lower: the closed form for interleaved-1f1b (a real path), the p2p-free form for zero-bubble.
    Upper: the p2p-free form with every F and B op lengthened by p2p_s (each op is entered through at
    most one transfer, so no path gains more than that)."""
    exact = uniform_makespan_s(schedule, pp, m, v, fwd_s, bwd_s, p2p_s, bwd_weight_s)
    if schedule in ("gpipe", "1f1b"):
        return exact, exact
    c = np.asarray(p2p_s, dtype=float)
    if schedule == "interleaved-1f1b":
        low = exact
    else:
        low = uniform_makespan_s(schedule, pp, m, v, fwd_s, bwd_s, 0.0, bwd_weight_s)
    high = uniform_makespan_s(schedule, pp, m, v, np.asarray(fwd_s) + c, np.asarray(bwd_s) + c, 0.0,
                              bwd_weight_s)
    return low, high


def uniform_bubble_s(schedule: str, pp: ArrayLike, m: ArrayLike, v: ArrayLike = 1, fwd_s: ArrayLike = 0.0,
                     bwd_s: ArrayLike = 0.0, p2p_s: ArrayLike = 0.0, bwd_weight_s: ArrayLike = 0.0) -> ArrayLike:
    """Idle time (bubble + exposed p2p) of the critical rank: makespan minus its compute m*v*(f+b)."""
    busy = np.asarray(m) * np.asarray(v) * (np.asarray(fwd_s, dtype=float) + np.asarray(bwd_s, dtype=float))
    return uniform_makespan_s(schedule, pp, m, v, fwd_s, bwd_s, p2p_s, bwd_weight_s) - busy


def uniform_peak_in_flight(schedule: str, pp: ArrayLike, m: ArrayLike, v: ArrayLike = 1) -> ArrayLike:
    """Peak in-flight (micro-batch, chunk) pairs on rank 0, the most loaded rank.

    gpipe m; 1f1b and zero-bubble min(p, m) (ZB-H1 keeps 1F1B's peak, Qi et al. 2023);
    interleaved min(v p + p - 1, v m): (v-1)p + 2(p-1) warm-up forwards plus one (Megatron-LM)."""
    _check_schedule(schedule)
    p = np.asarray(pp, dtype=np.int64)
    mm = np.asarray(m, dtype=np.int64)
    vv = np.asarray(v, dtype=np.int64)
    if schedule == "gpipe":
        out = mm + 0 * p
    elif schedule == "interleaved-1f1b":
        out = np.minimum(vv * p + p - 1, vv * mm)
    else:
        out = np.minimum(p, mm)
    return out[()] if isinstance(out, np.ndarray) else out
