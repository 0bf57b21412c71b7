"""Context parallelism on the mesh's `cp` axis: each rank holds a share of every sequence.

Sharding (`chunk_positions`, `shard_sequence`): the sequence is cut into 2*cp equal chunks and rank
i holds chunks i and 2cp-1-i, side by side, so every rank does the same causal-attention work (Llama
Team 2024, "The Llama 3 Herd of Models", sec. 3.3.2; torch's head-tail load balancer is the same
split). Rotary and learned positions use the tokens' global positions (`Transformer.positions`).

Attention, the plan's `cp_attention` as `costmodel.layer.cp_variant.cp_variant` resolves it:
- `AllGatherAttention` (any device, Gloo included): the ranks all-gather the keys and values of
  their kv heads (`gather_kv`, an autograd function whose backward reduce-scatters the gathered
  gradients), and each local query chunk attends to the keys up to its end with a causal mask
  aligned to its global position (Llama 3, sec. 3.3.2).
- `RingAttention` (CUDA): torch's context-parallel SDPA (`_ContextParallel` module wrapper, ring
  attention over the flash / efficient / cuDNN kernels with the same load-balanced split).

Loss and gradients: each rank's cross-entropy sums its own tokens and the engine adds the sums, so the
loss is the mean over every token of the sequence; parameters are replicated over cp, so the
data-parallel wrapper reduces their gradients over the flattened dp x cp mesh (`mesh.replica_mesh`),
as torchtitan shards FSDP over dp x cp."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from costmodel.specs import ParallelPlan
from costmodel.step.runnable import cp_problems, cp_variant

from .model import Attention, Transformer, repeat_kv
from .moe import MoE

__all__ = ["chunk_positions", "shard_sequence", "unshard_sequence", "gather_kv", "attend_chunks",
           "AllGatherAttention", "RingAttention", "apply_cp", "check_cp"]


def chunk_positions(seq_len: int, cp: int, rank: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Global positions of rank `rank`'s tokens: chunk `rank` then chunk 2cp-1-rank of 2cp equal chunks."""
    if seq_len % (2 * cp):
        raise ValueError(f"cp: seq_len={seq_len} is not divisible by 2*cp={2 * cp}; pick a cp with 2*cp dividing it")
    c = seq_len // (2 * cp)
    head = torch.arange(rank * c, (rank + 1) * c, device=device)
    tail = torch.arange((2 * cp - 1 - rank) * c, (2 * cp - rank) * c, device=device)
    return torch.cat([head, tail])


def shard_sequence(x: torch.Tensor, cp: int, rank: int, *, dim: int = 1) -> torch.Tensor:
    """Rank `rank`'s share of `x` along `dim` (a whole sequence): chunks rank and 2cp-1-rank."""
    if cp == 1:
        return x
    chunks = x.chunk(2 * cp, dim=dim)
    if len(chunks) != 2 * cp or chunks[0].shape[dim] * 2 * cp != x.shape[dim]:
        raise ValueError(f"cp: seq_len={x.shape[dim]} is not divisible by 2*cp={2 * cp}")
    return torch.cat([chunks[rank], chunks[2 * cp - 1 - rank]], dim=dim).contiguous()


class _GatherKV(torch.autograd.Function):
    """All-gather along a new leading dim over `group`; backward: reduce-scatter (sum) of its gradient,
    which adds every rank's contribution to the keys and values this rank holds."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, group: dist.ProcessGroup
                ) -> torch.Tensor:
        ctx.group = group
        size = dist.get_world_size(group)
        out = x.new_empty((size * x.shape[0], *x.shape[1:]))   # ranks' tensors concatenated along dim 0
        dist.all_gather_into_tensor(out, x.contiguous(), group=group)
        return out.view(size, *x.shape)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        out = grad.new_empty(grad.shape[1:])
        flat = grad.contiguous().view(grad.shape[0] * grad.shape[1], *grad.shape[2:])
        dist.reduce_scatter_tensor(out, flat, op=dist.ReduceOp.SUM, group=ctx.group)
        return out, None


def gather_kv(k: torch.Tensor, v: torch.Tensor, group: dist.ProcessGroup) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's keys and values [b, kv_heads, 2c, d] -> the whole sequence's [b, kv_heads, s, d] in
    global order (one all-gather of both; their gradients reduce-scattered in backward)."""
    gathered = _GatherKV.apply(torch.stack([k, v]), group)
    full = unshard_sequence(gathered, dim=4)
    return full[0], full[1]


