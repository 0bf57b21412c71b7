"""Hypothesis strategies for the fuzz suite (tests/_fuzz.py): model, cluster, training and plan
specs and Hugging Face configs as raw dicts (dense models and mixtures of experts, with expert
parallelism, context-parallel attention, software stacks and MoE load imbalance), mostly plausible, hostile now and then (a wrong
type, a boolean for a number, NaN, a size beyond every limit), some at the limits paraplan models, and
broken file contents."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from costmodel import list_clusters, list_gpus
from costmodel.stacks import list_stacks

__all__ = ["HOSTILE", "EXTREME", "FILE_TEXT", "POW2", "model_dicts", "extreme_models", "moe_fields", "clusters",
           "trainings", "plan_dicts", "hf_configs", "often"]

HOSTILE = st.sampled_from([0, -1, -(2 ** 63), 2 ** 31, 2 ** 63, 10 ** 30, True, False, 1.5, 8.0, float("nan"),
                           float("inf"), -0.0, "8", "", "x" * 300, None, [], {}, [8], "nan"])
"""What a user (or a broken file) may put where a number belongs."""


def often(good: st.SearchStrategy, bad: st.SearchStrategy = HOSTILE, *, odds: int = 40) -> st.SearchStrategy:
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
    data = {"name": "extreme", "arch": draw(st.sampled_from(["decoder", "encoder", "encoder-decoder"])),
            "num_layers": draw(st.sampled_from([1, 2, 512])), "hidden_size": heads * head_dim, "num_heads": heads,
            "ffn_hidden_size": draw(st.sampled_from([1, 2 ** 20])), "vocab_size": draw(st.sampled_from([1, 2 ** 24])),
            "max_seq_len": draw(st.sampled_from([1, 2 ** 12, 2 ** 24])),
            "num_decoder_layers": None, "activation": draw(st.sampled_from(["gelu", "swiglu"]))}
    if draw(st.integers(0, 2)) == 1:   # a mixture of experts at the limits
        experts = draw(st.sampled_from([2, 2 ** 20]))
        data.update(num_experts=experts, experts_per_token=draw(st.sampled_from([1, experts])),
                    num_shared_experts=draw(st.sampled_from([0, 2 ** 20])),
                    expert_ffn_hidden_size=draw(st.sampled_from([1, 2 ** 20])),
                    capacity_factor=draw(st.sampled_from([None, 1e-6, float(2 ** 20)])))
    return data


@st.composite
def moe_fields(draw: Any) -> dict[str, Any]:
    """The mixture-of-experts fields of a ModelSpec: mostly plausible, hostile now and then."""
    experts = draw(often(st.sampled_from([2, 4, 8, 8, 16, 60, 64, 256]), st.sampled_from([0, 1, 2 ** 21, True, 2.5]),
                         odds=10))
    data: dict[str, Any] = {"num_experts": experts,
                            "experts_per_token": draw(often(st.sampled_from([1, 2, 2, 4, 8]), st.sampled_from([0, 300, None])))}
    if draw(st.booleans()):
        data["num_shared_experts"] = draw(often(st.sampled_from([0, 1, 2])))
    if draw(st.booleans()):
        data["expert_ffn_hidden_size"] = draw(often(st.sampled_from([64, 512, 1408, 2048])))
    if draw(st.integers(0, 3)) == 1:
        data["capacity_factor"] = draw(often(st.sampled_from([0.5, 1.0, 1.25, 2.0]),
                                             st.sampled_from([0.0, -1.0, 1e300, float("nan"), "1.5"])))
    if draw(st.integers(0, 3)) == 1:
        data["moe_layer_freq"] = draw(often(st.sampled_from([1, 2, 3])))
    if draw(st.integers(0, 3)) == 1:
        data["first_dense_layers"] = draw(often(st.sampled_from([0, 1, 3])))
    if draw(st.integers(0, 5)) == 1:
        data["router_aux_loss_coef"] = draw(often(st.sampled_from([0.0, 0.001, 0.02])))
    return data


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
    layers = draw(often(st.one_of(st.integers(1, 8), st.sampled_from([12, 24, 32, 40, 80, 96, 128, 1000])), HUGE, odds=15))
    data: dict[str, Any] = {
        "name": draw(st.sampled_from(["fuzz", "m", "x" * 120])), "arch": arch,
        "num_layers": draw(often(st.just(layers))),
        "hidden_size": draw(often(st.just(heads * head_dim))),
        "num_heads": draw(often(st.just(heads))),
        "num_kv_heads": draw(often(st.sampled_from([None, kv]))),
        "ffn_hidden_size": draw(often(st.one_of(st.none(), st.integers(1, 8).map(lambda k: k * heads * head_dim),
                                                 st.integers(1, 50000)))),
        "activation": draw(often(st.sampled_from(["gelu", "swiglu", "relu", "geglu"]), st.sampled_from(["tanh", 1]))),
        "vocab_size": draw(often(st.integers(1, 300000), st.sampled_from([2 ** 24, 2 ** 25]), odds=10)),
        "max_seq_len": draw(often(st.one_of(POW2, st.integers(1, 70000), HUGE))),
        "norm": draw(st.sampled_from(["layernorm", "rmsnorm"])),
        "position": draw(st.sampled_from(["learned", "rope", "relative"])),
        "tie_embeddings": draw(often(st.booleans())), "bias": draw(often(st.booleans())),
    }
    if arch == "encoder-decoder":
        data["num_decoder_layers"] = draw(often(st.integers(1, 48)))
    if draw(st.booleans()):
        data["head_dim"] = draw(often(st.just(head_dim)))
    if draw(st.integers(0, 3)) == 1:
        data.update(draw(moe_fields()))
    elif draw(st.integers(0, 30)) == 15:   # an MoE field on a dense model
        data[draw(st.sampled_from(["experts_per_token", "moe_layer_freq", "capacity_factor"]))] = 2
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
    rate = often(st.floats(1e9, 1e16), st.one_of(EXTREME, st.sampled_from([0.0, -1.0, float("inf"), float("nan"), True])),
                  odds=6)
    return {"name": "fuzz-gpu", "peak_flops_per_s": {d: draw(rate) for d in dtypes},
            "hbm_bytes": draw(often(st.floats(1e6, 1e13), st.one_of(EXTREME, st.sampled_from([0, float("inf")])), odds=6)),
            "hbm_bw_bytes_per_s": draw(often(st.floats(1e6, 1e14), EXTREME, odds=6))}


def _link_dict(draw: Any) -> dict[str, Any]:
    return {"name": "fuzz-link", "bw_bytes_per_s": draw(often(st.floats(1.0, 1e13), st.one_of(EXTREME, st.just(0.0)), odds=6)),
            "latency_s": draw(often(st.floats(0.0, 1e-2), st.sampled_from([-1e-6, 0.0, 1e-300, 1e6, 1e300]), odds=6))}


@st.composite
def clusters(draw: Any, *, max_nodes: int = 2 ** 17) -> tuple[str, dict[str, Any]]:
    """('preset', name/nodes/gpu/overrides) or ('spec', a ClusterSpec dict)."""
    nodes = draw(often(st.one_of(st.integers(1, 4), st.integers(1, 4), st.integers(1, 64),
                                  st.integers(1, max_nodes).filter(lambda n: n > 64)),
                        st.sampled_from([0, -3, 2 ** 20, 10 ** 6, 10 ** 12, True]), odds=20))
    if draw(st.integers(0, 3)):
        over: dict[str, Any] = {}
        if draw(st.integers(0, 5)) == 2:
            over["oversubscription"] = draw(often(st.floats(1.0, 64.0), st.sampled_from([0.5, float("inf"), "2:1"])))
        if draw(st.integers(0, 6)) == 3:
            over["nics_per_node"] = draw(often(st.sampled_from([1, 2, 3, 4, 8, 16]), st.sampled_from([0, 10 ** 6])))
        if draw(st.integers(0, 6)) == 3:
            over["gpus_per_node"] = draw(often(st.sampled_from([1, 2, 3, 4, 6, 8, 16, 72]), st.sampled_from([0, 10 ** 5])))
        return "preset", {"name": draw(st.sampled_from(list_clusters())), "nodes": nodes,
                          "gpu": draw(st.one_of(st.none(), st.none(), st.sampled_from(list_gpus()))), "over": over}
    spec = {"name": "fuzz", "gpu": _gpu_dict(draw), "num_nodes": nodes,
            "gpus_per_node": draw(often(st.sampled_from([1, 2, 3, 4, 8, 16]))),
            "intra_node_link": _link_dict(draw), "inter_node_link": _link_dict(draw),
            "nics_per_node": draw(often(st.sampled_from([1, 2, 4, 8]))),
            "intra_node_topology": draw(st.sampled_from(["nvswitch", "pcie", "none", "cube-mesh"])),
            "network": draw(st.sampled_from(["rail-optimized", "fat-tree", "leaf-spine"])),
            "oversubscription": draw(often(st.floats(1.0, 8.0)))}
    return "spec", _corrupt(draw, spec, odds=6)


@st.composite
def trainings(draw: Any) -> dict[str, Any]:
    if draw(st.integers(0, 7)) == 3:   # at the limits
        return {"global_batch_size": draw(st.sampled_from([1, 2 ** 24])), "seq_len": draw(st.sampled_from([1, 2 ** 12, 2 ** 24])),
                "dtype": draw(st.sampled_from(["fp32", "bf16"])), "flash_attention": draw(st.booleans()),
                "stack": draw(st.sampled_from(list_stacks())),
                "moe_load_imbalance": draw(st.sampled_from([1.0, float(2 ** 20)]))}
    extra: dict[str, Any] = {}
    if draw(st.integers(0, 2)) == 1:
        extra["stack"] = draw(often(st.sampled_from(list_stacks()), st.sampled_from(["nope", "", "x" * 300, 7, None])))
    if draw(st.integers(0, 3)) == 1:
        extra["moe_load_imbalance"] = draw(often(st.floats(1.0, 4.0), st.sampled_from([0.5, 1e300, float("nan"), 2 ** 21])))
    return _corrupt(draw, {**extra, "global_batch_size": draw(often(st.one_of(SMALL, st.integers(1, 5000)), st.one_of(HOSTILE, HUGE))),
            "seq_len": draw(often(st.one_of(POW2, st.integers(1, 9000)), st.one_of(HOSTILE, HUGE))),
            "dtype": draw(often(st.sampled_from(["bf16", "bf16", "fp16", "fp32", "tf32", "fp8"]), st.just("fp4"))),
            "optimizer": draw(st.sampled_from(["adamw", "adam", "sgd"])),
            "grad_dtype": draw(st.sampled_from([None, "fp32", "bf16"])),
            "flash_attention": draw(often(st.booleans()))}, odds=8)


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
        "dp": draw(often(st.just(dp))), "tp": draw(often(st.just(tp))), "pp": draw(often(st.just(pp))),
        "cp": draw(often(st.just(cp))), "micro_batch_size": draw(often(st.sampled_from([1, 1, 2, 4, 8, 16]))),
        "virtual_stages": draw(often(st.just(v))), "schedule": draw(often(st.just(schedule), st.just("1F1B"))),
        "zero_stage": draw(often(st.sampled_from([0, 1, 2, 3]), st.sampled_from([4, True, "1"]))),
        "recompute": draw(st.sampled_from(["none", "selective", "full"])),
        "sequence_parallel": draw(often(st.just(tp > 1 and draw(st.booleans())), st.just(1))),
    }
    if draw(st.integers(0, 4)) == 2:
        data["layers_per_stage"] = _split(draw, layers, pp * v)
    if draw(st.integers(0, 5)) == 2:
        data["placement"] = draw(st.permutations(["tp", "cp", "dp", "pp"]))
    if cp > 1 and draw(st.integers(0, 3)) == 1:
        data["cp_attention"] = draw(often(st.sampled_from(["auto", "all-gather", "ring"]), st.just("ulysses")))
    if draw(st.integers(0, 3)) == 1:   # expert parallelism: a divisor of dp*cp, now and then not
        groups = dp * cp
        data["ep"] = draw(often(st.sampled_from([e for e in (1, 2, 4, 8, groups) if groups % e == 0]),
                                st.sampled_from([3, 2 ** 21, 0, True])))
    return _corrupt(draw, data, odds=8)


@st.composite
def hf_configs(draw: Any) -> dict[str, Any]:
    """A Hugging Face config.json as a dict (gpt2, llama-style, bert, t5 families and the mixtures of
    experts: mixtral, qwen-moe, deepseek, gpt-oss), hostile now and then."""
    mtype = draw(often(st.sampled_from(["gpt2", "llama", "mistral", "qwen2", "bert", "roberta", "t5", "mixtral",
                                         "qwen2_moe", "qwen3_moe", "deepseek_v3", "gpt_oss"]),
                        st.sampled_from(["mamba", "", 7, None])))
    heads = draw(st.sampled_from([1, 2, 4, 8, 12, 16, 32]))
    hd = draw(st.sampled_from([16, 32, 64, 128]))
    n = lambda good: draw(often(good))  # noqa: E731
    common = {"vocab_size": n(st.integers(1, 200000))}
    if mtype == "gpt2":
        cfg = {"n_layer": n(st.integers(1, 48)), "n_embd": n(st.just(heads * hd)), "n_head": n(st.just(heads)),
               "n_positions": n(POW2), "n_inner": draw(st.sampled_from([None, 0, 4 * heads * hd]))}
    elif mtype == "t5":
        cfg = {"num_layers": n(st.integers(1, 24)), "num_decoder_layers": n(st.integers(0, 24)),
               "d_model": n(st.just(heads * hd)), "num_heads": n(st.just(heads)), "d_kv": n(st.just(hd)),
               "d_ff": n(st.integers(1, 10000)),
               "feed_forward_proj": draw(often(st.sampled_from(["relu", "gated-gelu"]), st.just("swish-ish")))}
    else:
        cfg = {"num_hidden_layers": n(st.integers(1, 80)), "hidden_size": n(st.just(heads * hd)),
               "num_attention_heads": n(st.just(heads)), "intermediate_size": n(st.integers(1, 30000)),
               "max_position_embeddings": n(POW2),
               "hidden_act": draw(often(st.sampled_from(["silu", "gelu", "gelu_new", "relu"]),
                                         st.sampled_from(["tanh", "quick_gelu", 3])))}
        if mtype != "bert" and mtype != "roberta":
            cfg["num_key_value_heads"] = n(st.sampled_from([d for d in (1, 2, 4, heads) if heads % d == 0]))
        if mtype in _HF_EXPERTS:
            cfg.update(_hf_moe(draw, mtype, heads))
    cfg = {"model_type": mtype, **common, **cfg}
    if draw(st.integers(0, 12)) == 6:
        cfg.pop(draw(st.sampled_from(sorted(cfg))))
    cfg = {k: v for k, v in cfg.items() if v is not None or draw(st.booleans())}
    return _corrupt(draw, cfg, odds=6)


_HF_EXPERTS = {"mixtral": "num_local_experts", "gpt_oss": "num_local_experts", "qwen2_moe": "num_experts",
               "qwen3_moe": "num_experts", "deepseek_v3": "n_routed_experts"}


def _hf_moe(draw: Any, mtype: str, heads: int) -> dict[str, Any]:
    """The MoE keys of a Hugging Face config of `mtype` (as each model's configuration_*.py names them)."""
    n = lambda good: draw(often(good))  # noqa: E731
    cfg: dict[str, Any] = {_HF_EXPERTS[mtype]: n(st.sampled_from([4, 8, 60, 256])),
                           "num_experts_per_tok": n(st.sampled_from([1, 2, 4, 8]))}
    if mtype in ("qwen2_moe", "qwen3_moe"):
        cfg["moe_intermediate_size"] = n(st.sampled_from([64, 1408]))
        cfg["shared_expert_intermediate_size"] = draw(often(st.sampled_from([0, 1408, 5632]), st.sampled_from([100, "x"])))
        cfg["mlp_only_layers"] = draw(often(st.sampled_from([[], [0], [0, 1]]), st.sampled_from([[5], 3, ["a"]])))
        cfg["decoder_sparse_step"] = draw(often(st.just(1), st.sampled_from([2, 0, "1"])))
    elif mtype == "deepseek_v3":
        cfg.update(moe_intermediate_size=n(st.sampled_from([64, 2048])), n_shared_experts=n(st.sampled_from([0, 1, 2])),
                   first_k_dense_replace=n(st.sampled_from([0, 1, 3])), moe_layer_freq=n(st.sampled_from([1, 2])))
        if draw(st.booleans()):   # multi-head latent attention
            cfg.update(kv_lora_rank=n(st.sampled_from([64, 512])), q_lora_rank=draw(st.sampled_from([None, 1536])),
                       qk_nope_head_dim=n(st.sampled_from([64, 128])), qk_rope_head_dim=n(st.sampled_from([32, 64])),
                       v_head_dim=n(st.sampled_from([64, 128])))
            if draw(st.integers(0, 9)) == 4:
                cfg["num_attention_heads"] = draw(st.sampled_from([10 ** 12, 0, -heads]))
    return cfg


FILE_TEXT = st.one_of(st.just(""), st.just("{"), st.just("[1, 2]"), st.just("null"), st.just("\x00\xff"),
                      st.just("[" * 5000 + "]" * 5000), st.just("a: &a [*a]"), st.text(max_size=200))
"""Broken file contents: empty, truncated, not a mapping, binary, deeply nested, a self-referencing
YAML alias, random text."""
