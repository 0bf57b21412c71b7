"""T5 (Raffel et al. 2020) in plain torch: an encoder-decoder with relative position buckets, cross
attention and pre-RMSNorm blocks, built from a costmodel `ModelSpec` with arch 'encoder-decoder'.

Layout (the cost model's, `costmodel.step.costs._cross_layers_on_rank`): one stack of
`num_layers + num_decoder_layers` blocks in an `nn.ModuleDict` "0".."L-1"; blocks 0..num_layers-1 are
the encoder (bidirectional self-attention), the rest the decoder (causal self-attention, then cross
attention to the encoder output). A plan's layer split cuts this one stack, so a pipeline stage may
hold encoder blocks, decoder blocks or both. The encoder's final RMSNorm sits in its last block
(`final_norm`), so it travels with that block to its stage; the decoder's is `norm`, before `output`.

Relative positions (Raffel et al. 2020, sec. 2.1): each stack owns one table of 32 buckets x heads
(`embed.enc_rel`, `embed.dec_rel`, shared by every block of the stack); offsets up to 8 get their own
bucket, larger ones share logarithmically wider buckets up to 128; encoder buckets are bidirectional,
decoder buckets causal. Attention scores get the bias of their bucket.

Batches: `tokens` [b, 2s] packs the encoder input and the decoder input side by side (encoder |
decoder, s each; the cost model prices both stacks at seq_len s); logits are the decoder's [b, s, V].

Pipeline stages exchange a tuple (torch.distributed.pipelining sends several tensors per boundary):
`(enc, dec, enc_table, dec_table)` while encoder blocks remain downstream, `(enc, dec, dec_table)`
after: `enc` is the encoder hidden state (its output once the encoder is done, which every decoder
block attends to), `dec` the decoder hidden state (the embedded decoder input until the decoder
starts), the tables the stacks' relative-position tables [32, heads/tp]. The tables are parameters of
stage 0 sent as activations: every stage computes its biases from them, and their gradients flow back
through the pipeline's backward to stage 0 - no parameter is shared between stages, and a boundary
carries 2*b*s*h + 2*32*heads values.

Deviations from the paper, to share the executor's machinery: attention scores are scaled by
1/sqrt(head_dim) and weights start from `executor.init` (N(0, 0.02)) instead of Mesh TensorFlow's
unscaled attention with its own init; no dropout. A tied output is rescaled by hidden^-0.5 (T5 v1.0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    PrepareModuleOutput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from costmodel.layer.params import T5_RELATIVE_BUCKETS
from costmodel.specs import ModelSpec

from .model import FeedForward, _norm
from .parallelize import apply_tp_head, mlp_tp_plan

__all__ = ["T5", "T5Block", "T5Attention", "T5Embeddings", "relative_position_bucket", "position_bias",
           "apply_t5_tp", "RELATIVE_MAX_DISTANCE"]

RELATIVE_MAX_DISTANCE = 128
"""Offsets beyond this share the last bucket (Raffel et al. 2020, sec. 2.1)."""


def relative_position_bucket(offset: torch.Tensor, *, bidirectional: bool,
                             num_buckets: int = T5_RELATIVE_BUCKETS,
                             max_distance: int = RELATIVE_MAX_DISTANCE) -> torch.Tensor:
    """Bucket of each key-minus-query offset (Mesh TensorFlow's `_relative_position_bucket`, used by
    Raffel et al. 2020): bidirectional stacks split the buckets between keys before and after the
    query; causal stacks bucket only past keys. Half of the buckets are exact offsets, the other half
    logarithmic up to `max_distance`."""
    n = -offset
    bucket = torch.zeros_like(offset)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (n < 0).long() * num_buckets
        n = n.abs()
    else:
        n = n.clamp(min=0)
    exact = num_buckets // 2
    large = exact + (torch.log(n.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                     * (num_buckets - exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return bucket + torch.where(n < exact, n, large)


def position_bias(table: torch.Tensor, seq_len: int, *, bidirectional: bool) -> torch.Tensor:
    """Attention bias [1, heads, s, s] from a relative-position table [buckets, heads]; causal stacks
    get -inf above the diagonal."""
    pos = torch.arange(seq_len, device=table.device)
    offset = pos[None, :] - pos[:, None]  # key - query
    bias = table[relative_position_bucket(offset, bidirectional=bidirectional, num_buckets=table.shape[0])]
    bias = bias.permute(2, 0, 1).unsqueeze(0)
    if not bidirectional:
        bias = bias.masked_fill(offset > 0, float("-inf"))
    return bias


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


class T5Attention(nn.Module):
    """Self-attention (`memory` None) or cross attention to `memory`, with an additive bias. Head
    counts come from the (possibly TP-sharded) projections, as in `executor.model.Attention`."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        h, d = spec.hidden_size, spec.kv_channels
        self.head_dim = d
        self.wq = nn.Linear(h, spec.num_heads * d, bias=spec.bias)
        self.wk = nn.Linear(h, spec.kv_heads * d, bias=spec.bias)
        self.wv = nn.Linear(h, spec.kv_heads * d, bias=spec.bias)
        self.wo = nn.Linear(spec.num_heads * d, h, bias=spec.bias)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None,
                memory: torch.Tensor | None = None) -> torch.Tensor:
        kv = x if memory is None else memory
        b, s, _ = x.shape
        q = self.wq(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        k = self.wk(kv).view(b, kv.shape[1], -1, self.head_dim).transpose(1, 2)
        v = self.wv(kv).view(b, kv.shape[1], -1, self.head_dim).transpose(1, 2)
        rep = q.shape[1] // k.shape[1]
        if rep > 1:  # GQA
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        mask = None if bias is None else bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.wo(out.transpose(1, 2).reshape(b, s, -1))


class T5Block(nn.Module):
    """Pre-norm block: self-attention, cross attention (decoder), MLP, each with a residual; the
    encoder's last block also applies the encoder's final norm."""

    def __init__(self, spec: ModelSpec, *, cross: bool, final_norm: bool) -> None:
        super().__init__()
        self.attention_norm = _norm(spec)
        self.attention = T5Attention(spec)
        self.cross_norm = _norm(spec) if cross else None
        self.cross_attention = T5Attention(spec) if cross else None
        self.ffn_norm = _norm(spec)
        self.feed_forward = FeedForward(spec)
        self.final_norm = _norm(spec) if final_norm else None

    def forward(self, x: torch.Tensor, bias: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), bias)
        if self.cross_attention is not None:
            h = h + self.cross_attention(self.cross_norm(h), None, memory)
        h = h + self.feed_forward(self.ffn_norm(h))
        return self.final_norm(h) if self.final_norm is not None else h


