"""The sidebar form every planning page renders: model, cluster, training and search constraints.

Each run rebuilds the specs from the widgets through `ui.problem` (the same pydantic models the CLI
uses); bad input is shown inline with `st.error` and yields no `Problem`, never a traceback.

Streamlit drops a widget's state when a page that does not draw it runs, so every input keeps its
value under a second key (`_keep_<key>`) and is redrawn from it: switching pages keeps the inputs.
Widget keys are the names below (`nodes`, `model_preset`, ...); setting one in the session state
before the first run presets it (the tests do)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from costmodel import ClusterSpec, ModelSpec, get_cluster, list_clusters, list_gpus, list_models, load_model
from costmodel.stacks import DEFAULT_STACK, list_stacks
from ui.problem import (
    DEFAULTS,
    GBIT,
    GBYTE,
    Problem,
    cluster_for_topology,
    cluster_from_inputs,
    cluster_from_upload,
    is_topology_file,
    model_from_fields,
    model_from_upload,
    topology_from_text,
    training_from_inputs,
)

__all__ = ["problem_sidebar", "kept"]

_MODEL_SOURCES = ["Preset", "Custom", "Upload config.json"]
_CLUSTER_SOURCES = ["Preset", "Upload file"]
_DTYPES = ["bf16", "fp16", "fp8", "tf32", "fp32"]
_ANY = "any"


def _keep(key: str) -> str:
    return f"_keep_{key}"


def kept(widget: Callable[..., Any], label: str, *args: Any, key: str, default: Any, **kwargs: Any) -> Any:
    """Draw `widget` (st.number_input, a column's selectbox, ...) whose value survives page switches."""
    ss = st.session_state
    if _keep(key) not in ss:
        ss[_keep(key)] = ss.get(key, default)
    ss[key] = ss[_keep(key)]

    def _sync() -> None:
        ss[_keep(key)] = ss[key]

    value = widget(label, *args, key=key, on_change=_sync, **kwargs)
    ss[_keep(key)] = value
    return value


def _uploaded(label: str, *, key: str, types: list[str]) -> tuple[str, bytes] | None:
    """A file uploader whose file (name, bytes) survives page switches until the user clears it."""
    ss = st.session_state

    def _sync() -> None:
        f = ss.get(key)
        ss[_keep(key)] = (f.name, f.getvalue()) if f is not None else None

    upload = st.file_uploader(label, type=types, key=key, on_change=_sync)
    if upload is not None:
        ss[_keep(key)] = (upload.name, upload.getvalue())
    stored = ss.get(_keep(key))
    if upload is None and stored is not None:
        st.caption(f"Using {stored[0]} (uploaded earlier).")
    return stored


def _model_input() -> ModelSpec | None:
    st.subheader("Model")
    source = kept(st.radio, "Model from", _MODEL_SOURCES, horizontal=True, key="model_source", default="Preset")
    try:
        if source == "Preset":
            return load_model(kept(st.selectbox, "Model preset", list_models(), key="model_preset",
                                   default=DEFAULTS["model"]))
        if source == "Custom":
            c1, c2 = st.columns(2)
            fields: dict[str, Any] = {
                "name": kept(st.text_input, "Name", key="cm_name", default="custom"),
                "arch": kept(c1.selectbox, "Architecture", ["decoder", "encoder", "encoder-decoder"], key="cm_arch",
                             default="decoder"),
                "activation": kept(c2.selectbox, "Activation", ["swiglu", "gelu", "relu", "geglu"], key="cm_act",
                                   default="swiglu"),
                "num_layers": kept(c1.number_input, "Layers", 0, 1024, key="cm_layers", default=32),
                "hidden_size": kept(c2.number_input, "Hidden size", 0, 131072, step=256, key="cm_hidden",
                                    default=4096),
                "num_heads": kept(c1.number_input, "Heads", 1, 1024, key="cm_heads", default=32),
                "num_kv_heads": kept(c2.number_input, "KV heads (0 = heads)", 0, 1024, key="cm_kv", default=8),
                "ffn_hidden_size": kept(c1.number_input, "FFN size (0 = 4h)", 0, 524288, key="cm_ffn",
                                        default=14336),
                "vocab_size": kept(c2.number_input, "Vocabulary", 1, 1_000_000, key="cm_vocab", default=128256),
                "max_seq_len": kept(c1.number_input, "Max sequence", 1, 1_048_576, key="cm_maxseq", default=8192),
            }
            if fields["arch"] == "encoder-decoder":
                fields["num_decoder_layers"] = kept(c2.number_input, "Decoder layers", 1, 1024, key="cm_dec",
                                                    default=12)
            return model_from_fields(fields)
        upload = _uploaded("Hugging Face config.json or ModelSpec YAML/JSON", key="model_upload",
                           types=["json", "yaml", "yml"])
        if upload is None:
            st.info("Upload a config.json to plan for it.")
            return None
        return model_from_upload(upload[1], upload[0])
    except ValueError as exc:
        st.error(f"Model: {exc}")
        return None


def _link_overrides(base: ClusterSpec) -> tuple[float, float]:
    """Link bandwidths, defaulting to the preset's (keys include the links so defaults follow them)."""
    with st.expander("Link bandwidths"):
        tag = f"{base.intra_node_link.name}_{base.inter_node_link.name}"
        intra = kept(st.number_input, "Intra-node, GB/s per GPU", min_value=0.1, key=f"intra_bw_{tag}",
                     default=float(base.intra_node_link.bw_bytes_per_s / GBYTE))
        inter = kept(st.number_input, "Inter-node, Gb/s per NIC", min_value=0.1, key=f"inter_bw_{tag}",
                     default=float(base.inter_node_link.bw_bytes_per_s / GBIT))
        st.caption(f"{base.nics_per_node} NICs per node, {base.gpus_per_node} GPUs per node, "
                   f"{base.network} network")
    return intra * GBYTE, inter * GBIT


def _cluster_input() -> tuple[ClusterSpec | None, str | None]:
    """The cluster, and the text of an uploaded cluster graph (None for a preset's own graph)."""
    st.subheader("Cluster")
    source = kept(st.radio, "Cluster from", _CLUSTER_SOURCES, horizontal=True, key="cluster_source",
                  default="Preset")
    try:
        if source == "Upload file":
            upload = _uploaded("ClusterSpec YAML/JSON, or a topology graph (nodes + links)", key="cluster_upload",
                               types=["yaml", "yml", "json"])
            if upload is None:
                st.info("Upload a ClusterSpec file (gpu, num_nodes, gpus_per_node, links) or a topology graph "
                        "file (nodes and links, as costmodel.network.topology.load_topology reads).")
                return None, None
            name, raw = upload
            if is_topology_file(raw, name):
                gpu = kept(st.selectbox, "GPU", list_gpus(), key="topology_gpu", default="h100-sxm")
                text = raw.decode("utf-8")
                cluster = cluster_for_topology(topology_from_text(text), gpu=gpu, filename=name)
                st.caption(f"Graph {cluster.name}: {cluster.num_nodes} servers x {cluster.gpus_per_node} GPUs; "
                           "communication is priced on this graph.")
                return cluster, text
            nodes = int(kept(st.number_input, "Nodes (if the file has no num_nodes)", min_value=1, max_value=65536,
                             key="nodes", default=DEFAULTS["nodes"]))
            return cluster_from_upload(raw, name, nodes=nodes), None
        nodes = int(kept(st.number_input, "Nodes", min_value=1, max_value=65536, key="nodes",
                         default=DEFAULTS["nodes"]))
        preset = kept(st.selectbox, "Cluster preset", list_clusters(), key="cluster_preset",
                      default=DEFAULTS["cluster"])
        gpu = kept(st.selectbox, "GPU", [_ANY, *list_gpus()], key="gpu", default=_ANY,
                   format_func=lambda g: "preset's GPU" if g == _ANY else g)
        gpu = None if gpu == _ANY else gpu
        base = get_cluster(preset, nodes=nodes, gpu=gpu)
        intra, inter = _link_overrides(base)
        return cluster_from_inputs(preset, nodes=nodes, gpu=gpu, intra_bw_bytes_per_s=intra,
                                   inter_bw_bytes_per_s=inter), None
    except ValueError as exc:
        st.error(f"Cluster: {exc}")
        return None, None


def _training_input(model: ModelSpec | None):
    st.subheader("Training")
    ss = st.session_state
    if model is not None and ss.get("_last_model") != model.name:
        # a new model: keep the sequence length within its maximum
        ss["_last_model"] = model.name
        current = ss.get(_keep("seq_len"), ss.get("seq_len", DEFAULTS["seq_len"]))
        if current > model.max_seq_len:
            ss[_keep("seq_len")] = model.max_seq_len
    c1, c2 = st.columns(2)
    gbs = kept(c1.number_input, "Global batch (sequences)", min_value=1, key="global_batch",
               default=DEFAULTS["global_batch_size"])
    seq = kept(c2.number_input, "Sequence length", min_value=1, key="seq_len", default=DEFAULTS["seq_len"])
    dtype = kept(st.selectbox, "Compute dtype", _DTYPES, key="dtype", default=DEFAULTS["dtype"])
    stack = kept(st.selectbox, "Software stack", list_stacks(), key="stack", default=DEFAULT_STACK,
                 help="what runs the plan: its kernels, overlap and sharding (costmodel/data/stacks); "
                      "every time shown assumes it")
    imbalance = 1.0
    if model is not None and model.is_moe:
        imbalance = kept(st.number_input, "MoE load imbalance (busiest expert-parallel rank / mean)", min_value=1.0,
                         step=0.05, key="moe_imbalance", default=1.0,
                         help="tokens the busiest expert-parallel rank receives relative to the mean; 1 = balanced")
    try:
        return training_from_inputs(global_batch_size=int(gbs), seq_len=int(seq), dtype=dtype, model=model,
                                    stack=stack, moe_load_imbalance=float(imbalance))
    except ValueError as exc:
        st.error(f"Training: {exc}")
        return None


def _constraints_input() -> dict[str, Any]:
    """Knobs to fix or bound, as `planner.search` keyword arguments (only the ones set)."""
    out: dict[str, Any] = {}
    with st.expander("Constraints"):
        st.caption("Fix a knob or bound it; 0 / empty leaves it to the search.")
        c1, c2 = st.columns(2)
        for i, knob in enumerate(("tp", "pp", "dp", "cp", "ep", "max_tp", "max_pp", "max_ep", "micro_batch_size")):
            value = kept((c1 if i % 2 == 0 else c2).number_input, knob, min_value=0, key=f"c_{knob}", default=0)
            if value:
                out[knob] = int(value)
        choices = {"schedule": ["gpipe", "1f1b", "interleaved-1f1b", "zero-bubble"],
                   "recompute": ["none", "selective", "full"], "zero_stage": [0, 1, 2, 3]}
        for i, (knob, options) in enumerate(choices.items()):
            picked = kept((c2 if i % 2 == 0 else c1).multiselect, knob, options, key=f"c_{knob}", default=[])
            if picked:
                out[knob] = list(picked)
        sp = kept(c2.selectbox, "sequence parallel", [_ANY, "on", "off"], key="c_sequence_parallel", default=_ANY)
        if sp != _ANY:
            out["sequence_parallel"] = sp == "on"
        if kept(st.checkbox, "allow using fewer GPUs than the cluster has", key="c_allow_fewer_gpus", default=False):
            out["allow_fewer_gpus"] = True
    return out


_QUERY = {"model": ("model_preset", str), "cluster": ("cluster_preset", str), "nodes": ("nodes", int),
          "gpu": ("gpu", str), "global_batch": ("global_batch", int), "seq_len": ("seq_len", int),
          "dtype": ("dtype", str), "stack": ("stack", str)}
"""URL query parameters that preset inputs (e.g. `?model=gpt3-175b&cluster=dgx-a100&nodes=16`)."""


def _apply_query_params() -> None:
    """Preset inputs from the URL once per session; bad values are ignored with a warning."""
    ss = st.session_state
    if ss.get("_query_applied"):
        return
    ss["_query_applied"] = True
    choices = {"model_preset": list_models(), "cluster_preset": list_clusters(), "gpu": [_ANY, *list_gpus()],
               "dtype": _DTYPES, "stack": list(list_stacks())}
    for name, (key, cast) in _QUERY.items():
        if name not in st.query_params:
            continue
        raw = st.query_params[name]
        try:
            value = cast(raw)
            if (key in choices and value not in choices[key]) or (cast is int and value < 1):
                raise ValueError
        except ValueError:
            st.warning(f"URL parameter {name}={raw!r} ignored (not a known value).")
            continue
        ss[key] = value
        ss.pop(_keep(key), None)


def problem_sidebar() -> Problem | None:
    """Render the problem form in the sidebar; the validated Problem, or None (errors shown inline)."""
    _apply_query_params()
    with st.sidebar:
        model = _model_input()
        cluster, topology_text = _cluster_input()
        training = _training_input(model)
        constraints = _constraints_input()
    if model is None or cluster is None or training is None:
        return None
    return Problem(model=model, cluster=cluster, training=training, constraints=constraints,
                   topology_text=topology_text)
