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

from costmodel import estimate
from costmodel.compute import DEFAULT_EFFICIENCY, block_host_ops
from costmodel.constants import MEASURED_RATE_SCALE

__all__ = ["LocalPredictor", "host_constants", "cpu_inflation", "work_span_step_s", "comm_s", "step_sync_s",
           "sharded_dp_cpu_s", "tp_token_cpu_s", "STEP_SCALAR_ALL_REDUCES"]

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


def sharded_dp_cpu_s(plan: Any, host: Any, *, num_layers: int, dp_comm_cpu_s: float = 0.0) -> float:
    """Extra CPU seconds per step that the executor's data parallelism costs each worker beyond the
    collectives the comm model prices (`dp_comm_cpu_s`, their CPU): the profile's figure per block and
    step - DDP (`HostPoint.ddp_block_s`) for plain DDP plans (ZeRO-0/1 without TP and PP), else per-block
    FSDP2 (`fsdp_zero2_block_s`, `fsdp_zero3_block_s` for ZeRO-3; the executor's `replicate` for ZeRO-0
    with TP/PP is FSDP2-based too; executor.parallelize.dp_wrapper) - times the blocks on a pipeline rank
    plus one unit for the embedding / head, minus `dp_comm_cpu_s`, at least 0. 0 when dp = 1 or not measured."""
    if host is None or plan.dp < 2 or host.fsdp_zero2_block_s is None:
        return 0.0
    if plan.zero_stage <= 1 and plan.tp == 1 and plan.pp == 1:
        per_block = host.ddp_block_s or 0.0
    elif plan.zero_stage == 3 and host.fsdp_zero3_block_s is not None:
        per_block = host.fsdp_zero3_block_s
    else:
        per_block = host.fsdp_zero2_block_s
    layers = max(plan.layers_per_stage) if plan.layers_per_stage else num_layers / plan.pp
    return max(0.0, (layers + 1) * per_block - dp_comm_cpu_s)


def tp_token_cpu_s(plan: Any, host: Any, *, num_layers: int, global_batch: int, seq_len: int) -> float:
    """Extra CPU seconds per step of tensor parallelism that grow with the tokens (beyond the measured
    per-block host factor at a few tokens): the profile's `HostPoint.tp_token_s` (`tp_sp_token_s` under
    sequence parallelism) x tokens per micro-batch x micro-batches x blocks on a pipeline rank; 0 when
    tp = 1 or not measured. Measured over 2 ranks, used for every TP degree."""
    if host is None or plan.tp < 2:
        return 0.0
    per_token = host.tp_sp_token_s if plan.sequence_parallel else host.tp_token_s
    if per_token is None:
        return 0.0
    layers = max(plan.layers_per_stage) if plan.layers_per_stage else num_layers / plan.pp
    micro_batches = global_batch // (plan.dp * plan.micro_batch_size)
    return per_token * plan.micro_batch_size * seq_len * micro_batches * layers


class LocalPredictor:
    """The a-priori step time and estimate of a plan run by `procs` executor workers on this host:
    `estimate` with `host_constants`; on a CPU host plus `sharded_dp_cpu_s` and `tp_token_cpu_s`, and with more workers than
    cores the work-span bound (`work_span_step_s`) of the plan priced with a core per worker, its
    communication's CPU from the profile's CPU-time curves. `predictor(plan) -> (step_time_s, estimate)`;
    the estimate (memory, breakdown) is the plain one with the shared-core constants."""

    def __init__(self, profile: Any, *, model: Any, cluster: Any, training: Any, procs: int,
                 cores: int | None = None) -> None:
        self.profile, self.model, self.cluster, self.training, self.procs = profile, model, cluster, training, procs
        self.cores = cores or os.cpu_count() or 1
        self.constants = host_constants(profile, procs=procs, cores=self.cores)
        self.calibration = self._with(self.constants)
        self.cpu_host = profile.device.lower() == "cpu"
        self.free = self.cpu_cost = None
        if self.cpu_host and procs > self.cores:
            self.free = self._with(host_constants(profile, procs=procs, cores=procs))
            self.cpu_cost = self.free.cpu_cost_profile()
        self.sync_s, self.sync_cpu_s = step_sync_s(profile, procs=procs)

    def _with(self, constants: dict[str, float]) -> Any:
        return self.profile.model_copy(update={"constants": {**self.profile.constants, **constants}})

    def __call__(self, plan: Any) -> tuple[float, Any]:
        args = (self.model, self.cluster, self.training, plan)
        est = estimate(*args, calibration=self.calibration)
        if not self.cpu_host:
            return est.step_time_s, est
        cpu_est = estimate(*args, calibration=self.cpu_cost) if self.cpu_cost is not None else None
        host = self.profile.host
        extra_s = sharded_dp_cpu_s(plan, host, num_layers=self.model.num_layers,
                                   dp_comm_cpu_s=(cpu_est or est).time.dp_comm_s)
        extra_s += tp_token_cpu_s(plan, host, num_layers=self.model.num_layers,
                                  global_batch=self.training.global_batch_size, seq_len=self.training.seq_len)
        if self.free is None:
            return est.step_time_s + extra_s, est
        step_s = work_span_step_s(estimate(*args, calibration=self.free), procs=self.procs, cores=self.cores,
                                  comm_cpu_s=comm_s(cpu_est) if cpu_est is not None else None,
                                  sync_s=self.sync_s, sync_cpu_s=self.sync_cpu_s, extra_cpu_s=extra_s)
        return step_s, est
