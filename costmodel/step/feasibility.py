"""`evaluate`: an estimate, or a `Rejection` that says why the plan cannot run and what to change.

Infeasible is a result, not an error (Calculon's convention): a plan that breaks a rule becomes an
'invalid' Rejection quoting the rule, one that does not fit in HBM an 'oom' Rejection quoting the
numbers, e.g. "needs 93.1 GiB per GPU, h100-sxm has 80.0 GiB: activations 61.0 GiB; try
recompute=full or pp>=4"."""

from __future__ import annotations

from typing import Any

from ..layer.compute import DEFAULT_EFFICIENCY, EfficiencyModel
from ..specs import (
    ClusterSpec,
    MemoryBreakdown,
    ModelSpec,
    ParallelPlan,
    Rejection,
    StepEstimate,
    TrainingSpec,
)
from .checks import plan_problems
from .estimate import estimate

__all__ = ["evaluate", "oom_message", "oom_hints"]

GIB = 2.0**30


def oom_hints(plan: ParallelPlan, memory: MemoryBreakdown, *, max_pp: int | None = None) -> list[str]:
    """Knob changes that shrink the largest part of `memory`, most effective first."""
    parts = {"activations": memory.activations_bytes,
             "states": memory.parameters_bytes + memory.gradients_bytes + memory.optimizer_bytes}
    hints: list[str] = []
    if parts["activations"] >= parts["states"]:
        if plan.recompute != "full":
            hints.append("recompute=full" if plan.recompute == "selective" or plan.micro_batch_size > 1
                         else "recompute=selective or full")
        if plan.micro_batch_size > 1:
            hints.append(f"micro_batch_size<={plan.micro_batch_size // 2}")
        if plan.tp > 1 and not plan.sequence_parallel:
            hints.append("sequence_parallel=true")
    if plan.zero_stage < 3 and parts["states"] > 0:
        hints.append(f"zero_stage={plan.zero_stage + 1}" if plan.dp > 1 else "dp>1 with zero_stage>=1")
    pp_next = plan.pp * 2
    if max_pp is None or pp_next <= max_pp:
        hints.append(f"pp>={pp_next}")
    if plan.tp < 8:
        hints.append(f"tp>={plan.tp * 2}")
    return hints[:3]


def oom_message(est: StepEstimate, gpu_name: str, *, max_pp: int | None = None) -> str:
    """'needs X GiB per GPU, <gpu> has Y GiB: <largest part> Z GiB; try ...'."""
    mem = est.memory
    parts = {"activations": mem.activations_bytes, "optimizer states": mem.optimizer_bytes,
             "parameters": mem.parameters_bytes, "gradients": mem.gradients_bytes, "buffers": mem.buffers_bytes}
    top = sorted(parts.items(), key=lambda kv: -kv[1])[:2]
    detail = ", ".join(f"{name} {nbytes / GIB:.1f} GiB" for name, nbytes in top)
    hints = oom_hints(est.plan, mem, max_pp=max_pp)
    tail = f"; try {' or '.join(hints)}" if hints else ""
    return (f"needs {mem.peak_bytes / GIB:.1f} GiB per GPU, {gpu_name} has {est.capacity_bytes / GIB:.1f} GiB: "
            f"{detail}{tail}")


def evaluate(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, plan: ParallelPlan, *,
             calibration: Any = None, topology: Any = None, timeline: bool = False,
             efficiency: EfficiencyModel = DEFAULT_EFFICIENCY) -> StepEstimate | Rejection:
    """The plan's StepEstimate when it is valid and fits; else a Rejection with code 'invalid'
    (the first broken rule) or 'oom' (needed vs available bytes and what to change)."""
    problems = plan_problems(model, cluster, training, plan, auto_split=True)
    if problems:
        return Rejection(plan=plan, code="invalid", message=str(problems[0]))
    est = estimate(model, cluster, training, plan, calibration=calibration, topology=topology,
                   timeline=timeline, efficiency=efficiency)
    if est.fits:
        return est
    return Rejection(plan=plan, code="oom", message=oom_message(est, cluster.gpu.name, max_pp=model.total_layers),
                     needed_bytes=est.memory.peak_bytes, capacity_bytes=est.capacity_bytes)
