"""Hugging Face `config.json` import of mixture-of-experts models: Mixtral, Qwen2-MoE / Qwen3-MoE,
DeepSeek-V2/V3 and GPT-OSS (`moe_model_data`, used by `costmodel.hf.config.model_from_hf_config`).

Field names follow each model's `configuration_*.py` in Hugging Face transformers. Layer patterns map
onto `ModelSpec`'s (`first_dense_layers`, `moe_layer_freq`; costmodel.specs.moe): DeepSeek's
`first_k_dense_replace` / `moe_layer_freq` directly; Qwen's `mlp_only_layers` when they are the first
layers and `decoder_sparse_step` 1 (every released Qwen MoE); other patterns are refused by name.

DeepSeek's multi-head latent attention (MLA: low-rank Q and joint KV compression, DeepSeek-AI 2024,
DeepSeek-V2 sec. 2.1) has no exact counterpart in `ModelSpec`. `mla_attention` approximates it by
grouped-query attention with the same number of query heads and the same parameters: the Q and O
projections' parameters set head_dim, the compressed K/V path's set num_kv_heads (the divisor of the
heads nearest to it). Projection FLOPs follow the parameters; the attention core (score dim
qk_nope + qk_rope, value dim v) is then priced with head_dim on both, about 56% of MLA's core for
DeepSeek-V3 (head_dim 91 vs (192 + 128) / 2); the compressed KV cache is not modelled.

`moe_model_data` also returns which config key each field came from, so that a bad value is reported
under the config's own key; the numbers `mla_attention` computes with are checked first (whole, > 0,
within docs/LIMITS.md), so that no config makes it loop or divide by zero."""

from __future__ import annotations

import numbers
from typing import Any

from ..specs.limits import MAX_HEADS, MAX_WIDTH, shown

__all__ = ["MOE_MODEL_TYPES", "moe_model_data", "mla_attention"]

MOE_MODEL_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "gpt_oss")

_COMMON = {"num_layers": "num_hidden_layers", "hidden_size": "hidden_size", "num_heads": "num_attention_heads",
           "num_kv_heads": "num_key_value_heads", "head_dim": "head_dim", "vocab_size": "vocab_size",
           "max_seq_len": "max_position_embeddings", "tie_embeddings": "tie_word_embeddings",
           "bias": "attention_bias", "ffn_hidden_size": "intermediate_size",
           "experts_per_token": "num_experts_per_tok", "router_aux_loss_coef": "router_aux_loss_coef"}
_QWEN = {**_COMMON, "num_experts": "num_experts", "expert_ffn_hidden_size": "moe_intermediate_size",
         "first_dense_layers": "mlp_only_layers", "num_shared_experts": "shared_expert_intermediate_size"}
_DEEPSEEK = {**_COMMON, "num_experts": "n_routed_experts", "num_shared_experts": "n_shared_experts",
             "expert_ffn_hidden_size": "moe_intermediate_size", "first_dense_layers": "first_k_dense_replace",
             "moe_layer_freq": "moe_layer_freq", "router_aux_loss_coef": "aux_loss_alpha"}
_KEYS = {"mixtral": {**_COMMON, "num_experts": "num_local_experts"}, "qwen2_moe": _QWEN, "qwen3_moe": _QWEN,
         "deepseek_v2": _DEEPSEEK, "deepseek_v3": _DEEPSEEK, "gpt_oss": {**_COMMON, "num_experts": "num_local_experts"}}
"""model_type -> (ModelSpec field -> the config key it comes from)."""


def _is_whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _whole(config: dict[str, Any], key: str, default: Any, limit: int) -> int:
    """config[key] (or `default`) as a whole number in 1..limit, else ValueError naming the key."""
    value = config.get(key, default)
    if not _is_whole(value) or not 0 < value <= limit:
        raise ValueError(f"{key}: must be a whole number from 1 to {limit:,}, got {shown(value)}")
    return int(value)


