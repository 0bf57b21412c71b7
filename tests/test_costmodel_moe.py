"""Mixture-of-experts in the cost model: spec rules, catalog and Hugging Face import, parameters and
FLOPs, the MoE terms of an estimate (expert states over ep, all-to-all on the topology, imbalance,
capacity) and the agreement of its code paths (closed form, simulator reference, estimate_batch)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from _estimate_reference import reference_estimate
from test_costmodel_estimate_exact import _assert_same

from costmodel import (
    ModelSpec,
    ParallelPlan,
    PlanError,
    TrainingSpec,
    check_plan,
    estimate,
    estimate_batch,
    get_cluster,
    load_model,
    model_from_hf_config,
)
from costmodel.layer.flops import step_flops
from costmodel.layer.params import model_shape, total_params
from costmodel.network.comm import build_comm_model
from costmodel.network.placement import axis_groups

TINY = dict(arch="decoder", num_layers=4, hidden_size=64, num_heads=4, vocab_size=256, max_seq_len=64,
            activation="swiglu", norm="rmsnorm", position="rope", tie_embeddings=False, bias=False)


@pytest.mark.parametrize("fields,field", [
    (dict(num_experts=4, experts_per_token=5), "experts_per_token"),
    (dict(num_experts=4), "experts_per_token"),
    (dict(num_experts=1, experts_per_token=1), "num_experts"),
    (dict(experts_per_token=2), "experts_per_token"),
    (dict(num_shared_experts=1), "num_shared_experts"),
    (dict(num_experts=4, experts_per_token=2, first_dense_layers=4), "first_dense_layers"),
])
def test_bad_moe_fields_name_the_field(fields, field):
    with pytest.raises(ValueError, match=f"Value error, {field}: "):
        ModelSpec(**TINY, **fields)


def test_moe_layers_follow_first_dense_layers_and_frequency():
    spec = ModelSpec(**{**TINY, "num_layers": 8}, num_experts=4, experts_per_token=2, first_dense_layers=1,
                     moe_layer_freq=2)
    assert spec.moe_layers == (False, False, True, False, True, False, True, False)
    assert model_shape(spec).moe.layers_enc == 3


def test_ep_rules_name_the_field():
    cluster, training = get_cluster("dgx-h100", nodes=2), TrainingSpec(global_batch_size=32, seq_len=4096)
    with pytest.raises(ValueError, match="ep: ep=3 does not divide dp\\*cp"):
        ParallelPlan(dp=4, ep=3)
    with pytest.raises(PlanError, match="ep: ep=2 needs a mixture-of-experts model") as exc:
        check_plan(load_model("llama3-8b"), cluster, training, ParallelPlan(dp=16, ep=2))
    assert exc.value.field == "ep"
    with pytest.raises(PlanError, match="ep: ep=16 does not divide num_experts=8"):
        check_plan(load_model("mixtral-8x7b"), cluster, training, ParallelPlan(dp=16, ep=16))
    check_plan(load_model("mixtral-8x7b"), cluster, training, ParallelPlan(dp=2, cp=8, ep=8))   # EP over CP x DP


@pytest.mark.parametrize("name", ["mixtral-8x7b", "mixtral-8x22b", "deepseek-v3", "deepseek-v2", "qwen1.5-moe-a2.7b",
                                  "qwen2-57b-a14b", "qwen3-30b-a3b", "qwen3-235b-a22b", "gpt-oss-120b"])
def test_catalog_moe_models_match_their_published_parameter_counts(name):
    model = load_model(name)
    assert model.is_moe
    assert total_params(model) == pytest.approx(model.published_params, rel=0.01)


def test_hugging_face_moe_configs_import():
    mixtral = model_from_hf_config({"model_type": "mixtral", "num_hidden_layers": 32, "hidden_size": 4096,
                                    "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
                                    "vocab_size": 32000, "max_position_embeddings": 32768, "num_local_experts": 8,
                                    "num_experts_per_tok": 2, "router_aux_loss_coef": 0.02}, name="mixtral")
    assert total_params(mixtral) == total_params(load_model("mixtral-8x7b"))
    qwen = model_from_hf_config({"model_type": "qwen2_moe", "num_hidden_layers": 24, "hidden_size": 2048,
                                 "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 5632,
                                 "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
                                 "num_experts": 60, "num_experts_per_tok": 4, "vocab_size": 151936,
                                 "decoder_sparse_step": 1, "mlp_only_layers": []})
    assert (qwen.num_experts, qwen.num_shared_experts, qwen.expert_ffn_size) == (60, 4, 1408)
    v3 = {"model_type": "deepseek_v3", "num_hidden_layers": 61, "hidden_size": 7168, "intermediate_size": 18432,
          "moe_intermediate_size": 2048, "num_attention_heads": 128, "num_key_value_heads": 128,
          "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
          "moe_layer_freq": 1, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
          "qk_rope_head_dim": 64, "v_head_dim": 128, "vocab_size": 129280, "max_position_embeddings": 163840}
    deepseek = model_from_hf_config(v3, name="deepseek-v3")
    assert (deepseek.head_dim, deepseek.kv_heads, deepseek.first_dense_layers) == (91, 16, 3)
    assert total_params(deepseek) == pytest.approx(671e9, rel=0.01)   # MLA approximated with its parameters
    with pytest.raises(ValueError, match="mlp_only_layers"):
        model_from_hf_config({**{k: v for k, v in v3.items() if k != "model_type"}, "model_type": "qwen3_moe",
                              "num_experts": 8, "moe_intermediate_size": 64, "mlp_only_layers": [5]})
    with pytest.raises(ValueError, match="num_experts_per_tok: 9 exceeds num_local_experts=8"):   # the config's keys
        model_from_hf_config({"model_type": "mixtral", "num_hidden_layers": 2, "hidden_size": 64,
                              "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 256,
                              "num_local_experts": 8, "num_experts_per_tok": 9})


def test_moe_flops_count_the_routed_experts_only():
    model = load_model("mixtral-8x7b")
    shape = model_shape(model)
    flops, _ = step_flops(shape, 1, 4096, 0)
    active = total_params(model) - 6 * model.num_layers * 3 * 4096 * 14336 - 32000 * 4096   # 2 of 8 experts
    attention_core = 3 * model.num_layers * 4 * 4096 * 4096 * 4096
    assert flops == pytest.approx(6 * 4096 * active + attention_core, rel=1e-3)


def _mixtral(nodes=8):
    return (load_model("mixtral-8x7b"), get_cluster("dgx-h100", nodes=nodes),
            TrainingSpec(global_batch_size=256, seq_len=4096))


def test_expert_states_shrink_with_ep_and_the_all_to_all_appears():
    model, cluster, training = _mixtral()
    one = estimate(model, cluster, training, ParallelPlan(dp=16, pp=4, zero_stage=1))
    eight = estimate(model, cluster, training, ParallelPlan(dp=16, pp=4, ep=8, zero_stage=1))
    assert one.time.ep_comm_s == 0 and eight.time.ep_comm_s > 0
    assert eight.memory.parameters_bytes < 0.3 * one.memory.parameters_bytes   # experts are ~96% of the weights
    for est in (one, eight):
        assert est.time.total_s == pytest.approx(est.step_time_s, rel=1e-12)
    assert eight.mfu == pytest.approx(one.mfu * one.step_time_s / eight.step_time_s, rel=1e-12)


def test_expert_groups_inside_a_server_are_cheaper_than_across_servers():
    model, cluster, training = _mixtral()
    plan = ParallelPlan(dp=8, tp=2, pp=4, ep=8, sequence_parallel=True)
    inside = estimate(model, cluster, training, plan.model_copy(update={"placement": ("dp", "tp", "cp", "pp")}))
    across = estimate(model, cluster, training, plan)
    groups = axis_groups(plan, "ep")
    assert groups.shape == (8, 8) and np.all(np.diff(groups, axis=1) == 2)   # ep ranks are dp neighbours
    assert build_comm_model(cluster, plan).links["ep"].crosses_nodes
    assert inside.time.ep_comm_s < across.time.ep_comm_s / 3


def test_imbalance_and_capacity():
    model, cluster, _ = _mixtral()
    plan = ParallelPlan(dp=16, pp=4, ep=8, zero_stage=1)
    times = [estimate(model, cluster, TrainingSpec(global_batch_size=256, seq_len=4096, moe_load_imbalance=imb),
                      plan) for imb in (1.0, 1.2, 1.5)]
    assert times[0].step_time_s < times[1].step_time_s < times[2].step_time_s
    assert times[0].time.ep_comm_s < times[2].time.ep_comm_s
    capped = load_model("mixtral-8x7b").model_copy(update={"capacity_factor": 1.2})
    imbalanced = TrainingSpec(global_batch_size=256, seq_len=4096, moe_load_imbalance=1.5)
    assert estimate(capped, cluster, imbalanced, plan).step_time_s == pytest.approx(times[1].step_time_s, rel=1e-12)
    assert times[0].model_tflops_per_gpu * times[0].step_time_s == pytest.approx(
        times[2].model_tflops_per_gpu * times[2].step_time_s, rel=1e-12)   # model FLOPs ignore the imbalance


def test_more_bandwidth_never_slows_an_expert_parallel_plan():
    model, _, training = _mixtral()
    plan = ParallelPlan(dp=8, tp=2, pp=4, ep=8, sequence_parallel=True)
    slow = estimate(model, get_cluster("dgx-h100", nodes=8, inter_node_link=get_cluster(
        "dgx-a100", nodes=1).inter_node_link), training, plan)
    fast = estimate(model, get_cluster("dgx-h100", nodes=8), training, plan)
    assert fast.time.ep_comm_s < slow.time.ep_comm_s and fast.step_time_s < slow.step_time_s


def test_uneven_splits_of_a_partly_dense_moe_match_the_reference_simulator():
    model = load_model("deepseek-v2")
    cluster, training = get_cluster("dgx-h100", nodes=16), TrainingSpec(global_batch_size=256, seq_len=4096)
    rng = random.Random(0)
    for schedule, pp, v in (("1f1b", 8, 1), ("interleaved-1f1b", 4, 2), ("zero-bubble", 8, 1)):
        cuts = sorted(rng.sample(range(1, model.total_layers), pp * v - 1))
        split = tuple(b - a for a, b in zip([0, *cuts], [*cuts, model.total_layers], strict=True))
        plan = ParallelPlan(dp=8, tp=2, pp=pp, cp=128 // (16 * pp) if pp < 8 else 1, ep=8, schedule=schedule,
                            virtual_stages=v, zero_stage=1, sequence_parallel=True, layers_per_stage=split)
        plan = plan.model_copy(update={"dp": 128 // (2 * pp * plan.cp)})
        _assert_same(estimate(model, cluster, training, plan, timeline=True),
                     reference_estimate(model, cluster, training, plan, timeline=True))


def test_estimate_batch_equals_estimate_for_expert_parallel_plans():
    model, cluster, training = _mixtral(nodes=4)
    plans = [ParallelPlan(dp=dp, tp=tp, pp=pp, cp=cp, ep=ep, zero_stage=z, sequence_parallel=tp > 1)
             for dp, tp, pp, cp, ep, z in ((32, 1, 1, 1, 8, 1), (8, 2, 2, 1, 4, 3), (4, 1, 4, 2, 8, 1),
                                           (16, 2, 1, 1, 1, 0), (4, 4, 2, 1, 2, 2))]
    batch = estimate_batch(model, cluster, training, plans)
    assert batch["valid"].all()
    for i, plan in enumerate(plans):
        est = estimate(model, cluster, training, plan)
        assert batch["step_time_s"][i] == pytest.approx(est.step_time_s, rel=1e-12)
        assert batch["ep_comm_s"][i] == pytest.approx(est.time.ep_comm_s, rel=1e-12, abs=0)
        assert batch["peak_bytes"][i] == pytest.approx(est.memory.peak_bytes, rel=1e-12)
    bad = estimate_batch(model, cluster, training, {"dp": [32, 32], "ep": [16, 3]})
    assert not bad["valid"].any()   # 16 does not divide 8 experts; 3 does not divide dp*cp


def test_published_moe_runs_are_predicted_and_documented(tmp_path):
    from costmodel.calibration.published.moe import (
        moe_cases,
        render_moe_section,
        run_moe_validation,
        update_moe_doc,
    )

    cases = moe_cases()
    assert {c["precision"] for c in cases} == {"bf16", "fp8"} and all(c["plan"].ep > 1 for c in cases)
    rows = run_moe_validation()
    assert len(rows) == len(cases) and np.isfinite(rows["error"]).all() and (rows["predicted"] > 0).all()
    mixtral = rows.set_index("run").loc["mixtral-8x7b-mcore-v0.9"]
    assert abs(mixtral["error"]) < 0.15   # a regression guard on the cleanest row (held out, not fitted)
    doc = tmp_path / "VALIDATION.md"
    doc.write_text("# Validation\n\nkept\n")
    update_moe_doc(doc, rows)
    text = doc.read_text()
    assert "kept" in text and text.count("<!-- published-moe:begin -->") == 1
    assert "mixtral-8x7b-mcore-v0.9" in render_moe_section(rows)
