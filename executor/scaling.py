"""How many processes this machine can host, and scaling a plan down to fit (only when asked)."""

from __future__ import annotations

import math
import os

from costmodel import ModelSpec, ParallelPlan

__all__ = ["host_capacity", "scale_plan", "CPU_MIN_PROCESSES", "CPU_PROCESSES_PER_CORE"]

CPU_MIN_PROCESSES = 8
"""A CPU host always runs up to 8 Gloo processes (enough for dp2 x tp2 x pp2 tests)."""
CPU_PROCESSES_PER_CORE = 4


def host_capacity() -> int:
    """Worker processes one node can host: its GPU count when CUDA is present, else
    max(8, 4 x CPU cores) (CPU processes time-share the cores)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(CPU_MIN_PROCESSES, CPU_PROCESSES_PER_CORE * (os.cpu_count() or 1))


def _valid_degrees(axis: str, plan: ParallelPlan, model: ModelSpec, global_batch: int | None) -> list[int]:
    """Degrees below the current one that keep the plan runnable for `model`, largest first."""
    current = getattr(plan, axis)
    out = []
    for value in range(current - 1, 0, -1):
        if axis == "dp" and global_batch is not None and global_batch % (value * plan.micro_batch_size):
            continue
        if axis == "pp" and model.total_layers % (value * (plan.virtual_stages if value > 1 else 1)):
            continue
        if axis == "tp" and (model.num_heads % value or model.kv_heads % value or model.ffn_size % value):
            continue
        out.append(value)
    return out


def _with(plan: ParallelPlan, axis: str, value: int) -> ParallelPlan:
    data = plan.model_dump()
    data[axis] = value
    if axis == "dp":
        data["ep"] = math.gcd(plan.ep, value)   # expert groups stay inside the data-parallel ranks
    if axis == "pp":
        data["layers_per_stage"] = None  # the explicit split belonged to the old stage count
        if value == 1:
            data.update(schedule="1f1b", virtual_stages=1)
    if axis == "tp" and value == 1:
        data["sequence_parallel"] = False
    return ParallelPlan(**data)


def scale_plan(plan: ParallelPlan, model: ModelSpec, *, max_world: int,
               global_batch: int | None = None) -> tuple[ParallelPlan, tuple[str, ...]]:
    """Lower the plan's degrees until dp*tp*pp*cp <= `max_world`: dp first, then pp, then tp (data
    parallelism changes only throughput; pipeline and tensor splits change per-process memory more).
    Returns the new plan and one line per change. ValueError when even dp=pp=tp=1 does not fit."""
    if max_world < 1:
        raise ValueError(f"scale_to={max_world} must be >= 1")
    original = plan
    changes: list[str] = []
    for axis in ("dp", "pp", "tp"):
        if plan.world_size <= max_world:
            break
        before = getattr(plan, axis)
        for value in _valid_degrees(axis, plan, model, global_batch):
            candidate = _with(plan, axis, value)
            plan = candidate
            if candidate.world_size <= max_world:
                break
        if getattr(plan, axis) != before:
            changes.append(f"{axis} {before} -> {getattr(plan, axis)}")
    if plan.world_size > max_world:
        raise ValueError(f"scale_to={max_world}: cannot fit plan {original.short()} (cp={plan.cp} alone needs "
                         f"{plan.world_size} processes); lower cp in the plan")
    if changes:
        changes.append(f"plan {original.short()} ({original.world_size} processes) -> {plan.short()} "
                       f"({plan.world_size} processes)")
    return plan, tuple(changes)
