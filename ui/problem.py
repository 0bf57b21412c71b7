"""The planning problem as the UI collects it: model, cluster, training and search constraints.

Pure Python (no Streamlit): widget values go in, validated specs (the same pydantic models the CLI
uses) come out, and bad input comes back as a ValueError whose message names the field and the fix."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from costmodel import (
    ClusterSpec,
    LinkSpec,
    ModelSpec,
    TrainingSpec,
    format_validation_error,
    get_cluster,
    model_from_hf_config,
)

__all__ = [
    "Problem", "DEFAULTS", "GBIT", "GBYTE", "model_from_fields", "model_from_upload", "cluster_from_inputs",
    "cluster_from_upload", "training_from_inputs", "CONSTRAINT_KNOBS", "is_topology_file", "topology_from_text",
    "cluster_for_topology",
]

GBYTE = 1e9
"""Bytes per GB (decimal, as link datasheets quote them)."""
GBIT = 1e9 / 8
"""Bytes per Gbit."""

DEFAULTS: dict[str, Any] = {
    "model": "llama3-8b",
    "cluster": "dgx-h100",
    "nodes": 8,
    "global_batch_size": 512,
    "seq_len": 4096,
    "dtype": "bf16",
}
"""The problem the app opens with."""

CONSTRAINT_KNOBS = ("dp", "tp", "pp", "cp", "ep", "micro_batch_size", "virtual_stages", "schedule", "zero_stage",
                    "recompute", "sequence_parallel")
"""Plan knobs a user may fix on the Plan page (ParallelPlan field names)."""


@dataclass(frozen=True)
class Problem:
    """One planning request: validated specs plus search constraints (ParallelPlan field -> value,
    and `max_<knob>` bounds)."""

    model: ModelSpec
    cluster: ClusterSpec
    training: TrainingSpec
    constraints: dict[str, Any] = field(default_factory=dict)
    topology_text: str | None = None
    """An uploaded cluster graph (costmodel.network.topology file format) that replaces the preset's graph."""

    def key(self) -> str:
        """A stable JSON key for caching: the specs' JSON, the constraints and the topology file."""
        return json.dumps({
            "model": self.model.model_dump(mode="json"),
            "cluster": self.cluster.model_dump(mode="json"),
            "training": self.training.model_dump(mode="json"),
            "constraints": self.constraints,
            "topology": self.topology_text,
        }, sort_keys=True)

    def topology(self) -> Any:
        """The uploaded cluster graph as a `costmodel.network.topology.Topology` (None: the preset's graph)."""
        return None if self.topology_text is None else topology_from_text(self.topology_text)

    @classmethod
    def from_key(cls, key: str) -> Problem:
        """The Problem whose `key()` is `key` (cached functions take the key, not the objects)."""
        data = json.loads(key)
        return cls(model=ModelSpec.model_validate(data["model"]),
                   cluster=ClusterSpec.model_validate(data["cluster"]),
                   training=TrainingSpec.model_validate(data["training"]),
                   constraints=data["constraints"], topology_text=data.get("topology"))


def _validate(cls: type, data: dict[str, Any], what: str) -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{what}: {format_validation_error(exc)}") from None


def model_from_fields(fields: dict[str, Any]) -> ModelSpec:
    """A ModelSpec from the custom-model form; empty optional fields (None/0) mean 'default'."""
    data = {k: v for k, v in fields.items() if v not in (None, "", 0) or k in ("num_layers", "hidden_size")}
    data.setdefault("name", "custom")
    return _validate(ModelSpec, data, "custom model")


def _parse_mapping(raw: bytes, filename: str, what: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} {filename!r} is not a text file (expected JSON or YAML)") from None
    try:
        data = json.loads(text) if filename.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{what} {filename!r} is not valid {'JSON' if filename.endswith('.json') else 'YAML'}: "
                         f"{str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {filename!r} must hold a mapping of fields, got {type(data).__name__}")
    return data


def model_from_upload(raw: bytes, filename: str = "config.json") -> ModelSpec:
    """A ModelSpec from an uploaded Hugging Face `config.json` or a ModelSpec JSON/YAML file."""
    data = _parse_mapping(raw, filename, "model file")
    if "model_type" in data or "architectures" in data:
        name = data.get("_name_or_path") or Path(filename).stem
        return model_from_hf_config(data, name=str(name) if name != "config" else None)
    data.setdefault("name", Path(filename).stem)
    return _validate(ModelSpec, data, f"model file {filename!r}")


def _scaled_link(link: LinkSpec, bw_bytes_per_s: float | None) -> LinkSpec:
    if bw_bytes_per_s is None or bw_bytes_per_s == link.bw_bytes_per_s:
        return link
    if bw_bytes_per_s <= 0:
        raise ValueError(f"link bandwidth for {link.name}: {bw_bytes_per_s} must be > 0")
    return LinkSpec(name=f"{link.name}@{bw_bytes_per_s / GBYTE:g}GB/s", bw_bytes_per_s=bw_bytes_per_s,
                    latency_s=link.latency_s)


