"""The catalog of models, GPUs, links and cluster presets (YAML next to this file), and loaders for
user spec files and Hugging Face `config.json` files on disk (no download)."""

from __future__ import annotations

import difflib
import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .hf_moe import MOE_MODEL_TYPES, moe_model_data
from .specs import ClusterSpec, GPUSpec, LinkSpec, ModelSpec
from .specs._base import validate_spec

__all__ = [
    "load_model", "get_gpu", "get_link", "get_cluster", "list_models", "list_gpus", "list_clusters",
    "list_links", "model_from_hf_config",
]

_DATA = Path(__file__).parent / "data"


@cache
def _yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((_DATA / name).read_text())


def _unknown(kind: str, name: str, known: list[str]) -> ValueError:
    close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(known))})")


def list_models() -> list[str]:
    return list(_yaml("models.yaml")["models"])


def list_gpus() -> list[str]:
    return list(_yaml("hardware.yaml")["gpus"])


def list_links() -> list[str]:
    return list(_yaml("hardware.yaml")["links"])


def list_clusters() -> list[str]:
    return list(_yaml("hardware.yaml")["clusters"])


def _validate(cls: type, data: dict[str, Any], what: str) -> Any:
    return validate_spec(cls, data, where=what)


def load_model(name_or_path: str | Path) -> ModelSpec:
    """A catalog model by name, or a ModelSpec YAML/JSON file, or a Hugging Face `config.json`."""
    key = str(name_or_path)
    models = _yaml("models.yaml")["models"]
    if key.lower() in models:
        return _validate(ModelSpec, {"name": key.lower(), **models[key.lower()]}, f"catalog model {key!r}")
    path = Path(key)
    if not path.is_file():
        raise _unknown("model", key, list(models)) if path.suffix == "" else ValueError(
            f"model file {key!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"model file {key!r} is neither JSON nor YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"model file {key!r} must hold a mapping of fields, got {type(data).__name__}")
    if "model_type" in data or "architectures" in data:
        return model_from_hf_config(data, name=path.stem if path.stem != "config" else path.parent.name)
    data.setdefault("name", path.stem)
    return _validate(ModelSpec, data, f"model file {key!r}")


_HF_ACT = {"gelu": "gelu", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "silu": "swiglu",
           "swish": "swiglu", "relu": "relu", "gated-gelu": "geglu", "gated-silu": "swiglu"}


