"""Readable text for a `StepEstimate` (what `paraplan estimate` prints)."""

from __future__ import annotations

from ..atomic import write_text_atomic
from ..specs import StepEstimate
from ..stacks import DEFAULT_STACK

__all__ = ["format_estimate", "write_text_atomic"]

GIB = 2.0**30


def _bar(part: float, total: float, width: int = 24) -> str:
    n = int(round(width * part / total)) if total > 0 else 0
    return "#" * n + "." * (width - n)


def format_estimate(est: StepEstimate, *, model: str = "", cluster: str = "") -> str:
    """A multi-line summary: throughput, time breakdown with shares, memory of the most loaded GPU."""
    t, mem = est.time, est.memory
    head = " on ".join(x for x in (model, cluster) if x)
    lines = [
        f"plan {est.plan.short()}" + (f"  ({head}, {est.num_gpus} GPUs)" if head else f"  ({est.num_gpus} GPUs)"),
        f"assumes stack {est.stack}" + (" (the default)" if est.stack == DEFAULT_STACK else "")
        + "; kernels: " + (f"measured GPU profile: {est.gpu_profile}" if est.gpu_profile
                           else "the stack's analytical efficiencies (no GPU profile)"),
        f"step time     {est.step_time_s:10.4f} s     tokens/s {est.tokens_per_s:,.0f}",
        f"TFLOP/s/GPU   model {est.model_tflops_per_gpu:7.1f}   hardware {est.hardware_tflops_per_gpu:7.1f}   "
        f"MFU {est.mfu:6.1%}   HFU {est.hfu:6.1%}",
        "time breakdown (critical path, exposed communication):",
    ]
    parts = [("compute", t.compute_s), ("TP comm", t.tp_comm_s), ("CP comm", t.cp_comm_s),
             ("EP a2a", t.ep_comm_s), ("DP comm", t.dp_comm_s), ("PP comm", t.pp_comm_s), ("bubble", t.bubble_s),
             ("optimizer", t.optimizer_s)]
    total = t.total_s
    for name, value in parts:
        if value > 0 or name == "compute":
            lines.append(f"  {name:<10} {value:10.4f} s  {value / total:6.1%}  {_bar(value, total)}")
    fit = "fits" if est.fits else "DOES NOT FIT"
    lines.append(f"memory per GPU (most loaded stage): {mem.peak_bytes / GIB:.1f} GiB of "
                 f"{est.capacity_bytes / GIB:.1f} GiB, {fit}")
    for name, value in (("parameters", mem.parameters_bytes), ("gradients", mem.gradients_bytes),
                        ("optimizer", mem.optimizer_bytes), ("activations", mem.activations_bytes),
                        ("buffers", mem.buffers_bytes)):
        lines.append(f"  {name:<12} {value / GIB:8.2f} GiB  {_bar(value, mem.peak_bytes)}")
    if est.plan.layers_per_stage is not None:
        lines.append("layers per stage: " + ",".join(map(str, est.plan.layers_per_stage))
                     + " (embedding on the first, LM head + loss on the last)")
    if len(est.stage_memory) > 1:
        peaks = ", ".join(f"{m.peak_bytes / GIB:.1f}" for m in est.stage_memory)
        lines.append(f"peak GiB per pipeline rank: {peaks}")
    return "\n".join(lines)
