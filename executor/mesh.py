"""The device mesh of a plan: named axes ordered by `plan.placement`.

`placement` lists axes innermost (fastest-varying rank) first, so the default ("tp", "cp", "dp", "pp")
gives mesh dims ("pp", "dp", "cp", "tp") from outer to inner: TP ranks are neighbours (same node,
fastest links), PP ranks are furthest apart - Megatron-LM's rank order (Narayanan et al. 2021, sec 3.3)."""

from __future__ import annotations

import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from costmodel.specs import ParallelPlan

__all__ = ["mesh_shape", "build_mesh", "axis_size", "axis_rank", "axis_group", "world_size", "replica_mesh",
           "REPLICA_AXIS"]

REPLICA_AXIS = "dp_cp"
"""The flattened dp x cp mesh: context-parallel ranks hold the same weights as data-parallel ones, so
their gradients are reduced (and ZeRO shards spread) over both (torchtitan's dp_shard_cp)."""


def world_size() -> int:
    """Ranks in the default process group (1 when none is initialized)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def mesh_shape(plan: ParallelPlan) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(dim names outer to inner, sizes) of the plan's mesh."""
    names = tuple(reversed(plan.placement))
    return names, tuple(getattr(plan, name) for name in names)


def build_mesh(plan: ParallelPlan, *, device_type: str) -> DeviceMesh | None:
    """A DeviceMesh over the already-initialized default process group, or None for a single process
    (no group or a 1-rank group): the single-process reference path."""
    ranks = world_size()
    if ranks != plan.world_size:
        raise ValueError(f"dp: the plan needs dp*tp*pp*cp={plan.dp}*{plan.tp}*{plan.pp}*{plan.cp}="
                         f"{plan.world_size} ranks but {ranks} process(es) run; launch {plan.world_size} "
                         "processes or change the plan's degrees")
    if ranks == 1:
        return None
    names, sizes = mesh_shape(plan)
    return init_device_mesh(device_type, sizes, mesh_dim_names=names)


def axis_size(mesh: DeviceMesh | None, axis: str) -> int:
    return 1 if mesh is None else mesh[axis].size()


def axis_rank(mesh: DeviceMesh | None, axis: str) -> int:
    """This rank's coordinate along `axis` (0 without a mesh)."""
    return 0 if mesh is None else mesh.get_local_rank(axis)


def axis_group(mesh: DeviceMesh | None, axis: str) -> dist.ProcessGroup | None:
    """The process group of this rank's `axis` neighbours (None without a mesh)."""
    return None if mesh is None else mesh.get_group(axis)


def replica_mesh(mesh: DeviceMesh | None, plan: ParallelPlan) -> DeviceMesh | None:
    """The 1-D mesh of the ranks holding the same weights: dp, cp, or both flattened (in mesh order,
    so the flattened rank is the row-major index); None for a single process."""
    if mesh is None:
        return None
    axes = [name for name in mesh.mesh_dim_names if name in ("dp", "cp") and getattr(plan, name) > 1]
    if len(axes) < 2:
        return mesh[axes[0] if axes else "dp"]
    return mesh[tuple(axes)]._flatten(REPLICA_AXIS)
