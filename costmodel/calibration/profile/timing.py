"""Timing helpers for the profiler: warm-up, repeated runs, median and spread, device sync."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["time_fn", "sync"]


def sync(device: torch.device) -> None:
    """Wait for queued kernels on `device` (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], *, device: torch.device, warmup: int = 1, repeats: int = 3,
            max_s: float | None = None, min_sample_s: float = 2e-3) -> tuple[float, float]:
    """(best seconds per call, median seconds per call) of `fn` over `repeats` samples after `warmup`
    calls. The best sample is what the kernel achieves when it has the cores (timeit's advice: the
    minimum, since slower samples measure interference, not the kernel); the median shows how much
    interference there was. Like `timeit.Timer.autorange`, a sample runs `fn` enough times back to back to last at
    least `min_sample_s`, so microsecond kernels are not lost in timer and scheduler noise. Stops
    early once `max_s` seconds were spent measuring (keeping at least one sample)."""
    for _ in range(max(1, warmup)):
        fn()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    once = time.perf_counter() - t0
    inner = max(1, min(10_000, math.ceil(min_sample_s / max(once, 1e-9))))
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync(device)
        times.append((time.perf_counter() - t0) / inner)
        if max_s is not None and time.perf_counter() - start > max_s:
            break
    return min(times), statistics.median(times)
