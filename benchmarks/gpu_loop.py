"""A plain single-process torch training loop of the executor's reference model on one GPU (bf16 autocast,
fp32 master weights, fused AdamW, gradient accumulation over micro-batches, global-norm clipping): the
baseline the GPU benchmark compares the executor with. Used by `benchmarks.bench_gpu`."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from costmodel import ModelSpec

__all__ = ["LoopResult", "plain_loop"]


@dataclass(frozen=True)
class LoopResult:
    """Median step time after warm-up, and the peaks of torch's caching allocator (bytes)."""

    step_time_s: float
    max_allocated_bytes: float
    max_reserved_bytes: float


def plain_loop(spec: ModelSpec, *, global_batch: int, micro_batch: int, seq_len: int, recompute: str,
               steps: int, device: str = "cuda", seed: int = 0) -> LoopResult:
    """Train `spec` for `steps` steps of `global_batch` random sequences; full recomputation wraps each
    block in torch.utils.checkpoint. Steps 2.. are timed (the first builds caches and optimizer state)."""
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    from executor.init import init_weights
    from executor.model import build_model

    dev = torch.device(device)
    model = build_model(spec, device="meta").to_empty(device=dev)
    model.reset_buffers()
    init_weights(model, spec, seed=seed)
    fused = dev.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=fused,
                            foreach=not fused)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def forward(x: torch.Tensor) -> torch.Tensor:
        h = model.embed(x)
        for layer in model.layers.values():
            h = checkpoint(layer, h, model.rope, use_reentrant=False) if recompute == "full" else layer(h, model.rope)
        return model.output(model.norm(h) if model.norm is not None else h)

    times = []
    for _ in range(steps):
        tokens = torch.randint(0, spec.vocab_size, (global_batch, seq_len + 1), generator=gen).to(dev)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        for x in tokens.split(micro_batch):
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                logits = forward(x[:, :-1])
                loss = F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten()) * (micro_batch / global_batch)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
    alloc = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else 0.0
    reserved = torch.cuda.max_memory_reserved(dev) if dev.type == "cuda" else 0.0
    return LoopResult(statistics.median(times[1:] or times), float(alloc), float(reserved))
