"""Property-based fuzzing of paraplan's public API and CLI (hypothesis): random and hostile model,
cluster, training and plan specs, plan files, model and Hugging Face config files, search constraints
and sweep values, and command lines built from them.

The property: every call ends, within `LIMIT_S` CPU-seconds and `LIMIT_BYTES` of memory above where it
started, either in a result whose numbers are finite and non-negative (NaN only where the API
documents it: a sweep point or an `estimate_batch` row without a plan), or in a ValueError/OSError
(a pydantic ValidationError is a ValueError) with a one-line message; a command line ends with exit 0
or 1 and its normal output, or exit 2 and one line 'paraplan: error: ...', never a traceback. A few
cross-checks come with it: `estimate_batch` rows equal `estimate`, and `estimate(timeline=True)`
equals `estimate()`.

Enforcement: API cases run in this process under a CPU-time timer (ITIMER_PROF), with the
resident-set high-water mark reset before each call (/proc/self/clear_refs) and read after it; CLI
cases run `planner.cli.main` in a forked child with RLIMIT_AS (its address space + `LIMIT_BYTES` +
slack), RLIMIT_CPU and a wall-clock guard against hangs, its CPU time and peak RSS read from wait4. `tests/test_trust_fuzz.py` runs a bounded profile (`make test`);
`python -m benchmarks fuzz` a long one (>= 10,000 cases) and records the figures."""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import re
import resource
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from costmodel import (
    ClusterSpec,
    ModelSpec,
    ParallelPlan,
    StepEstimate,
    TrainingSpec,
    estimate,
    estimate_batch,
    format_validation_error,
    get_cluster,
    list_clusters,
    list_gpus,
    list_models,
    load_model,
    load_plan,
    model_from_hf_config,
)
from planner import Constraints, SearchResult, build_space, search, sweep

__all__ = ["LIMIT_S", "LIMIT_BYTES", "Case", "Outcome", "Tally", "cases", "run_case"]

LIMIT_S = 10.0
"""CPU seconds one call may take (CPU, not wall time: the suite shares 2 cores with other jobs)."""
WALL_GUARD_S = 120.0
"""Wall seconds after which a CLI case counts as hung."""
LIMIT_BYTES = 2 << 30
MAX_MESSAGE = 2000

# ------------------------------------------------------------------------------------------ values
HOSTILE = st.sampled_from([0, -1, -(2 ** 63), 2 ** 31, 2 ** 63, 10 ** 30, True, False, 1.5, 8.0, float("nan"),
                           float("inf"), -0.0, "8", "", "x" * 300, None, [], {}, [8], "nan"])
"""What a user (or a broken file) may put where a number belongs."""


def _often(good: st.SearchStrategy, bad: st.SearchStrategy = HOSTILE, *, odds: int = 40) -> st.SearchStrategy:
    """`good` most of the time, `bad` now and then (about 1 in `odds`; the middle draw, not 0, which
    hypothesis favours as the simplest)."""
    return st.integers(0, odds - 1).flatmap(lambda i: bad if i == odds // 2 else good)


def _corrupt(draw: Any, data: dict[str, Any], *, odds: int = 4) -> dict[str, Any]:
    """`data`, or (about 1 in `odds`) with one or two fields replaced by hostile values."""
    if not data or draw(st.integers(0, odds - 1)) != odds // 2:
        return data
    out = dict(data)
    for key in draw(st.lists(st.sampled_from(sorted(out)), min_size=1, max_size=2, unique=True)):
        out[key] = draw(HOSTILE)
    return out


POW2 = st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536])
SMALL = st.one_of(POW2, st.integers(1, 130))
HUGE = st.sampled_from([2 ** 20, 2 ** 24, 2 ** 30, 10 ** 9, 10 ** 12, 10 ** 18])


@st.composite
def extreme_models(draw: Any) -> dict[str, Any]:
    """A ModelSpec at or near the limits paraplan models (docs/LIMITS.md): every size valid, the
    products (parameters, FLOPs, bytes) as large as they get."""
    heads = draw(st.sampled_from([1, 2 ** 8, 2 ** 16]))
    head_dim = draw(st.sampled_from([1, 16])) if heads == 2 ** 16 else draw(st.sampled_from([1, 64, 2 ** 12]))
    return {"name": "extreme", "arch": draw(st.sampled_from(["decoder", "encoder", "encoder-decoder"])),
            "num_layers": draw(st.sampled_from([1, 2, 512])), "hidden_size": heads * head_dim, "num_heads": heads,
            "ffn_hidden_size": draw(st.sampled_from([1, 2 ** 20])), "vocab_size": draw(st.sampled_from([1, 2 ** 24])),
            "max_seq_len": draw(st.sampled_from([1, 2 ** 12, 2 ** 24])),
            "num_decoder_layers": None, "activation": draw(st.sampled_from(["gelu", "swiglu"]))}


