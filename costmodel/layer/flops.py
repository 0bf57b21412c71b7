"""Floating-point operations of a Transformer step (forward, backward, recomputation).

Counting follows Narayanan et al. 2021 (SC21, "Efficient Large-Scale Language Model Training on GPU
Clusters Using Megatron-LM", sec. 5.1 and appendix): only matrix multiplications count, 2 FLOPs per
multiply-add; attention scores and their product with V are counted in full (no causal halving); the
backward pass costs twice the forward. A GPT block of width h on b sequences of length s needs
24*b*s*h^2 + 4*b*s^2*h forward FLOPs, the LM head 2*b*s*h*V, so with full recomputation one step is
eq. 3: F = 96*B*s*l*h^2 * (1 + s/(6h) + V/(16*l*h)). GQA shrinks the K/V projections, a gated MLP has
three matrices. An MoE layer's MLP counts its router (2*tokens*h*E), the k experts each token is routed
to and the shared experts (`moe_mlp_flops`; Megatron-Core's count, plus the router), whatever the load
balance; partly dense models count each block as the average of their dense and MoE layers. Element-wise work (norms, activations, softmax, loss) is not counted here; the time
model prices it as memory traffic. All functions are numpy-broadcastable."""

from __future__ import annotations

from typing import Any

from .params import ModelShape

__all__ = [
    "attention_proj_flops", "attention_core_flops", "mlp_flops", "moe_mlp_flops", "layer_fwd_flops", "lm_head_fwd_flops",
    "recompute_fwd_flops", "step_flops", "megatron_eq3_flops", "RECOMPUTE_CODES",
]

Num = Any  # int, float or numpy array
RECOMPUTE_CODES = {"none": 0, "selective": 1, "full": 2}


def attention_proj_flops(tokens: Num, h: int, q_width: int, kv_width: int) -> Num:
    """Q, K, V and output projections: 2*tokens*h*(q + 2kv) + 2*tokens*q*h."""
    return 2 * tokens * h * (2 * q_width + 2 * kv_width)


def attention_core_flops(b: Num, s_q: Num, s_kv: Num, q_width: int) -> Num:
    """Scores Q K^T and their product with V: 2 * 2*b*s_q*s_kv*(heads*head_dim)."""
    return 4 * b * s_q * s_kv * q_width


def mlp_flops(tokens: Num, h: int, f: int, *, gated: bool) -> Num:
    """Two (three when gated) GEMMs of h x f: 2*tokens*h*f each."""
    return (6 if gated else 4) * tokens * h * f


def moe_mlp_flops(tokens: Num, shape: ModelShape) -> Num:
    """An MoE layer's MLP: router 2*tokens*h*E + top-k routed expert MLPs + the shared experts' MLP."""
    moe = shape.moe
    return (2 * tokens * shape.h * moe.experts + moe.topk * mlp_flops(tokens, shape.h, moe.f_e, gated=shape.gated)
            + mlp_flops(tokens, shape.h, moe.shared * moe.f_e, gated=shape.gated))


def layer_fwd_flops(shape: ModelShape, b: Num, s: Num, *, cross: bool = False) -> Num:
    """Forward FLOPs of one block on b sequences of s tokens (cross-attention attends to s tokens)."""
    tokens = b * s
    attn = attention_proj_flops(tokens, shape.h, shape.q_width, shape.kv_width) + attention_core_flops(
        b, s, s, shape.q_width)
    mlp = mlp_flops(tokens, shape.h, shape.f, gated=shape.gated)
    if shape.moe is not None:   # the average block: the MoE layers' share replaces its MLP
        mlp = mlp + shape.moe.share(shape, cross=cross) * (moe_mlp_flops(tokens, shape) - mlp)
    out = attn + mlp
    return out + attn if cross else out


def lm_head_fwd_flops(shape: ModelShape, b: Num, s: Num) -> Num:
    """Output projection to the vocabulary: 2*b*s*h*V."""
    return 2 * b * s * shape.h * shape.vocab


def recompute_fwd_flops(shape: ModelShape, b: Num, s: Num, recompute_code: Num, *, cross: bool = False) -> Num:
    """Forward FLOPs re-run in backward: full = the whole block; selective = the attention core
    (Korthikanti et al. 2022, sec. 4); none = 0. `recompute_code` is 0/1/2 (see RECOMPUTE_CODES)."""
    core = attention_core_flops(b, s, s, shape.q_width) * (2 if cross else 1)
    full = layer_fwd_flops(shape, b, s, cross=cross)
    return (recompute_code == 2) * full + (recompute_code == 1) * core


def step_flops(shape: ModelShape, global_batch: Num, s: Num, recompute_code: Num) -> tuple[Num, Num]:
    """(model FLOPs, hardware FLOPs) of one optimizer step over `global_batch` sequences.

    Model FLOPs = 3 x forward (fwd + 2x bwd, no recomputation); hardware FLOPs add the recomputed
    forward work, so that with full recomputation a GPT's hardware FLOPs equal Megatron eq. 3."""
    fwd = shape.n_enc * layer_fwd_flops(shape, global_batch, s) + shape.n_dec * layer_fwd_flops(
        shape, global_batch, s, cross=True) + lm_head_fwd_flops(shape, global_batch, s)
    rec = shape.n_enc * recompute_fwd_flops(shape, global_batch, s, recompute_code) + shape.n_dec * (
        recompute_fwd_flops(shape, global_batch, s, recompute_code, cross=True))
    return 3 * fwd, 3 * fwd + rec


def megatron_eq3_flops(batch: Num, s: Num, layers: Num, h: Num, vocab: Num) -> Num:
    """Narayanan et al. 2021, eq. 3: 96*B*s*l*h^2 * (1 + s/(6h) + V/(16*l*h)) (full recomputation)."""
    return 96 * batch * s * layers * h * h * (1 + s / (6 * h) + vocab / (16 * layers * h))
