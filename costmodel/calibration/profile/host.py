"""Host (CPU-side) cost of eager PyTorch per Transformer block, measured where compute is negligible.

Eager frameworks pay a fixed host cost per op (Python, autograd, the dispatcher; DTensor's sharding
propagation under tensor parallelism; checkpoint wrappers under recomputation). On a GPU it hides
behind kernels when the queue is full; on a CPU the same thread runs both, so it adds to compute
(eager per-op overhead, not measured by GEMM or collective benchmarks).

`block_host_seconds` times forward + backward of a stack of reference pre-norm blocks of the model's shape
(GQA attention with torch SDPA, RoPE or not, gated or plain MLP, RMSNorm/LayerNorm) on a few tokens,
so the time is host time: plain, fully and selectively recomputed (torch.utils.checkpoint), and over
2 processes with torch's tensor-parallel styles (Megatron column/row split, Shoeybi et al. 2019),
without and with sequence parallelism (Korthikanti et al. 2022). The aten ops it dispatches are
counted with a TorchDispatchMode, so the profile also states the host time per aten op. With several
worker counts it also measures how much more CPU a block costs when that many processes share the
cores (costmodel.calibration.profile.host_dist.measure_concurrency)."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ...specs import ModelSpec

__all__ = ["RefBlock", "TP_RANKS", "block_host_seconds", "count_aten_ops", "speed_probe_s"]

TP_RANKS = 2


class _Attention(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        h, d = spec.hidden_size, spec.kv_channels
        self.head_dim, self.rope = d, spec.position == "rope"
        self.wq = nn.Linear(h, spec.num_heads * d, bias=spec.bias)
        self.wk = nn.Linear(h, spec.kv_heads * d, bias=spec.bias)
        self.wv = nn.Linear(h, spec.kv_heads * d, bias=spec.bias)
        self.wo = nn.Linear(spec.num_heads * d, h, bias=spec.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        d = self.head_dim
        q, k, v = (w(x).view(b, s, -1, d) for w in (self.wq, self.wk, self.wv))
        if self.rope:  # rotate halves with an angle table: the ops of RoPE (Su et al. 2021)
            cos = torch.ones(1, s, 1, d, dtype=x.dtype)
            q, k = (t * cos + torch.cat([-t[..., d // 2:], t[..., : d // 2]], dim=-1) * cos for t in (q, k))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        rep = q.shape[1] // k.shape[1]
        if rep > 1:  # grouped-query attention
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(out.transpose(1, 2).reshape(b, s, -1))


class _FeedForward(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        h, f = spec.hidden_size, spec.ffn_size
        self.act = F.silu if spec.gated_mlp else F.gelu
        self.w1 = nn.Linear(h, f, bias=spec.bias)
        self.w3 = nn.Linear(h, f, bias=spec.bias) if spec.gated_mlp else None
        self.w2 = nn.Linear(f, h, bias=spec.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.w1(x))
        return self.w2(h * self.w3(x) if self.w3 is not None else h)


class RefBlock(nn.Module):
    """A pre-norm decoder block of `spec`'s shape (Llama / GPT style) in plain torch."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        norm = partial(nn.RMSNorm, spec.hidden_size) if spec.norm == "rmsnorm" else partial(
            nn.LayerNorm, spec.hidden_size, bias=spec.bias)
        self.attention_norm, self.ffn_norm = norm(), norm()
        self.attention = _Attention(spec)
        self.feed_forward = _FeedForward(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x))
        return h + self.feed_forward(self.ffn_norm(h))