@st.composite
def model_dicts(draw: Any) -> dict[str, Any]:
    """A ModelSpec as a dict: mostly a plausible Transformer, with hostile fields now and then, and
    now and then one at the limits."""
    if draw(st.integers(0, 7)) == 3:
        data = draw(extreme_models())
        if data["arch"] == "encoder-decoder":
            data["num_decoder_layers"] = data["num_layers"]
        return {k: v for k, v in data.items() if v is not None}
    heads = draw(st.sampled_from([1, 2, 3, 4, 8, 12, 16, 20, 32, 40, 64, 96, 128]))
    head_dim = draw(st.sampled_from([1, 8, 16, 32, 64, 80, 128, 256]))
    kv = draw(st.sampled_from([d for d in (1, 2, 4, 8, 16, heads) if heads % d == 0]))
    arch = draw(st.sampled_from(["decoder", "decoder", "decoder", "encoder", "encoder-decoder"]))
    layers = draw(_often(st.one_of(st.integers(1, 8), st.sampled_from([12, 24, 32, 40, 80, 96, 128, 1000])), HUGE, odds=15))
    data: dict[str, Any] = {
        "name": draw(st.sampled_from(["fuzz", "m", "x" * 120])), "arch": arch,
        "num_layers": draw(_often(st.just(layers))),
        "hidden_size": draw(_often(st.just(heads * head_dim))),
        "num_heads": draw(_often(st.just(heads))),
        "num_kv_heads": draw(_often(st.sampled_from([None, kv]))),
        "ffn_hidden_size": draw(_often(st.one_of(st.none(), st.integers(1, 8).map(lambda k: k * heads * head_dim),
                                                 st.integers(1, 50000)))),
        "activation": draw(_often(st.sampled_from(["gelu", "swiglu", "relu", "geglu"]), st.sampled_from(["tanh", 1]))),
        "vocab_size": draw(_often(st.integers(1, 300000), st.sampled_from([2 ** 24, 2 ** 25]), odds=10)),
        "max_seq_len": draw(_often(st.one_of(POW2, st.integers(1, 70000), HUGE))),
        "norm": draw(st.sampled_from(["layernorm", "rmsnorm"])),
        "position": draw(st.sampled_from(["learned", "rope", "relative"])),
        "tie_embeddings": draw(_often(st.booleans())), "bias": draw(_often(st.booleans())),
    }
    if arch == "encoder-decoder":
        data["num_decoder_layers"] = draw(_often(st.integers(1, 48)))
    if draw(st.booleans()):
        data["head_dim"] = draw(_often(st.just(head_dim)))
    if draw(st.integers(0, 20)) == 10:
        data[draw(st.sampled_from(["num_layer", "hidden", "bogus"]))] = 1
    if draw(st.integers(0, 20)) == 10:
        data.pop(draw(st.sampled_from(sorted(data))), None)
    return _corrupt(draw, {k: v for k, v in data.items() if v is not None}, odds=6)


EXTREME = st.sampled_from([1e-300, 1e-30, 1.0, 1e30, 1e300])
"""Valid but absurd magnitudes for rates, capacities and bandwidths."""


def _gpu_dict(draw: Any) -> dict[str, Any]:
    dtypes = ["bf16", *draw(st.lists(st.sampled_from(["fp32", "tf32", "fp16", "fp8"]), max_size=4, unique=True))]
    if draw(st.integers(0, 8)) == 4:
        dtypes = dtypes[1:] or ["fp32"]
    rate = _often(st.floats(1e9, 1e16), st.one_of(EXTREME, st.sampled_from([0.0, -1.0, float("inf"), float("nan"), True])),
                  odds=6)
    return {"name": "fuzz-gpu", "peak_flops_per_s": {d: draw(rate) for d in dtypes},
            "hbm_bytes": draw(_often(st.floats(1e6, 1e13), st.one_of(EXTREME, st.sampled_from([0, float("inf")])), odds=6)),
            "hbm_bw_bytes_per_s": draw(_often(st.floats(1e6, 1e14), EXTREME, odds=6))}


def _link_dict(draw: Any) -> dict[str, Any]:
    return {"name": "fuzz-link", "bw_bytes_per_s": draw(_often(st.floats(1.0, 1e13), st.one_of(EXTREME, st.just(0.0)), odds=6)),
            "latency_s": draw(_often(st.floats(0.0, 1e-2), st.sampled_from([-1e-6, 0.0, 1e-300, 1e6, 1e300]), odds=6))}


@st.composite
def clusters(draw: Any, *, max_nodes: int = 2 ** 17) -> tuple[str, dict[str, Any]]:
    """('preset', name/nodes/gpu/overrides) or ('spec', a ClusterSpec dict)."""
    nodes = draw(_often(st.one_of(st.integers(1, 4), st.integers(1, 4), st.integers(1, 64),
                                  st.integers(1, max_nodes).filter(lambda n: n > 64)),
                        st.sampled_from([0, -3, 2 ** 20, 10 ** 6, 10 ** 12, True]), odds=20))
    if draw(st.integers(0, 3)):
        over: dict[str, Any] = {}
        if draw(st.integers(0, 5)) == 2:
            over["oversubscription"] = draw(_often(st.floats(1.0, 64.0), st.sampled_from([0.5, float("inf"), "2:1"])))
        if draw(st.integers(0, 6)) == 3:
            over["nics_per_node"] = draw(_often(st.sampled_from([1, 2, 3, 4, 8, 16]), st.sampled_from([0, 10 ** 6])))
        if draw(st.integers(0, 6)) == 3:
            over["gpus_per_node"] = draw(_often(st.sampled_from([1, 2, 3, 4, 6, 8, 16, 72]), st.sampled_from([0, 10 ** 5])))
        return "preset", {"name": draw(st.sampled_from(list_clusters())), "nodes": nodes,
                          "gpu": draw(st.one_of(st.none(), st.none(), st.sampled_from(list_gpus()))), "over": over}
    spec = {"name": "fuzz", "gpu": _gpu_dict(draw), "num_nodes": nodes,
            "gpus_per_node": draw(_often(st.sampled_from([1, 2, 3, 4, 8, 16]))),
            "intra_node_link": _link_dict(draw), "inter_node_link": _link_dict(draw),
            "nics_per_node": draw(_often(st.sampled_from([1, 2, 4, 8]))),
            "intra_node_topology": draw(st.sampled_from(["nvswitch", "pcie", "none", "cube-mesh"])),
            "network": draw(st.sampled_from(["rail-optimized", "fat-tree", "leaf-spine"])),
            "oversubscription": draw(_often(st.floats(1.0, 8.0)))}
    return "spec", _corrupt(draw, spec, odds=6)


