"""Which context-parallel attention the executor runs on which device (`cp_variant`): one rule for the
cost model (`costmodel.layer.context_parallel`) and the executor's checks (`costmodel.step.runnable`)."""

from __future__ import annotations

from typing import Literal

from ..specs import ClusterSpec, ParallelPlan

__all__ = ["DeviceKind", "device_kind", "auto_cp_variant", "cp_variant", "CP_ATTENTION_CODES"]

DeviceKind = Literal["cpu", "cuda"]

CP_ATTENTION_CODES = {"auto": 0, "all-gather": 1, "ring": 2}
"""`ParallelPlan.cp_attention` as the number `Knobs.cp_attn` holds."""


def device_kind(cluster: ClusterSpec | str) -> DeviceKind:
    """'cpu' for the host preset (one Gloo process per 'GPU') or a CPU device name, else 'cuda'."""
    name = cluster if isinstance(cluster, str) else cluster.gpu.name
    return "cpu" if name.lower() == "cpu" else "cuda"


def auto_cp_variant(device: DeviceKind) -> str:
    """What `cp_attention='auto'` runs: torch's ring attention on CUDA, the all-gather elsewhere
    (torch's context-parallel SDPA dispatches CUDA kernels only)."""
    return "ring" if device == "cuda" else "all-gather"


def cp_variant(plan: ParallelPlan, device: DeviceKind) -> str | None:
    """The context-parallel attention the executor runs for `plan` on `device`: None without CP,
    else the plan's `cp_attention`, 'auto' resolved by `auto_cp_variant`."""
    if plan.cp == 1:
        return None
    return auto_cp_variant(device) if plan.cp_attention == "auto" else plan.cp_attention
