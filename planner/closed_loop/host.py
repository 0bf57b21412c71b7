"""The executor's step on this host, predicted a priori (`validate --local`): the cost model
with the host's measured constants (`costmodel.calibration.host_terms`: per-op, TP, recompute, data-parallel
wrapper and optimizer host costs, core share, inflation) and, with more workers than cores, the
work-span bound of the plan priced with a core per worker (`work_span_step_s`)."""

from __future__ import annotations

import os
from typing import Any

from costmodel import estimate
from costmodel.calibration.host_terms import (
    STEP_SCALAR_ALL_REDUCES,
    cpu_inflation,
    host_constants,
    step_sync_s,
    with_constants,
    with_host_terms,
)

__all__ = ["LocalPredictor", "host_constants", "with_host_terms", "cpu_inflation", "work_span_step_s", "comm_s",
           "step_sync_s", "STEP_SCALAR_ALL_REDUCES"]


def comm_s(est: Any) -> float:
    """Communication seconds of a StepEstimate's breakdown (TP, CP, DP, PP)."""
    t = est.time
    return t.tp_comm_s + t.cp_comm_s + t.dp_comm_s + t.pp_comm_s


def work_span_step_s(free: Any, *, procs: int, cores: int, comm_cpu_s: float | None = None,
                     sync_s: float = 0.0, sync_cpu_s: float = 0.0) -> float:
    """Step time of `procs` single-thread workers sharing `cores` cores, from `free`, the StepEstimate
    of the same plan priced as if every worker had a core of its own (`host_constants(..., cores=procs)`):
    the work-span lower bound max(span, work / cores) (Brent 1974; Blumofe & Leiserson 1999), which a
    greedy scheduler such as the OS's approaches when either term dominates. Span = the free step (its
    critical path: compute, bubbles, and communication at the wall times the profile measured with all
    `procs` workers on these cores). Work = procs x each worker's CPU seconds: the free step minus bubble
    and communication wall time, plus the CPU the communication costs (`comm_cpu_s`: the plan priced with
    the profile's CPU-time collective curves, `CalibrationProfile.cpu_cost_profile`; default: its wall
    time; `sync_s` / `sync_cpu_s`: per-step synchronisation inside the optimizer term, e.g. the executor's
    scalar all-reduces, wall and CPU). While a worker waits in a bubble or a collective its core runs the
    others, which a fixed share of a core per worker cannot express."""
    wall_comm_s = comm_s(free) + sync_s
    busy_s = max(0.0, free.step_time_s - free.time.bubble_s - wall_comm_s)
    cpu_comm_s = wall_comm_s if comm_cpu_s is None else comm_cpu_s + sync_cpu_s
    return max(free.step_time_s, procs * (busy_s + cpu_comm_s) / max(1, cores))


class LocalPredictor:
    """The a-priori step time and estimate of a plan run by `procs` executor workers on this host:
    `estimate` with the profile's host terms (`with_host_terms`); with more workers than cores the
    work-span bound (`work_span_step_s`) of the plan priced with a core per worker, its communication's
    CPU from the profile's CPU-time curves. `predictor(plan) -> (step_time_s, estimate)`; the estimate
    (memory, breakdown) is the plain one with the shared-core constants. Whatever stack `training` names,
    the executor's (`paraplan`) is priced: it is what runs here."""

    def __init__(self, profile: Any, *, model: Any, cluster: Any, training: Any, procs: int,
                 cores: int | None = None) -> None:
        # the executor is the software stack that runs here: its kernels, casts and optimizer (stack paraplan)
        training = training.model_copy(update={"stack": "paraplan"})
        self.profile, self.model, self.cluster, self.training, self.procs = profile, model, cluster, training, procs
        self.cores = cores or os.cpu_count() or 1
        self.constants = host_constants(profile, procs=procs, cores=self.cores)
        self.calibration = with_constants(self.profile, self.constants)
        self.cpu_host = profile.device.lower() == "cpu"
        self.free = self.cpu_cost = None
        if self.cpu_host and procs > self.cores:
            self.free = with_constants(self.profile, host_constants(profile, procs=procs, cores=procs))
            self.cpu_cost = self.free.cpu_cost_profile()
        self.sync_s, self.sync_cpu_s = step_sync_s(profile, procs=procs)


    def memory(self, plan: Any) -> Any:
        """The executor's memory for `plan` (its `MemoryBreakdown`): the cost model with stack `paraplan`, what
        the executor allocates on this device (on a CPU its fp32 tables; `allocated_bytes` = live tensor bytes)."""
        return estimate(self.model, self.cluster, self.training, plan, calibration=self.calibration).memory

    def __call__(self, plan: Any) -> tuple[float, Any]:
        args = (self.model, self.cluster, self.training, plan)
        est = estimate(*args, calibration=self.calibration)
        if self.free is None:
            return est.step_time_s, est
        cpu_est = estimate(*args, calibration=self.cpu_cost) if self.cpu_cost is not None else None
        step_s = work_span_step_s(estimate(*args, calibration=self.free), procs=self.procs, cores=self.cores,
                                  comm_cpu_s=comm_s(cpu_est) if cpu_est is not None else None,
                                  sync_s=self.sync_s, sync_cpu_s=self.sync_cpu_s)
        return step_s, est
