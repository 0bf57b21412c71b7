"""A `ModelSpec` from a Hugging Face `config.json` (read from disk, never downloaded).

Each supported `model_type` maps its config keys onto ModelSpec fields (mixtures of experts through
`costmodel.hf.moe`); a missing or bad value is
reported under the config's own key (`num_hidden_layers`, not `num_layers`), and an activation the
cost model does not know is refused with the supported ones, never silently replaced."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..specs import ModelSpec
from ..specs._base import read_text, shown_path
from ..specs.limits import shown
from .moe import MOE_MODEL_TYPES, moe_model_data

__all__ = ["model_from_hf_config", "HF_ACTIVATIONS", "SUPPORTED_MODEL_TYPES"]

HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu_fast": "gelu",
                  "silu": "swiglu", "swish": "swiglu", "relu": "relu", "gated-gelu": "geglu", "gated-silu": "swiglu"}
"""HF activation names -> ModelSpec.activation (llama-style MLPs are gated: silu means SwiGLU)."""

# model_type -> (ModelSpec field -> config key) and fixed fields
_GPT2 = {"num_layers": "n_layer", "hidden_size": "n_embd", "num_heads": "n_head", "ffn_hidden_size": "n_inner",
         "vocab_size": "vocab_size", "max_seq_len": "n_positions", "tie_embeddings": "tie_word_embeddings"}
_LLAMA = {"num_layers": "num_hidden_layers", "hidden_size": "hidden_size", "num_heads": "num_attention_heads",
          "num_kv_heads": "num_key_value_heads", "head_dim": "head_dim", "ffn_hidden_size": "intermediate_size",
          "vocab_size": "vocab_size", "max_seq_len": "max_position_embeddings", "activation": "hidden_act",
          "tie_embeddings": "tie_word_embeddings", "bias": "attention_bias"}
_BERT = {"num_layers": "num_hidden_layers", "hidden_size": "hidden_size", "num_heads": "num_attention_heads",
         "ffn_hidden_size": "intermediate_size", "vocab_size": "vocab_size",
         "max_seq_len": "max_position_embeddings", "activation": "hidden_act"}
_T5 = {"num_layers": "num_layers", "num_decoder_layers": "num_decoder_layers", "hidden_size": "d_model",
       "num_heads": "num_heads", "head_dim": "d_kv", "ffn_hidden_size": "d_ff", "vocab_size": "vocab_size",
       "max_seq_len": "n_positions", "activation": "feed_forward_proj", "tie_embeddings": "tie_word_embeddings"}

_TYPES: dict[str, tuple[dict[str, str], dict[str, Any], dict[str, Any]]] = {
    # keys, defaults (by field, used when the key is absent), fixed fields
    "gpt2": (_GPT2, {"max_seq_len": 1024, "tie_embeddings": True},
             dict(arch="decoder", activation="gelu", norm="layernorm", position="learned", bias=True)),
    "llama": (_LLAMA, {"max_seq_len": 4096, "activation": "silu", "tie_embeddings": False, "bias": False},
              dict(arch="decoder", norm="rmsnorm", position="rope")),
    "bert": (_BERT, {"max_seq_len": 512, "activation": "gelu"},
             dict(arch="encoder", norm="layernorm", position="learned", tie_embeddings=True, bias=True)),
    "t5": (_T5, {"max_seq_len": 512, "activation": "relu", "tie_embeddings": True},
           dict(arch="encoder-decoder", norm="rmsnorm", position="relative", bias=False)),
}
_ALIASES = {"gpt2": "gpt2", "gpt_neo": "gpt2", "gpt_bigcode": "gpt2", "llama": "llama", "mistral": "llama",
            "qwen2": "llama", "qwen3": "llama", "bert": "bert", "roberta": "bert", "t5": "t5", "mt5": "t5"}
SUPPORTED_MODEL_TYPES = (*_ALIASES, *MOE_MODEL_TYPES)


def _config_dict(config: Any) -> tuple[dict[str, Any], str | None]:
    """(the config mapping, the name its folder gives) from a dict or a path to config.json."""
    if isinstance(config, dict):
        return config, None
    if not isinstance(config, (str, os.PathLike)):
        raise ValueError(f"Hugging Face config: expected a dict or a path to config.json, got {type(config).__name__}")
    path = Path(config)
    text = read_text(path, what="Hugging Face config")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"Hugging Face config {shown_path(path)} cannot be read as JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"Hugging Face config {shown_path(path)} must hold a JSON object, got {type(data).__name__}")
    return data, path.resolve().parent.name or None


def _activation(value: Any, key: str) -> str:
    if isinstance(value, str) and value in HF_ACTIVATIONS:
        return HF_ACTIVATIONS[value]
    raise ValueError(f"{key}: {shown(value)} is not supported; supported: {', '.join(HF_ACTIVATIONS)} "
                     "(or write a ModelSpec YAML with activation gelu, swiglu, relu or geglu)")


def model_from_hf_config(config: dict[str, Any] | str | Path, *, name: str | None = None) -> ModelSpec:
    """A ModelSpec from a Hugging Face `config.json` (model_type gpt2, gpt_neo, gpt_bigcode, llama,
    mistral, qwen2, qwen3, bert, roberta, t5, mt5, and the mixtures of experts of `costmodel.hf.moe`:
    mixtral, qwen2_moe, qwen3_moe, deepseek_v2/v3, gpt_oss): a dict, or the path of the file. Problems
    raise ValueError naming the config's key."""
    config, folder = _config_dict(config)
    raw_type = config.get("model_type", "")
    mtype = raw_type.lower() if isinstance(raw_type, str) else ""
    if mtype in MOE_MODEL_TYPES:
        try:
            data, keys = moe_model_data(mtype, config)
        except ValueError as exc:
            raise ValueError(f"Hugging Face config ({mtype}): {exc}") from None
    else:
        data, keys = _dense_model_data(mtype, raw_type, config)
    label = name or folder or config.get("_name_or_path") or mtype
    data = {"name": str(label)[:200], "source": "Hugging Face config.json", **data}
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"Hugging Face config ({mtype}): {_in_config_keys(exc, keys)}") from None


