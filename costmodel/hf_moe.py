"""Hugging Face `config.json` import of mixture-of-experts models: Mixtral, Qwen2-MoE / Qwen3-MoE,
DeepSeek-V2/V3 and GPT-OSS (`moe_model_data`, used by `costmodel.catalog.model_from_hf_config`).

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
DeepSeek-V3 (head_dim 91 vs (192 + 128) / 2); the compressed KV cache is not modelled."""

from __future__ import annotations

from typing import Any

__all__ = ["MOE_MODEL_TYPES", "moe_model_data", "mla_attention"]

MOE_MODEL_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "gpt_oss")


def mla_attention(config: dict[str, Any]) -> tuple[int, int]:
    """(head_dim, num_kv_heads) of the grouped-query attention with MLA's parameters (see module doc)."""
    get = config.get
    h, a = int(get("hidden_size")), int(get("num_attention_heads"))
    nope, rope, v = int(get("qk_nope_head_dim", 128)), int(get("qk_rope_head_dim", 64)), int(get("v_head_dim", 128))
    q_lora, kv_lora = get("q_lora_rank"), int(get("kv_lora_rank", 512))
    q = h * q_lora + q_lora * a * (nope + rope) if q_lora else h * a * (nope + rope)
    o = a * v * h
    kv = h * (kv_lora + rope) + kv_lora * a * (nope + v)
    d = max(1, round((q + o) / (2 * h * a)))
    target = kv / (2 * h * d)
    kv_heads = min((g for g in range(1, a + 1) if a % g == 0), key=lambda g: (abs(g - target), g))
    return d, kv_heads


def _first_dense(only: list[int], step: int, layers: int, field: str) -> int:
    """Qwen's dense layers as a leading count, or ValueError naming the field."""
    if step != 1:
        raise ValueError(f"decoder_sparse_step: {step} (every {step}-th layer sparse, counted from 1) has no "
                         "ModelSpec equivalent; write a ModelSpec YAML with moe_layer_freq instead")
    if sorted(only) != list(range(len(only))) or len(only) >= layers:
        raise ValueError(f"{field}: {only} are not the leading layers; only leading dense layers "
                         "(first_dense_layers) are supported")
    return len(only)


def moe_model_data(mtype: str, config: dict[str, Any]) -> dict[str, Any]:
    """`ModelSpec` fields of an MoE model's Hugging Face config (`mtype` in `MOE_MODEL_TYPES`)."""
    get = config.get
    layers = get("num_hidden_layers")
    data: dict[str, Any] = dict(
        arch="decoder", num_layers=layers, hidden_size=get("hidden_size"), num_heads=get("num_attention_heads"),
        num_kv_heads=get("num_key_value_heads"), head_dim=get("head_dim"), vocab_size=get("vocab_size"),
        max_seq_len=get("max_position_embeddings", 4096), activation="swiglu", norm="rmsnorm", position="rope",
        tie_embeddings=get("tie_word_embeddings", False), bias=bool(get("attention_bias", False)),
        experts_per_token=get("num_experts_per_tok", get("experts_per_token")))
    if mtype == "mixtral":
        data.update(ffn_hidden_size=get("intermediate_size"), num_experts=get("num_local_experts"),
                    router_aux_loss_coef=get("router_aux_loss_coef", 0.0))
    elif mtype in ("qwen2_moe", "qwen3_moe"):
        moe_f = get("moe_intermediate_size")
        data.update(ffn_hidden_size=get("intermediate_size"), num_experts=get("num_experts"),
                    expert_ffn_hidden_size=moe_f, router_aux_loss_coef=get("router_aux_loss_coef", 0.0),
                    first_dense_layers=_first_dense(list(get("mlp_only_layers") or []),
                                                    int(get("decoder_sparse_step", 1)), int(layers or 0),
                                                    "mlp_only_layers"))
        shared = get("shared_expert_intermediate_size") or 0
        if shared:
            if not moe_f or shared % moe_f:
                raise ValueError(f"shared_expert_intermediate_size: {shared} is not a multiple of "
                                 f"moe_intermediate_size={moe_f}; give the shared experts as a count of experts "
                                 "(num_shared_experts) in a ModelSpec YAML")
            data["num_shared_experts"] = shared // moe_f
    elif mtype in ("deepseek_v2", "deepseek_v3"):
        data.update(ffn_hidden_size=get("intermediate_size"), num_experts=get("n_routed_experts"),
                    num_shared_experts=get("n_shared_experts") or 0,
                    expert_ffn_hidden_size=get("moe_intermediate_size"),
                    first_dense_layers=get("first_k_dense_replace", 0), moe_layer_freq=get("moe_layer_freq", 1),
                    router_aux_loss_coef=get("aux_loss_alpha", 0.0))
        if get("kv_lora_rank"):
            data["head_dim"], data["num_kv_heads"] = mla_attention(config)
    elif mtype == "gpt_oss":
        data.update(ffn_hidden_size=get("intermediate_size"), num_experts=get("num_local_experts"),
                    bias=True, router_aux_loss_coef=get("router_aux_loss_coef", 0.0))
    else:
        raise ValueError(f"model_type {mtype!r} is not a supported mixture of experts; supported: "
                         f"{', '.join(MOE_MODEL_TYPES)}")
    return {k: v for k, v in data.items() if v is not None}
