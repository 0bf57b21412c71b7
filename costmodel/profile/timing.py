"""Timing helpers for the profiler: warm-up, repeated runs, median and spread, device sync."""

from __future__ import annotations

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
            max_s: float | None = None) -> tuple[float, float]:
    """(median seconds, standard deviation) of `fn` over `repeats` runs after `warmup` runs; stops
    early once `max_s` seconds were spent measuring (keeping at least one run)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if max_s is not None and time.perf_counter() - start > max_s:
            break
    std = statistics.stdev(times) if len(times) > 1 else 0.0
    return statistics.median(times), std