@st.composite
def trainings(draw: Any) -> dict[str, Any]:
    if draw(st.integers(0, 7)) == 3:   # at the limits
        return {"global_batch_size": draw(st.sampled_from([1, 2 ** 24])), "seq_len": draw(st.sampled_from([1, 2 ** 12, 2 ** 24])),
                "dtype": draw(st.sampled_from(["fp32", "bf16"])), "flash_attention": draw(st.booleans())}
    return _corrupt(draw, {"global_batch_size": draw(_often(st.one_of(SMALL, st.integers(1, 5000)), st.one_of(HOSTILE, HUGE))),
            "seq_len": draw(_often(st.one_of(POW2, st.integers(1, 9000)), st.one_of(HOSTILE, HUGE))),
            "dtype": draw(_often(st.sampled_from(["bf16", "bf16", "fp16", "fp32", "tf32", "fp8"]), st.just("fp4"))),
            "optimizer": draw(st.sampled_from(["adamw", "adam", "sgd"])),
            "grad_dtype": draw(st.sampled_from([None, "fp32", "bf16"])),
            "flash_attention": draw(_often(st.booleans()))}, odds=8)


def _split(draw: Any, layers: int, stages: int) -> list[int]:
    if stages < 1 or stages > 64 or layers > 4096:
        return [1] * max(1, min(stages, 64))
    cuts = sorted(draw(st.lists(st.integers(0, layers), min_size=stages - 1, max_size=stages - 1)))
    return [b - a for a, b in zip([0, *cuts], [*cuts, layers], strict=True)]


@st.composite
def plan_dicts(draw: Any, *, world: int = 8, layers: int = 24) -> dict[str, Any]:
    """A ParallelPlan dict, mostly shaped to `world` GPUs and `layers` blocks."""
    pp = draw(st.sampled_from([1, 1, 2, 3, 4, 8, 16]))
    tp = draw(st.sampled_from([1, 1, 2, 4, 8]))
    cp = draw(st.sampled_from([1, 1, 1, 2, 4]))
    rest = world // max(1, tp * pp * cp)
    dp = draw(st.one_of(st.just(max(rest, 1)), st.sampled_from([1, 2, 3, 8])))
    v = draw(st.sampled_from([1, 1, 2, 3, 4]))
    schedule = "interleaved-1f1b" if v > 1 else draw(st.sampled_from(["gpipe", "1f1b", "zero-bubble"]))
    data: dict[str, Any] = {
        "dp": draw(_often(st.just(dp))), "tp": draw(_often(st.just(tp))), "pp": draw(_often(st.just(pp))),
        "cp": draw(_often(st.just(cp))), "micro_batch_size": draw(_often(st.sampled_from([1, 1, 2, 4, 8, 16]))),
        "virtual_stages": draw(_often(st.just(v))), "schedule": draw(_often(st.just(schedule), st.just("1F1B"))),
        "zero_stage": draw(_often(st.sampled_from([0, 1, 2, 3]), st.sampled_from([4, True, "1"]))),
        "recompute": draw(st.sampled_from(["none", "selective", "full"])),
        "sequence_parallel": draw(_often(st.just(tp > 1 and draw(st.booleans())), st.just(1))),
    }
    if draw(st.integers(0, 4)) == 2:
        data["layers_per_stage"] = _split(draw, layers, pp * v)
    if draw(st.integers(0, 5)) == 2:
        data["placement"] = draw(st.permutations(["tp", "cp", "dp", "pp"]))
    if draw(st.integers(0, 25)) == 12:
        data["ep"] = 2
    return _corrupt(draw, data, odds=8)


@st.composite
def hf_configs(draw: Any) -> dict[str, Any]:
    """A Hugging Face config.json as a dict (gpt2, llama-style, bert, t5 families), hostile now and then."""
    mtype = draw(_often(st.sampled_from(["gpt2", "llama", "mistral", "qwen2", "bert", "roberta", "t5"]),
                        st.sampled_from(["mixtral", "", 7, None])))
    heads = draw(st.sampled_from([1, 2, 4, 8, 12, 16, 32]))
    hd = draw(st.sampled_from([16, 32, 64, 128]))
    n = lambda good: draw(_often(good))  # noqa: E731
    common = {"vocab_size": n(st.integers(1, 200000))}
    if mtype == "gpt2":
        cfg = {"n_layer": n(st.integers(1, 48)), "n_embd": n(st.just(heads * hd)), "n_head": n(st.just(heads)),
               "n_positions": n(POW2), "n_inner": draw(st.sampled_from([None, 0, 4 * heads * hd]))}
    elif mtype == "t5":
        cfg = {"num_layers": n(st.integers(1, 24)), "num_decoder_layers": n(st.integers(0, 24)),
               "d_model": n(st.just(heads * hd)), "num_heads": n(st.just(heads)), "d_kv": n(st.just(hd)),
               "d_ff": n(st.integers(1, 10000)),
               "feed_forward_proj": draw(_often(st.sampled_from(["relu", "gated-gelu"]), st.just("swish-ish")))}
    else:
        cfg = {"num_hidden_layers": n(st.integers(1, 80)), "hidden_size": n(st.just(heads * hd)),
               "num_attention_heads": n(st.just(heads)), "intermediate_size": n(st.integers(1, 30000)),
               "max_position_embeddings": n(POW2),
               "hidden_act": draw(_often(st.sampled_from(["silu", "gelu", "gelu_new", "relu"]),
                                         st.sampled_from(["tanh", "quick_gelu", 3])))}
        if mtype != "bert" and mtype != "roberta":
            cfg["num_key_value_heads"] = n(st.sampled_from([d for d in (1, 2, 4, heads) if heads % d == 0]))
    cfg = {"model_type": mtype, **common, **cfg}
    if draw(st.integers(0, 12)) == 6:
        cfg.pop(draw(st.sampled_from(sorted(cfg))))
    cfg = {k: v for k, v in cfg.items() if v is not None or draw(st.booleans())}
    return _corrupt(draw, cfg, odds=6)


