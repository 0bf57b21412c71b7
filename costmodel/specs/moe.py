"""Mixture-of-experts fields of a `ModelSpec`: their rules and which layers are MoE layers.

Layer i (0-based, encoder blocks first) is an MoE layer when i >= first_dense_layers and
i % moe_layer_freq == 0: Megatron-Core's `--moe-layer-freq` integer pattern and DeepSeek-V2/V3's
`first_k_dense_replace` / `moe_layer_freq` (Dai et al. 2024, DeepSeekMoE; DeepSeek-AI 2024). The MoE
layer replaces the block's MLP with a router over `num_experts` experts of width
`expert_ffn_hidden_size`, each token going to `experts_per_token` of them (top-k, Shazeer et al. 2017),
plus `num_shared_experts` experts every token passes (DeepSeekMoE's shared experts)."""

from __future__ import annotations

from typing import Any

__all__ = ["MOE_FIELDS", "moe_problems", "moe_layer_flags"]

MOE_FIELDS = ("experts_per_token", "num_shared_experts", "expert_ffn_hidden_size", "capacity_factor",
              "moe_layer_freq", "first_dense_layers", "router_aux_loss_coef")
"""Fields that only mean something with num_experts set."""


def moe_problems(spec: Any) -> list[str]:
    """Every rule the MoE fields of `spec` break, each message starting with the field to change."""
    out: list[str] = []
    experts = spec.num_experts
    if not experts:
        defaults = {"experts_per_token": None, "num_shared_experts": 0, "expert_ffn_hidden_size": None,
                    "capacity_factor": None, "moe_layer_freq": 1, "first_dense_layers": 0,
                    "router_aux_loss_coef": 0.0}
        for name, default in defaults.items():
            if getattr(spec, name) != default:
                out.append(f"{name}: only applies to a mixture-of-experts model; set num_experts (> 1) or "
                           f"remove {name}")
        return out
    if experts < 2:
        out.append(f"num_experts: a mixture of experts needs at least 2 experts, got {experts}; use 0 for a "
                   "dense model")
    k = spec.experts_per_token
    if k is None:
        out.append(f"experts_per_token: set the top-k (experts each token is routed to, 1..{experts})")
    elif k > experts:
        out.append(f"experts_per_token: {k} exceeds num_experts={experts}; a token can be routed to at "
                   f"most {experts} experts")
    total = spec.num_layers + (spec.num_decoder_layers or 0)
    if spec.first_dense_layers >= total:
        out.append(f"first_dense_layers: {spec.first_dense_layers} leaves no MoE layer among the {total} "
                   f"layers; use at most {total - 1}")
    return out


def moe_layer_flags(spec: Any) -> tuple[bool, ...]:
    """Per layer (encoder blocks, then decoder blocks): True where the block is an MoE layer."""
    total = spec.num_layers + (spec.num_decoder_layers or 0)
    if not spec.num_experts:
        return (False,) * total
    return tuple(i >= spec.first_dense_layers and i % spec.moe_layer_freq == 0 for i in range(total))