def mla_attention(config: dict[str, Any]) -> tuple[int, int]:
    """(head_dim, num_kv_heads) of the grouped-query attention with MLA's parameters (see module doc)."""
    h = _whole(config, "hidden_size", None, MAX_WIDTH)
    a = _whole(config, "num_attention_heads", None, MAX_HEADS)
    nope = _whole(config, "qk_nope_head_dim", 128, MAX_WIDTH)
    rope = _whole(config, "qk_rope_head_dim", 64, MAX_WIDTH)
    v = _whole(config, "v_head_dim", 128, MAX_WIDTH)
    kv_lora = _whole(config, "kv_lora_rank", 512, MAX_WIDTH)
    q_lora = _whole(config, "q_lora_rank", None, MAX_WIDTH) if config.get("q_lora_rank") else None
    q = h * q_lora + q_lora * a * (nope + rope) if q_lora else h * a * (nope + rope)
    o = a * v * h
    kv = h * (kv_lora + rope) + kv_lora * a * (nope + v)
    d = max(1, round((q + o) / (2 * h * a)))
    target = kv / (2 * h * d)
    kv_heads = min((g for g in range(1, a + 1) if a % g == 0), key=lambda g: (abs(g - target), g))
    return d, kv_heads


def _first_dense(config: dict[str, Any], layers: Any) -> int:
    """Qwen's dense layers (`mlp_only_layers`) as a leading count, or ValueError naming the key."""
    only, step = config.get("mlp_only_layers") or [], config.get("decoder_sparse_step", 1)
    if not _is_whole(step) or step != 1:
        raise ValueError(f"decoder_sparse_step: {shown(step)} (every n-th layer sparse, counted from 1) has no "
                         "ModelSpec equivalent; write a ModelSpec YAML with moe_layer_freq instead")
    if not isinstance(only, list) or not all(_is_whole(i) for i in only):
        raise ValueError(f"mlp_only_layers: must be a list of layer numbers, got {shown(only)}")
    if sorted(only) != list(range(len(only))) or (_is_whole(layers) and len(only) >= layers):
        raise ValueError(f"mlp_only_layers: {shown(only)} are not the leading layers; only leading dense layers "
                         "(first_dense_layers) are supported")
    return len(only)


def moe_model_data(mtype: str, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(`ModelSpec` fields, field -> config key) of an MoE model's Hugging Face config (`mtype` in
    `MOE_MODEL_TYPES`). Values are passed on as the config gives them: `ModelSpec` validates them."""
    if mtype not in _KEYS:
        raise ValueError(f"model_type {shown(mtype)} is not a supported mixture of experts; supported: "
                         f"{', '.join(MOE_MODEL_TYPES)}")
    keys = dict(_KEYS[mtype])
    if "num_experts_per_tok" not in config and "experts_per_token" in config:
        keys["experts_per_token"] = "experts_per_token"   # GPT-OSS's original name
    get = config.get
    layers = get("num_hidden_layers")
    data: dict[str, Any] = dict(arch="decoder", activation="swiglu", norm="rmsnorm", position="rope",
                                max_seq_len=get("max_position_embeddings", 4096),
                                tie_embeddings=get("tie_word_embeddings", False), bias=get("attention_bias", False),
                                router_aux_loss_coef=get(keys["router_aux_loss_coef"], 0.0))
    for field in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "vocab_size",
                  "ffn_hidden_size", "experts_per_token", "num_experts", "expert_ffn_hidden_size"):
        if field in keys:
            data[field] = get(keys[field])
    if mtype in ("qwen2_moe", "qwen3_moe"):
        data["first_dense_layers"] = _first_dense(config, layers)
        shared = get("shared_expert_intermediate_size") or 0
        if shared:
            moe_f = get("moe_intermediate_size")
            if not (_is_whole(shared) and _is_whole(moe_f) and moe_f > 0 and shared % moe_f == 0):
                raise ValueError(f"shared_expert_intermediate_size: {shown(shared)} is not a multiple of "
                                 f"moe_intermediate_size={shown(moe_f)}; give the shared experts as a count of "
                                 "experts (num_shared_experts) in a ModelSpec YAML")
            data["num_shared_experts"] = shared // moe_f
    elif mtype in ("deepseek_v2", "deepseek_v3"):
        data.update(num_shared_experts=get("n_shared_experts") or 0, first_dense_layers=get("first_k_dense_replace", 0),
                    moe_layer_freq=get("moe_layer_freq", 1))
        if get("kv_lora_rank"):   # MLA: both follow from the projections' sizes
            data["head_dim"], data["num_kv_heads"] = mla_attention(config)
            keys.update(head_dim="qk_nope_head_dim", num_kv_heads="kv_lora_rank")
    elif mtype == "gpt_oss":
        data["bias"] = True
    return {k: v for k, v in data.items() if v is not None}, keys