def _dense_model_data(mtype: str, raw_type: Any, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(ModelSpec fields, field -> config key) of a dense model's config."""
    kind = _ALIASES.get(mtype)
    if kind is None:
        raise ValueError(f"model_type {shown(raw_type) if raw_type else '(missing)'} in Hugging Face config is not "
                         f"supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)} (or write a ModelSpec YAML)")
    keys, defaults, fixed = _TYPES[kind]
    data: dict[str, Any] = dict(fixed)
    for field, key in keys.items():
        value = config.get(key, defaults.get(field))
        if value is None:
            continue
        try:
            data[field] = _activation(value, key) if field == "activation" else value
        except ValueError as exc:
            raise ValueError(f"Hugging Face config ({mtype}): {exc}") from None
    if kind == "gpt2" and data.get("ffn_hidden_size") == 0:
        del data["ffn_hidden_size"]   # n_inner 0/None: 4 * n_embd
    if kind == "t5" and "num_decoder_layers" not in data and "num_layers" in data:
        data["num_decoder_layers"] = data["num_layers"]
    return data, keys


def _in_config_keys(exc: ValidationError, keys: dict[str, str]) -> str:
    """The validation errors with each ModelSpec field named by its config key (and the message's
    mentions of fields, e.g. 'hidden_size=... is not divisible by num_heads=...', too)."""
    parts = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        msg = err["msg"].removeprefix("Value error, ")
        msg = re.sub(r"\b(" + "|".join(map(re.escape, keys)) + r")\b", lambda mt: keys[mt.group(1)], msg)
        parts.append(f"{keys.get(field, field)}: {msg}" if field else msg)
    return "; ".join(parts)