def unshard_sequence(shards: torch.Tensor, *, dim: int) -> torch.Tensor:
    """Every rank's share stacked along a new leading dim ([cp, ...]) -> the whole sequence along `dim`
    of one share (`dim` counts the leading rank dim): inverse of `shard_sequence`."""
    heads, tails = shards.chunk(2, dim=dim)                    # rank r's chunks r and 2cp-1-r
    order = torch.cat([heads, tails.flip(0)])                  # [2cp, ...]: chunk g at index g
    return torch.cat(order.unbind(0), dim=dim - 1)


def attend_chunks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, cp: int, rank: int) -> torch.Tensor:
    """Causal attention of rank `rank`'s two query chunks q [b, heads, 2c, d] over the whole sequence's
    keys and values [b, heads, s, d]: chunk j (global index g) attends to keys [0, (g+1)c), masked so
    that a query sees the keys up to its own global position (the causal mask aligned lower right)."""
    c = q.shape[2] // 2
    outs = []
    for j, g in enumerate((rank, 2 * cp - 1 - rank)):
        end = (g + 1) * c
        mask = torch.ones(c, end, dtype=torch.bool, device=q.device).tril(end - c)
        outs.append(F.scaled_dot_product_attention(q[:, :, j * c:(j + 1) * c], k[:, :, :end], v[:, :, :end],
                                                   attn_mask=mask))
    return torch.cat(outs, dim=2)


class AllGatherAttention(nn.Module):
    """The all-gather variant: gather every rank's keys and values (`gather_kv`), repeat them for
    grouped-query heads, attend this rank's query chunks (`attend_chunks`)."""

    def __init__(self, group: dist.ProcessGroup, *, cp: int, rank: int) -> None:
        super().__init__()
        self.group, self.cp, self.rank = group, cp, rank

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        k, v = gather_kv(k, v, self.group)
        k, v = repeat_kv(q, k, v)
        return attend_chunks(q, k, v, cp=self.cp, rank=self.rank)


class _SDPA(nn.Module):
    """Causal scaled dot-product attention of equal head counts: the module torch's CP wrapper shards."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class RingAttention(nn.Module):
    """torch's context-parallel ring attention (CUDA): query, keys and values enter as sequence shards
    of the head-tail split; its SDPA dispatch rotates the keys and values over the cp group."""

    def __init__(self, cp_mesh: DeviceMesh) -> None:
        super().__init__()
        from torch.distributed.tensor.experimental._context_parallel import _attention as cp_attn
        from torch.distributed.tensor.parallel import parallelize_module

        # the module-wrapper mode of torch's CP (as torchtitan uses it): SDPA calls of wrapped modules
        # only; the head-tail load balance is ours (shard_sequence), so torch's causal steps match it.
        # These are process-wide switches of torch's CP module; a worker runs one plan.
        cp_attn._dispatch_mode = cp_attn._DispatchMode.MODULE_WRAPPER
        cp_attn._cp_options.enable_load_balance = True
        cp_attn._enable_context_parallel_dispatcher()
        self.sdpa = parallelize_module(_SDPA(), cp_mesh, cp_attn._ContextParallel(
            seq_dim=2, attention_type=cp_attn._ContextParallel.AttentionType.SDPA))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        k, v = repeat_kv(q, k, v)
        return self.sdpa(q, k, v)


def check_cp(plan: ParallelPlan, *, device: torch.device, seq_len: int | None = None) -> None:
    """ValueError (field: fix) when the executor cannot run the plan's CP on `device`."""
    problems = cp_problems(plan, device="cuda" if device.type == "cuda" else "cpu", seq_len=seq_len)
    if problems:
        raise problems[0]


def apply_cp(part: Transformer, plan: ParallelPlan, mesh: DeviceMesh, *, seq_len: int, device: torch.device) -> str:
    """Give `part` this rank's global positions and the plan's CP attention in every block (after TP:
    the attention core sees the local heads), and its MoE layers the cp group. Returns the variant
    ('all-gather' or 'ring')."""
    check_cp(plan, device=device, seq_len=seq_len)
    variant = cp_variant(plan, "cuda" if device.type == "cuda" else "cpu")
    cp_mesh = mesh["cp"]
    rank = cp_mesh.get_local_rank()
    part.positions = chunk_positions(seq_len, plan.cp, rank, device=device)
    for module in part.modules():
        if isinstance(module, Attention):
            if not module.causal:
                raise ValueError("cp: context parallelism needs causal (decoder) attention; use cp=1")
            module.core = (RingAttention(cp_mesh) if variant == "ring"
                           else AllGatherAttention(cp_mesh.get_group(), cp=plan.cp, rank=rank))
        elif isinstance(module, MoE):   # the sequence-wise balance loss counts the whole sequence
            module.cp_group = cp_mesh.get_group()
    return variant
