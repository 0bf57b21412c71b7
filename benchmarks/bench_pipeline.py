"""Pipeline-schedule simulation speed, closed-form throughput and the zero-bubble estimate's error.

`python -m benchmarks pipeline` prints the figures and rewrites the pipeline section of
docs/BENCHMARKS.md (between `<!-- pipeline:begin -->` and `<!-- pipeline:end -->`)."""

from __future__ import annotations

import itertools
import os
import platform
import random
import time
from pathlib import Path

import numpy as np

from costmodel.atomic import update_section
from costmodel.pipeline import SCHEDULES, simulate_pipeline, uniform_makespan_s

__all__ = ["main", "sims_per_s", "closed_form_per_s", "zero_bubble_error"]

DOC = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- pipeline:begin -->", "<!-- pipeline:end -->"


def sims_per_s(schedule: str, *, pp: int = 16, m: int = 64, v: int = 1, with_events: bool,
               min_time_s: float = 1.0) -> float:
    """Simulations per CPU-second (process time, so a shared host does not skew it) of one uneven
    pp-stage step, with the per-shape caches warm as in a search."""
    rng = random.Random(0)
    s = pp * v
    f = [rng.uniform(0.9, 1.1) / v for _ in range(s)]
    b = [2 * x for x in f]
    kw = dict(schedule=schedule, pp=pp, num_micro_batches=m, virtual_stages=v, fwd_s=f, bwd_s=b,
              bwd_weight_s=[x / 2 for x in b], p2p_s=0.02, with_events=with_events)
    simulate_pipeline(**kw)
    n, t0 = 0, time.process_time()
    while time.process_time() - t0 < min_time_s:
        simulate_pipeline(**kw)
        n += 1
    return n / (time.process_time() - t0)


def closed_form_per_s(schedule: str, *, n: int = 1_000_000) -> float:
    """Uniform-stage makespans per CPU-second, evaluated on numpy arrays of n plans."""
    rng = np.random.default_rng(0)
    pp = rng.choice([1, 2, 4, 8, 16, 32], n)
    m = pp * rng.integers(1, 16, n)
    v = rng.choice([1, 2, 4], n) if schedule == "interleaved-1f1b" else 1
    f, b = rng.uniform(0.01, 1, n), rng.uniform(0.01, 2, n)
    t0 = time.process_time()
    uniform_makespan_s(schedule, pp, m, v, f, b, 0.01 * f, 0.5 * b)
    return n / (time.process_time() - t0)


def zero_bubble_error(ratio: float, *, seed: int = 3) -> tuple[float, float]:
    """(min, max) relative error of the zero-bubble closed form vs the simulator at p2p = ratio*min(f, b)."""
    rng = random.Random(seed)
    errs = []
    for pp, m in itertools.product([2, 3, 4, 5, 8, 16], [1, 2, 4, 7, 8, 12, 16, 32, 64]):
        for _ in range(6):
            f, b = 10 ** rng.uniform(-1.5, 1.5), 10 ** rng.uniform(-1.5, 1.5)
            w = b * rng.choice([0.0, rng.random(), rng.random(), 1.0])
            c = ratio * min(f, b)
            got = simulate_pipeline(schedule="zero-bubble", pp=pp, num_micro_batches=m, fwd_s=[f] * pp,
                                    bwd_s=[b] * pp, bwd_weight_s=[w] * pp, p2p_s=c, with_events=False).makespan_s
            errs.append((uniform_makespan_s("zero-bubble", pp, m, 1, f, b, c, w) - got) / got)
    return min(errs), max(errs)


def _write_section(body: str) -> None:
    """Replace (or append) the pipeline section of docs/BENCHMARKS.md atomically."""
    update_section(DOC, "pipeline", body, title="paraplan benchmarks")


def main() -> None:
    lines = ["## Pipeline schedules (costmodel.pipeline)", "",
             f"Command: `python -m benchmarks pipeline` ({platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs shared with other jobs, so rates are per CPU-second of process time; "
             f"Python {platform.python_version()}).", "",
             "simulate_pipeline, pp=16, m=64 (v=2 for interleaved), uneven stages, p2p > 0:", "",
             "| schedule | ops | sims/s without events | sims/s with events (TimelineEvent objects) |", "|---|---|---|---|"]
    for schedule in SCHEDULES:
        v = 2 if schedule == "interleaved-1f1b" else 1
        ops = 16 * v * 64 * (3 if schedule == "zero-bubble" else 2)
        fast = sims_per_s(schedule, v=v, with_events=False)
        slow = sims_per_s(schedule, v=v, with_events=True, min_time_s=2.0)
        lines.append(f"| {schedule} | {ops} | {fast:,.0f} | {slow:,.1f} |")
        print(f"   {schedule:17s} {fast:9,.0f} sims/s   {slow:7,.1f} sims/s with events")
    lines += ["", "Closed forms for uniform stages (`uniform_makespan_s` on numpy arrays of 10^6 plans):", "",
              "| schedule | makespans/s |", "|---|---|"]
    for schedule in SCHEDULES:
        rate = closed_form_per_s(schedule)
        lines.append(f"| {schedule} | {rate:,.0f} |")
        print(f"   {schedule:17s} {rate:13,.0f} closed-form makespans/s")
    lines += ["", "Zero-bubble closed form vs the simulator with p2p > 0 (gpipe and 1f1b are exact, "
              "interleaved exact while p2p <= min(f, b)); relative error (closed - simulated)/simulated "
              "over pp in 2..16, m in 1..64, f, b log-uniform over 3 decades, any W <= b:", "",
              "| p2p / min(f, b) | min error | max error |", "|---|---|---|"]
    for ratio in (0.02, 0.1, 0.3):
        lo, hi = zero_bubble_error(ratio)
        lines.append(f"| {ratio} | {lo:+.2%} | {hi:+.2%} |")
        print(f"   zero-bubble error at p2p={ratio} min(f,b): {lo:+.2%} .. {hi:+.2%}")
    _write_section("\n".join(lines))


if __name__ == "__main__":
    main()
