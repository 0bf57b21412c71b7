"""Operator benchmarks of `paraplan profile` beyond plain GEMMs: scaled-dot-product attention forward and
backward, the memory-bound operators of a Transformer block, one AdamW step (fused and foreach), and fp8
GEMMs where the GPU has them. The same code runs on CPU tensors (tiny shapes in the tests) and on CUDA.

Bytes of each memory-bound operator are counted as the cost model counts them (reads + writes of its
forward kernel(s); `costmodel.layer.elementwise`, `costmodel.layer.blocks.cross_entropy_bytes`), so a
measured bandwidth prices the same bytes it was measured on. Timings are `timing.time_fn`'s best sample."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from ...layer.blocks import cross_entropy_bytes
from ...specs import ModelSpec
from ..profile_points import AttentionPoint, GemmPoint, MemOpPoint, OptimizerPoint
from .timing import time_fn

__all__ = ["measure_attention", "measure_mem_ops", "measure_optimizer_steps", "measure_fp8_gemms", "fp8_supported"]


def _time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    return time_fn(fn, device=device, repeats=repeats, max_s=2.0)[0]


def measure_attention(model: ModelSpec, *, seqs: list[int], batch: int, dtype: torch.dtype, dtype_name: str,
                      device: torch.device, repeats: int, gen: torch.Generator, causal: bool = True
                      ) -> Iterator[AttentionPoint]:
    """Causal SDPA with the model's heads and head_dim: the forward alone, then forward + backward (the
    backward's time is the difference), per sequence length."""
    heads, d = model.num_heads, model.kv_channels
    for s in seqs:
        q, k, v = (torch.randn(batch, heads, s, d, generator=gen).to(device=device, dtype=dtype).requires_grad_()
                   for _ in range(3))
        grad = torch.randn(batch, heads, s, d, generator=gen).to(device=device, dtype=dtype)

        def fwd(q=q, k=k, v=v) -> torch.Tensor:
            with torch.no_grad():
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        def fwd_bwd(q=q, k=k, v=v, grad=grad) -> None:
            q.grad = k.grad = v.grad = None
            F.scaled_dot_product_attention(q, k, v, is_causal=causal).backward(grad)

        t_f = _time(fwd, device, repeats)
        t_fb = _time(fwd_bwd, device, repeats)
        flops = 4.0 * batch * heads * s * s * d / (2 if causal else 1)
        yield AttentionPoint(batch=batch, heads=heads, seq=s, head_dim=d, dtype=dtype_name, time_s=t_f,
                             flops_per_s=flops / t_f, causal=causal, bwd_time_s=max(t_fb - t_f, 1e-9))


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half rotary embedding as eager PyTorch runs it (executor.model._apply_rope)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def _mem_cases(model: ModelSpec, tokens: int, dtype: torch.dtype, device: torch.device, gen: torch.Generator
               ) -> list[tuple[str, float, Callable[[], object], Callable[[], object] | None]]:
    """(op, forward bytes, forward fn, forward+backward fn or None) for the block's memory-bound ops."""
    h, f, vocab = model.hidden_size, model.ffn_size, model.vocab_size
    e = torch.finfo(dtype).bits // 8
    q_width = model.num_heads * model.kv_channels

    def rnd(*shape: int, dt: torch.dtype = dtype, grad: bool = False) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dt).requires_grad_(grad)

    x, y = rnd(tokens, h, grad=True), rnd(tokens, h)
    w = torch.ones(h, device=device, dtype=dtype, requires_grad=True)
    norm = ((lambda t: F.rms_norm(t, (h,), w)) if model.norm == "rmsnorm" and hasattr(F, "rms_norm")
            else (lambda t: F.layer_norm(t, (h,), w)))
    a = rnd(tokens, f, grad=True)
    b = rnd(tokens, f)
    act = (lambda: F.silu(a) * b) if model.gated_mlp else (lambda: F.gelu(a))
    act_bytes = (5 if model.gated_mlp else 2) * e * tokens * f
    heads, d = model.num_heads, model.kv_channels
    r = rnd(1, tokens, heads, d)
    cos, sin = rnd(1, tokens, 1, d), rnd(1, tokens, 1, d)
    x32 = rnd(tokens, h, dt=torch.float32)
    t4 = rnd(1, heads, tokens, d)
    v_tokens = max(1, min(tokens, (64 << 20) // max(vocab * 4, 1)))   # logits of at most 64 MiB in fp32
    logits = rnd(v_tokens, vocab, grad=True)
    target = torch.randint(0, vocab, (v_tokens,), generator=gen).to(device)
    table = rnd(vocab, h)
    ids = torch.randint(0, vocab, (tokens,), generator=gen).to(device)
    gy = rnd(tokens, h)
    return [
        ("norm", 2 * e * tokens * h, lambda: norm(x), lambda: norm(x).backward(gy)),
        ("add", 3 * e * tokens * h, lambda: x + y, None),
        ("activation", act_bytes, act, lambda: act().sum().backward()),
        ("rope", 8 * e * tokens * q_width, lambda: _rope(r, cos, sin), None),
        ("cast", (4 + e) * tokens * h, lambda: x32.to(dtype), None),
        ("copy", 2 * e * tokens * q_width, lambda: t4.transpose(1, 2).contiguous(), None),
        ("cross_entropy", cross_entropy_bytes(v_tokens, vocab), lambda: F.cross_entropy(logits.float(), target),
         lambda: F.cross_entropy(logits.float(), target).backward()),
        ("embedding", 2 * e * tokens * h, lambda: F.embedding(ids, table), None),
    ]


def measure_mem_ops(model: ModelSpec, *, tokens: list[int], dtype: torch.dtype, device: torch.device, repeats: int,
                    gen: torch.Generator) -> Iterator[MemOpPoint]:
    """Each memory-bound operator of `model`'s block at each token count: forward bandwidth on the bytes
    the cost model counts, and the backward's time where it has one."""
    for t in tokens:
        for op, nbytes, fwd, fwd_bwd in _mem_cases(model, t, dtype, device, gen):
            with torch.no_grad():
                t_f = _time(fwd, device, repeats)
            t_b = None
            if fwd_bwd is not None:
                t_b = max(_time(fwd_bwd, device, repeats) - t_f, 1e-9)
            yield MemOpPoint(op=op, nbytes=float(nbytes), time_s=t_f, bw_bytes_per_s=nbytes / t_f, bwd_time_s=t_b)


def measure_optimizer_steps(*, params: int, device: torch.device, repeats: int) -> Iterator[OptimizerPoint]:
    """One AdamW step over `params` fp32 parameters in 8 tensors (gradients set), fused and foreach; an
    implementation this torch build lacks on the device is skipped."""
    for impl in ("fused", "foreach"):
        tensors = [torch.zeros(max(1, params // 8), device=device, requires_grad=True) for _ in range(8)]
        for p in tensors:
            p.grad = torch.ones_like(p)
        try:
            opt = torch.optim.AdamW(tensors, lr=1e-4, **{impl: True})
            opt.step()
        except (RuntimeError, TypeError, ValueError):
            continue
        yield OptimizerPoint(impl=impl, params=sum(p.numel() for p in tensors), time_s=_time(opt.step, device, repeats))


def fp8_supported(device: torch.device) -> bool:
    """Whether `device` runs fp8 GEMMs through torch._scaled_mm (CUDA compute capability 8.9 or newer)."""
    return (device.type == "cuda" and hasattr(torch, "_scaled_mm") and hasattr(torch, "float8_e4m3fn")
            and torch.cuda.get_device_capability(device) >= (8, 9))


def measure_fp8_gemms(shapes: list[tuple[int, int, int]], *, device: torch.device, repeats: int,
                      gen: torch.Generator) -> Iterator[GemmPoint]:
    """e4m3 x e4m3 -> bf16 GEMMs with per-tensor scales (torch._scaled_mm, the second operand
    column-major), dimensions rounded up to multiples of 16 as the kernel requires."""
    one = torch.ones((), device=device, dtype=torch.float32)
    for m, n, k in shapes:
        m, n, k = (-(-x // 16) * 16 for x in (m, n, k))
        a = torch.randn(m, k, generator=gen).to(device).to(torch.float8_e4m3fn)
        b = torch.randn(n, k, generator=gen).to(device).to(torch.float8_e4m3fn).t()

        def run(a=a, b=b) -> object:
            return torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)

        t = _time(run, device, repeats)
        yield GemmPoint(m=m, n=n, k=k, dtype="fp8", time_s=t, flops_per_s=2.0 * m * n * k / t)