FILE_TEXT = st.one_of(st.just(""), st.just("{"), st.just("[1, 2]"), st.just("null"), st.just("\x00\xff"),
                      st.just("[" * 5000 + "]" * 5000), st.just("a: &a [*a]"), st.text(max_size=200))
"""Broken file contents: empty, truncated, not a mapping, binary, deeply nested, a self-referencing
YAML alias, random text."""


# ------------------------------------------------------------------------------------------ cases
@dataclass
class Case:
    """One fuzz case: its kind and what it needs; `run(tmp)` performs it (API) or `argv` (CLI)."""

    kind: str
    data: dict[str, Any]
    argv: list[str] | None = None
    files: dict[str, str] = field(default_factory=dict)

    def short(self) -> str:
        text = json.dumps(self.argv if self.argv is not None else self.data, default=repr)
        return f"{self.kind}: {text if len(text) <= 4000 else text[:4000] + '...'}"


@st.composite
def api_cases(draw: Any) -> Case:
    kind = draw(st.sampled_from(["estimate"] * 6 + ["batch"] * 2 + ["search"] * 2 + ["sweep", "model_file",
                                 "hf_config", "plan_file", "specs"]))
    model = draw(st.one_of(model_dicts(), st.sampled_from(list_models())))
    if kind == "search" or kind == "sweep":
        cl = draw(clusters(max_nodes=64))
    else:
        cl = draw(clusters())
    train = draw(trainings())
    world = 8
    if cl[0] == "preset" and isinstance(cl[1]["nodes"], int) and not isinstance(cl[1]["nodes"], bool):
        world = max(1, min(cl[1]["nodes"], 2 ** 20)) * 8
    layers = model.get("num_layers", 24) if isinstance(model, dict) else 24
    layers = layers if isinstance(layers, int) and 0 < layers < 2000 else 24
    data: dict[str, Any] = {"model": model, "cluster": cl, "training": train,
                            "plan": draw(plan_dicts(world=world, layers=layers))}
    if kind in ("estimate", "batch"):   # most plans are picked from the planner's valid space
        data["pick"] = draw(_often(st.integers(0, 2 ** 31), st.none(), odds=4))
        data["split"] = draw(st.integers(0, 3)) == 1
        data["per_gpu"] = draw(st.sampled_from([None, None, 1, 2, 8]))
    if kind == "estimate":
        data["timeline"] = draw(st.integers(0, 7)) == 1
    elif kind == "batch":
        data["plans"] = draw(st.lists(plan_dicts(world=world, layers=layers), min_size=1, max_size=6))
        data["keep_split"] = draw(st.integers(0, 9)) == 5
    elif kind == "search":
        data["top_k"] = draw(_often(st.integers(1, 12), st.sampled_from([0, -1, True, 2.5])))
        cons = {}
        for key, strat in (("tp", st.sampled_from([1, 2, 4, 8, [1, 2], 0, 3])), ("max_pp", st.sampled_from([1, 2, 4, 16, 10 ** 9])),
                           ("schedule", st.sampled_from(["1f1b", "gpipe", ["1f1b", "zero-bubble"], "nope"])),
                           ("zero_stage", st.sampled_from([0, 1, 3, (1, 2), 5])), ("recompute", st.sampled_from(["full", "none"])),
                           ("micro_batch_size", st.sampled_from([1, 2, [1, 4], 10 ** 9])),
                           ("max_virtual_stages", st.sampled_from([1, 2, 8, 10 ** 9])),
                           ("allow_fewer_gpus", st.sampled_from([True, False, "yes"])),
                           ("placement", st.sampled_from(["tp-first", "all", [["tp", "dp", "cp", "pp"]], ["bad"]])),
                           ("rebalance", st.booleans()), ("bogus", st.just(1))):
            if draw(st.integers(0, 6)) == 3:
                cons[key] = draw(strat)
        data["constraints"] = cons
    elif kind == "sweep":
        vary = draw(_often(st.sampled_from(["nodes", "gpu", "inter_node_bw", "global_batch", "seq_len"]), st.just("tp")))
        values = {"nodes": st.sampled_from([1, 2, 4, "8", 0, 2.5, "x", 10 ** 9]),
                  "gpu": st.sampled_from(list_gpus() + ["z100"]),
                  "inter_node_bw": st.sampled_from(["400Gbps", "50GB/s", 1e9, "0Gbps", "fast", -1]),
                  "global_batch": st.sampled_from([8, 16, 64, 0, "12", 10 ** 12]),
                  "seq_len": st.sampled_from([128, 512, 2048, 0, 10 ** 9])}.get(vary, st.sampled_from([1, 2]))
        data.update(vary=vary, values=draw(_often(st.lists(values, min_size=1, max_size=3), st.just([]), odds=10)),
                    per_gpu=draw(st.sampled_from([None, None, 1, 8, 0])))
    elif kind == "model_file":
        content = draw(st.one_of(model_dicts().map(json.dumps), hf_configs().map(json.dumps), FILE_TEXT))
        data["file"] = (draw(st.sampled_from(["m.json", "m.yaml", "config.json", "folder", "emptydir"])), content)
    elif kind == "hf_config":
        data["config"] = draw(hf_configs())
    elif kind == "plan_file":
        content = draw(st.one_of(plan_dicts(world=world, layers=layers).map(json.dumps), FILE_TEXT,
                                 plan_dicts().map(lambda p: json.dumps({"plan": p}))))
        data["file"] = content
    return Case(kind, data)


