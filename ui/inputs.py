"""The sidebar form every planning page renders: model, cluster, training and search constraints.

Each run rebuilds the specs from the widgets through `ui.problem` (the same pydantic models the CLI
uses); bad input is shown inline with `st.error` and yields no `Problem`, never a traceback.

Every input keeps its value across pages and numbers are checked inline (`ui.fields`).
Widget keys are the names below (`nodes`, `model_preset`, ...); setting one in the session state
before the first run presets it (the tests do), and so does the URL (`ui.urlstate`: every input here
has a URL name, e.g. `?model=llama3-70b&nodes=64`).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from costmodel import ClusterSpec, ModelSpec, get_cluster, list_clusters, list_gpus, list_models, load_model
from costmodel.stacks import DEFAULT_STACK, list_stacks
from ui import urlstate
from ui.fields import LIMITS, keep_key, kept, number, uploaded
from ui.format import ui_words
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

__all__ = ["problem_sidebar"]

_MODEL_SOURCES = ["Preset", "Custom", "Upload config.json"]
_CLUSTER_SOURCES = ["Preset", "Upload file"]
_DTYPES = ["bf16", "fp16", "fp8", "tf32", "fp32"]
_ANY = "any"


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
                "arch": kept(c1.selectbox, "Architecture", _ARCHS, key="cm_arch", default="decoder"),
                "activation": kept(c2.selectbox, "Activation", _ACTS, key="cm_act", default="swiglu"),
            }
            shown = [(c1 if i % 2 == 0 else c2, *f) for i, f in enumerate(_CUSTOM_NUMBERS)]
            if fields["arch"] == "encoder-decoder":
                shown.append((c2, "Decoder layers", "cm_dec", "num_decoder_layers", 12))
            bad = False
            for col, label, key, field_name, default in shown:
                value = number(col, label, key=key, default=default, limits=LIMITS[key],
                               step=256 if key == "cm_hidden" else 1)
                bad |= value is None
                fields[field_name] = value
            return None if bad else model_from_fields(fields)
        upload = uploaded("Hugging Face config.json or ModelSpec YAML/JSON", key="model_upload",
                           types=["json", "yaml", "yml"])
        if upload is None:
            st.info("Upload a config.json to plan for it.")
            return None
        return model_from_upload(upload[1], upload[0])
    except ValueError as exc:
        st.error(f"Model: {ui_words(str(exc))}")
        return None


def _link_overrides(base: ClusterSpec) -> tuple[float | None, float | None]:
    """Link bandwidths, defaulting to the preset's; a new preset (other links) resets them."""
    ss = st.session_state
    tag = f"{base.intra_node_link.name}_{base.inter_node_link.name}"
    intra_default = round(float(base.intra_node_link.bw_bytes_per_s / GBYTE), 6)
    inter_default = round(float(base.inter_node_link.bw_bytes_per_s / GBIT), 6)
    if ss.get("_link_tag") not in (None, tag):
        for key in ("intra_bw", "inter_bw"):
            ss.pop(key, None)
            ss.pop(keep_key(key), None)
    ss["_link_tag"] = tag
    ss["_link_defaults"] = {"intra_bw": intra_default, "inter_bw": inter_default}
    with st.expander("Link bandwidths"):
        intra = number(st, "Intra-node, GB/s per GPU", key="intra_bw", default=intra_default, kind=float,
                       step=1.0, limits=LIMITS["bw"])
        inter = number(st, "Inter-node, Gb/s per NIC", key="inter_bw", default=inter_default, kind=float,
                       step=1.0, limits=LIMITS["bw"])
        st.caption(f"{base.nics_per_node} NICs per node, {base.gpus_per_node} GPUs per node, "
                   f"{base.network} network")
    return (None if intra is None else intra * GBYTE), (None if inter is None else inter * GBIT)