class T5Embeddings(nn.Module):
    """The token table shared by both stacks and the two relative-position tables (stage 0):
    tokens [b, 2s] -> (enc [b, s, h], dec [b, s, h], enc_table, dec_table)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.tok = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.enc_rel = nn.Embedding(T5_RELATIVE_BUCKETS, spec.num_heads)
        self.dec_rel = nn.Embedding(T5_RELATIVE_BUCKETS, spec.num_heads)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if tokens.shape[1] % 2:
            raise ValueError(f"tokens: an encoder-decoder batch packs encoder and decoder inputs of equal "
                             f"length side by side; got an odd width {tokens.shape[1]}")
        enc, dec = self.tok(tokens).chunk(2, dim=1)
        # the local head shard of each table (TP shards heads), copied: FSDP may free the gathered
        # parameter when this module's forward ends, before the stage (or the next one) reads it
        enc_table, dec_table = (_local(t.weight).clone() for t in (self.enc_rel, self.dec_rel))
        return enc, dec, enc_table, dec_table


class T5(nn.Module):
    """tokens [b, 2s] (encoder | decoder input, int64) -> logits [b, s, vocab]. A pipeline stage keeps a
    subset of `layers`, `embed` on the first stage only, `norm`/`output` on the last only; in between
    it takes and returns the tuple the module docstring describes."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        if spec.arch != "encoder-decoder" or not spec.num_decoder_layers:
            raise ValueError(f"arch: T5 needs an encoder-decoder spec, got {spec.arch!r}")
        if spec.position != "relative":
            raise ValueError(f"position: the executor's encoder-decoder uses T5's relative position buckets; "
                             f"set position: relative for {spec.name}, not {spec.position!r}")
        self.spec = spec
        n_enc, total = spec.num_layers, spec.total_layers
        self.embed: T5Embeddings | None = T5Embeddings(spec)
        self.layers = nn.ModuleDict({str(i): T5Block(spec, cross=i >= n_enc, final_norm=i == n_enc - 1)
                                     for i in range(total)})
        self.norm: nn.Module | None = _norm(spec)
        self.output: nn.Linear | None = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        self.seq_shards = 1
        """Shards of the sequence between blocks: tp under sequence parallelism (`apply_t5_tp`), else 1."""
        self.reset_buffers()

    def reset_buffers(self) -> None:
        """Re-tie a tied output to the token table (after `to_empty` or `parallelize_module`)."""
        if self.spec.tie_embeddings and self.embed is not None and self.output is not None:
            self.output.weight = self.embed.tok.weight

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        n_enc = self.spec.num_layers
        if self.embed is not None:
            enc, dec, enc_table, dec_table = self.embed(inputs[0])
        elif len(inputs) == 4:
            enc, dec, enc_table, dec_table = inputs
        else:
            (enc, dec, dec_table), enc_table = inputs, None
        ids = [int(k) for k in self.layers]
        enc_bias = dec_bias = None
        for i, block in zip(ids, self.layers.values(), strict=True):
            if i < n_enc:
                if enc_bias is None:  # once per stage: shared by the stack's blocks
                    enc_bias = position_bias(enc_table, enc.shape[1] * self.seq_shards, bidirectional=True)
                enc = block(enc, enc_bias)
            else:
                if dec_bias is None:
                    dec_bias = position_bias(dec_table, dec.shape[1] * self.seq_shards, bidirectional=False)
                dec = block(dec, dec_bias, enc)
        if self.output is not None:
            h = self.norm(dec)
            if self.spec.tie_embeddings:
                h = h * self.spec.hidden_size ** -0.5
            return self.output(h)
        more_encoder = enc_table is not None and (not ids or ids[-1] + 1 < n_enc)
        carry = (enc, dec, *((enc_table,) if more_encoder else ()), dec_table)
        # sent whole (contiguous); a tensor passed through unchanged leaves as a view, so every output
        # is a new autograd node
        carry = tuple(t.contiguous() for t in carry)
        return tuple(t if t.grad_fn is not None else t.view_as(t) for t in carry)


