"""Closed-form makespan of one pipeline step whose ranks fall into three classes: the first rank
(embedding), pp - 2 identical middle ranks, the last rank (LM head). What `estimate` uses for even
stage splits, so that it agrees with the event simulator (`pipeline_sim.simulate_pipeline`) that
`estimate(..., timeline=True)` and uneven splits run. Numbers or numpy arrays (broadcast).

Inputs per rank are its per-micro-batch forward f_r and backward b_r summed over its v chunks
(blocking-send overheads and exposed TP/CP traffic already folded in, as the simulator's stages
have them), and c, one boundary transfer. T_r = f_r + b_r, p = pp, m = micro-batches.

- gpipe (Huang et al. 2019): sum_r f_r + (m-1) max_r f_r + sum_r b_r + (m-1) max_r b_r + 2(p-1)c, the
  flow-shop makespan of identical jobs, forward then backward (exact against the simulator).
- 1f1b (Narayanan et al. 2021, PipeDream-flush), m >= p: the longest of the paths through one rank k
  (k in {0, 1, p-2, p-1}; a middle rank's path length is convex in k, so the ends of the middle
  range bound it): fill a_k = sum_{j<k} f_j + kc, rank k's own work m T_k, drain d_k = sum_{j<k} b_j
  + kc, plus the waits rank k cannot fill: warm-up, W_k = max(0, D_k - (p-1-k) f_k) with D_k =
  sum_{j>k} T_j + 2(p-1-k)c the round trip below it; cool-down, max(0, D_k - 2(p-1-k)c - (p-1-k) b_k);
  steady state, with lag = mean_{j>k} T_j - T_k, (m - 2 - floor((m-2)/(p-k))) max(0, lag + 2c)
  (a slower downstream paces rank k; transfers), the lag dropped when m <= p - k (no steady pairs on
  rank k: the warm-up and cool-down terms hold it). For uniform stages
  this is exactly pipeline_uniform's (m+p-1)(f+b) + 2c[(p-1) + (m-2) - floor((m-2)/p)]; against the
  simulator with heavier first/last ranks its error is 0.2% mean, 6% max at c up to half an op
  (tests/test_costmodel_pipeline_ranked.py). For m < p every rank k < p-m runs GPipe's order: the
  gpipe form plus 1F1B's 2(m-2)c steady-state transfer waits.
- interleaved-1f1b, v chunks (Narayanan et al. 2021, sec. 2.2.2): m P + (sum_r T_r - P)/v + 2(pv-1)c
  with P = max_r T_r: the (p-1)/(vm) bubble of uniform stages, exact there while c <= min(f, b)/v.
- zero-bubble (ZB-H1, Qi et al. 2023): pipeline_uniform's three critical paths for the mean rank
  (f, b and the weight-gradient part w averaged over ranks), plus m (T_busiest - mean T): exact for
  uniform stages at c = 0; error against the simulator in the tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from .uniform import _zb

__all__ = ["ranked_makespan_s", "SCHEDULE_INDEX"]

Num = Any

SCHEDULE_INDEX = {"gpipe": 0, "1f1b": 1, "interleaved-1f1b": 2, "zero-bubble": 3}
"""Schedule codes (as in costmodel.layer.memory.SCHEDULE_CODES)."""


def _max(a: Num, b: Num) -> Num:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.maximum(a, b)
    return a if a >= b else b


def _min(a: Num, b: Num) -> Num:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.minimum(a, b)
    return a if a <= b else b


def _gpipe(p: Num, m: Num, f0: Num, b0: Num, fm: Num, bm: Num, fl: Num, bl: Num, c: Num) -> Num:
    n = p - 2
    return (f0 + n * fm + fl + (m - 1) * _max(_max(f0, fm * (n > 0)), fl)
            + b0 + n * bm + bl + (m - 1) * _max(_max(b0, bm * (n > 0)), bl) + 2 * (p - 1) * c)


def _path(k: Num, p: Num, m: Num, a: Num, d: Num, f: Num, b: Num, down: Num, c: Num) -> Num:
    """1F1B: the path through rank k (fill a, drain d, downstream work `down` = sum_{j>k} T_j)."""
    t = f + b
    below = p - 1 - k
    trip = down + 2 * below * c
    warm = _max(trip - below * f, 0.0)
    cool = _max(down - below * b, 0.0)
    mean_down = down / _max(below, 1)
    lag = mean_down - t
    per_wait = _max(lag + 2 * c, 0.0)
    per_wait = per_wait + (m <= p - k) * (_min(per_wait, 2 * c) - per_wait)
    steady = (below > 0) * (m - 2 - (m - 2) // _max(p - k, 1)) * per_wait
    return a + k * c + d + k * c + m * t + warm + cool + steady


def _path_scalar(k: int, p: int, m: int, a: float, d: float, f: float, b: float, down: float,
                 c: float) -> float:
    """`_path` on Python numbers (same formula, no array dispatch)."""
    t = f + b
    below = p - 1 - k
    out = a + d + 2 * k * c + m * t + max(down + 2 * below * c - below * f, 0.0) + max(down - below * b, 0.0)
    if below > 0:
        per_wait = max(down / below - t + 2 * c, 0.0)
        if m <= p - k:
            per_wait = min(per_wait, 2 * c)
        out += (m - 2 - (m - 2) // (p - k)) * per_wait
    return out


def _one_f_one_b(p: Num, m: Num, f0: Num, b0: Num, fm: Num, bm: Num, fl: Num, bl: Num, c: Num) -> Num:
    tm, tl = fm + bm, fl + bl
    n = p - 2
    first = _path(0, p, m, 0.0, 0.0, f0, b0, n * tm + tl, c)
    last = _path(p - 1, p, m, f0 + n * fm, b0 + n * bm, fl, bl, 0.0, c)
    out = _max(first, last)
    if (n > 0) if not isinstance(n, np.ndarray) else np.any(n > 0):
        mid_lo = _path(1, p, m, f0, b0, fm, bm, (n - 1) * tm + tl, c)
        mid_hi = _path(p - 2, p, m, f0 + (n - 1) * fm, b0 + (n - 1) * bm, fm, bm, tl, c)
        out = _max(out, (n > 0) * _max(mid_lo, mid_hi))
    few = m < p
    if few if isinstance(few, bool) else np.any(few):
        g = _gpipe(p, m, f0, b0, fm, bm, fl, bl, c) + 2 * c * _max(m - 2, 0)
        out = np.where(few, g, out) if isinstance(few, np.ndarray) else g
    return out


def ranked_makespan_s(schedule: Num, pp: Num, m: Num, v: Num, *, first: tuple[Num, Num],
                      middle: tuple[Num, Num], last: tuple[Num, Num], p2p_s: Num = 0.0,
                      bwd_weight: tuple[Num, Num, Num] = (0.0, 0.0, 0.0)) -> Num:
    """Makespan of one step; `first`, `middle`, `last` are (forward, backward) seconds per
    micro-batch of rank 0, each middle rank and rank pp-1 (summed over the rank's v chunks);
    `schedule` a name or code (SCHEDULE_INDEX), possibly an array; `bwd_weight` the weight-gradient
    part of each class's backward (zero-bubble only). pp = 1: m (f + b) of `first`."""
    code = SCHEDULE_INDEX[schedule] if isinstance(schedule, str) else schedule
    f0, b0 = first
    fm, bm = middle
    fl, bl = last
    c = p2p_s
    if not isinstance(pp, np.ndarray) and pp == 1:
        return m * (f0 + b0) + 0.0 * c
    t0, tm, tl = f0 + b0, fm + bm, fl + bl
    n = pp - 2
    busiest = _max(_max(t0, tm * (n > 0)), tl)
    total = t0 + n * tm + tl
    nd = np.ndarray
    arrays = (isinstance(code, nd) or isinstance(pp, nd) or isinstance(m, nd) or isinstance(v, nd)
              or isinstance(t0, nd) or isinstance(tm, nd) or isinstance(tl, nd) or isinstance(c, nd))
    if not arrays:
        return _scalar(code, pp, m, v, f0, b0, fm, bm, fl, bl, c, bwd_weight, busiest, total)
    out = 0.0 * (busiest + c + m + code)
    if not arrays or np.any(code == 0):
        out = _pick(out, code == 0, _gpipe(pp, m, f0, b0, fm, bm, fl, bl, c))
    if not arrays or np.any(code == 1):
        out = _pick(out, code == 1, _one_f_one_b(pp, m, f0, b0, fm, bm, fl, bl, c))
    if not arrays or np.any(code >= 2):
        spread = total - busiest
        inter = m * busiest + spread / v + 2 * (pp * v - 1) * c
        out = _pick(out, code == 2, inter)
        if not arrays or np.any(code == 3):
            w0, wm, wl = bwd_weight
            f = (f0 + n * fm + fl) / pp
            b = (b0 + n * bm + bl) / pp
            w = (w0 + n * wm + wl) / pp
            zb = _zb(np.asarray(pp), np.asarray(m), np.asarray(f), np.asarray(b - w), np.asarray(w), np.asarray(c))
            zb = zb + m * (busiest - total / pp)
            out = _pick(out, code == 3, zb if arrays or isinstance(zb, np.ndarray) and zb.ndim else float(zb))
    if isinstance(pp, np.ndarray):
        out = np.where(pp == 1, m * (f0 + b0), out)
    return out


def _scalar(code: int, p: int, m: int, v: int, f0: float, b0: float, fm: float, bm: float, fl: float,
            bl: float, c: float, bwd_weight: tuple, busiest: float, total: float) -> float:
    """The same formulas for one plan, on Python numbers (the `estimate` hot path)."""
    if code == 1:
        if m < p:
            return _gpipe(p, m, f0, b0, fm, bm, fl, bl, c) + 2 * c * max(m - 2, 0)
        tm, tl, n = fm + bm, fl + bl, p - 2
        out = max(_path_scalar(0, p, m, 0.0, 0.0, f0, b0, n * tm + tl, c),
                  _path_scalar(p - 1, p, m, f0 + n * fm, b0 + n * bm, fl, bl, 0.0, c))
        if n > 0:
            out = max(out, _path_scalar(1, p, m, f0, b0, fm, bm, (n - 1) * tm + tl, c),
                      _path_scalar(p - 2, p, m, f0 + (n - 1) * fm, b0 + (n - 1) * bm, fm, bm, tl, c))
        return out
    if code == 0:
        return _gpipe(p, m, f0, b0, fm, bm, fl, bl, c)
    if code == 2:
        return m * busiest + (total - busiest) / v + 2 * (p * v - 1) * c
    w0, wm, wl = bwd_weight
    n = p - 2
    f, b, w = (f0 + n * fm + fl) / p, (b0 + n * bm + bl) / p, (w0 + n * wm + wl) / p
    return float(_zb(np.asarray(p), np.asarray(m), np.asarray(f), np.asarray(b - w), np.asarray(w),
                     np.asarray(c))) + m * (busiest - total / p)


def _pick(out: Num, mask: Num, value: Num) -> Num:
    if isinstance(mask, np.ndarray) or isinstance(value, np.ndarray) or isinstance(out, np.ndarray):
        return np.where(mask, value, out)
    return value if mask else out
