"""Compute micro-benchmarks: GEMMs of a model's layer shapes (forward and backward) and elementwise
streaming bandwidth, measured with torch on one device (attention and the other operators:
`costmodel.calibration.profile.operators`).

GEMM FLOPs are 2mnk; an elementwise add streams 3 buffers (2 reads, 1 write), as the STREAM 'Add'
kernel counts them (McCalpin 1995). Each figure is the best of `repeats` samples (`timing.time_fn`)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ...specs import ModelSpec
from ..profile_spec import GemmPoint, MemBwPoint
from .timing import time_fn

__all__ = ["TORCH_DTYPES", "gemm_shapes", "measure_gemms", "measure_mem_bw"]

TORCH_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16,
                "fp16": torch.float16}


def gemm_shapes(model: ModelSpec, *, tokens: int, max_flop: float, backward: bool = False) -> list[tuple[int, int, int]]:
    """Forward (m, n, k) GEMMs of one Transformer layer plus the logits, for `tokens` rows and a
    quarter of them; with `backward`, also each one's input-gradient (m, k, n) and weight-gradient
    (k, n, m) GEMM. The token dimension is lowered so that no GEMM exceeds `max_flop` FLOPs (keeps CPU
    runs short)."""
    h, d = model.hidden_size, model.kv_channels
    qkv = (model.num_heads + 2 * model.kv_heads) * d
    ffn = model.ffn_size * (2 if model.gated_mlp else 1)
    nk = [(qkv, h), (h, model.num_heads * d), (ffn, h), (h, model.ffn_size), (model.vocab_size, h)]
    shapes: list[tuple[int, int, int]] = []

    def add(shape: tuple[int, int, int]) -> None:
        if shape not in shapes:
            shapes.append(shape)

    for m in (tokens, max(1, tokens // 4)):
        for n, k in nk:
            mm = max(1, min(m, int(max_flop // (2 * n * k))))
            add((mm, n, k))
            if backward:
                add((mm, k, n))   # input gradient: (m x n) @ (n x k)
                add((k, n, mm))   # weight gradient: (k x m) @ (m x n), the tokens are the reduction
    return shapes


def measure_gemms(shapes: list[tuple[int, int, int]], dtype: str, *, device: torch.device,
                  repeats: int, gen: torch.Generator) -> Iterator[GemmPoint]:
    """Time `a @ b` for each (m, n, k); yields one GemmPoint per shape."""
    tdt = TORCH_DTYPES[dtype]
    for m, n, k in shapes:
        a = torch.randn(m, k, generator=gen).to(device=device, dtype=tdt)
        b = torch.randn(k, n, generator=gen).to(device=device, dtype=tdt)
        t, _ = time_fn(lambda a=a, b=b: a @ b, device=device, repeats=repeats, max_s=2.0)
        yield GemmPoint(m=m, n=n, k=k, dtype=dtype, time_s=t, flops_per_s=2.0 * m * n * k / t)


def measure_mem_bw(sizes_bytes: list[int], *, device: torch.device, repeats: int) -> Iterator[MemBwPoint]:
    """Time `torch.add(a, b, out=c)` on fp32 buffers of each size; 3 * size bytes move per call."""
    for nbytes in sizes_bytes:
        numel = max(1, nbytes // 4)
        a = torch.ones(numel, device=device)
        b = torch.ones(numel, device=device)
        c = torch.empty(numel, device=device)
        t, _ = time_fn(lambda a=a, b=b, c=c: torch.add(a, b, out=c), device=device, repeats=repeats, max_s=2.0)
        yield MemBwPoint(nbytes=3.0 * numel * 4, time_s=t, bw_bytes_per_s=3.0 * numel * 4 / t)