def apply_t5_tp(part: T5, tp_mesh: DeviceMesh, *, sequence_parallel: bool, loss_parallel: bool = False) -> None:
    """Megatron-style tensor parallelism (Shoeybi et al. 2019, sec 3) for a T5 part, in place:
    column-parallel q/k/v and w1/w3, row-parallel wo/w2 in self-attention, cross attention and the
    MLP; vocab-parallel token table; the relative-position tables split by heads (each rank biases its
    own heads). With `sequence_parallel` the norms and the residual stream between TP regions hold
    sequence shards (Korthikanti et al. 2022), the encoder output included; attention and cross
    attention gather them. `loss_parallel` keeps the logits vocab-sharded for torch's `loss_parallel`."""
    act = Shard(1) if sequence_parallel else Replicate()
    if part.embed is not None:
        parallelize_module(part.embed, tp_mesh, {
            "tok": RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()),
            "enc_rel": ColwiseParallel(), "dec_rel": ColwiseParallel()})
        if sequence_parallel:
            parallelize_module(part.embed, tp_mesh, PrepareModuleOutput(
                output_layouts=(Replicate(), Replicate(), None, None),
                desired_output_layouts=(Shard(1), Shard(1), None, None), use_local_output=True))
    for block in part.layers.values():
        plan: dict[str, object] = {
            "attention": PrepareModuleInput(input_layouts=(act, None), desired_input_layouts=(Replicate(), None),
                                            use_local_output=True),
            **mlp_tp_plan(block.feed_forward, act),
        }
        attentions = ["attention"]
        if block.cross_attention is not None:
            attentions.append("cross_attention")
            plan["cross_attention"] = PrepareModuleInput(
                input_layouts=(act, None, act), desired_input_layouts=(Replicate(), None, Replicate()),
                use_local_output=True)
        for name in attentions:
            plan.update({f"{name}.wq": ColwiseParallel(), f"{name}.wk": ColwiseParallel(),
                         f"{name}.wv": ColwiseParallel(), f"{name}.wo": RowwiseParallel(output_layouts=act)})
        if sequence_parallel:
            for norm in ("attention_norm", "cross_norm", "ffn_norm", "final_norm"):
                if getattr(block, norm) is not None:
                    plan[norm] = SequenceParallel(use_local_output=True)
        parallelize_module(block, tp_mesh, plan)
    apply_tp_head(part, tp_mesh, sequence_parallel=sequence_parallel, loss_parallel=loss_parallel)
    part.seq_shards = tp_mesh.size() if sequence_parallel else 1
    part.reset_buffers()
