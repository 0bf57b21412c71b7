"""Memory per GPU: model states by ZeRO stage, activations per block, in-flight micro-batches.

- Model states (Rajbhandari et al. 2020, "ZeRO", sec. 3.1): mixed-precision Adam keeps 16-bit weights
  (2 B/param) and gradients (2 B, or the gradient dtype), and fp32 master weights + momentum +
  variance (12 B). ZeRO-1 shards the optimizer states, ZeRO-2 also the gradients, ZeRO-3 also the
  weights, over the data-parallel group (dp*cp ranks hold replicas in Megatron).
- Activations of one block (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
  Transformer Models", sec. 4 and Table 2): s*b*h*(34 + 5*a*s/h) bytes without parallelism;
  s*b*h*(10 + 24/t + 5*a*s/(h*t)) with tensor parallelism t; s*b*h/t*(34 + 5*a*s/h) with sequence
  parallelism; selective recomputation drops the 5*a*s^2*b attention term; full recomputation keeps
  only the block input, 2*s*b*h. The terms are written per tensor so GQA (narrower K/V), gated MLPs
  (three f-wide tensors), FlashAttention (no s^2 tensors, an fp32 log-sum-exp instead) and
  cross-attention follow; with 16-bit activations and a GPT block they reduce to Table 2 exactly.
- In-flight micro-batches per pipeline rank r of p (Narayanan et al. 2021; Korthikanti 2022 sec. 4.2.3):
  GPipe holds all m; 1F1B min(p-r, m); ZB-H1 (Qi et al. 2023) min(p, m) on every rank (rank r
  delays its weight-gradient passes by r micro-batches, which keeps their inputs); interleaved 1F1B
  min((v-1)*p + 2*(p-r-1) + 1, m*v) model chunks (Megatron-LM's warm-up count + 1).
All functions are numpy-broadcastable in their numeric arguments."""

from __future__ import annotations

from typing import Any

from .params import ModelShape

__all__ = [
    "DTYPE_BYTES", "SCHEDULE_CODES", "weight_bytes_per_param", "optimizer_bytes_per_param",
    "model_state_bytes", "layer_activation_bytes", "inflight_chunks", "logits_bytes",
]

Num = Any
DTYPE_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 2}
"""Bytes per stored weight/activation element; fp8 training keeps 16-bit weights and activations."""
SCHEDULE_CODES = {"gpipe": 0, "1f1b": 1, "interleaved-1f1b": 2, "zero-bubble": 3}
MASK_BYTES = 1  # dropout masks are stored as bytes (Korthikanti 2022, sec. 4.1)


def weight_bytes_per_param(dtype: str) -> int:
    """Bytes of the working copy of a weight in `dtype` (16-bit for bf16/fp16/fp8 training)."""
    return DTYPE_BYTES[dtype]


def optimizer_bytes_per_param(dtype: str, optimizer: str) -> int:
    """Optimizer-state bytes per parameter: Adam keeps momentum + variance in fp32 (8 B), SGD a
    momentum (4 B); mixed precision adds the fp32 master weights (4 B) (Rajbhandari 2020, sec. 3.1)."""
    states = 8 if optimizer in ("adam", "adamw") else 4
    return states + (4 if DTYPE_BYTES[dtype] < 4 else 0)


def model_state_bytes(params: Num, *, zero_stage: Num, shards: Num, weight_bytes: int, grad_bytes: int,
                      optimizer_bytes: int) -> tuple[Num, Num, Num]:
    """(weights, gradients, optimizer states) bytes on one GPU holding `params` parameters, with
    ZeRO stage `zero_stage` sharding over `shards` data-parallel ranks."""
    w = params * weight_bytes / (1 + (zero_stage >= 3) * (shards - 1))
    g = params * grad_bytes / (1 + (zero_stage >= 2) * (shards - 1))
    o = params * optimizer_bytes / (1 + (zero_stage >= 1) * (shards - 1))
    return w, g, o


def layer_activation_bytes(shape: ModelShape, b: Num, s: Num, *, tp: Num, sp: Num, recompute_code: Num,
                           flash: bool, act_bytes: int = 2, cross: bool = False) -> Num:
    """Activation bytes one block stores for one micro-batch of b sequences of s (local) tokens.

    Korthikanti 2022, Table 2, term by term (see module docstring). `sp` is 0/1, `recompute_code`
    0 none / 1 selective / 2 full."""
    e, h = act_bytes, shape.h
    sb = s * b
    seq_shard = 1 + sp * (tp - 1)                     # sequence parallel shards the replicated part
    attn_blocks = 2 if cross else 1
    # norm inputs (2), QKV input, MLP input: e*sbh each; two dropout masks (attention out, MLP out).
    replicated = ((4 * e + 2 * MASK_BYTES) * sb * h
                  + cross * ((2 * e + MASK_BYTES) * sb * h))       # cross: norm input + K/V input, mask
    # Q, K, V and the output-projection input per attention block; the MLP's f-wide tensors.
    sharded = attn_blocks * e * sb * (2 * shape.q_width + 2 * shape.kv_width) + (
        (3 if shape.gated else 2) * e * sb * shape.f)
    if flash:
        scores = attn_blocks * 4 * shape.a * sb          # fp32 log-sum-exp per row (Dao et al. 2022)
    else:
        scores = attn_blocks * (2 * e + MASK_BYTES) * shape.a * sb * s  # softmax, mask, dropout out
    keep_scores = recompute_code == 0
    no_rc = replicated / seq_shard + (sharded + keep_scores * scores) / tp
    full = e * sb * h / seq_shard
    return (recompute_code == 2) * full + (recompute_code != 2) * no_rc


def inflight_chunks(schedule_code: Num, rank: Num, pp: Num, m: Num, v: Num) -> Num:
    """Model-chunk activations rank `rank` holds at its peak (in units of one micro-batch through one
    chunk of layers): GPipe m; 1F1B min(p-r, m); zero-bubble (ZB-H1) min(p, m); interleaved
    min((v-1)p+2(p-r-1)+1, m*v)."""
    if not hasattr(schedule_code, "shape") and not hasattr(m, "shape") and not hasattr(v, "shape"):
        if schedule_code == 2:
            return min((v - 1) * pp + 2 * (pp - rank - 1) + 1, m * v)
        if schedule_code == 3:
            return min(pp, m)
        return m if schedule_code == 0 else min(pp - rank, m)
    one_f_one_b = _minimum(pp - rank, m)
    inter = _minimum((v - 1) * pp + 2 * (pp - rank - 1) + 1, m * v)
    return ((schedule_code == 0) * m + (schedule_code == 1) * one_f_one_b + (schedule_code == 3) * _minimum(pp, m)
            + (schedule_code == 2) * inter)


def logits_bytes(shape: ModelShape, b: Num, s: Num, *, tp: Num) -> Num:
    """fp32 logits of the last stage, vocabulary-parallel: 4*s*b*V/t (Korthikanti 2022, sec. 4.3)."""
    return 4 * s * b * shape.vocab / tp


def _minimum(a: Num, b: Num) -> Num:
    if hasattr(a, "shape") or hasattr(b, "shape"):
        import numpy as np

        return np.minimum(a, b)
    return min(a, b)
