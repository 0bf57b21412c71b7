"""A-priori constants of worker processes on this host (`validate --local`, issue 6): what the cost
model needs beyond the profile's curves to predict the executor on the machine the profile measured.
Nothing here is fitted to the validated runs: each constant is a measurement of the profile or a
documented property of the executor.

On a GPU host only `framework_bytes` = 0 (the executor measures tensor memory, not the CUDA context).
On a CPU host (one process per 'GPU', Gloo) also:
- `measured_rate_scale` = min(1, cores / (procs * worker_threads)) / inflation * worker_threads /
  profile_threads: torchrun gives each of several workers 1 thread (a single worker all cores), the
  workers share the cores the profile measured one process at a time, and each one's work costs
  `inflation` times more CPU than alone (the profile's concurrency benchmark, `cpu_inflation`).
- `host_overlap_exponent` = 1: the thread that issues an op also runs it, so host time adds to compute
  (no queue to hide it; `(gpu^q + host^q)^(1/q)` with q = 1 is the sum).
- `host_op_s`: the profile's measured host seconds of a plain block's forward + backward at a few
  tokens (`CalibrationProfile.host`) / the ops the cost model counts for it (`block_host_ops`, 3 passes),
  divided by the same share of a core, min(1, cores / (procs * worker_threads)) / inflation.
- `host_tp_factor`, `host_sp_factor`, `host_full_recompute_factor`, `host_selective_recompute_factor`:
  the measured ratios of a TP (DTensor), TP+SP and recomputed block's host time to a plain block's,
  per counted op.
- `overlap_grad_reduce` = 0 when the workers occupy every core: Gloo's reduction needs the CPU, there
  is no idle core to hide it behind the backward.
- `step_overhead_s`: the executor's per-step scalar all-reduces over all ranks (target-token count,
  loss, gradient norm: 3) at the profile's smallest measured all-reduce of `procs` ranks."""

from __future__ import annotations

import os
from typing import Any

from costmodel.compute import DEFAULT_EFFICIENCY, block_host_ops
from costmodel.constants import MEASURED_RATE_SCALE

__all__ = ["host_constants", "cpu_inflation", "STEP_SCALAR_ALL_REDUCES"]

STEP_SCALAR_ALL_REDUCES = 3
"""Scalar all-reduces per optimizer step in `executor.engine.Engine.train_step`: the target-token
count, the loss, and the global gradient norm (`executor.grads`)."""


def host_constants(profile: Any, *, procs: int, cores: int | None = None) -> dict[str, float]:
    """The a-priori constants (module docstring) of `procs` worker processes on a host of `cores` cores
    (default: this one) for `profile` (a CalibrationProfile)."""
    if procs < 1:
        raise ValueError(f"procs={procs}: need at least 1")
    if profile.device.lower() != "cpu":
        return {"framework_bytes": 0.0}
    cores = cores or os.cpu_count() or 1
    worker_threads = 1 if procs > 1 else cores
    host = getattr(profile, "host", None)
    host_share = min(1.0, cores / (procs * worker_threads)) / cpu_inflation(host, procs)
    out: dict[str, float] = {
        MEASURED_RATE_SCALE: host_share * worker_threads / max(1, profile.threads or 1),
        "framework_bytes": 0.0,
        "host_overlap_exponent": 1.0,
    }
    if procs * worker_threads >= cores:
        out["overlap_grad_reduce"] = 0.0
    if host is not None:
        eff = DEFAULT_EFFICIENCY
        ops = {name: block_host_ops(eff, cross=False, flash=True, tp=tp, sp=sp)
               for name, tp, sp in (("plain", 1, 0), ("tp", 2, 0), ("tp_sp", 2, 1))}
        per_op = host.block_s / (3 * ops["plain"])
        out["host_op_s"] = per_op / host_share
        if host.block_tp_s:
            out["host_tp_factor"] = host.block_tp_s / (3 * ops["tp"]) / per_op
            if host.block_tp_sp_s:
                out["host_sp_factor"] = (host.block_tp_sp_s / ops["tp_sp"]) / (host.block_tp_s / ops["tp"])
        if host.block_full_recompute_s:
            out["host_full_recompute_factor"] = host.block_full_recompute_s / host.block_s
        if host.block_selective_recompute_s:
            out["host_selective_recompute_factor"] = host.block_selective_recompute_s / host.block_s
    if procs > 1:
        curve = profile.collective_curve("all_reduce", procs)
        if curve is not None:
            out["step_overhead_s"] = STEP_SCALAR_ALL_REDUCES * float(curve[1][0])
    return out


def cpu_inflation(host: Any, procs: int) -> float:
    """How much more CPU a block costs while `procs` single-thread workers run at once than alone
    (the profile's concurrency benchmark; context switches and shared caches), at least 1; 1 when the
    profile did not measure `procs` workers."""
    if host is None or not host.block_cpu_s or procs not in (host.concurrent_block_cpu_s or {}):
        return 1.0
    return max(1.0, host.concurrent_block_cpu_s[procs] / host.block_cpu_s)
