"""A mixture-of-experts layer in plain torch: router, top-k, token dispatch, grouped experts, combine.

`MoE` replaces a block's MLP (Shazeer et al. 2017; Fedus et al. 2022, Switch Transformer; Jiang et al.
2024, Mixtral): a linear router scores the E experts, each token goes to its top-k by softmax
probability with the k weights renormalised to sum to 1 (Mixtral's router), the experts are SwiGLU/GELU
MLPs stored as 3-D weights (`GroupedLinear`, one [E, out, in] tensor per projection), and shared
experts (DeepSeekMoE) are a dense MLP every token passes. No token is dropped (dropless, as Megatron-Core
and Mixtral train), so a token's output never depends on which other tokens share its batch or rank.

Load balancing: the sequence-wise auxiliary loss of DeepSeek-V3 (sec. 2.1.2), E * sum_i f_i P_i per
sequence (f_i: share of the sequence's k*s choices on expert i, P_i: its mean probability), summed over
the sequences and weighted by `router_aux_loss_coef * aux_loss_scale`. It is additive over sequences,
so every plan (any micro-batch, data- or expert-parallel split) adds the same gradient; with context
parallelism a rank holds a share of every sequence, so f_i is counted over the cp group (one all-reduce)
and each rank adds its tokens' share of P_i (Megatron-Core reduces its sequence statistics over the CP
group the same way). It reaches the
router through `_AuxLoss` (Megatron-Core's MoEAuxLossAutoScaler: the output passes unchanged, the
loss's gradient 1 is injected in backward) and is not part of the reported loss.

Parallel execution (set up by `executor.expert_parallel`; a single process runs the same code with no
groups): with expert parallelism the token copies sorted by expert go to the rank holding their expert
by an all-to-all over the EP group (`all_to_all_single_autograd`, which backpropagates the reverse
all-to-all) and come back by a second one; with tensor parallelism each expert's MLP is split over the
TP group like the dense MLP (column-parallel w1/w3, row-parallel w2) between `_CopyToTP` and
`_ReduceFromTP` (Megatron-LM's f and g operators, Shoeybi et al. 2019)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor

from costmodel.specs import ModelSpec

__all__ = ["MoE", "GroupedLinear", "GroupedExperts", "moe_modules", "set_aux_loss_scale"]

_ACT = {"gelu": F.gelu, "geglu": F.gelu, "swiglu": F.silu, "relu": F.relu}


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


class GroupedLinear(nn.Module):
    """`num` bias-free linear maps in one [num, out, in] weight; `forward(x, counts)` maps the rows of
    x, grouped by map (counts[i] rows for map i, in order), each by its own map."""

    def __init__(self, num: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, out_features, in_features))

    def forward(self, x: torch.Tensor, counts: list[int], grad_scale: float = 1.0) -> torch.Tensor:
        w = _local(self.weight)   # this rank's experts (and TP shard) of a DTensor weight
        if grad_scale != 1.0:
            w = _ScaleGrad.apply(w, grad_scale)
        outs = [chunk @ w[i].T for i, chunk in enumerate(x.split(counts))]
        return torch.cat(outs) if outs else x.new_zeros((0, w.shape[1]))


class GroupedExperts(nn.Module):
    """The routed experts' MLPs: w2(act(w1 x) [* w3 x]) per expert, on rows grouped by expert."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        e, h, f = spec.num_experts, spec.hidden_size, spec.expert_ffn_size
        self.act = _ACT[spec.activation]
        self.w1 = GroupedLinear(e, h, f)
        self.w3 = GroupedLinear(e, h, f) if spec.gated_mlp else None
        self.w2 = GroupedLinear(e, f, h)
        self.grad_scale = 1.0   # 1/ep with expert parallelism (executor.expert_parallel)

    def forward(self, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        s = self.grad_scale
        hidden = self.act(self.w1(x, counts, s))
        if self.w3 is not None:
            hidden = hidden * self.w3(x, counts, s)
        return self.w2(hidden, counts, s)


class MoE(nn.Module):
    """Router + routed experts + shared experts; x [b, s, h] -> [b, s, h]."""

    def __init__(self, spec: ModelSpec, *, shared: nn.Module | None = None) -> None:
        super().__init__()
        self.num_experts, self.top_k = spec.num_experts, spec.experts_per_token
        self.aux_coef = spec.router_aux_loss_coef
        self.router = nn.Linear(spec.hidden_size, spec.num_experts, bias=False)
        self.experts = GroupedExperts(spec)
        self.shared = shared   # the shared experts: a dense MLP of num_shared_experts expert widths
        # set by executor.expert_parallel / the engine; a single process keeps these defaults
        self.ep_group: dist.ProcessGroup | None = None
        self.ep_size = 1
        self.tp_group: dist.ProcessGroup | None = None
        self.cp_group: dist.ProcessGroup | None = None   # context parallelism (executor.context_parallel)
        self.aux_loss_scale = 0.0   # the engine's loss scale per sequence: dp*cp / global_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        flat = x.reshape(b * s, h)
        probs = torch.softmax(self.router(flat).float(), dim=-1)          # [T, E]
        top_p, top_i = probs.topk(self.top_k, dim=-1)                      # [T, k]
        weights = (top_p / top_p.sum(dim=-1, keepdim=True)).to(x.dtype)
        expert_in = _CopyToTP.apply(flat, self.tp_group) if self.tp_group is not None else flat
        routed = self._routed(expert_in, top_i.reshape(-1))                # [T*k, h], token-major
        if self.tp_group is not None:
            routed = _ReduceFromTP.apply(routed, self.tp_group)
        out = (weights.unsqueeze(-1) * routed.view(b * s, self.top_k, h)).sum(dim=1)
        if self.shared is not None:
            out = out + self.shared(flat)
        if self.training and self.aux_coef and self.aux_loss_scale and torch.is_grad_enabled():
            aux = _sequence_aux_loss(probs.view(b, s, -1), top_i.view(b, s, -1), self.num_experts,
                                     cp_group=self.cp_group)
            out = _AuxLoss.apply(out, aux * (self.aux_coef * self.aux_loss_scale))
        return out.view(b, s, h)

    def _routed(self, tokens: torch.Tensor, expert_of: torch.Tensor) -> torch.Tensor:
        """Each (token, choice) pair through its expert, in token-major order: sort the copies by expert,
        (exchange them over the EP group), run the experts, and put the results back in place."""
        order = torch.argsort(expert_of, stable=True)
        copies = tokens[order // self.top_k]
        counts = torch.bincount(expert_of, minlength=self.num_experts)
        if self.ep_group is None:
            out_sorted = self.experts(copies, counts.tolist())
        else:
            out_sorted = self._exchange(copies, counts)
        return out_sorted[torch.argsort(order)]   # the inverse permutation

    def _exchange(self, copies: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Expert parallelism: send each rank the copies for its E/ep experts, run them, send back."""
        ep, local = self.ep_size, self.num_experts // self.ep_size
        recv = funcol.wait_tensor(funcol.all_to_all_single(counts, None, None, self.ep_group))   # per (source, expert)
        send_split = counts.view(ep, local).sum(dim=1).tolist()
        recv_counts = recv.view(ep, local)
        recv_split = recv_counts.sum(dim=1).tolist()
        received = _all_to_all(copies, recv_split, send_split, self.ep_group)
        # grouped by source then expert -> grouped by expert (sources in order within an expert)
        expert = torch.repeat_interleave(torch.arange(ep * local, device=counts.device) % local, recv.view(-1))
        by_expert = torch.argsort(expert, stable=True)
        done = self.experts(received[by_expert], recv_counts.sum(dim=0).tolist())[torch.argsort(by_expert)]
        return _all_to_all(done, send_split, recv_split, self.ep_group)


def _all_to_all(x: torch.Tensor, out_split: list[int], in_split: list[int], group: Any) -> torch.Tensor:
    out = funcol.all_to_all_single_autograd(x.contiguous(), out_split, in_split, group)
    return funcol.wait_tensor(out)


def _sequence_aux_loss(probs: torch.Tensor, top_i: torch.Tensor, num_experts: int, *,
                       cp_group: Any = None) -> torch.Tensor:
    """Sum over sequences of E * sum_i f_i P_i (DeepSeek-V3's sequence-wise balance loss); probs
    [b, s, E], top_i [b, s, k]. With `cp_group` (context parallelism: this rank holds s of the
    sequence's cp*s tokens) f_i counts the whole sequence's choices and the result is this rank's
    share of P_i's sum: the cp ranks' results add up to the whole sequence's loss."""
    b, s, k = top_i.shape
    chosen = torch.zeros(b, num_experts, device=probs.device, dtype=probs.dtype)
    chosen.scatter_add_(1, top_i.reshape(b, s * k), torch.ones(b, s * k, device=probs.device, dtype=probs.dtype))
    if cp_group is None:
        f = chosen * num_experts / (s * k)
        return (f * probs.mean(dim=1)).sum()
    total = s * dist.get_world_size(cp_group)
    chosen = funcol.wait_tensor(funcol.all_reduce(chosen, "sum", cp_group))   # counts, no gradient
    f = chosen * num_experts / (total * k)
    return (f * probs.sum(dim=1) / total).sum()


class _AuxLoss(torch.autograd.Function):
    """Forward: the output unchanged; backward: also d(aux)/d(aux) = 1 into the auxiliary loss."""

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(aux)
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (aux,) = ctx.saved_tensors
        return grad, torch.ones_like(aux)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by `scale` (expert weights under EP: 1/ep)."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return w.view_as(w)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


class _CopyToTP(torch.autograd.Function):
    """Megatron's f: identity forward, all-reduce of the gradient over the TP group."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return funcol.wait_tensor(funcol.all_reduce(grad.contiguous(), "sum", ctx.group)), None


class _ReduceFromTP(torch.autograd.Function):
    """Megatron's g: all-reduce forward (the experts' partial sums), identity backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:
        return funcol.wait_tensor(funcol.all_reduce(x.contiguous(), "sum", group))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def moe_modules(parts: list[nn.Module]) -> list[MoE]:
    """Every MoE layer in `parts` (model chunks, possibly wrapped)."""
    return [m for part in parts for m in part.modules() if isinstance(m, MoE)]


def set_aux_loss_scale(parts: list[nn.Module], scale: float) -> None:
    """Tell every MoE layer the engine's per-sequence loss scale (dp*cp / global batch), so that its
    auxiliary loss enters the gradient as router_aux_loss_coef * mean over the global batch's sequences."""
    for m in moe_modules(parts):
        m.aux_loss_scale = scale