def model_from_hf_config(config: dict[str, Any] | str | Path, *, name: str | None = None) -> ModelSpec:
    """A ModelSpec from a Hugging Face `config.json` (model_type gpt2, llama, mistral, qwen2, bert, t5, and the
    mixtures of experts of `costmodel.hf_moe`: mixtral, qwen2_moe, qwen3_moe, deepseek_v2/v3, gpt_oss)."""
    if not isinstance(config, dict):
        path = Path(config)
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"Hugging Face config {str(path)!r} cannot be read as JSON: {exc}") from None
        name = name or path.parent.name or "hf-model"
    mtype = str(config.get("model_type", "")).lower()
    name = name or config.get("_name_or_path") or mtype or "hf-model"
    get = config.get
    if mtype in ("gpt2", "gpt_neo", "gpt_bigcode"):
        data = dict(arch="decoder", num_layers=get("n_layer"), hidden_size=get("n_embd"),
                    num_heads=get("n_head"), ffn_hidden_size=get("n_inner") or None,
                    vocab_size=get("vocab_size"), max_seq_len=get("n_positions", get("n_ctx", 1024)),
                    activation="gelu", norm="layernorm", position="learned",
                    tie_embeddings=get("tie_word_embeddings", True), bias=True)
    elif mtype in ("llama", "mistral", "qwen2", "qwen3"):
        data = dict(arch="decoder", num_layers=get("num_hidden_layers"), hidden_size=get("hidden_size"),
                    num_heads=get("num_attention_heads"), num_kv_heads=get("num_key_value_heads"),
                    head_dim=get("head_dim"), ffn_hidden_size=get("intermediate_size"),
                    vocab_size=get("vocab_size"), max_seq_len=get("max_position_embeddings", 4096),
                    activation=_HF_ACT.get(get("hidden_act", "silu"), "swiglu"), norm="rmsnorm",
                    position="rope", tie_embeddings=get("tie_word_embeddings", False),
                    bias=bool(get("attention_bias", False)))
    elif mtype in ("bert", "roberta"):
        data = dict(arch="encoder", num_layers=get("num_hidden_layers"), hidden_size=get("hidden_size"),
                    num_heads=get("num_attention_heads"), ffn_hidden_size=get("intermediate_size"),
                    vocab_size=get("vocab_size"), max_seq_len=get("max_position_embeddings", 512),
                    activation=_HF_ACT.get(get("hidden_act", "gelu"), "gelu"), norm="layernorm",
                    position="learned", tie_embeddings=True, bias=True)
    elif mtype in ("t5", "mt5"):
        act = get("feed_forward_proj", "relu")
        data = dict(arch="encoder-decoder", num_layers=get("num_layers"),
                    num_decoder_layers=get("num_decoder_layers") or get("num_layers"),
                    hidden_size=get("d_model"), num_heads=get("num_heads"), head_dim=get("d_kv"),
                    ffn_hidden_size=get("d_ff"), vocab_size=get("vocab_size"),
                    max_seq_len=get("n_positions", 512), activation=_HF_ACT.get(act, "relu"),
                    norm="rmsnorm", position="relative", tie_embeddings=get("tie_word_embeddings", True),
                    bias=False)
    elif mtype in MOE_MODEL_TYPES:
        data = moe_model_data(mtype, config)
    else:
        raise ValueError(
            f"model_type {mtype or '(missing)'!r} in Hugging Face config is not supported; "
            f"supported: gpt2, llama, mistral, qwen2, bert, roberta, t5, {', '.join(MOE_MODEL_TYPES)} "
            "(or write a ModelSpec YAML)")
    data = {k: v for k, v in data.items() if v is not None}
    return _validate(ModelSpec, {"name": str(name), "source": "Hugging Face config.json", **data},
                     f"Hugging Face config ({mtype})")


def get_gpu(name: str) -> GPUSpec:
    gpus = _yaml("hardware.yaml")["gpus"]
    if name.lower() not in gpus:
        raise _unknown("GPU", name, list(gpus))
    return _validate(GPUSpec, {"name": name.lower(), **gpus[name.lower()]}, f"GPU {name!r}")


def get_link(name: str) -> LinkSpec:
    links = _yaml("hardware.yaml")["links"]
    if name.lower() not in links:
        raise _unknown("link", name, list(links))
    return LinkSpec(name=name.lower(), **links[name.lower()])


def get_cluster(name: str, *, nodes: int = 1, gpu: str | None = None, **overrides: Any) -> ClusterSpec:
    """A cluster preset with `nodes` nodes. `gpu` swaps the GPU type; other keyword arguments override
    ClusterSpec fields (e.g. `inter_node_link=LinkSpec(...)`, `oversubscription=2.0`). A path to a
    YAML/JSON ClusterSpec file is accepted too."""
    clusters = _yaml("hardware.yaml")["clusters"]
    path = Path(name)
    if name.lower() in clusters:
        raw = dict(clusters[name.lower()])
        data: dict[str, Any] = {
            "name": name.lower(),
            "gpu": get_gpu(raw.pop("gpu")),
            "intra_node_link": get_link(raw.pop("intra_node_link")),
            "inter_node_link": get_link(raw.pop("inter_node_link")),
            **raw,
        }
    elif path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"cluster file {name!r} must hold a mapping of ClusterSpec fields")
        for key, getter in (("gpu", get_gpu), ("intra_node_link", get_link), ("inter_node_link", get_link)):
            if isinstance(data.get(key), str):
                data[key] = getter(data[key])
        data.setdefault("name", path.stem)
        data.setdefault("num_nodes", nodes)
    else:
        raise _unknown("cluster", name, list(clusters))
    if nodes < 1:
        raise ValueError(f"nodes={nodes} must be >= 1")
    if path.suffix not in (".yaml", ".yml", ".json"):
        data["num_nodes"] = nodes
    if gpu is not None:
        data["gpu"] = get_gpu(gpu)
    data.update(overrides)
    return _validate(ClusterSpec, data, f"cluster {name!r}")
