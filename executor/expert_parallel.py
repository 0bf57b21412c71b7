"""Expert parallelism (and tensor parallelism of the experts) for the MoE layers of one model part.

Layout (Megatron-Core's and torchtitan's): the data-parallel ranks split into `ep`-rank groups, the
innermost ep of them (mesh dims "edp" x "ep", flattened back to "dp"; `executor.mesh`). Expert weights
become DTensors: Shard(0) over the EP group (rank j holds experts j*E/ep .. (j+1)*E/ep - 1) and, with
TP, each expert's w1/w3 sharded on their output and w2 on their input over the TP group. Router and
shared experts stay dense (replicated over EP; the shared experts TP-split like the dense MLP).

Gradients: the dense parameters average over all dp x cp replicas as before; the experts are data
parallel only over the ranks that hold the same experts ("edp", with cp > 1 flattened with "cp":
`executor.mesh.expert_replica_mesh`, `apply_fsdp`'s expert mesh). Each EP rank sums its experts'
gradient over the tokens of its whole EP group (every rank's loss scaled by dp*cp / N), so averaging
over the dp*cp/ep expert replicas leaves a factor ep, taken out in the backward pass
(`GroupedExperts.grad_scale` = 1/ep, exact for powers of two)."""

from __future__ import annotations

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, PrepareModuleInputOutput, RowwiseParallel

from costmodel.specs import ParallelPlan
from costmodel.step.runnable import expert_problems

from .moe import MoE, moe_modules

__all__ = ["moe_tp_plan", "apply_experts", "expert_mesh", "check_expert_plan"]


def check_expert_plan(plan: ParallelPlan) -> None:
    """ValueError (field + fix) for an expert layout the executor cannot run (`costmodel.step.runnable`'s
    rules, which the planner applies too)."""
    problems = expert_problems(plan)
    if problems:
        raise problems[0]


def moe_tp_plan(moe: MoE, act: object) -> dict[str, object]:
    """`parallelize_module` entries for an MoE block's MLP under TP: the layer's input gathered to all
    tokens (as the dense MLP's), its output back to the block's layout (`act`: Replicate, or sequence
    shards under SP); the shared experts split like the dense MLP. The routed experts are sharded by
    `apply_experts`."""
    plan: dict[str, object] = {"feed_forward": PrepareModuleInputOutput(
        input_layouts=(act,), desired_input_layouts=(Replicate(),), use_local_input=True,
        output_layouts=(Replicate(),), desired_output_layouts=(act,), use_local_output=True)}
    if moe.shared is not None:
        plan["feed_forward.shared.w1"] = ColwiseParallel()
        plan["feed_forward.shared.w2"] = RowwiseParallel(output_layouts=Replicate())
        if moe.shared.w3 is not None:
            plan["feed_forward.shared.w3"] = ColwiseParallel()
    return plan


def expert_mesh(mesh: DeviceMesh | None, plan: ParallelPlan) -> DeviceMesh | None:
    """The mesh the expert weights are sharded over: ("ep", "tp"), "ep" or "tp"; None without either."""
    if mesh is None:
        return None
    dims = tuple(d for d, n in (("ep", plan.ep), ("tp", plan.tp)) if n > 1)
    if not dims:
        return None
    return mesh[dims] if len(dims) > 1 else mesh[dims[0]]


def apply_experts(part: nn.Module, mesh: DeviceMesh | None, plan: ParallelPlan) -> None:
    """Shard every MoE layer's experts of `part` (on the meta device, before FSDP) and give the layers
    their EP and TP process groups."""
    layers = moe_modules([part])
    sub = expert_mesh(mesh, plan)
    if not layers or sub is None:
        return
    for moe in layers:
        _shard_experts(moe, sub, plan)
        if plan.ep > 1:
            moe.ep_group, moe.ep_size = mesh.get_group("ep"), plan.ep
            moe.experts.grad_scale = 1.0 / plan.ep
        if plan.tp > 1:
            moe.tp_group = mesh.get_group("tp")


def _shard_experts(moe: MoE, sub: DeviceMesh, plan: ParallelPlan) -> None:
    """w1/w3 [E, f, h]: Shard(0) over ep, Shard(1) over tp; w2 [E, h, f]: Shard(0), Shard(2)."""
    for name in ("w1", "w3", "w2"):
        linear = getattr(moe.experts, name)
        if linear is None:
            continue
        placements = ([Shard(0)] if plan.ep > 1 else []) + ([Shard(2 if name == "w2" else 1)] if plan.tp > 1 else [])
        linear.weight = nn.Parameter(distribute_tensor(linear.weight, sub, placements))
