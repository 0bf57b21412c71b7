"""Reference Transformers in plain torch (no distributed code), built from a costmodel `ModelSpec`.

Three styles share one module tree, so one parallelization plan fits all of them (encoder-decoder T5
models live in `executor/t5.py`, with the same attribute names; `executor.families.build_model` builds
either):
- GPT-2/3 (Radford et al. 2019; Brown et al. 2020): pre-LayerNorm, GELU MLP, learned positions, biases.
- Llama (Touvron et al. 2023): pre-RMSNorm, rotary positions (Su et al. 2021), SwiGLU MLP
  (Shazeer 2020), grouped-query attention (Ainslie et al. 2023).
- BERT (Devlin et al. 2019): bidirectional encoder, post-LayerNorm blocks, LayerNorm after embeddings,
  trained with a masked-LM loss (targets are -100 where no prediction is asked).
- Mixtures of experts (Mixtral, DeepSeekMoE, Qwen-MoE): the MLP of the spec's MoE layers is an
  `executor.moe.MoE` (router, top-k, experts, shared experts).

Layers sit in an `nn.ModuleDict` keyed "0".."L-1" so parameter names survive pipeline splits and
checkpoints. Build on the meta device (`build_model(spec, device="meta")`), then give real values with
`executor.init.init_weights` (deterministic per parameter name) - the same weights on every plan.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.specs import ModelSpec
from costmodel.step.runnable import model_problems

from .moe import MoE

__all__ = ["Transformer", "TransformerBlock", "Attention", "AttentionCore", "FeedForward", "Embeddings",
           "build_model", "repeat_kv", "is_post_norm", "is_causal", "param_init", "IGNORE_INDEX", "NORM_EPS",
           "ROPE_THETA"]

IGNORE_INDEX = -100
"""Target value of positions that carry no loss (BERT's unmasked tokens), as in `F.cross_entropy`."""
NORM_EPS = 1e-5
ROPE_THETA = 10000.0
"""RoPE base (Su et al. 2021, eq. 15; Llama 1/2)."""
INIT_STD = 0.02
"""Weight init std of GPT-2/BERT; output projections are scaled by 1/sqrt(2L) (Radford et al. 2019, sec 2.3)."""


def is_post_norm(spec: ModelSpec) -> bool:
    """BERT-style encoders normalize after the residual add (post-LN); decoders before (pre-LN)."""
    return spec.arch == "encoder"


def is_causal(spec: ModelSpec) -> bool:
    return spec.arch == "decoder"


def _check_supported(spec: ModelSpec) -> None:
    """ValueError (field: fix) for a model family this module does not build: encoder-decoders are T5
    (executor.t5, through executor.families.build_model); the other rules live in costmodel.step.runnable,
    which the planner applies too."""
    if spec.arch == "encoder-decoder":
        raise ValueError(f"arch: {spec.name} is an encoder-decoder; build it with executor.families.build_model "
                         "(executor.t5.T5)")
    problems = model_problems(spec)
    if problems:
        raise problems[0]


def _norm(spec: ModelSpec) -> nn.Module:
    if spec.norm == "rmsnorm":
        return nn.RMSNorm(spec.hidden_size, eps=NORM_EPS)
    return nn.LayerNorm(spec.hidden_size, eps=NORM_EPS, bias=spec.bias)


def rope_cache(spec: ModelSpec, *, device: torch.device | str | None = None) -> torch.Tensor:
    """[max_seq_len, head_dim] = cat(cos, sin) of the rotary angles pos * theta^(-2i/d) (Su et al., eq. 34)."""
    dim = spec.kv_channels
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim))
    pos = torch.arange(spec.max_seq_len, dtype=torch.float64, device=device)
    angles = torch.outer(pos, inv_freq)
    return torch.cat([angles.cos(), angles.sin()], dim=-1).float()


