"""Global gradient-norm clipping across every parallel axis.

The norm is ||g||_2 over the whole model (Pascanu et al. 2013): sharded gradients (DTensor: TP, FSDP)
reduce their shards, replicated ones count once, and pipeline stages add their squared norms over the
pipeline group, so every rank clips by the same factor as the single-process model would.

Cost: the local shards' norms are taken in one foreach kernel per kind of placement, and each kind
is reduced with one all-reduce per sharded mesh axis (FSDP: 1; TP: 1; FSDP + TP: 3 in all), not one
per parameter as `DTensor.full_tensor()` per gradient would (75 all-reduces for an 8-block model:
measured 200 ms of a 1 s step over 4 Gloo ranks)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Replicate

__all__ = ["global_grad_norm", "clip_grad_norm_", "align_grads_"]


def _squares(grads: list[torch.Tensor]) -> torch.Tensor:
    """Sum of squared L2 norms of plain tensors, in float64 (one foreach kernel)."""
    if not grads:
        return torch.zeros((), dtype=torch.float64)
    norms = torch._foreach_norm(grads, 2, dtype=torch.float32)
    return torch.stack(norms).double().square().sum()


def _to_reduce_device(t: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    if dist.get_backend(group) == "gloo":
        return t.cpu()
    if t.device.type == "cpu":
        return t.to(torch.device("cuda", torch.cuda.current_device()))
    return t


@torch.no_grad()
def align_grads_(params: Iterable[torch.nn.Parameter]) -> int:
    """Give every DTensor gradient its parameter's placements, in place, before clipping and the
    optimizer. Pending sums (Partial: e.g. the norms' weights under sequence parallelism) are reduced
    in one all-reduce per mesh axis over a flat buffer (Megatron-LM's coalesced all-reduce of the
    layer-norm gradients, Korthikanti et al. 2022), instead of one per tensor and per optimizer op that
    DTensor would issue; replicated gradients of sharded parameters are sliced locally. Returns the
    number of all-reduces issued."""
    pending: dict[tuple, list[torch.nn.Parameter]] = {}
    for p in params:
        g = p.grad
        if not isinstance(g, DTensor) or not isinstance(p, DTensor) or g.placements == p.placements:
            continue
        partial = [pl for pl in g.placements if pl.is_partial()]
        if partial and all(getattr(pl, "reduce_op", "sum") == "sum" for pl in partial):
            pending.setdefault((g.device_mesh, g.placements), []).append(p)
        else:
            p.grad = g.redistribute(placements=p.placements)
    issued = 0
    for (mesh, placements), ps in pending.items():
        locals_ = [p.grad.to_local() for p in ps]
        flat = torch.cat([t.reshape(-1) for t in locals_])
        for axis, pl in enumerate(placements):
            if pl.is_partial():
                dist.all_reduce(flat, group=mesh.get_group(axis))
                issued += 1
        reduced = tuple(Replicate() if pl.is_partial() else pl for pl in placements)
        for p, t, chunk in zip(ps, locals_, flat.split([t.numel() for t in locals_]), strict=True):
            g = DTensor.from_local(chunk.view_as(t), mesh, reduced, run_check=False,
                                   shape=p.grad.shape, stride=p.grad.stride())
            p.grad = g if g.placements == p.placements else g.redistribute(placements=p.placements)
    return issued


@torch.no_grad()
def global_grad_norm(params: Iterable[torch.nn.Parameter], *, pp_group: dist.ProcessGroup | None = None
                     ) -> float:
    """L2 norm of all gradients of the model (this rank holds one pipeline rank's share)."""
    plain: list[torch.Tensor] = []
    kinds: dict[tuple, list[torch.Tensor]] = {}  # (mesh, sharded axes) -> local shards
    partial: list[DTensor] = []
    for p in params:
        g = p.grad
        if g is None:
            continue
        if not isinstance(g, DTensor):
            plain.append(g)
        elif any(pl.is_partial() for pl in g.placements):
            partial.append(g)  # a pending sum: its shards' norms do not add up
        else:
            # every non-replicated axis is a split (Shard, FSDP's _StridedShard: is_shard() is False)
            axes = tuple(i for i, pl in enumerate(g.placements) if not pl.is_replicate())
            kinds.setdefault((g.device_mesh, axes), []).append(g.to_local())
    sq = _squares(plain).to(plain[0].device) if plain else torch.zeros((), dtype=torch.float64)
    for (mesh, axes), shards in kinds.items():
        part = _squares(shards)
        for axis in axes:  # shards add up over the axes they are split on; replicas count once
            group = mesh.get_group(axis)
            part = _to_reduce_device(part.to(shards[0].device), group)
            dist.all_reduce(part, group=group)
        sq = sq + part.to(sq.device)
    for g in partial:
        sq = sq + torch.linalg.vector_norm(g.full_tensor(), dtype=torch.float32).double().square().to(sq.device)
    if pp_group is not None and dist.get_world_size(pp_group) > 1:
        sq = _to_reduce_device(sq, pp_group)
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
        grads = [p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad for p in params]
        torch._foreach_mul_(grads, coef)
    return norm
