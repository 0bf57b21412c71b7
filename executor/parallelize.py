"""Applying a plan to one model part, in torchtitan's fixed order:

    1. tensor parallel (+ sequence parallel)   - `apply_tp`, DTensor `parallelize_module`
       context parallel                         - `executor.context_parallel.apply_cp` (attention core)
    2. activation recomputation                - `apply_recompute`, per block
    3. data parallel: FSDP2 (ZeRO-1/2/3 with TP/PP, ZeRO-2/3), FSDP-based replicate (ZeRO-0 with
       TP/PP) - `apply_fsdp`, on the meta device before materialization
    4. materialize + deterministic init        - (engine: `to_empty`, `init_weights`)
    5. DDP (ZeRO-0/1 without TP/PP)             - `apply_ddp`, wraps real parameters

Data parallelism spans the dp x cp replicas (`executor.mesh.replica_mesh`): context-parallel ranks
hold the same weights, so their gradients are reduced with the data-parallel ones.

Mixture-of-experts layers: their TP entries and the sharding of the experts over the EP and TP groups
are `executor.expert_parallel`'s (applied with TP, step 1); FSDP/replicate wraps the experts over the
expert-data-parallel mesh before their block (step 3).

TP follows Megatron-LM (Shoeybi et al. 2019, sec 3): column-parallel q/k/v and w1/w3, row-parallel wo
and w2, vocabulary-parallel embedding; sequence parallelism (Korthikanti et al. 2022, sec 4.2.2)
shards the norms' activations along the sequence between the TP regions."""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._composable.replicate_with_fsdp import replicate
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    PrepareModuleOutput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from costmodel.specs import ParallelPlan

from .expert_parallel import moe_tp_plan
from .model import Transformer
from .moe import MoE

__all__ = ["apply_tp", "apply_tp_head", "mlp_tp_plan", "apply_recompute", "apply_fsdp", "apply_ddp", "dp_wrapper",
           "uses_fsdp", "uses_ddp", "selective_policy", "ddp_bucket_cap_mb"]


def apply_tp(part: Transformer, tp_mesh: DeviceMesh, *, sequence_parallel: bool, loss_parallel: bool = False
             ) -> None:
    """Shard `part`'s linears and embedding over `tp_mesh` in place. Blocks exchange activations as
    plain tensors: replicated [b, s, h] without SP, sequence shards [b, s/tp, h] with SP. With
    `loss_parallel` the logits stay a vocab-sharded DTensor for torch's `loss_parallel()` cross-entropy
    (no all-gather of [b, s, vocab]); otherwise they are gathered to a plain replicated tensor."""
    act = Shard(1) if sequence_parallel else Replicate()
    if part.embed is not None:
        # Vocab-parallel embedding (rows of the table split over TP); its all-reduced output gets the
        # learned positions added, then is cut into sequence shards for SP.
        parallelize_module(part.embed, tp_mesh, {
            "tok": RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()),
        })
        if sequence_parallel:
            parallelize_module(part.embed, tp_mesh, PrepareModuleOutput(
                output_layouts=Replicate(), desired_output_layouts=Shard(1), use_local_output=True))
    for block in part.layers.values():
        norm_style = SequenceParallel(use_local_output=True) if sequence_parallel else None
        plan = {
            "attention": PrepareModuleInput(input_layouts=(act, None), desired_input_layouts=(Replicate(), None),
                                            use_local_output=True),
            "attention.wq": ColwiseParallel(),
            "attention.wk": ColwiseParallel(),
            "attention.wv": ColwiseParallel(),
            "attention.wo": RowwiseParallel(output_layouts=act),
        }
        ffn = block.feed_forward
        plan.update(moe_tp_plan(ffn, act) if isinstance(ffn, MoE) else mlp_tp_plan(ffn, act))
        if norm_style is not None:
            plan["attention_norm"] = norm_style
            plan["ffn_norm"] = SequenceParallel(use_local_output=True)
        parallelize_module(block, tp_mesh, plan)
    apply_tp_head(part, tp_mesh, sequence_parallel=sequence_parallel, loss_parallel=loss_parallel)
    part.reset_buffers()  # re-tie a tied output to the (now sharded) embedding


def mlp_tp_plan(ffn: nn.Module, act: Any, *, prefix: str = "feed_forward") -> dict[str, Any]:
    """Megatron's MLP split (Shoeybi et al. 2019, sec. 3): w1 (and the gate w3) by columns, w2 by rows
    back to the blocks' activation layout `act`."""
    plan: dict[str, Any] = {
        prefix: PrepareModuleInput(input_layouts=(act,), desired_input_layouts=(Replicate(),), use_local_output=True),
        f"{prefix}.w1": ColwiseParallel(),
        f"{prefix}.w2": RowwiseParallel(output_layouts=act),
    }
    if ffn.w3 is not None:
        plan[f"{prefix}.w3"] = ColwiseParallel()
    return plan