def _apply_tp(block: RefBlock, mesh: object, *, sp: bool) -> None:
    """torch's Megatron-style TP plan for one block: column-parallel q/k/v/w1/w3, row-parallel
    wo/w2; with SP the norms work on sequence shards, gathered before and scattered after the
    TP regions (all-gather + reduce-scatter instead of all-reduce)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    act = Shard(1) if sp else Replicate()
    plan: dict[str, object] = {
        "attention": PrepareModuleInput(input_layouts=(act,), desired_input_layouts=(Replicate(),),
                                        use_local_output=True),
        "attention.wq": ColwiseParallel(), "attention.wk": ColwiseParallel(), "attention.wv": ColwiseParallel(),
        "attention.wo": RowwiseParallel(output_layouts=act),
        "feed_forward": PrepareModuleInput(input_layouts=(act,), desired_input_layouts=(Replicate(),),
                                           use_local_output=True),
        "feed_forward.w1": ColwiseParallel(), "feed_forward.w2": RowwiseParallel(output_layouts=act),
    }
    if block.feed_forward.w3 is not None:
        plan["feed_forward.w3"] = ColwiseParallel()
    if sp:
        plan["attention_norm"] = SequenceParallel(use_local_output=True)
        plan["ffn_norm"] = SequenceParallel(use_local_output=True)
    parallelize_module(block, mesh, plan)


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.n += 1
        return func(*args, **(kwargs or {}))


def count_aten_ops(fn: object) -> int:
    """aten ops dispatched by one call of `fn` (forward + backward included when `fn` runs both)."""
    counter = _Count()
    with counter:
        fn()  # type: ignore[operator]
    return counter.n


def _fwd_bwd(blocks: list[nn.Module], x: torch.Tensor, recompute: str) -> None:
    from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts

    h = x
    for blk in blocks:
        if recompute == "full":
            h = checkpoint(blk, h, use_reentrant=False, preserve_rng_state=False)
        elif recompute == "selective":  # keep GEMM outputs, recompute the rest (Korthikanti et al. 2022)
            h = checkpoint(blk, h, use_reentrant=False, preserve_rng_state=False,
                           context_fn=partial(create_selective_checkpoint_contexts, _selective_policy))
        else:
            h = blk(h)
    h = h.to_local() if hasattr(h, "to_local") else h
    h.float().sum().backward()


def _selective_policy(ctx: object, op: object, *args: object, **kwargs: object) -> object:
    from torch.utils.checkpoint import CheckpointPolicy

    keep = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default}
    return CheckpointPolicy.MUST_SAVE if op in keep else CheckpointPolicy.PREFER_RECOMPUTE


def block_host_seconds(blocks: list[nn.Module], x: torch.Tensor, *, recompute: str | tuple[str, ...] = "none",
                       repeats: int = 10, sync: object = None) -> Any:
    """CPU seconds (`time.process_time`: this process's work, less sensitive to other users' load than
    wall time) of one block's forward + backward: the fastest of `repeats` runs of the stack, /
    len(blocks). Several recompute modes (a tuple) are timed in interleaved rounds, so slow drifts of
    the machine hit all of them alike and their ratios hold; returns a tuple then. `sync` (e.g. a
    barrier) runs before each timed run so peers start together."""
    modes = (recompute,) if isinstance(recompute, str) else tuple(recompute)
    best = dict.fromkeys(modes, float("inf"))
    for mode in modes:
        _fwd_bwd(blocks, x, mode)  # warm-up
    for _ in range(max(1, repeats)):
        for mode in modes:
            if sync is not None:
                sync()  # type: ignore[operator]
            t0 = time.process_time()
            _fwd_bwd(blocks, x, mode)
            best[mode] = min(best[mode], time.process_time() - t0)
    out = tuple(best[m] / len(blocks) for m in modes)
    return out[0] if isinstance(recompute, str) else out


def _input(spec: ModelSpec, tokens: int) -> torch.Tensor:
    return torch.randn(1, tokens, spec.hidden_size, requires_grad=True)


def speed_probe_s(spec: ModelSpec, *, tokens: int = 128, layers: int = 4, repeats: int = 5) -> float:
    """CPU seconds per reference block forward + backward on `tokens` tokens, 1 thread, median of
    `repeats`: the same measurement as `HostPoint.block_cpu_s`, cheap enough (~0.5 s) to repeat right
    before a run, so a prediction can be put at the machine's speed of the moment (shared machines
    drift by tens of percent within minutes; `validate --local` reports it)."""
    import statistics

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        blocks = [RefBlock(spec) for _ in range(layers)]
        x = _input(spec, min(tokens, spec.max_seq_len))
        _fwd_bwd(blocks, x, "none")
        samples = []
        for _ in range(max(1, repeats)):
            t0 = time.process_time()
            _fwd_bwd(blocks, x, "none")
            samples.append(time.process_time() - t0)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(samples) / layers
