"""The optimizer recipe the executor trains with and the profiler measures: AdamW (Loshchilov & Hutter
2019) with decoupled weight decay on matrices only (norm scales and biases undecayed, as GPT-3 and
Megatron-LM train), one parameter group per (decayed, sharded) kind so that each multi-tensor kernel
call takes one kind of tensor. Torch-free: a parameter is read through `ndim` and, for DTensors, the
`placements` attribute they carry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["ADAMW_WEIGHT_DECAY", "adamw_param_groups"]

ADAMW_WEIGHT_DECAY = 0.1
"""The executor's default decoupled weight decay (GPT-3, Brown et al. 2020, appendix B)."""


def adamw_param_groups(params: Sequence[Any], *, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: decay on matrices only (`ndim >= 2`), DTensor (has `placements`) and
    plain tensors in separate groups; empty groups are left out."""
    groups = []
    for decayed in (True, False):
        for sharded in (True, False):
            chosen = [p for p in params if (p.ndim >= 2) == decayed and hasattr(p, "placements") == sharded]
            if chosen:
                groups.append({"params": chosen, "weight_decay": weight_decay if decayed else 0.0})
    return groups