def _cluster_input() -> tuple[ClusterSpec | None, str | None]:
    """The cluster, and the text of an uploaded cluster graph (None for a preset's own graph)."""
    st.subheader("Cluster")
    source = kept(st.radio, "Cluster from", _CLUSTER_SOURCES, horizontal=True, key="cluster_source",
                  default="Preset")
    try:
        if source == "Upload file":
            upload = uploaded("ClusterSpec YAML/JSON, or a topology graph (nodes + links)", key="cluster_upload",
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
            nodes = number(st, "Nodes (if the file has no num_nodes)", key="nodes", default=DEFAULTS["nodes"],
                           limits=LIMITS["nodes"], what="Nodes")
            return (None, None) if nodes is None else (cluster_from_upload(raw, name, nodes=nodes), None)
        nodes = number(st, "Nodes", key="nodes", default=DEFAULTS["nodes"], limits=LIMITS["nodes"])
        preset = kept(st.selectbox, "Cluster preset", list_clusters(), key="cluster_preset",
                      default=DEFAULTS["cluster"])
        gpu = kept(st.selectbox, "GPU", [_ANY, *list_gpus()], key="gpu", default=_ANY,
                   format_func=lambda g: "preset's GPU" if g == _ANY else g)
        gpu = None if gpu == _ANY else gpu
        base = get_cluster(preset, nodes=nodes or 1, gpu=gpu)
        intra, inter = _link_overrides(base)
        if nodes is None or intra is None or inter is None:
            return None, None
        return cluster_from_inputs(preset, nodes=nodes, gpu=gpu, intra_bw_bytes_per_s=intra,
                                   inter_bw_bytes_per_s=inter), None
    except ValueError as exc:
        st.error(f"Cluster: {ui_words(str(exc))}")
        return None, None


def _training_input(model: ModelSpec | None):
    st.subheader("Training")
    ss = st.session_state
    from_link = "seq_len" in ss.get(urlstate.APPLIED_KEYS, ()) and ss.get("_last_model") is None
    if model is not None and ss.get("_last_model") != model.name and not from_link:
        # another model: keep the sequence length within its maximum (a link's own value is left as is)
        current = ss.get(keep_key("seq_len"), ss.get("seq_len", DEFAULTS["seq_len"]))
        if isinstance(current, int) and current > model.max_seq_len:
            ss[keep_key("seq_len")] = model.max_seq_len
            ss["_seq_lowered"] = f"Sequence length lowered from {current:,} to {model.max_seq_len:,}, the maximum of {model.name}."
    if model is not None:
        ss["_last_model"] = model.name
    c1, c2 = st.columns(2)
    gbs = number(c1, "Global batch (sequences)", key="global_batch", default=DEFAULTS["global_batch_size"],
                 limits=LIMITS["global_batch"], what="Global batch")
    seq = number(c2, "Sequence length", key="seq_len", default=DEFAULTS["seq_len"], limits=LIMITS["seq_len"])
    if ss.get("_seq_lowered"):
        st.caption(ss.pop("_seq_lowered"))
    dtype = kept(st.selectbox, "Compute dtype", _DTYPES, key="dtype", default=DEFAULTS["dtype"])
    stack = kept(st.selectbox, "Software stack", list_stacks(), key="stack", default=DEFAULT_STACK,
                 help="what runs the plan: its kernels, overlap and sharding (costmodel/data/stacks); "
                      "every time shown assumes it")
    imbalance = 1.0
    if model is not None and model.is_moe:
        imbalance = number(st, "MoE load imbalance (busiest expert-parallel rank / mean)", key="moe_imbalance",
                           default=1.0, kind=float, step=0.05, limits=LIMITS["moe_imbalance"],
                           help="tokens the busiest expert-parallel rank receives relative to the mean; 1 = balanced")
    if gbs is None or seq is None or imbalance is None:
        return None
    try:
        return training_from_inputs(global_batch_size=int(gbs), seq_len=int(seq), dtype=dtype, model=model,
                                    stack=stack, moe_load_imbalance=float(imbalance))
    except ValueError as exc:
        st.error(f"Training: {ui_words(str(exc))}")
        return None


_KNOB_LABELS = {"tp": "tp", "pp": "pp", "dp": "dp", "cp": "cp", "ep": "ep", "max_tp": "max tp", "max_pp": "max pp",
                "max_ep": "max ep", "micro_batch_size": "micro-batch"}
_CHOICES = {"schedule": ["gpipe", "1f1b", "interleaved-1f1b", "zero-bubble"],
            "recompute": ["none", "selective", "full"], "zero_stage": [0, 1, 2, 3]}


def _constraints_input() -> dict[str, Any] | None:
    """Knobs to fix or bound, as `planner.search` keyword arguments (only the ones set); None when a
    field is out of range."""
    out: dict[str, Any] = {}
    bad = False
    with st.expander("Constraints", expanded=any(st.session_state.get(f"c_{k}") for k in (*_KNOB_LABELS, *_CHOICES))):
        st.caption("Fix a knob or bound it; 0 / empty leaves it to the search.")
        c1, c2 = st.columns(2)
        for i, (knob, label) in enumerate(_KNOB_LABELS.items()):
            value = number(c1 if i % 2 == 0 else c2, label, key=f"c_{knob}", default=0, limits=LIMITS["constraint"])
            bad |= value is None
            if value:
                out[knob] = int(value)
        for i, (knob, options) in enumerate(_CHOICES.items()):
            picked = kept((c2 if i % 2 == 0 else c1).multiselect, knob.replace("_", " "), options, key=f"c_{knob}",
                          default=[])
            if picked:
                out[knob] = list(picked)
        sp = kept(c2.selectbox, "sequence parallel", [_ANY, "on", "off"], key="c_sequence_parallel", default=_ANY)
        if sp != _ANY:
            out["sequence_parallel"] = sp == "on"
        if kept(st.checkbox, "allow using fewer GPUs than the cluster has", key="c_allow_fewer_gpus", default=False):
            out["allow_fewer_gpus"] = True
    return None if bad else out


_RUN_SOURCES = ["selected", "custom"]
_ARCHS = ["decoder", "encoder", "encoder-decoder"]
_ACTS = ["swiglu", "gelu", "relu", "geglu"]
_CUSTOM_NUMBERS = [  # label, widget key, ModelSpec field, default
    ("Layers", "cm_layers", "num_layers", 32), ("Hidden size", "cm_hidden", "hidden_size", 4096),
    ("Heads", "cm_heads", "num_heads", 32), ("KV heads (0 = heads)", "cm_kv", "num_kv_heads", 8),
    ("FFN size (0 = 4h)", "cm_ffn", "ffn_hidden_size", 14336), ("Vocabulary", "cm_vocab", "vocab_size", 128256),
    ("Max sequence", "cm_maxseq", "max_seq_len", 8192),
]


def _register_url() -> None:
    P = urlstate.Param
    urlstate.register(
        P("model_from", "model_source", "str", "Preset", lambda: _MODEL_SOURCES[:2], "model source"),
        P("model", "model_preset", "str", DEFAULTS["model"], list_models, "model preset"),
        P("cluster_from", "cluster_source", "str", "Preset", lambda: _CLUSTER_SOURCES[:1], "cluster source"),
        P("cluster", "cluster_preset", "str", DEFAULTS["cluster"], list_clusters, "cluster preset"),
        P("nodes", "nodes", "int", DEFAULTS["nodes"], label="Nodes"),
        P("gpu", "gpu", "str", _ANY, lambda: [_ANY, *list_gpus()], "GPU"),
        P("global_batch", "global_batch", "int", DEFAULTS["global_batch_size"], label="Global batch"),
        P("seq_len", "seq_len", "int", DEFAULTS["seq_len"], label="Sequence length"),
        P("dtype", "dtype", "str", DEFAULTS["dtype"], lambda: _DTYPES, "Compute dtype"),
        P("stack", "stack", "str", DEFAULT_STACK, list_stacks, "Software stack"),
        P("moe_imbalance", "moe_imbalance", "float", 1.0, label="MoE load imbalance"),
        P("cm_name", "cm_name", "str", "custom", label="custom model name"),
        P("cm_arch", "cm_arch", "str", "decoder", lambda: _ARCHS, "Architecture"),
        P("cm_act", "cm_act", "str", "swiglu", lambda: _ACTS, "Activation"),
        P("cm_dec", "cm_dec", "int", 12, label="Decoder layers"),
        *(P(key, key, "int", default, label=label) for label, key, _, default in _CUSTOM_NUMBERS),
        *(P(knob, f"c_{knob}", "int", 0, label=f"constraint {label}") for knob, label in _KNOB_LABELS.items()),
        *(P(knob, f"c_{knob}", "list", [], (lambda o=options: o), f"constraint {knob}")
          for knob, options in _CHOICES.items()),
        P("sp", "c_sequence_parallel", "str", _ANY, lambda: [_ANY, "on", "off"], "sequence parallel"),
        P("fewer_gpus", "c_allow_fewer_gpus", "bool", False, label="allow fewer GPUs"),
        P("intra_bw", "intra_bw", "float", None, label="Intra-node GB/s"),  # default: the preset's links
        P("inter_bw", "inter_bw", "float", None, label="Inter-node Gb/s"),
        # the pages' own inputs (their widgets read these keys)
        P("rank", "_url_rank", "int", 1, label="selected plan's rank"),
        P("table_page", "plan_page", "int", 1, label="page of the ranked plans"),
        P("axis", "topo_axis", "str", None, lambda: ["tp", "cp", "ep", "dp", "pp"], "topology axis"),
        P("compare", "_url_compare", "list", [], label="compared ranks"),
        P("vary", "whatif_vary", "str", "nodes", lambda: ["nodes", "gpu", "inter_node_bw", "global_batch", "seq_len"],
          "What-if variable"),
        P("values", "whatif_values", "str", None, label="What-if values"),
        P("price", "whatif_price", "float", 0.0, label="price per GPU-hour"),
        P("run_from", "run_source", "str", "selected", lambda: _RUN_SOURCES, "run plan source"),
        P("run_model", "run_model", "str", "tiny-llama", lambda: ["tiny-llama", "tiny-gpt", "tiny-bert", "small-llama"],
          "run model"),
        P("steps", "run_steps", "int", 20, label="run steps"),
        P("procs", "run_procs", "int", None, label="run processes"),
        P("run_batch", "run_global_batch", "int", 8, label="run global batch"),
        P("run_seq", "run_seq_len", "int", None, label="run sequence length"),
        *(P(f"run_{k}", f"run_{k}", "int", 2 if k == "dp" else 1, label=f"custom plan {k}")
          for k in ("dp", "tp", "pp", "micro_batch_size")),
        P("runs", "_url_runs", "list", [], label="runs shown"),
    )


_register_url()
_SIDEBAR_URL = [n for n, p in urlstate.PARAMS.items() if not p.key.startswith(("_url", "plan_", "topo_", "whatif_", "run_"))]
URL_RANGES = {"nodes": LIMITS["nodes"], "global_batch": LIMITS["global_batch"], "seq_len": LIMITS["seq_len"]}
"""Link values outside these get a notice (they still go into their field, with its error)."""


def _publish_sidebar() -> None:
    ss = st.session_state
    values = {name: ss.get(urlstate.PARAMS[name].key) for name in _SIDEBAR_URL}
    if values["model_from"] != "Custom":
        values.update({n: None for n in values if n.startswith("cm_")})
    if ss.get("cluster_source") != "Preset":
        values.update(cluster_from=None, cluster=None, gpu=None)
    for key, default in ss.get("_link_defaults", {}).items():
        if values.get(key) == default:
            values[key] = None
    urlstate.publish(values)


def problem_sidebar() -> Problem | None:
    """Render the problem form in the sidebar; the validated Problem, or None (errors shown inline)."""
    urlstate.apply_url(ranges=URL_RANGES)
    urlstate.show_notices()
    with st.sidebar:
        model = _model_input()
        cluster, topology_text = _cluster_input()
        training = _training_input(model)
        constraints = _constraints_input()
        if "Upload" in (st.session_state.get("model_source", ""), st.session_state.get("cluster_source", "")):
            st.caption("Uploaded files are not part of the page's link; the other inputs are.")
    _publish_sidebar()
    if model is None or cluster is None or training is None or constraints is None:
        return None
    return Problem(model=model, cluster=cluster, training=training, constraints=constraints,
                   topology_text=topology_text)
