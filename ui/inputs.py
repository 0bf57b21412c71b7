"""The sidebar form shared by every page: model, cluster, training and search constraints.

Each run rebuilds the specs from the widgets through `ui.problem` (the same pydantic models the CLI
uses); bad input is shown inline with `st.error` and yields no `Problem`, never a traceback."""

from __future__ import annotations

from typing import Any

import streamlit as st

from costmodel import ClusterSpec, ModelSpec, get_cluster, list_clusters, list_gpus, list_models, load_model
from ui.problem import (
    DEFAULTS,
    GBIT,
    GBYTE,
    Problem,
    cluster_from_inputs,
    cluster_from_upload,
    model_from_fields,
    model_from_upload,
    training_from_inputs,
)

__all__ = ["problem_sidebar"]

_MODEL_SOURCES = ["Preset", "Custom", "Upload config.json"]
_CLUSTER_SOURCES = ["Preset", "Upload file"]
_DTYPES = ["bf16", "fp16", "fp8", "tf32", "fp32"]
_ANY = "any"


def _model_input() -> ModelSpec | None:
    st.subheader("Model")
    source = st.radio("Model from", _MODEL_SOURCES, horizontal=True, key="model_source")
    try:
        if source == "Preset":
            models = list_models()
            return load_model(st.selectbox("Model preset", models, key="model_preset"))
        if source == "Custom":
            c1, c2 = st.columns(2)
            fields: dict[str, Any] = {
                "name": st.text_input("Name", "custom", key="cm_name"),
                "arch": c1.selectbox("Architecture", ["decoder", "encoder", "encoder-decoder"], key="cm_arch"),
                "activation": c2.selectbox("Activation", ["swiglu", "gelu", "relu", "geglu"], key="cm_act"),
                "num_layers": c1.number_input("Layers", 0, 1024, 32, key="cm_layers"),
                "hidden_size": c2.number_input("Hidden size", 0, 131072, 4096, step=256, key="cm_hidden"),
                "num_heads": c1.number_input("Heads", 1, 1024, 32, key="cm_heads"),
                "num_kv_heads": c2.number_input("KV heads (0 = heads)", 0, 1024, 8, key="cm_kv"),
                "ffn_hidden_size": c1.number_input("FFN size (0 = 4h)", 0, 524288, 14336, key="cm_ffn"),
                "vocab_size": c2.number_input("Vocabulary", 1, 1_000_000, 128256, key="cm_vocab"),
                "max_seq_len": c1.number_input("Max sequence", 1, 1_048_576, 8192, key="cm_maxseq"),
            }
            if fields["arch"] == "encoder-decoder":
                fields["num_decoder_layers"] = c2.number_input("Decoder layers", 1, 1024, 12, key="cm_dec")
            return model_from_fields(fields)
        upload = st.file_uploader("Hugging Face config.json or ModelSpec YAML/JSON", type=["json", "yaml", "yml"],
                                  key="model_upload")
        if upload is None:
            st.info("Upload a config.json to plan for it.")
            return None
        return model_from_upload(upload.getvalue(), upload.name)
    except ValueError as exc:
        st.error(f"Model: {exc}")
        return None


def _link_overrides(base: ClusterSpec) -> tuple[float | None, float | None]:
    """Link bandwidths, defaulting to the preset's (keys include the preset so defaults follow it)."""
    with st.expander("Link bandwidths"):
        tag = f"{base.intra_node_link.name}_{base.inter_node_link.name}"
        intra = st.number_input("Intra-node, GB/s per GPU", min_value=0.1,
                                value=float(base.intra_node_link.bw_bytes_per_s / GBYTE), key=f"intra_bw_{tag}")
        inter = st.number_input("Inter-node, Gb/s per NIC", min_value=0.1,
                                value=float(base.inter_node_link.bw_bytes_per_s / GBIT), key=f"inter_bw_{tag}")
        st.caption(f"{base.nics_per_node} NICs per node, {base.gpus_per_node} GPUs per node, "
                   f"{base.network} network")
    return intra * GBYTE, inter * GBIT


