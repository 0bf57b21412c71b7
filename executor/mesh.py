"""The device mesh of a plan: named axes ordered by `plan.placement`.

`placement` lists axes innermost (fastest-varying rank) first, so the default ("tp", "cp", "dp", "pp")
gives mesh dims ("pp", "dp", "cp", "tp") from outer to inner: TP ranks are neighbours (same node,
fastest links), PP ranks are furthest apart - Megatron-LM's rank order (Narayanan et al. 2021, sec 3.3).
With expert parallelism the dp dim is two, ("edp", "ep"): the innermost ep data-parallel ranks form an
expert-parallel group (`executor.expert_parallel`), and "dp" is their flattened product. Data
parallelism runs over the dp x cp replicas (`replica_mesh`); the experts' over edp x cp
(`expert_replica_mesh`)."""

from __future__ import annotations

import weakref

import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from costmodel.specs import ParallelPlan

__all__ = ["mesh_shape", "build_mesh", "axis_mesh", "axis_size", "axis_rank", "axis_group", "world_size",
           "replica_mesh", "expert_replica_mesh", "REPLICA_AXIS", "EXPERT_REPLICA_AXIS"]

REPLICA_AXIS = "dp_cp"
"""The flattened dp x cp mesh: context-parallel ranks hold the same weights as data-parallel ones, so
their gradients are reduced (and ZeRO shards spread) over both (torchtitan's dp_shard_cp)."""
EXPERT_REPLICA_AXIS = "edp_cp"
"""The flattened edp x cp mesh: the ranks holding the same experts when ep > 1 and cp > 1."""

_FLAT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Flattened dims of a root mesh ({root: {"dp": mesh, "dp_cp": mesh, ...}}): torch asks callers to keep
them rather than slice them from the root."""


def world_size() -> int:
    """Ranks in the default process group (1 when none is initialized)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def mesh_shape(plan: ParallelPlan) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(dim names outer to inner, sizes) of the plan's mesh; dp is ("edp", "ep") when ep > 1."""
    names, sizes = [], []
    for name in reversed(plan.placement):
        if name == "dp" and plan.ep > 1:
            names += ["edp", "ep"]
            sizes += [plan.dp // plan.ep, plan.ep]
        else:
            names.append(name)
            sizes.append(getattr(plan, name))
    return tuple(names), tuple(sizes)


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
    mesh = init_device_mesh(device_type, sizes, mesh_dim_names=names)
    if plan.ep > 1:   # the data-parallel dim, for everything but the experts
        _flattened(mesh, "dp", ("edp", "ep"))
    return mesh


def axis_mesh(mesh: DeviceMesh, axis: str) -> DeviceMesh:
    """The 1-D mesh of `axis` (a flattened one, "dp" with expert parallelism, as built)."""
    flat = _FLAT.get(mesh, {})
    return flat[axis] if axis in flat else mesh[axis]


def axis_size(mesh: DeviceMesh | None, axis: str) -> int:
    return 1 if mesh is None else axis_mesh(mesh, axis).size()


def axis_rank(mesh: DeviceMesh | None, axis: str) -> int:
    """This rank's coordinate along `axis` (0 without a mesh)."""
    return 0 if mesh is None else axis_mesh(mesh, axis).get_local_rank()


def axis_group(mesh: DeviceMesh | None, axis: str) -> dist.ProcessGroup | None:
    """The process group of this rank's `axis` neighbours (None without a mesh)."""
    return None if mesh is None else axis_mesh(mesh, axis).get_group()


def _flattened(mesh: DeviceMesh, name: str, dims: tuple[str, ...]) -> DeviceMesh:
    """The dims of `mesh` named `dims` (kept in mesh order) flattened into one named `name`, built once."""
    flat = _FLAT.setdefault(mesh, {})
    if name not in flat:
        ordered = tuple(n for n in mesh.mesh_dim_names if n in dims)
        flat[name] = mesh[ordered]._flatten(name)
    return flat[name]


def replica_mesh(mesh: DeviceMesh | None, plan: ParallelPlan) -> DeviceMesh | None:
    """The 1-D mesh of the ranks holding the same (dense) weights: dp, cp, or both flattened (in mesh
    order, so the flattened rank is the row-major index); None for a single process."""
    if mesh is None:
        return None
    if plan.cp > 1 and plan.dp > 1:
        return _flattened(mesh, REPLICA_AXIS, ("dp", "edp", "ep", "cp"))
    return axis_mesh(mesh, "cp" if plan.cp > 1 else "dp")


def expert_replica_mesh(mesh: DeviceMesh | None, plan: ParallelPlan) -> DeviceMesh | None:
    """The 1-D mesh of the ranks holding the same routed experts when ep > 1 (Megatron-Core's expert
    data parallelism): "edp", flattened with "cp" when cp > 1; None without expert parallelism."""
    if mesh is None or plan.ep == 1:
        return None
    if plan.cp > 1:
        return _flattened(mesh, EXPERT_REPLICA_AXIS, ("edp", "cp"))
    return mesh["edp"]