def build_model(spec: Any) -> ModelSpec:
    return load_model(spec) if isinstance(spec, str) else ModelSpec.model_validate(spec)


def build_cluster(spec: tuple[str, dict[str, Any]]) -> ClusterSpec:
    kind, d = spec
    if kind == "preset":
        return get_cluster(d["name"], nodes=d["nodes"], gpu=d["gpu"], **d["over"])
    return ClusterSpec.model_validate(d)


def _prepare(case: Case, tmp: Path) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    """(call, check): the API call of `case`, timed and measured, and the cross-checks of its result,
    run after it (not timed). Files are written and specs built here; a bad spec raises here, as the
    API refusing it."""
    d = case.data
    none = lambda result: None  # noqa: E731
    if case.kind == "hf_config":
        return lambda: model_from_hf_config(d["config"]), none
    if case.kind == "model_file":
        name, content = d["file"]
        path = tmp / name
        if name == "emptydir":
            path.mkdir()
        else:   # a model folder holds config.json
            file = path / "config.json" if name == "folder" else path
            file.parent.mkdir(exist_ok=True)
            file.write_text(content, errors="surrogateescape")
        return lambda: load_model(path), none
    if case.kind == "plan_file":
        path = tmp / "plan.json"
        path.write_text(d["file"], errors="surrogateescape")
        return lambda: load_plan(path), none
    model, cluster = build_model(d["model"]), build_cluster(d["cluster"])
    train = dict(d["training"])
    if d.get("per_gpu") and isinstance(train.get("seq_len"), int):
        train["global_batch_size"] = d["per_gpu"] * cluster.num_gpus
    if d.get("pick") is not None and isinstance(train.get("seq_len"), int) and not isinstance(train["seq_len"], bool):
        train["seq_len"] = max(1, min(train["seq_len"], model.max_seq_len))
    training = TrainingSpec.model_validate(train)
    if case.kind == "specs":
        return lambda: (model, cluster, training, ParallelPlan.model_validate(d["plan"])), none
    if case.kind == "estimate":
        plan = _pick(d, model, cluster, training) or ParallelPlan.model_validate(d["plan"])

        def same_without_timeline(est: StepEstimate) -> None:
            if d["timeline"]:   # the timeline never changes a figure
                plain = estimate(model, cluster, training, plan)
                _expect(plain.model_dump(exclude={"timeline"}) == est.model_dump(exclude={"timeline"}),
                        "estimate(timeline=True) differs from estimate()")
        return lambda: estimate(model, cluster, training, plan, timeline=d["timeline"]), same_without_timeline
    if case.kind == "batch":
        plans = [ParallelPlan.model_validate(p) for p in d["plans"]]
        if not d.get("keep_split"):   # estimate_batch prices even splits in the default placement
            plans = [p.model_copy(update={"layers_per_stage": None, "placement": ParallelPlan().placement}) for p in plans]
        picked = _pick(d, model, cluster, training)
        plans += [picked.model_copy(update={"layers_per_stage": None})] if picked is not None else []
        return (lambda: estimate_batch(model, cluster, training, plans),
                lambda out: _check_batch(out, plans, model, cluster, training))
    if case.kind == "search":
        cons = dict(d["constraints"])
        rebalance = cons.pop("rebalance", False)
        return lambda: search(model, cluster, training, top_k=d["top_k"], rebalance=rebalance, **cons), none
    if case.kind == "sweep":
        return (lambda: sweep(model, cluster, training, vary=d["vary"], values=d["values"],
                              global_batch_per_gpu=d["per_gpu"], max_pp=8), none)
    raise AssertionError(case.kind)


def _pick(d: dict[str, Any], model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec) -> ParallelPlan | None:
    """Candidate `pick` of the planner's space of valid plans (None without one), with a random
    uneven layer split when `split`."""
    if d.get("pick") is None:
        return None
    space = build_space(model, cluster, training, Constraints.from_kwargs(max_micro_batch_size=64))
    if len(space) == 0:
        return None
    plan = space.plan(d["pick"] % len(space))
    stages, layers = plan.pp * plan.virtual_stages, model.total_layers
    if (d.get("split") or layers % stages) and stages > 1:
        rng = np.random.default_rng(d["pick"])
        cuts = np.sort(rng.integers(0, layers + 1, stages - 1))
        split = tuple(int(x) for x in np.diff(np.concatenate([[0], cuts, [layers]])))
        plan = plan.model_copy(update={"layers_per_stage": split})
    return plan


class Defect(AssertionError):
    """A property the call broke."""


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise Defect(what)


def _check_batch(out: dict[str, np.ndarray], plans: list[ParallelPlan], model: ModelSpec, cluster: ClusterSpec,
                 training: TrainingSpec) -> None:
    """Valid rows hold `estimate`'s figures; invalid rows NaN."""
    for i, plan in enumerate(plans):
        if not out["valid"][i]:
            _expect(bool(np.isnan(out["step_time_s"][i])), f"estimate_batch: invalid row {i} is not NaN")
            continue
        try:
            one = estimate(model, cluster, training, plan)
        except ValueError as exc:
            raise Defect(f"estimate_batch: row {i} valid, estimate refuses it: {_message(exc)}") from None
        for name, got in (("step_time_s", one.step_time_s), ("peak_bytes", one.memory.peak_bytes)):
            _expect(math.isclose(float(out[name][i]), got, rel_tol=1e-6, abs_tol=1e-12),
                    f"estimate_batch: row {i} {name} {float(out[name][i])!r} != estimate's {got!r}")


