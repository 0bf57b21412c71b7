"""The catalog of software stacks (`costmodel/data/stacks/*.yaml`, validated by `StackSpec`) and how a
stack sets the cost model's constants.

    from costmodel.stacks import get_stack, list_stacks, DEFAULT_STACK
    get_stack("fsdp").sources          # the public sources of its assumptions

`stack_efficiency(efficiency, stack)` returns `efficiency` with the fields the stack states replaced;
fields it leaves unset keep the given (documented default) values. A calibration profile's constants
apply after the stack (`costmodel.layer.context.build_context`)."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .layer.compute import EfficiencyModel
from .specs._base import validate_spec
from .specs.limits import shown
from .specs.stack import StackSpec

__all__ = ["DEFAULT_STACK", "STACKS_DIR", "get_stack", "list_stacks", "stack_efficiency", "unknown_stack",
           "FUSED_ADAMW_BYTES", "FOREACH_ADAMW_BYTES"]

STACKS_DIR = Path(__file__).parent / "data" / "stacks"
DEFAULT_STACK = "megatron"
"""The stack every estimate assumes unless told otherwise: Megatron-LM with its fused kernels, the stack
the cost model's fitted constants come from (Narayanan et al. 2021; vTrain's Megatron-DeepSpeed runs)."""

FOREACH_ADAMW_BYTES = 80.0
"""HBM bytes per fp32 parameter of torch's multi-tensor AdamW step (`torch.optim.adamw._multi_tensor_adamw`):
lerp_ of m with g (12), mul_ of v (8), addcmul_ of v with g*g (12), decoupled decay mul_ of p (8), sqrt of
v into a temporary (8), its div_ by the bias correction (8) and add_ of eps (8), addcdiv_ of p (16)."""
FUSED_ADAMW_BYTES = 28.0
"""... of the fused AdamW kernel: read p, g, m, v and write p, m, v once (7 x 4 bytes)."""


@cache
def list_stacks() -> tuple[str, ...]:
    """Names of the stacks shipped with paraplan (file names without .yaml), sorted."""
    return tuple(sorted(p.stem for p in STACKS_DIR.glob("*.yaml")))


def unknown_stack(name: str) -> ValueError:
    """The one-line error for a stack name that is not in the catalog."""
    return ValueError(f"unknown stack {shown(name)}; known: {', '.join(list_stacks())}")


@cache
def get_stack(name: str) -> StackSpec:
    """The stack `name` from the catalog (ValueError naming the known ones otherwise)."""
    if name not in list_stacks():
        raise ValueError(f"stack: {unknown_stack(name)}")
    path = STACKS_DIR / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    spec = validate_spec(StackSpec, data, where=f"stack file {path.name}")
    if spec.name != name:
        raise ValueError(f"stack file {path.name}: name {spec.name!r} must match the file name {name!r}")
    return spec


def _stated(spec: Any, mapping: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """{EfficiencyModel field: value} for the fields of `spec` its file states (pydantic's fields_set)."""
    return {target: convert(getattr(spec, name)) for name, (target, convert) in mapping.items()
            if name in spec.model_fields_set and getattr(spec, name) is not None}


def _same(value: Any) -> Any:
    return value


_KERNELS = {"gemm_efficiency": ("gemm_max_efficiency", _same), "attention_efficiency": ("attention_efficiency", _same),
            "memory_efficiency": ("mem_efficiency", _same), "host_op_s": ("host_op_s", _same),
            "host_ops_per_gemm": ("host_ops_per_gemm", _same), "weight_cast_passes": ("weight_cast_bytes", _same),
            "grad_accumulate_bytes": ("grad_accumulate_bytes", _same)}
_COMM = {"tp_overlap": ("tp_overlap_with_sp", lambda v: v == "with_sp"),
         "overlap_grad_reduce": ("overlap_grad_reduce", _same),
         "overlap_param_gather": ("overlap_param_gather", _same), "p2p_overhead_s": ("p2p_overhead_s", _same)}
_ZERO3 = {"regather_backward": ("zero3_regather_backward", _same),
          "regather_recompute": ("zero3_regather_recompute", _same),
          "reduce_scatter": ("zero3_reduce_scatter_per_micro_batch", lambda v: v == "micro_batch"),
          "network": ("zero3_nic_bound", lambda v: v == "nic")}


def stack_efficiency(efficiency: EfficiencyModel, stack: StackSpec) -> EfficiencyModel:
    """`efficiency` with the constants `stack`'s file states; what it leaves out keeps `efficiency`'s
    value (so a caller's explicit constants stand wherever the stack is silent)."""
    k, c = stack.kernels, stack.communication
    upd = {**_stated(k, _KERNELS), **_stated(c, _COMM), **_stated(c.zero3, _ZERO3)}
    if "optimizer" in k.model_fields_set or "clip_grad_norm_bytes" in k.model_fields_set:
        if k.optimizer == "foreach" or k.clip_grad_norm_bytes:
            base = FOREACH_ADAMW_BYTES if k.optimizer == "foreach" else FUSED_ADAMW_BYTES
            upd["optimizer_bytes_per_param"] = base + k.clip_grad_norm_bytes
    if stack.memory.framework_bytes is not None:
        upd["framework_bytes"] = stack.memory.framework_bytes
    if stack.step_overhead_s is not None:
        upd["step_overhead_s"] = stack.step_overhead_s
    return replace(efficiency, **upd) if upd else efficiency
