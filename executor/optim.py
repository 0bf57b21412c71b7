"""AdamW as the executor runs it: which kernel on which device, and parameter groups that keep the
optimizer's temporaries as small as a plain loop's.

- CUDA: the fused kernel (`fused=True`, one kernel over all tensors of a group, no temporaries:
  torchtitan's default). Torch's multi-tensor (foreach) AdamW instead materializes
  sqrt(v)/bias-correction + eps for every tensor of a group at once (`_multi_tensor_adam`), a
  temporary the size of all parameters in fp32: on an H200 the 7B model peaked at 125.6 GiB with it
  against 116.1 GiB for a plain fused loop.
- CPU: foreach (bit-for-bit the numbers every plan's loss goldens were taken with; torch's per-tensor
  loop would cost ~0.8 ms per DTensor parameter), with each group cut into chunks no larger than the
  largest parameter, so its temporary never exceeds what torch's per-tensor loop allocates for one
  parameter. Each tensor's update is elementwise, so chunking changes no number.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.optim import ZeroRedundancyOptimizer

from costmodel.specs import ParallelPlan
from costmodel.specs.optimizer import adamw_param_groups

from .parallelize import uses_ddp

__all__ = ["ADAM_BETAS", "ADAM_EPS", "adamw_kernel", "local_bytes", "split_groups", "build_optimizer"]

ADAM_BETAS = (0.9, 0.95)
"""AdamW betas of GPT-3 (Brown et al. 2020, appendix B)."""
ADAM_EPS = 1e-8


def adamw_kernel(device: torch.device) -> dict[str, bool]:
    """AdamW implementation flags for `device`: fused on CUDA, foreach elsewhere."""
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


def local_bytes(p: torch.Tensor) -> int:
    """Bytes of this rank's share of `p` (a DTensor's local shard)."""
    local = p.to_local() if hasattr(p, "to_local") else p
    return local.numel() * local.element_size()


def split_groups(groups: list[dict[str, Any]], *, max_bytes: int) -> list[dict[str, Any]]:
    """Each group cut, in order, into groups of the same options whose parameters add up to at most
    `max_bytes` (a larger parameter gets a group of its own)."""
    out: list[dict[str, Any]] = []
    for group in groups:
        options = {k: v for k, v in group.items() if k != "params"}
        chunk: list[nn.Parameter] = []
        size = 0
        for p in group["params"]:
            nbytes = local_bytes(p)
            if chunk and size + nbytes > max_bytes:
                out.append({"params": chunk, **options})
                chunk, size = [], 0
            chunk.append(p)
            size += nbytes
        if chunk:
            out.append({"params": chunk, **options})
    return out


def build_optimizer(params: list[nn.Parameter], plan: ParallelPlan, replicas: DeviceMesh | None, *, lr: float,
                    weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with decay on matrices only (`costmodel.specs.optimizer` groups, which the profiler times
    too). ZeRO-1 without TP shards its states with ZeroRedundancyOptimizer over `replicas` (the dp x cp
    replica mesh, `executor.mesh.replica_mesh`); FSDP2 plans shard them with the parameters."""
    groups = adamw_param_groups(params, weight_decay=weight_decay)
    kernel = adamw_kernel(device)
    zero1 = plan.zero_stage == 1 and uses_ddp(plan)
    # (not under ZeroRedundancyOptimizer: it deals each group's parameters out over the ranks, so small
    # groups leave a rank with empty ones, which DCP's optimizer state dict cannot name; its temporaries
    # are a 1/dp shard's anyway)
    if kernel.get("foreach") and params and not zero1:
        groups = split_groups(groups, max_bytes=max(local_bytes(p) for p in params))
    if zero1:
        return ZeroRedundancyOptimizer(groups, optimizer_class=torch.optim.AdamW,
                                       process_group=replicas.get_group(), lr=lr, betas=ADAM_BETAS,
                                       eps=ADAM_EPS, **kernel)
    return torch.optim.AdamW(groups, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, **kernel)