def apply_tp_head(part: nn.Module, tp_mesh: DeviceMesh, *, sequence_parallel: bool, loss_parallel: bool) -> None:
    """The final norm (sequence parallel with SP) and the output layer (vocab columns; a vocab-sharded
    DTensor for `loss_parallel`, else gathered to a plain replicated tensor)."""
    act = Shard(1) if sequence_parallel else Replicate()
    if part.norm is not None and sequence_parallel:
        parallelize_module(part.norm, tp_mesh, SequenceParallel(use_local_output=True))
    if part.output is not None:
        parallelize_module(part.output, tp_mesh, ColwiseParallel(
            input_layouts=act, output_layouts=Shard(-1) if loss_parallel else Replicate(),
            use_local_output=not loss_parallel))


_SAVE_OPS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
             # MoE token exchange (executor.moe): kept, not re-communicated, in the backward pass
             torch.ops._c10d_functional.all_to_all_single.default,
             torch.ops._c10d_functional_autograd.all_to_all_single.default,
             torch.ops._c10d_functional.all_reduce.default}


def selective_policy(ctx: object, op: object, *args: object, **kwargs: object) -> CheckpointPolicy:
    """Korthikanti et al. 2022's selective recomputation: keep the linear layers' outputs, recompute
    the attention core, norms and element-wise ops in the backward pass."""
    return CheckpointPolicy.MUST_SAVE if op in _SAVE_OPS else CheckpointPolicy.PREFER_RECOMPUTE


class _KeepFirst(dict):
    """A selective-checkpoint cache entry table that keeps what the forward saved: a second
    recomputation of the region replays the same saved outputs instead of failing."""

    def __setitem__(self, key: object, value: object) -> None:
        if key not in self:
            super().__setitem__(key, value)


def _replayable_contexts() -> tuple:
    """torch's selective checkpoint contexts whose saved outputs serve every recomputation of the
    region: the zero-bubble schedule runs two backward passes per micro-batch (input gradients, then
    weight gradients; Qi et al. 2024), each recomputing the checkpointed forward, and torch's cache
    hands a saved tensor out once. Saved outputs live until the region's graph is freed."""
    caching, cached = create_selective_checkpoint_contexts(selective_policy)
    caching.storage = cached.storage = defaultdict(_KeepFirst)
    return caching, cached


def apply_recompute(part: Transformer, mode: str, *, split_backward: bool = False) -> None:
    """Wrap each block with activation checkpointing: 'full' keeps only block inputs; 'selective'
    uses torch's selective checkpoint contexts with `selective_policy` (replayable when the schedule
    splits the backward in two, `split_backward`); 'none' does nothing."""
    if mode == "none":
        return
    if mode not in ("full", "selective"):
        raise ValueError(f"recompute: unknown policy {mode!r}; use 'none', 'selective' or 'full'")
    kwargs: dict[str, object] = {"preserve_rng_state": False}
    if mode == "selective":
        kwargs["context_fn"] = (_replayable_contexts if split_backward
                                else partial(create_selective_checkpoint_contexts, selective_policy))
    for key in list(part.layers.keys()):
        part.layers[key] = checkpoint_wrapper(part.layers[key], **kwargs)


def dp_wrapper(plan: ParallelPlan) -> str:
    """How data parallelism (over the dp x cp replicas) is applied: 'none' (dp*cp=1); 'ddp' (ZeRO-0/1
    on a plain model: DDP, plus ZeroRedundancyOptimizer for ZeRO-1); 'replicate' (ZeRO-0 with TP or
    PP: torch's FSDP-based replicate, which takes DTensor parameters and pipeline stages); 'fsdp'
    (FSDP2: ZeRO-2/3, and ZeRO-1 with TP or PP, where ZeroRedundancyOptimizer/DDP cannot be used -
    sharding gradients too gives the same losses with less memory)."""
    if plan.dp * plan.cp == 1:
        return "none"
    plain = plan.tp == 1 and plan.pp == 1 and plan.ep == 1   # experts reduce over their own group: FSDP2
    if plan.zero_stage <= 1 and plain:
        return "ddp"
    if plan.zero_stage == 0:
        return "replicate"
    return "fsdp"