def _cluster_input() -> ClusterSpec | None:
    st.subheader("Cluster")
    source = st.radio("Cluster from", _CLUSTER_SOURCES, horizontal=True, key="cluster_source")
    try:
        nodes = int(st.number_input("Nodes", min_value=1, max_value=65536, key="nodes"))
        if source == "Upload file":
            upload = st.file_uploader("ClusterSpec YAML/JSON (gpu and links may be catalog names)",
                                      type=["yaml", "yml", "json"], key="cluster_upload")
            if upload is None:
                st.info("Upload a cluster file to plan for it.")
                return None
            return cluster_from_upload(upload.getvalue(), upload.name, nodes=nodes)
        clusters = list_clusters()
        preset = st.selectbox("Cluster preset", clusters, key="cluster_preset")
        gpu = st.selectbox("GPU", [_ANY, *list_gpus()], format_func=lambda g: "preset's GPU" if g == _ANY else g,
                           key="gpu")
        gpu = None if gpu == _ANY else gpu
        base = get_cluster(preset, nodes=nodes, gpu=gpu)
        intra, inter = _link_overrides(base)
        return cluster_from_inputs(preset, nodes=nodes, gpu=gpu, intra_bw_bytes_per_s=intra,
                                   inter_bw_bytes_per_s=inter)
    except ValueError as exc:
        st.error(f"Cluster: {exc}")
        return None


def _training_input(model: ModelSpec | None):
    st.subheader("Training")
    if model is not None and st.session_state.get("_last_model") != model.name:
        # a new model: keep the sequence length within its maximum
        st.session_state["_last_model"] = model.name
        if st.session_state.get("seq_len", DEFAULTS["seq_len"]) > model.max_seq_len:
            st.session_state["seq_len"] = model.max_seq_len
    c1, c2 = st.columns(2)
    gbs = c1.number_input("Global batch (sequences)", min_value=1, key="global_batch")
    seq = c2.number_input("Sequence length", min_value=1, key="seq_len")
    dtype = st.selectbox("Compute dtype", _DTYPES, key="dtype")
    try:
        return training_from_inputs(global_batch_size=int(gbs), seq_len=int(seq), dtype=dtype, model=model)
    except ValueError as exc:
        st.error(f"Training: {exc}")
        return None


def _constraints_input() -> dict[str, Any]:
    """Knobs to fix or bound, as `planner.search` keyword arguments (only the ones set)."""
    out: dict[str, Any] = {}
    with st.expander("Constraints"):
        st.caption("Fix a knob or bound it; 'any' leaves it to the search.")
        c1, c2 = st.columns(2)
        for col, axis in ((c1, "tp"), (c2, "pp"), (c1, "dp"), (c2, "cp")):
            value = col.number_input(f"{axis} (0 = any)", min_value=0, value=0, key=f"c_{axis}")
            if value:
                out[axis] = int(value)
        for col, axis in ((c1, "max_tp"), (c2, "max_pp")):
            value = col.number_input(f"{axis} (0 = none)", min_value=0, value=0, key=f"c_{axis}")
            if value:
                out[axis] = int(value)
        mb = c1.number_input("micro-batch (0 = any)", min_value=0, value=0, key="c_micro_batch_size")
        if mb:
            out["micro_batch_size"] = int(mb)
        choices = {
            "schedule": ["gpipe", "1f1b", "interleaved-1f1b", "zero-bubble"],
            "recompute": ["none", "selective", "full"],
            "zero_stage": [0, 1, 2, 3],
        }
        for i, (knob, options) in enumerate(choices.items()):
            picked = (c2 if i % 2 == 0 else c1).multiselect(knob, options, key=f"c_{knob}")
            if picked:
                out[knob] = list(picked)
        sp = c2.selectbox("sequence parallel", [_ANY, "on", "off"], key="c_sequence_parallel")
        if sp != _ANY:
            out["sequence_parallel"] = sp == "on"
        if st.checkbox("allow using fewer GPUs than the cluster has", key="c_allow_fewer_gpus"):
            out["allow_fewer_gpus"] = True
    return out


_WIDGET_DEFAULTS = {"model_preset": DEFAULTS["model"], "cluster_preset": DEFAULTS["cluster"],
                    "nodes": DEFAULTS["nodes"], "global_batch": DEFAULTS["global_batch_size"],
                    "seq_len": DEFAULTS["seq_len"], "dtype": DEFAULTS["dtype"]}


def problem_sidebar() -> Problem | None:
    """Render the problem form in the sidebar; the validated Problem, or None (errors shown inline).
    Defaults live in the session state (not in the widgets), so callers and tests may preset any."""
    for key, value in _WIDGET_DEFAULTS.items():
        st.session_state.setdefault(key, value)
    with st.sidebar:
        model = _model_input()
        cluster = _cluster_input()
        training = _training_input(model)
        constraints = _constraints_input()
    if model is None or cluster is None or training is None:
        return None
    return Problem(model=model, cluster=cluster, training=training, constraints=constraints)
