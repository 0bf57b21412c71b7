"""The catalog of models, GPUs, links and cluster presets (YAML next to this file), and loaders for
user spec files and Hugging Face `config.json` files on disk (no download)."""

from __future__ import annotations

import difflib
import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .hf import model_from_hf_config
from .specs import ClusterSpec, GPUSpec, LinkSpec, ModelSpec
from .specs._base import is_dir, is_file, read_yaml, shown_path, validate_spec
from .specs.limits import shown

__all__ = [
    "check_dtype", "load_model", "get_gpu", "get_link", "get_cluster", "list_models", "list_gpus", "list_clusters",
    "list_links", "model_from_hf_config",
]

_DATA = Path(__file__).parent / "data"


@cache
def _yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((_DATA / name).read_text())


def _unknown(kind: str, name: str, known: list[str]) -> ValueError:
    close = difflib.get_close_matches(name.lower()[:64], known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ValueError(f"unknown {kind} {shown(name)}{hint} (known: {', '.join(sorted(known))})")


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
    """A catalog model by name, or a ModelSpec YAML/JSON file, or a Hugging Face `config.json` (or
    the model folder holding it)."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ValueError(f"model: expected a catalog name or a file path, got {type(name_or_path).__name__}")
    key = str(name_or_path)
    models = _yaml("models.yaml")["models"]
    if key.lower() in models:
        return _validate(ModelSpec, {"name": key.lower(), **models[key.lower()]}, f"catalog model {key!r}")
    path = Path(key)
    if is_dir(path):
        if not is_file(path / "config.json"):
            raise ValueError(f"model folder {shown_path(key)} holds no config.json; give a catalog name, a "
                             "ModelSpec YAML/JSON file or a Hugging Face model folder")
        path = path / "config.json"
    elif not is_file(path):
        raise _unknown("model", key, list(models)) if path.suffix == "" else ValueError(
            f"model file {shown_path(key)} does not exist")
    where = f"model file {shown_path(path)}"
    data = read_yaml(path, what="model file")
    if not isinstance(data, dict):
        raise ValueError(f"{where} must hold a mapping of fields, got {type(data).__name__}")
    if "model_type" in data or "architectures" in data:
        return model_from_hf_config(data, name=path.stem if path.stem != "config" else path.resolve().parent.name)
    data.setdefault("name", path.stem)
    return _validate(ModelSpec, data, where)


def _name(name: Any, kind: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"{kind}: expected a name (text), got {type(name).__name__}")
    return name


def get_gpu(name: str) -> GPUSpec:
    name = _name(name, "gpu")
    gpus = _yaml("hardware.yaml")["gpus"]
    if name.lower() not in gpus:
        raise _unknown("GPU", name, list(gpus))
    return _validate(GPUSpec, {"name": name.lower(), **gpus[name.lower()]}, f"GPU {shown(name)}")


def get_link(name: str) -> LinkSpec:
    name = _name(name, "link")
    links = _yaml("hardware.yaml")["links"]
    if name.lower() not in links:
        raise _unknown("link", name, list(links))
    return LinkSpec(name=name.lower(), **links[name.lower()])


def get_cluster(name: str, *, nodes: int = 1, gpu: str | None = None, **overrides: Any) -> ClusterSpec:
    """A cluster preset with `nodes` nodes. `gpu` swaps the GPU type; other keyword arguments override
    ClusterSpec fields (e.g. `inter_node_link=LinkSpec(...)`, `oversubscription=2.0`). A path to a
    YAML/JSON ClusterSpec file is accepted too."""
    name = _name(name, "cluster")
    if isinstance(nodes, bool) or not isinstance(nodes, int):
        raise ValueError(f"nodes: must be a whole number, got {shown(nodes)}")
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
    elif path.suffix in (".yaml", ".yml", ".json") and is_file(path):
        data = read_yaml(path, what="cluster file") or {}
        if not isinstance(data, dict):
            raise ValueError(f"cluster file {shown_path(name)} must hold a mapping of ClusterSpec fields")
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
    return _validate(ClusterSpec, data, f"cluster {shown(name)}")


def check_dtype(gpu: GPUSpec, dtype: str) -> None:
    """Raise ValueError when `gpu` has no `dtype` rate, naming the catalog GPUs that have one."""
    if dtype in gpu.peak_flops_per_s:
        return
    gpus = _yaml("hardware.yaml")["gpus"]
    having = [name for name, spec in gpus.items() if dtype in spec.get("peak_flops_per_s", {})]
    raise ValueError(f"dtype: {gpu.name} has no {dtype} (it computes in {', '.join(gpu.peak_flops_per_s)}); "
                     f"use one of those, or a GPU with {dtype}: {', '.join(having) or 'none in the catalog'}")