def check_numbers(value: Any, where: str = "result") -> None:
    """Every number in `value` (specs, estimates, search results, frames, arrays) finite and >= 0,
    but for a timeline event's micro_batch (-1: not tied to one), a sweep point or batch row without
    a plan (NaN, with a message) and flags."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float, np.integer, np.floating)):
        _expect(math.isfinite(float(value)) and float(value) >= 0, f"{where} = {value!r}")
        return
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fiu":
            _expect(bool(np.all(np.isfinite(value) & (value >= 0))), f"{where} holds {value[~(np.isfinite(value) & (value >= 0))][:3]}")
        return
    if isinstance(value, pd.DataFrame):
        for col in value.columns:
            if value[col].dtype.kind in "fiu":
                rows = value[col].to_numpy(dtype=float)
                nan = np.isnan(rows)
                if nan.any():
                    _expect("message" in value.columns and bool((value["message"][nan].astype(str) != "").all()),
                            f"{where}.{col} is NaN without a message")
                check_numbers(rows[~nan], f"{where}.{col}")
        return
    if isinstance(value, SearchResult):
        for name in ("plans", "pareto_memory", "pareto_gpus"):
            for r in getattr(value, name):
                check_numbers(r.estimate, f"{where}.{name}[{r.rank}]")
        check_numbers(list(value.rejections.values()), f"{where}.rejections")
        check_numbers([value.num_candidates, value.num_valid, value.num_fit, value.elapsed_s], where)
        check_numbers(value.to_frame(), f"{where}.to_frame()")
        _expect(bool(value.plans) or bool(value.message), "search: no plan and no message")
        return
    if isinstance(value, StepEstimate):
        _expect(value.step_time_s > 0, "step_time_s <= 0")
        _expect(math.isclose(value.time.total_s, value.step_time_s, rel_tol=1e-9), "time parts do not sum to step_time_s")
        for e in value.timeline:
            _expect(math.isfinite(e.start_s) and 0 <= e.start_s <= e.end_s and math.isfinite(e.end_s),
                    f"timeline event {e}")
        check_numbers(value.model_dump(exclude={"timeline"}), where)
        return
    if isinstance(value, BaseModel):
        check_numbers(value.model_dump(), where)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            check_numbers(v, f"{where}.{k}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_numbers(v, f"{where}[{i}]")
        return
    raise Defect(f"{where}: unexpected result type {type(value).__name__}")


# ------------------------------------------------------------------------------------------ CLI cases
_OUT_FLAGS = {"estimate": ["--timeline"], "plan": ["--csv", "--save"], "sweep": ["--csv"]}


@st.composite
def cli_cases(draw: Any) -> Case:
    """A `paraplan` command line (estimate, plan, sweep; profile, validate, calibrate and
    validate-published only with an argument they must refuse, so that nothing long runs)."""
    command = draw(st.sampled_from(["estimate"] * 5 + ["plan"] * 2 + ["sweep", "refuse"]))
    files: dict[str, str] = {}
    word = _often(st.one_of(st.sampled_from(["1", "2", "4", "8", "16", "64", "3"]), st.integers(1, 200).map(str)),
                  st.sampled_from(["0", "-1", "1e3", "x", "", "999999999999999999999", "nan", "2.5"]), odds=8)
    if command == "refuse":
        sub = draw(st.sampled_from(["profile", "validate", "calibrate", "validate-published"]))
        bad = {"profile": [["--repeats", "0"], ["--timeout", "nan"], ["--out", "."], ["--threads", "-2"],
                           ["--device", "tpu"], ["--tokens", "x"], ["--nprocs", "100000"], ["--tokens", "10000000000"],
                           ["--sizes", "1KB-1TB"], ["--repeats", "1000000"]],
               "validate": [["--local", "--procs", "0"], ["--local", "--steps", "-1"], ["--local", "--doc", "."],
                            ["--global-batch", "2"], ["--local", "--seq-len", "0"], ["--local", "--procs", "100000"]],
               "calibrate": [["--holdout", "1.5"], ["--max-evals", "0"], ["--out", "."], ["x.json", "--vtrain"],
                             ["bad.json"]],
               "validate-published": [["--out", "."], ["--csv", "/dev/null/x"], ["--data", "no-such-dir"]]}[sub]
        argv = [sub, *draw(st.sampled_from(bad))]
        files["bad.json"] = draw(FILE_TEXT)
        return Case("cli", {}, argv=argv, files=files)
    argv = [command]
    model = draw(_often(st.sampled_from(list_models()), st.sampled_from(["hf", "spec.yaml", "folder", "x" * 5000,
                                                                       "no-such", "bad.json"]), odds=4))
    if model == "hf":
        files["hf/config.json"] = json.dumps(draw(hf_configs()))
        model = "hf"
    elif model == "folder":
        files["folder/config.json"] = json.dumps(draw(hf_configs()))
    elif model == "spec.yaml":
        files["spec.yaml"] = json.dumps(draw(model_dicts()))
    elif model == "bad.json":
        files["bad.json"] = draw(FILE_TEXT)
    argv += ["--model", model]
    if draw(st.integers(0, 3)):
        argv += ["--cluster", draw(st.sampled_from(list_clusters() + ["dgx-z100", "cluster.yaml"]))]
        if argv[-1] == "cluster.yaml":
            files["cluster.yaml"] = json.dumps(draw(clusters())[1])
    nodes_max = 16 if command != "estimate" else 2 ** 17
    if draw(st.booleans()):
        argv += ["--nodes", draw(st.one_of(st.integers(1, nodes_max).map(str), word))]
    flags = ["--global-batch", "--seq-len", "--dp", "--tp", "--pp", "--cp", "--micro-batch", "--virtual-stages"]
    for flag in draw(st.lists(st.sampled_from(flags), max_size=4, unique=True)):
        argv += [flag, draw(word)]
    if draw(st.integers(0, 3)) == 1:
        argv += ["--dtype", draw(st.sampled_from(["fp8", "fp16", "bf16", "fp32", "tf32", "int4"]))]
    if draw(st.integers(0, 3)) == 1:
        argv += ["--schedule", draw(st.sampled_from(["gpipe", "1f1b", "interleaved-1f1b", "zero-bubble", "pipedream"]))]
    if draw(st.integers(0, 4)) == 2:
        argv += ["--zero", draw(st.sampled_from(["0", "1", "3", "4"]))]
    if draw(st.integers(0, 4)) == 2:
        argv += ["--recompute", draw(st.sampled_from(["none", "full", "some"]))]
    if draw(st.integers(0, 5)) == 2:
        argv += [draw(st.sampled_from(["--inter-node-bw", "--intra-node-bw", "--oversubscription"])),
                 draw(st.sampled_from(["400Gbps", "0Gbps", "2:1", "0.5", "fast", "1e30GB/s", "nan"]))]
    if draw(st.integers(0, 3)) == 1:
        files["p.json"] = draw(st.one_of(plan_dicts().map(json.dumps), FILE_TEXT))
        argv += ["--plan", draw(st.sampled_from(["p.json", "p.json", "missing.json", "x" * 5000]))]
    if command in _OUT_FLAGS and draw(st.integers(0, 2)) == 1:
        argv += [draw(st.sampled_from(_OUT_FLAGS[command])), draw(st.sampled_from(["out.json", ".", "sub/out.csv",
                                                                                   "y" * 300, "p.json/x"]))]
    if command == "estimate" and draw(st.booleans()):
        argv.append("--json")
    if command in ("plan", "sweep"):
        argv += ["--no-progress", "--max-pp", "8"]
        if command == "plan" and draw(st.booleans()):
            argv += ["--top-k", draw(st.sampled_from(["1", "3", "0", "x"]))]
    if command == "sweep":
        vary = draw(st.sampled_from(["nodes", "gpu", "global_batch", "seq_len", "inter_node_bw", "bogus"]))
        values = {"nodes": ["1,2", "1", "0,1", "a"], "gpu": ["h100-sxm,v100", "a100-80gb"],
                  "global_batch": ["16,32", "0"], "seq_len": ["512,1024", "0"],
                  "inter_node_bw": ["100Gbps,400Gbps", "x"]}.get(vary, ["1"])
        argv += ["--vary", vary, "--values", draw(st.sampled_from(values))]
        if draw(st.integers(0, 3)) == 1:
            argv += ["--batch-per-gpu", draw(st.sampled_from(["1", "4", "0"]))]
    return Case("cli", {}, argv=argv, files=files)


_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\w+Error: ", re.M)
_BAD_NUMBER = re.compile(r"(?<![\w.])(nan|inf|-inf)(?![\w])", re.I)


def _check_cli(code: int, out: str, err: str, argv: list[str]) -> None:
    _expect(not _TRACEBACK.search(err) and not _TRACEBACK.search(out), f"traceback: {err[-800:]}")
    if code == 2:
        lines = err.strip().splitlines()
        _expect(len(lines) == 1 and lines[0].startswith("paraplan: error: "), f"exit 2 without one error line: {err[:800]!r}")
        _expect(len(lines[0]) <= MAX_MESSAGE, "error line too long")
        _expect("out of memory" not in lines[0], "ran out of memory")
        return
    _expect(code in (0, 1), f"exit code {code}: {err[-800:]!r}")
    _expect(not [ln for ln in err.splitlines() if ln.startswith("paraplan: error")], f"exit {code} with an error line")
    if "--json" in argv and argv[0] == "estimate" and code == 0:
        check_numbers(StepEstimate.model_validate_json(out), "estimate --json")
    else:
        _expect(not _BAD_NUMBER.search(out), f"non-finite number in output: {out[:800]!r}")


# ------------------------------------------------------------------------------------------ running
@dataclass
class Outcome:
    """How one case ended: 'ok', 'refused' (ValueError/OSError, exit 2) or 'defect' (with why)."""

    status: str
    seconds: float
    peak_bytes: int
    detail: str = ""


def _hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) * 1024
    except (OSError, AttributeError):
        return None


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Timeout(BaseException):
    """Raised by the CPU timer: a BaseException, so no `except Exception` in the code under test eats
    it (the timer repeats every second, in case one lands in a finalizer that swallows it)."""


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def _message(exc: BaseException) -> str:
    return format_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)


def run_api(case: Case, tmp: Path) -> Outcome:
    """Run an API case here, under the time limit, measuring its peak RSS above the start."""
    timer = threading.current_thread() is threading.main_thread()   # signals reach the main thread only
    old = signal.signal(signal.SIGPROF, _alarm) if timer else None
    status, detail = "ok", ""
    seconds, peak = 0.0, 0
    try:
        call, check = _prepare(case, tmp)
        base = _rss_bytes()
        measured = _reset_hwm()
        if timer:   # CPU time of this process: a busy shared host does not count against the call
            signal.setitimer(signal.ITIMER_PROF, LIMIT_S, 1.0)
        t0 = time.process_time()
        try:
            result = call()
        finally:
            if timer:
                signal.setitimer(signal.ITIMER_PROF, 0)
            seconds = time.process_time() - t0
            peak = max(0, (_hwm_bytes() or 0) - base) if measured else 0
        check(result)
        if case.kind == "batch":   # rows without a valid plan are NaN by design
            result = {k: v[result["valid"]] for k, v in result.items() if k not in ("valid", "fits")}
        check_numbers(result)
    except _Timeout:
        status, detail = "defect", f"over {LIMIT_S:.0f} CPU-s"
    except Defect as exc:
        status, detail = "defect", str(exc)
    except (ValueError, OSError) as exc:
        msg = _message(exc)
        status = "refused"
        if not msg.strip() or "\n" in msg.strip() or len(msg) > MAX_MESSAGE:
            status, detail = "defect", f"{type(exc).__name__} message not one line: {msg[:500]!r}"
        else:
            detail = msg
    except MemoryError:
        status, detail = "defect", "MemoryError"
    except Exception as exc:   # noqa: BLE001 - any other exception is the defect being looked for
        status, detail = "defect", f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_tb(exc.__traceback__)[-3:])}"
    finally:
        if timer:
            signal.signal(signal.SIGPROF, old)
    if status != "defect" and seconds > LIMIT_S:
        status, detail = "defect", f"took {seconds:.1f} CPU-s"
    if status != "defect" and peak > LIMIT_BYTES:
        status, detail = "defect", f"peak {peak / 2 ** 30:.2f} GiB above the start"
    return Outcome(status, seconds, peak, detail)


def _vm_size() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def run_cli(case: Case, tmp: Path) -> Outcome:
    """Run a CLI case: `planner.cli.main(argv)` in a forked child (cwd `tmp`, RLIMIT_AS, alarm)."""
    from planner.cli import main

    for name, text in case.files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, errors="surrogateescape")
    out_path, err_path = tmp / ".stdout", tmp / ".stderr"
    base = _rss_bytes()
    limit = _vm_size() + LIMIT_BYTES + (1 << 30)
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()   # the child's collector leaves the parent's objects (and their pages) alone
    pid = os.fork()
    if pid == 0:   # child
        code = 3
        try:
            os.chdir(tmp)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            cpu = int(LIMIT_S) + 1   # CPU seconds (SIGXCPU), and a wall-clock guard against hangs
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
            signal.signal(signal.SIGXCPU, signal.SIG_DFL)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(int(WALL_GUARD_S))
            with open(out_path, "w") as out, open(err_path, "w") as err:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout, sys.stderr = os.fdopen(1, "w", closefd=False), os.fdopen(2, "w", closefd=False)
                code = main(case.argv)
                sys.stdout.flush()
                sys.stderr.flush()
        except BaseException:   # noqa: BLE001 - report it through the exit code and stderr
            with contextlib.suppress(BaseException):
                traceback.print_exc()
                sys.stderr.flush()
            code = 4
        os._exit(code)
    gc.unfreeze()
    _, status, usage = os.wait4(pid, 0)
    seconds = usage.ru_utime + usage.ru_stime   # the child's CPU time
    peak = max(0, usage.ru_maxrss * 1024 - base)
    out = out_path.read_text(errors="replace") if out_path.exists() else ""
    err = err_path.read_text(errors="replace") if err_path.exists() else ""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        what = {signal.SIGXCPU: f"over {LIMIT_S:.0f} CPU-s", signal.SIGKILL: f"over {LIMIT_S:.0f} CPU-s",
                signal.SIGALRM: f"no answer within {WALL_GUARD_S:.0f} s (a hang)"}.get(sig, f"killed by signal {sig}")
        return Outcome("defect", seconds, peak, what)
    code = os.WEXITSTATUS(status)
    try:
        if code in (3, 4):
            raise Defect(f"uncaught exception in main: {err[-1500:]}")
        _check_cli(code, out, err, case.argv)
    except Defect as exc:
        return Outcome("defect", seconds, peak, str(exc))
    if seconds > LIMIT_S:
        return Outcome("defect", seconds, peak, f"took {seconds:.1f} CPU-s")
    if peak > LIMIT_BYTES:
        return Outcome("defect", seconds, peak, f"peak {peak / 2 ** 30:.2f} GiB above the start")
    return Outcome("ok" if code in (0, 1) else "refused", seconds, peak, err.strip()[:300])


def run_case(case: Case) -> Outcome:
    """Run `case` in a fresh temporary folder."""
    with tempfile.TemporaryDirectory(prefix="paraplan-fuzz-") as tmp:
        return (run_cli if case.argv is not None else run_api)(case, Path(tmp))


@dataclass
class Tally:
    """Figures of a fuzz run."""

    cases: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)
    defects: list[str] = field(default_factory=list)
    peak_bytes: int = 0
    slowest_s: float = 0.0
    seconds: float = 0.0

    def add(self, case: Case, outcome: Outcome) -> None:
        self.cases += 1
        self.by_status[outcome.status] = self.by_status.get(outcome.status, 0) + 1
        self.by_kind[case.kind] = self.by_kind.get(case.kind, 0) + 1
        self.peak_bytes = max(self.peak_bytes, outcome.peak_bytes)
        self.slowest_s = max(self.slowest_s, outcome.seconds)
        self.seconds += outcome.seconds
        if outcome.status == "defect":
            self.defects.append(f"{outcome.detail} <- {case.short()}")


def cases() -> st.SearchStrategy[Case]:
    """Every kind of case: API (most) and CLI."""
    return st.one_of(*([api_cases()] * 4), cli_cases())


Check = Callable[[Case, Outcome], None]