def uses_fsdp(plan: ParallelPlan) -> bool:
    """FSDP2 or its replicate variant manages data parallelism."""
    return dp_wrapper(plan) in ("fsdp", "replicate")


def uses_ddp(plan: ParallelPlan) -> bool:
    return dp_wrapper(plan) == "ddp"


def apply_fsdp(part: nn.Module, plan: ParallelPlan, dp_mesh: DeviceMesh, *,
               param_dtype: torch.dtype = torch.float32, expert_mesh: DeviceMesh | None = None) -> None:
    """FSDP2 `fully_shard` (or `replicate`) per block, then the whole part. ZeRO-3 reshards parameters
    after forward; ZeRO-1/2 keep them gathered until backward (sharded gradients and optimizer states,
    Rajbhandari et al. 2020); `replicate` keeps everything whole and all-reduces gradients (DDP).

    Sharded plans use torchtitan's units: the embedding, each block, and the head (final norm + output
    layer, never resharded after forward: the backward needs it at once; with tied embeddings one unit
    holds embedding and head). In the forward each unit explicitly prefetches the next one's all-gather
    (`set_modules_to_forward_prefetch`), so block i+1's parameters arrive while block i computes (every
    micro-batch gathers again: FSDP2 reshards after each backward); the backward prefetches one unit
    ahead by FSDP2's default, and each unit's reduce-scatter runs during the next unit's backward.
    With `expert_mesh` (expert parallelism) each MoE layer's experts are wrapped first, over it."""
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    if dp_wrapper(plan) == "replicate":
        wrap = partial(replicate, mesh=dp_mesh, mp_policy=mp)
        for block in part.layers.values():
            _wrap_experts(block, partial(replicate, mesh=expert_mesh, mp_policy=mp), expert_mesh)
            wrap(block)
        wrap(part)
        return
    reshard = plan.zero_stage == 3
    wrap = partial(fully_shard, mesh=dp_mesh, mp_policy=mp)
    for block in part.layers.values():
        _wrap_experts(block, partial(fully_shard, mesh=expert_mesh, mp_policy=mp, reshard_after_forward=reshard),
                      expert_mesh)
    head = [m for m in (part.norm, part.output) if m is not None]
    tied = part.embed is not None and part.output is not None and part.spec.tie_embeddings
    units: list[nn.Module] = []
    if part.embed is not None and not tied:
        units.append(wrap(part.embed, reshard_after_forward=reshard))
    units += [wrap(block, reshard_after_forward=reshard) for block in part.layers.values()]
    if part.output is not None:  # a group of modules shares one FSDP state: its first module stands for it
        units.append(wrap([part.embed, *head] if tied else head, reshard_after_forward=False)[0])
    wrap(part, reshard_after_forward=reshard)
    for unit, following in zip(units, units[1:], strict=False):
        unit.set_modules_to_forward_prefetch([following])


DDP_BUCKET_PARAMS = 40_000_000
"""Gradient elements per DDP bucket (at least; Megatron-LM's default: max(40M, 1M x dp) parameters,
`DistributedDataParallelConfig.bucket_size`, so that large DP groups do not turn latency-bound)."""


def ddp_bucket_cap_mb(dp: int, *, grad_bytes: int = 4) -> float:
    """DDP `bucket_cap_mb` for `dp` ranks with gradients of `grad_bytes` per element."""
    return max(DDP_BUCKET_PARAMS, 1_000_000 * dp) * grad_bytes / 2**20


def _wrap_experts(block: nn.Module, wrap: Any, expert_mesh: DeviceMesh | None) -> None:
    """Wrap the routed experts of `block`'s MoE layers over the expert-data-parallel mesh (before the
    block itself, so the block's unit leaves them out)."""
    if expert_mesh is None:
        return
    for moe in (m for m in block.modules() if isinstance(m, MoE)):
        wrap(moe.experts)


def apply_ddp(part: nn.Module, dp_group: torch.distributed.ProcessGroup, *,
              device: torch.device) -> DistributedDataParallel:
    """DDP over the data-parallel (dp x cp replica) group (wraps materialized parameters; broadcasts
    rank 0's). Each bucket's all-reduce starts as soon as its gradients are ready, during the backward
    (Li et al. 2020, "PyTorch Distributed", sec. 3.2.3); gradients are views into the buckets
    (`gradient_as_bucket_view`), so no second copy of them is kept."""
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(part, process_group=dp_group, device_ids=ids,
                                   broadcast_buffers=False, find_unused_parameters=False,
                                   bucket_cap_mb=ddp_bucket_cap_mb(dist.get_world_size(dp_group)),
                                   gradient_as_bucket_view=True)