def _apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate halves (GPT-NeoX/HF-Llama layout); x: [b, s, heads, d], rope: [>=s, d]."""
    cos, sin = rope[: x.shape[1]].chunk(2, dim=-1)
    cos = torch.cat([cos, cos], dim=-1)[None, :, None, :].to(x.dtype)
    sin = torch.cat([sin, sin], dim=-1)[None, :, None, :].to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def repeat_kv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grouped-query attention: query head i reads key/value head i // (heads / kv_heads)."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    return k, v


class AttentionCore(nn.Module):
    """softmax(q k^T / sqrt(d)) v over [b, heads, s, d] (causal for decoders). Context parallelism
    swaps this parameter-free module for its own (executor.context_parallel)."""

    def __init__(self, causal: bool) -> None:
        super().__init__()
        self.causal = causal

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        k, v = repeat_kv(q, k, v)
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)


class Attention(nn.Module):
    """Multi-head / grouped-query self-attention. Head counts are read from the (possibly TP-sharded)
    projections' outputs, so the same code runs on a tensor-parallel shard."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        h, d = spec.hidden_size, spec.kv_channels
        self.head_dim = d
        self.causal = is_causal(spec)
        self.wq = nn.Linear(h, spec.num_heads * d, bias=spec.bias)
        self.wk = nn.Linear(h, spec.kv_heads * d, bias=spec.bias)
        self.wv = nn.Linear(h, spec.kv_heads * d, bias=spec.bias)
        self.wo = nn.Linear(spec.num_heads * d, h, bias=spec.bias)
        self.core: nn.Module = AttentionCore(self.causal)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.wq(x).view(b, s, -1, self.head_dim)
        k = self.wk(x).view(b, s, -1, self.head_dim)
        v = self.wv(x).view(b, s, -1, self.head_dim)
        if rope is not None:
            q, k = _apply_rope(q, rope), _apply_rope(k, rope)
        out = self.core(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.wo(out.transpose(1, 2).reshape(b, s, -1))


class FeedForward(nn.Module):
    """MLP: w2(act(w1 x)), or gated w2(act(w1 x) * w3 x) for SwiGLU/GeGLU (Shazeer 2020, eq. 5-6)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        h, f = spec.hidden_size, spec.ffn_size
        self.act = {"gelu": F.gelu, "geglu": F.gelu, "swiglu": F.silu, "relu": F.relu}[spec.activation]
        self.w1 = nn.Linear(h, f, bias=spec.bias)
        self.w3 = nn.Linear(h, f, bias=spec.bias) if spec.gated_mlp else None
        self.w2 = nn.Linear(f, h, bias=spec.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.w1(x))
        if self.w3 is not None:
            h = h * self.w3(x)
        return self.w2(h)


def _moe(spec: ModelSpec) -> MoE:
    """An MoE layer whose shared experts (if any) are one FeedForward of their summed width."""
    width = spec.num_shared_experts * spec.expert_ffn_size
    shared = FeedForward(spec.model_copy(update={"ffn_hidden_size": width})) if width else None
    return MoE(spec, shared=shared)


class TransformerBlock(nn.Module):
    """One layer: attention and MLP with residuals; pre-norm (GPT/Llama) or post-norm (BERT)."""

    def __init__(self, spec: ModelSpec, *, moe: bool = False) -> None:
        super().__init__()
        self.post_norm = is_post_norm(spec)
        self.attention_norm = _norm(spec)
        self.attention = Attention(spec)
        self.ffn_norm = _norm(spec)
        self.feed_forward = _moe(spec) if moe else FeedForward(spec)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None) -> torch.Tensor:
        if self.post_norm:
            h = self.attention_norm(x + self.attention(x, rope))
            return self.ffn_norm(h + self.feed_forward(h))
        h = x + self.attention(self.attention_norm(x), rope)
        return h + self.feed_forward(self.ffn_norm(h))


class Embeddings(nn.Module):
    """Token embedding (+ learned positions) (+ LayerNorm for BERT)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.tok = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.pos = nn.Embedding(spec.max_seq_len, spec.hidden_size) if spec.position == "learned" else None
        self.norm = _norm(spec) if is_post_norm(spec) else None

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        h = self.tok(tokens)
        if self.pos is not None:
            if positions is None:
                positions = torch.arange(tokens.shape[1], device=tokens.device)
            h = h + self.pos(positions)
        if self.norm is not None:
            h = self.norm(h)
        return h


class Transformer(nn.Module):
    """tokens [b, s] (int64) -> logits [b, s, vocab]. A pipeline stage keeps a subset of `layers` and
    sets `embed` (all but the first stage) or `norm`/`output` (all but the last) to None; its forward
    then takes/returns hidden states [b, s, hidden]. `positions` are the global positions of the
    tokens a forward sees (None: 0..s-1); context parallelism sets them to this rank's share."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        _check_supported(spec)
        self.spec = spec
        self.embed: Embeddings | None = Embeddings(spec)
        self.layers = nn.ModuleDict({str(i): TransformerBlock(spec, moe=moe)
                                     for i, moe in enumerate(spec.moe_layers[:spec.num_layers])})
        self.norm: nn.Module | None = None if is_post_norm(spec) else _norm(spec)
        self.output: nn.Linear | None = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        if spec.tie_embeddings:
            self.output.weight = self.embed.tok.weight
        self.register_buffer("rope", rope_cache(spec) if spec.position == "rope" else None, persistent=False)
        self.positions: torch.Tensor | None = None

    def reset_buffers(self) -> None:
        """After `to_empty` from the meta device: re-tie the output to the token embedding (`to_empty`
        and `parallelize_module` replace parameters one by one) and recompute non-persistent buffers."""
        if self.spec.tie_embeddings and self.embed is not None and self.output is not None:
            self.output.weight = self.embed.tok.weight
        if self.rope is not None:
            self.rope = rope_cache(self.spec, device=self.rope.device)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pos = self.positions
        if pos is not None and pos.numel() != tokens.shape[1]:
            raise ValueError(f"positions: the model holds {pos.numel()} positions (context parallelism) but got "
                             f"{tokens.shape[1]} tokens per sequence; feed the sequence length it was built for")
        h = self.embed(tokens, pos) if self.embed is not None else tokens
        rope = self.rope if self.rope is None or pos is None else self.rope[pos]
        for layer in self.layers.values():
            h = layer(h, rope)
        if self.norm is not None:
            h = self.norm(h)
        return self.output(h) if self.output is not None else h


def build_model(spec: ModelSpec, *, device: torch.device | str = "meta") -> Transformer:
    """The reference model of `spec` on `device` (meta: no memory; initialize with `init_weights`)."""
    with torch.device(device):
        return Transformer(spec)


def param_init(name: str, shape: torch.Size | tuple[int, ...], spec: ModelSpec, *,
               generator: torch.Generator) -> torch.Tensor:
    """Full fp32 value of parameter `name` (canonical, wrapper prefixes removed): norms 1, biases 0,
    weights N(0, 0.02), residual output projections (wo, w2) N(0, 0.02/sqrt(2L)) (GPT-2, sec 2.3)."""
    leaf = name.rsplit(".", 2)
    module, kind = (leaf[-2], leaf[-1]) if len(leaf) >= 2 else ("", leaf[-1])
    if "norm" in module:
        return torch.ones(shape) if kind == "weight" else torch.zeros(shape)
    if kind == "bias":
        return torch.zeros(shape)
    std = INIT_STD / math.sqrt(2 * spec.num_layers) if module in ("wo", "w2") else INIT_STD
    return torch.empty(shape).normal_(0.0, std, generator=generator)
