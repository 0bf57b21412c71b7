"""The GPU benchmark's memory columns: the cost model's allocated / reserved peaks (stack `paraplan`) against
the executor's torch.cuda.max_memory_allocated / max_memory_reserved and the plain loop's. Used by
`benchmarks.bench_gpu` and `benchmarks.gpu_report`; pure, so it is tested without a GPU."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["GIB", "MEMORY_TARGETS", "memory_columns", "read_reserved_bytes"]

GIB = 2.0**30
MEMORY_TARGETS = {"allocated_within": 0.05, "allocated_never_under": 0.03}
"""The allocated peak predicted within 5% of the executor's and never more than 3% under it."""


def read_reserved_bytes(run_dir: str | Path) -> float:
    """max_memory_reserved over ranks that the executor wrote to the run's memory.json (NaN if absent)."""
    try:
        value = json.loads((Path(run_dir) / "memory.json").read_text()).get("reserved_bytes")
    except (OSError, ValueError):
        return math.nan
    return float(value) if value else math.nan


def memory_columns(est: Any, *, executor_allocated: float, executor_reserved: float, plain_allocated: float,
                   plain_reserved: float) -> dict[str, Any]:
    """The memory figures of one case (GiB) and the errors (predicted / measured - 1) against the executor."""
    mem = est.memory
    row = {
        "predicted_allocated_gib": mem.allocated_bytes / GIB, "predicted_reserved_gib": mem.reserved_bytes / GIB,
        "predicted_peak_gib": mem.peak_bytes / GIB, "peak_moment": mem.describe(),
        "executor_allocated_gib": executor_allocated / GIB, "executor_reserved_gib": executor_reserved / GIB,
        "plain_allocated_gib": plain_allocated / GIB, "plain_reserved_gib": plain_reserved / GIB,
    }
    row["allocated_error"] = mem.allocated_bytes / executor_allocated - 1 if executor_allocated else math.nan
    row["reserved_error"] = mem.reserved_bytes / executor_reserved - 1 if executor_reserved == executor_reserved \
        and executor_reserved else math.nan
    row["executor_vs_plain_allocated"] = executor_allocated / plain_allocated - 1 if plain_allocated else math.nan
    err = row["allocated_error"]
    row["allocated_ok"] = bool(abs(err) <= MEMORY_TARGETS["allocated_within"]
                               and err >= -MEMORY_TARGETS["allocated_never_under"]) if err == err else False
    return row
