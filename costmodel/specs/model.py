"""`ModelSpec`: the architecture of a Transformer, shared by the cost model and the executor."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ._base import Spec
from .limits import (
    MAX_EXPERTS,
    MAX_HEADS,
    MAX_LAYERS,
    MAX_SEQ_LEN,
    MAX_VOCAB,
    MAX_WIDTH,
    Flag,
    Number,
    number_in,
    whole_up_to,
)
from .moe import moe_layer_flags, moe_problems

Blocks = whole_up_to(MAX_LAYERS, "Transformer blocks")
Width = whole_up_to(MAX_WIDTH, "channels")
Experts = whole_up_to(MAX_EXPERTS, "experts")

__all__ = ["ModelSpec", "Arch", "Activation"]

Arch = Literal["decoder", "encoder", "encoder-decoder"]
Activation = Literal["gelu", "swiglu", "relu", "geglu"]


class ModelSpec(Spec):
    """A Transformer's shape. For encoder-decoder models `num_layers` counts the encoder layers and
    `num_decoder_layers` the decoder layers."""

    name: str = "custom"
    arch: Arch = "decoder"
    num_layers: Blocks = Field(gt=0)
    num_decoder_layers: Blocks | None = Field(default=None, ge=0)
    hidden_size: Width = Field(gt=0)
    num_heads: whole_up_to(MAX_HEADS, "attention heads") = Field(gt=0)
    num_kv_heads: whole_up_to(MAX_HEADS, "attention heads") | None = Field(default=None, gt=0, description="GQA/MQA key-value heads; None = num_heads")
    head_dim: Width | None = Field(default=None, gt=0, description="None = hidden_size // num_heads")
    ffn_hidden_size: Width | None = Field(default=None, gt=0, description="None = 4 * hidden_size")
    activation: Activation = "gelu"
    vocab_size: whole_up_to(MAX_VOCAB, "vocabulary entries") = Field(gt=0)
    max_seq_len: whole_up_to(MAX_SEQ_LEN, "tokens per sequence") = Field(gt=0)
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    position: Literal["learned", "rope", "relative"] = "learned"
    tie_embeddings: Flag = True
    bias: Flag = True
    published_params: Number | None = Field(default=None, gt=0, description="parameter count as published")
    # mixture of experts (costmodel.specs.moe): None / 0 = a dense model
    num_experts: Experts | None = Field(default=None, ge=0, description="routed experts per MoE layer")
    experts_per_token: Experts | None = Field(default=None, gt=0, description="top-k: experts each token goes to")
    num_shared_experts: Experts = Field(default=0, ge=0, description="experts every token passes (DeepSeekMoE)")
    expert_ffn_hidden_size: Width | None = Field(default=None, gt=0, description="one expert's MLP width; "
                                                 "None = ffn_hidden_size")
    capacity_factor: number_in("imbalance") | None = Field(default=None, gt=0, description="tokens an expert takes, x its "
                                           "fair share; None = dropless")
    moe_layer_freq: Blocks = Field(default=1, gt=0, description="every n-th layer is an MoE layer")
    first_dense_layers: Blocks = Field(default=0, ge=0, description="leading layers that stay dense (DeepSeek)")
    router_aux_loss_coef: Number = Field(default=0.0, ge=0, description="weight of the load-balancing loss")
    source: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                "set head_dim explicitly or change num_heads"
            )
        if self.num_heads % self.kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.kv_heads}"
            )
        if self.total_layers > MAX_LAYERS:
            raise ValueError(f"num_layers + num_decoder_layers = {self.total_layers:,} exceeds the {MAX_LAYERS:,} "
                             "Transformer blocks paraplan models (docs/LIMITS.md)")
        if self.arch == "encoder-decoder" and not self.num_decoder_layers:
            raise ValueError("num_decoder_layers must be set (> 0) for arch='encoder-decoder'")
        if self.arch != "encoder-decoder" and self.num_decoder_layers:
            raise ValueError(f"num_decoder_layers is only valid for arch='encoder-decoder', not {self.arch!r}")
        problems = moe_problems(self)
        if problems:
            raise ValueError(problems[0])
        return self

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def kv_channels(self) -> int:
        """Per-head dimension."""
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def ffn_size(self) -> int:
        return self.ffn_hidden_size or 4 * self.hidden_size

    @property
    def gated_mlp(self) -> bool:
        return self.activation in ("swiglu", "geglu")

    @property
    def is_moe(self) -> bool:
        """A mixture-of-experts model (some layers route tokens to experts)."""
        return bool(self.num_experts)

    @property
    def expert_ffn_size(self) -> int:
        """One expert's MLP width."""
        return self.expert_ffn_hidden_size or self.ffn_size

    @property
    def moe_layers(self) -> tuple[bool, ...]:
        """Per layer (encoder, then decoder blocks): whether it is an MoE layer."""
        return moe_layer_flags(self)

    @property
    def total_layers(self) -> int:
        """Transformer blocks in the whole model (encoder + decoder)."""
        return self.num_layers + (self.num_decoder_layers or 0)
