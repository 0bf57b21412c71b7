"""Global gradient-norm clipping across every parallel axis.

The norm is ||g||_2 over the whole model (Pascanu et al. 2013): sharded gradients (DTensor: TP, FSDP)
reduce their shards, replicated ones count once, and pipeline stages add their squared norms over the
pipeline group, so every rank clips by the same factor as the single-process model would."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

__all__ = ["global_grad_norm", "clip_grad_norm_"]


@torch.no_grad()
def global_grad_norm(params: Iterable[torch.nn.Parameter], *, pp_group: dist.ProcessGroup | None = None
                     ) -> float:
    """L2 norm of all gradients of the model (this rank holds one pipeline rank's share)."""
    squares = []
    for p in params:
        if p.grad is None:
            continue
        norm = torch.linalg.vector_norm(p.grad, dtype=torch.float32)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()  # reduces over the shards' mesh axes, counts replicas once
        squares.append(norm.detach().double() ** 2)  # stays on the device: one sync below
    sq = torch.stack(squares).sum() if squares else torch.zeros((), dtype=torch.float64)
    if pp_group is not None and dist.get_world_size(pp_group) > 1:
        if dist.get_backend(pp_group) == "gloo":
            sq = sq.cpu()
        elif sq.device.type == "cpu":
            sq = sq.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(sq, group=pp_group)
    return float(sq.sqrt())


@torch.no_grad()
def clip_grad_norm_(params: Iterable[torch.nn.Parameter], max_norm: float, *,
                    pp_group: dist.ProcessGroup | None = None) -> float:
    """Scale gradients in place so that their global norm is at most `max_norm` (clip factor
    max_norm / (norm + 1e-6), as `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping."""
    params = [p for p in params if p.grad is not None]
    norm = global_grad_norm(params, pp_group=pp_group)
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for p in params:
            p.grad.mul_(coef)
    return norm
