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

__all__ = ["host_constants", "cpu_inflation", "work_span_step_s", "comm_s", "step_sync_s", "sharded_dp_cpu_s",
           "STEP_SCALAR_ALL_REDUCES"]

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
    sync_s, _ = step_sync_s(profile, procs=procs)
    if sync_s > 0:
        out["step_overhead_s"] = sync_s
    return out


def cpu_inflation(host: Any, procs: int) -> float:
    """How much more CPU a block costs while `procs` single-thread workers run at once than alone
    (the profile's concurrency benchmark; context switches and shared caches), at least 1; 1 when the
    profile did not measure `procs` workers."""
    if host is None or not host.block_cpu_s or procs not in (host.concurrent_block_cpu_s or {}):
        return 1.0
    return max(1.0, host.concurrent_block_cpu_s[procs] / host.block_cpu_s)


def comm_s(est: Any) -> float:
    """Communication seconds of a StepEstimate's breakdown (TP, CP, DP, PP)."""
    t = est.time
    return t.tp_comm_s + t.cp_comm_s + t.dp_comm_s + t.pp_comm_s


def work_span_step_s(free: Any, *, procs: int, cores: int, comm_cpu_s: float | None = None,
                     sync_s: float = 0.0, sync_cpu_s: float = 0.0, extra_cpu_s: float = 0.0) -> float:
    """Step time of `procs` single-thread workers sharing `cores` cores, from `free`, the StepEstimate
    of the same plan priced as if every worker had a core of its own (`host_constants(..., cores=procs)`):
    the work-span lower bound max(span, work / cores) (Brent 1974; Blumofe & Leiserson 1999), which a
    greedy scheduler such as the OS's approaches when either term dominates. Span = the free step (its
    critical path: compute, bubbles, and communication at the wall times the profile measured with all
    `procs` workers on these cores). Work = procs x each worker's CPU seconds: the free step minus bubble
    and communication wall time, plus the CPU the communication costs (`comm_cpu_s`: the plan priced with
    the profile's CPU-time collective curves, `CalibrationProfile.cpu_cost_profile`; default: its wall
    time; `sync_s` / `sync_cpu_s`: per-step synchronisation inside the optimizer term, e.g. the executor's
    scalar all-reduces, wall and CPU; `extra_cpu_s`: per-step CPU work of each worker the estimate does
    not hold, e.g. `sharded_dp_cpu_s`, on both the span and the work). While a worker waits in a bubble
    or a collective its core runs the others, which a fixed share of a core per worker cannot express."""
    wall_comm_s = comm_s(free) + sync_s
    busy_s = max(0.0, free.step_time_s - free.time.bubble_s - wall_comm_s)
    cpu_comm_s = wall_comm_s if comm_cpu_s is None else comm_cpu_s + sync_cpu_s
    return max(free.step_time_s + extra_cpu_s, procs * (busy_s + cpu_comm_s + extra_cpu_s) / max(1, cores))


def step_sync_s(profile: Any, *, procs: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the executor's scalar all-reduces per step at `procs` ranks, from the
    profile's smallest all-reduce point ((0, 0) when not measured; CPU 0 when its CPU was not kept)."""
    pts = [p for p in getattr(profile, "collectives", ()) if p.op == "all_reduce" and p.group_size == procs]
    if procs < 2 or not pts:
        return 0.0, 0.0
    small = min(pts, key=lambda p: p.nbytes)
    return STEP_SCALAR_ALL_REDUCES * small.time_s, STEP_SCALAR_ALL_REDUCES * (small.cpu_s or 0.0)


def sharded_dp_cpu_s(plan: Any, host: Any, *, num_layers: int) -> float:
    """Extra CPU seconds per step that per-block sharded data parallelism costs each worker: the
    profile's FSDP2 figure per block (`HostPoint.fsdp_zero2_block_s`, `fsdp_zero3_block_s` for ZeRO-3)
    times the blocks on a pipeline rank plus one unit for the embedding / head. The executor shards
    per block (FSDP2, or its `replicate` for ZeRO-0) whenever dp > 1 unless the plan is plain DDP
    (ZeRO-0/1 without TP and PP; executor.parallelize.dp_wrapper). 0 without a measurement."""
    if host is None or plan.dp < 2 or host.fsdp_zero2_block_s is None:
        return 0.0
    if plan.zero_stage <= 1 and plan.tp == 1 and plan.pp == 1:
        return 0.0  # DDP: one bucketed all-reduce, priced by the comm model
    per_block = host.fsdp_zero3_block_s if plan.zero_stage == 3 and host.fsdp_zero3_block_s is not None \
        else host.fsdp_zero2_block_s
    layers = max(plan.layers_per_stage) if plan.layers_per_stage else num_layers / plan.pp
    return (layers + 1) * per_block
