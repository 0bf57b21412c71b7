"""Parameter counts of a Transformer from its `ModelSpec`: per block, embeddings, LM head, stages.

Weights follow the architectures as published: attention has Q/K/V/output projections (GQA shrinks
K and V to `num_kv_heads * head_dim` columns, Ainslie et al. 2023); the MLP has two matrices, three
when gated (SwiGLU/GeGLU, Shazeer 2020); layer/RMS norms have 2h / h weights. GPT-3 175B counts
174.6e9 (Brown et al. 2020, Table 2.1 says 175.0e9) and Llama-2 70B 68.98e9 (Touvron et al. 2023).
All functions are numpy-broadcastable in their numeric arguments."""

from __future__ import annotations

from dataclasses import dataclass

from ..specs import ModelSpec

__all__ = [
    "ModelShape", "MoEShape", "model_shape", "attention_params", "mlp_params", "norm_params", "layer_params",
    "embedding_params", "lm_head_params", "total_params", "layer_tensors", "end_tensors", "moe_layer_params",
]

T5_RELATIVE_BUCKETS = 32
"""Relative-position buckets of T5's attention bias (Raffel et al. 2020, sec. 2.1)."""


@dataclass(frozen=True)
class MoEShape:
    """The mixture-of-experts numbers of a ModelSpec (`costmodel.layer.moe` prices them)."""

    experts: int      # routed experts per MoE layer
    topk: int         # experts per token
    shared: int       # shared experts (every token)
    f_e: int          # one expert's MLP width
    capacity: float   # capacity factor; 0 = dropless
    layers_enc: int   # MoE layers among the blocks without cross-attention
    layers_dec: int   # ... and among those with it

    def share(self, shape: ModelShape, *, cross: bool) -> float:
        """Share of the (cross-attention or other) blocks that are MoE layers: the cost model prices an
        average block of each kind (`costmodel.layer.moe`)."""
        n = shape.n_dec if cross else shape.n_enc
        return (self.layers_dec if cross else self.layers_enc) / n if n else 0.0


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a ModelSpec that the formulas need (plain ints, fast to read)."""

    h: int            # hidden size
    a: int            # attention heads
    kv: int           # key/value heads
    d: int            # per-head dim
    f: int            # FFN hidden size
    gated: bool       # SwiGLU / GeGLU
    vocab: int
    n_enc: int        # blocks without cross-attention (decoder-only: all of them)
    n_dec: int        # blocks with cross-attention (encoder-decoder decoders only)
    bias: bool
    norm_weights: int  # 2 for layernorm (weight + bias), 1 for rmsnorm
    tie: bool
    learned_pos: bool
    relative_pos: bool
    max_seq: int
    encoder_decoder: bool
    rope: bool = False  # rotary positions (element-wise rotations of Q and K in eager stacks)
    causal: bool = False  # decoder-only: causal self-attention (a flash kernel skips the masked half)
    moe: MoEShape | None = None

    @property
    def q_width(self) -> int:
        return self.a * self.d

    @property
    def kv_width(self) -> int:
        return self.kv * self.d

    @property
    def num_layers(self) -> int:
        return self.n_enc + self.n_dec


_SHAPES: dict[int, tuple[ModelSpec, ModelShape]] = {}


def model_shape(model: ModelSpec) -> ModelShape:
    """The ModelShape of `model` (memoized per spec object)."""
    hit = _SHAPES.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    shape = ModelShape(
        h=model.hidden_size, a=model.num_heads, kv=model.kv_heads, d=model.kv_channels, f=model.ffn_size,
        gated=model.gated_mlp, vocab=model.vocab_size,
        n_enc=model.num_layers, n_dec=model.num_decoder_layers or 0, bias=model.bias,
        norm_weights=2 if model.norm == "layernorm" else 1, tie=model.tie_embeddings,
        learned_pos=model.position == "learned", relative_pos=model.position == "relative",
        max_seq=model.max_seq_len, encoder_decoder=model.arch == "encoder-decoder",
        rope=model.position == "rope", causal=model.arch == "decoder", moe=_moe_shape(model),
    )
    if len(_SHAPES) > 256:
        _SHAPES.clear()
    _SHAPES[id(model)] = (model, shape)
    return shape


def _moe_shape(model: ModelSpec) -> MoEShape | None:
    if not model.is_moe:
        return None
    flags = model.moe_layers
    return MoEShape(experts=model.num_experts, topk=model.experts_per_token, shared=model.num_shared_experts,
                    f_e=model.expert_ffn_size, capacity=model.capacity_factor or 0.0,
                    layers_enc=sum(flags[:model.num_layers]), layers_dec=sum(flags[model.num_layers:]))


def attention_params(h: int, q_width: int, kv_width: int, *, bias: bool) -> int:
    """Q, K, V and output projections: h*q + 2*h*kv + q*h weights (+ q + 2kv + h biases)."""
    return 2 * h * q_width + 2 * h * kv_width + bias * (q_width + 2 * kv_width + h)


def mlp_params(h: int, f: int, *, gated: bool, bias: bool) -> int:
    """Two (three when gated) h x f matrices (+ biases)."""
    return (3 if gated else 2) * h * f + bias * ((2 if gated else 1) * f + h)


def norm_params(h: int, norm_weights: int) -> int:
    """LayerNorm: weight and bias (2h); RMSNorm: weight (h)."""
    return norm_weights * h


def layer_params(shape: ModelShape, *, cross: bool = False) -> int:
    """One Transformer block: self-attention + MLP + two norms; `cross` adds cross-attention + norm."""
    attn = attention_params(shape.h, shape.q_width, shape.kv_width, bias=shape.bias)
    n = attn + mlp_params(shape.h, shape.f, gated=shape.gated, bias=shape.bias) + 2 * norm_params(
        shape.h, shape.norm_weights)
    if cross:
        n += attn + norm_params(shape.h, shape.norm_weights)
    return n


def layer_tensors(shape: ModelShape, *, cross: bool = False) -> int:
    """Parameter tensors of one block (what a per-tensor optimizer or wrapper cost counts): q, k, v, o
    and 2-3 MLP matrices (+ their biases) and the norms' weights (+ biases); `cross` adds q, k, v, o
    and a norm."""
    linears = 4 + (3 if shape.gated else 2) + (4 if cross else 0)
    norms = 2 + (1 if cross else 0)
    return linears * (2 if shape.bias else 1) + norms * shape.norm_weights


def end_tensors(shape: ModelShape) -> tuple[int, int]:
    """(embedding, head) parameter tensors: the token table (+ positions) and the final norm(s) (+ the
    output projection when not tied)."""
    stacks = 2 if shape.encoder_decoder else 1
    embed = 1 + (1 if shape.learned_pos or shape.relative_pos else 0)
    return embed, stacks * shape.norm_weights + (0 if shape.tie else 1)


def embedding_params(shape: ModelShape) -> int:
    """Token embedding (V x h) + learned positions (max_seq x h) or T5 relative-position biases."""
    n = shape.vocab * shape.h
    if shape.learned_pos:
        n += shape.max_seq * shape.h
    if shape.relative_pos:
        n += T5_RELATIVE_BUCKETS * shape.a * (2 if shape.encoder_decoder else 1)
    return n


def lm_head_params(shape: ModelShape) -> int:
    """Final norm(s) + the output projection when it is not tied to the embedding."""
    stacks = 2 if shape.encoder_decoder else 1
    return stacks * norm_params(shape.h, shape.norm_weights) + (0 if shape.tie else shape.vocab * shape.h)


def moe_layer_params(shape: ModelShape) -> tuple[int, int]:
    """(router + shared experts, routed experts) parameters of one MoE layer's MLP: an h x E router
    (no bias), n_shared expert MLPs as one MLP of their summed width, E expert MLPs."""
    moe = shape.moe
    router = shape.h * moe.experts
    shared = mlp_params(shape.h, moe.shared * moe.f_e, gated=shape.gated, bias=shape.bias) if moe.shared else 0
    return router + shared, moe.experts * mlp_params(shape.h, moe.f_e, gated=shape.gated, bias=shape.bias)


def total_params(model: ModelSpec) -> int:
    """All parameters of `model` (embeddings, blocks, head)."""
    s = model_shape(model)
    dense = (embedding_params(s) + s.n_enc * layer_params(s) + s.n_dec * layer_params(s, cross=True)
             + lm_head_params(s))
    if s.moe is None:
        return dense
    per_layer = moe_layer_params(s)   # MoE layers replace their MLP
    return dense + (s.moe.layers_enc + s.moe.layers_dec) * (per_layer[0] + per_layer[1] - mlp_params(
        s.h, s.f, gated=s.gated, bias=s.bias))
