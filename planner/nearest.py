"""The nearest plan that fits: what `paraplan run`'s memory guard (`executor.memguard`) suggests when a plan
does not fit. The planner's search over exactly the run's processes (its cluster sized to the plan's world
size, the GPU's memory that of the device the run would use), keeping the plans the executor can run; of the
plans that fit, the one that changes the fewest knobs of the given plan, the fastest among those."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from costmodel import MEMORY_SAFETY_MARGIN, ClusterSpec, ModelSpec, ParallelPlan, TrainingSpec

from .result import GIB
from .search import search

__all__ = ["KNOBS", "plan_distance", "nearest_fitting_plan", "nearest_plan_hint"]

KNOBS = ("dp", "tp", "pp", "cp", "micro_batch_size", "virtual_stages", "schedule", "zero_stage", "recompute",
         "sequence_parallel")
"""The knobs compared between plans (placement and layer split follow from them)."""


def plan_distance(a: ParallelPlan, b: ParallelPlan) -> int:
    """How many of `KNOBS` differ between two plans."""
    return sum(getattr(a, k) != getattr(b, k) for k in KNOBS)


def nearest_fitting_plan(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, plan: ParallelPlan, *,
                         runnable: Callable[[ParallelPlan], bool] | None = None,
                         memory_margin: float = MEMORY_SAFETY_MARGIN, top_k: int = 200) -> tuple[ParallelPlan | None, Any]:
    """(the fitting plan of `cluster.num_gpus` GPUs nearest to `plan`, or None; the search result)."""
    result = search(model, cluster, training, top_k=top_k, cp=1, calibration=False, memory_margin=memory_margin)
    fitting = [r for r in result.plans if r.plan.world_size == cluster.num_gpus and (runnable is None or runnable(r.plan))]
    if not fitting:
        return None, result
    best = min(fitting, key=lambda r: (plan_distance(r.plan, plan), r.rank))
    return best.plan, result


def nearest_plan_hint(check: Any, *, runnable: Callable[[ParallelPlan], bool] | None = None) -> str:
    """One clause for the guard's message from its `MemoryCheck`: 'nearest plan that fits on N processes:
    <plan> (X GiB)' or why none does."""
    plan, cluster = check.estimate.plan, check.cluster
    procs = plan.world_size
    what = "processes" if check.device == "cpu" else "GPUs"
    per_process = check.per_process_capacity_bytes
    if per_process <= 0:
        return f"no plan on {procs} {what} fits: the workers alone need more than the available RAM"
    cluster = cluster.model_copy(update={"gpu": cluster.gpu.model_copy(update={"hbm_bytes": per_process})})
    best, result = nearest_fitting_plan(check.model, cluster, check.training, plan, runnable=runnable,
                                        memory_margin=check.margin)
    if best is None:
        why = result.message.split(". To fit:")[0] if result.message else "no candidate plan fits"
        return f"no plan on {procs} {what} fits ({why.replace('cpu GPU', 'process')})"
    est = next(r.estimate for r in result.plans if r.plan == best)
    return (f"nearest plan that fits on {procs} {what}: {best.short()} ({est.memory.peak_bytes / GIB:.1f} GiB "
            f"predicted per {'process' if check.device == 'cpu' else 'GPU'})")