def cluster_from_inputs(preset: str, *, nodes: int, gpu: str | None = None,
                        intra_bw_bytes_per_s: float | None = None,
                        inter_bw_bytes_per_s: float | None = None) -> ClusterSpec:
    """A catalog cluster preset with `nodes` nodes, optionally another GPU and other link bandwidths."""
    if nodes is None or nodes < 1:
        raise ValueError(f"nodes: {nodes} must be >= 1")
    cluster = get_cluster(preset, nodes=int(nodes), gpu=gpu or None)
    intra = _scaled_link(cluster.intra_node_link, intra_bw_bytes_per_s)
    inter = _scaled_link(cluster.inter_node_link, inter_bw_bytes_per_s)
    if intra is cluster.intra_node_link and inter is cluster.inter_node_link:
        return cluster
    return cluster.model_copy(update={"intra_node_link": intra, "inter_node_link": inter})


def cluster_from_upload(raw: bytes, filename: str, *, nodes: int | None = None) -> ClusterSpec:
    """A ClusterSpec from an uploaded YAML/JSON file (fields of ClusterSpec; `gpu` and links may be
    catalog names), read through the catalog's own loader so the rules are the same as the CLI's."""
    suffix = Path(filename).suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ValueError(f"cluster file {filename!r}: use a .yaml, .yml or .json file")
    _parse_mapping(raw, filename, "cluster file")  # clear message for a malformed file
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix=f"{Path(filename).stem}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        try:
            cluster = get_cluster(tmp, nodes=nodes or 1)
        except (TypeError, KeyError) as exc:
            raise ValueError(f"cluster file {filename!r}: {exc}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    name = cluster.name if not cluster.name.startswith(Path(filename).stem + ".") else Path(filename).stem
    return cluster.model_copy(update={"name": name})


def training_from_inputs(*, global_batch_size: int, seq_len: int, dtype: str = "bf16",
                         model: ModelSpec | None = None, stack: str = "megatron",
                         moe_load_imbalance: float = 1.0) -> TrainingSpec:
    """A TrainingSpec; with `model`, a sequence longer than the model's maximum is refused here."""
    training = _validate(TrainingSpec, {"global_batch_size": global_batch_size, "seq_len": seq_len,
                                        "dtype": dtype, "stack": stack, "moe_load_imbalance": moe_load_imbalance},
                         "training")
    if model is not None and seq_len > model.max_seq_len:
        raise ValueError(f"training.seq_len: {seq_len} exceeds max_seq_len={model.max_seq_len} of "
                         f"{model.name}; lower the sequence length")
    return training


def is_topology_file(raw: bytes, filename: str) -> bool:
    """True for a cluster-graph file (a mapping with 'nodes' and 'links'), False for a ClusterSpec."""
    try:
        data = _parse_mapping(raw, filename, "cluster file")
    except ValueError:
        return False
    return "nodes" in data and "links" in data


@lru_cache(maxsize=8)
def topology_from_text(text: str) -> Any:
    """A validated `costmodel.network.topology.Topology` from the text of a graph file (YAML or JSON)."""
    from costmodel.network.topology import load_topology

    fd, tmp = tempfile.mkstemp(suffix=".yaml", prefix="topology.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return load_topology(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def cluster_for_topology(topo: Any, *, gpu: str, filename: str = "topology") -> ClusterSpec:
    """The ClusterSpec a graph implies: its servers (identical GPU counts needed), `gpu` from the
    catalog, the widest GPU link inside a server and the slowest NIC link to the network."""
    from costmodel import get_gpu

    g = topo.graph
    counts = {s: 0 for s in topo.servers}
    for n in topo.gpus:
        counts[g.nodes[n]["server"]] += 1
    if len(set(counts.values())) != 1:
        raise ValueError(f"topology file {filename!r}: servers hold different GPU counts "
                         f"({', '.join(f'{s}: {c}' for s, c in counts.items())}); every server needs the same")
    first = topo.servers[0]
    gpu0 = topo.gpus[0]
    inside = [d for _, v, d in g.edges(gpu0, data=True) if g.nodes[v].get("server") == first
              and g.nodes[v]["kind"] != "nic"]
    outside = [d for u, v, d in g.edges(data=True)
               if {g.nodes[u]["kind"], g.nodes[v]["kind"]} & {"nic"}
               and (g.nodes[u].get("server") is None or g.nodes[v].get("server") is None)]
    if not inside:  # a GPU wired only to its NIC: use that path
        inside = [d for _, _, d in g.edges(gpu0, data=True)]
    best = max(inside, key=lambda d: d["bw_bytes_per_s"])
    intra = LinkSpec(name="topology-intra", bw_bytes_per_s=best["bw_bytes_per_s"], latency_s=2 * best["latency_s"])
    if outside:
        slow = min(outside, key=lambda d: d["bw_bytes_per_s"])
        inter = LinkSpec(name="topology-nic", bw_bytes_per_s=slow["bw_bytes_per_s"], latency_s=2 * slow["latency_s"])
    else:  # one server: no traffic leaves it; the NIC link is never priced
        inter = intra.model_copy(update={"name": "topology-none"})
    nics = sum(1 for n, d in g.nodes(data=True) if d["kind"] == "nic" and d.get("server") == first)
    return _validate(ClusterSpec, {
        "name": topo.name, "gpu": get_gpu(gpu), "num_nodes": len(topo.servers), "gpus_per_node": counts[first],
        "intra_node_link": intra, "inter_node_link": inter, "nics_per_node": max(nics, 1),
        "source": f"uploaded topology file {filename}"}, f"topology file {filename!r}")
