"""The cost model's inputs refused clearly or answered correctly: strict whole numbers and flags,
documented size limits, GPUs without the asked dtype, Hugging Face configs by their own keys, no
per-GPU structure for GPUs a plan does not use, bounded simulation, a timeline that changes nothing."""

from __future__ import annotations

import json
import math
import tracemalloc

import pytest
from pydantic import ValidationError

from costmodel import (
    ModelSpec,
    ParallelPlan,
    TrainingSpec,
    estimate,
    estimate_batch,
    get_cluster,
    get_gpu,
    load_model,
    model_from_hf_config,
)
from costmodel.network.comm import build_comm_model
from costmodel.network.topology import build_topology
from costmodel.specs import format_validation_error
from costmodel.step.estimate import comm_model, knobs_from_plan, step_context
from costmodel.step.simulate import MAX_SIM_OPS, _closed_form, _simulate, cached_stage_times, sim_ops

TRAIN = TrainingSpec(global_batch_size=64, seq_len=2048)


@pytest.mark.parametrize("data, words", [
    ({"dp": True}, "dp: must be a whole number, got True"),
    ({"tp": 2.0}, "tp: must be a whole number, got 2.0"),
    ({"pp": "2"}, "pp: must be a whole number, got '2'"),
    ({"zero_stage": True}, "zero_stage: must be a whole number"),
    ({"sequence_parallel": 1, "tp": 2}, "sequence_parallel: must be true or false, got 1"),
    ({"layers_per_stage": [True]}, "layers_per_stage.0: must be a whole number"),
    ({"dp": 1 << 20, "tp": 2}, "2,097,152 GPUs exceeds the 1,048,576 GPUs"),
    ({"virtual_stages": 10 ** 9}, "virtual_stages: 1,000,000,000 exceeds the 1,024 Transformer blocks"),
])
def test_plan_fields_are_strict(data, words):
    with pytest.raises(ValidationError) as info:
        ParallelPlan.model_validate(data)
    assert words in format_validation_error(info.value)


@pytest.mark.parametrize("update, words", [
    ({"global_batch_size": 0}, "global_batch_size"),
    ({"global_batch_size": 8.0}, "global_batch_size: must be a whole number"),
    ({"seq_len": 1 << 25}, "seq_len: 33,554,432 exceeds the 16,777,216 tokens per sequence"),
    ({"flash_attention": "no"}, "flash_attention: must be true or false"),
])
def test_training_fields_are_strict(update, words):
    with pytest.raises(ValidationError) as info:
        TrainingSpec.model_validate({"global_batch_size": 8, "seq_len": 128, **update})
    assert words in format_validation_error(info.value)


def test_model_and_cluster_sizes_beyond_the_limits_are_refused_with_the_limit():
    base = load_model("gpt3-1.3b").model_dump()
    with pytest.raises(ValidationError) as info:
        ModelSpec.model_validate({**base, "num_layers": 10 ** 9})
    assert "num_layers: 1,000,000,000 exceeds the 1,024 Transformer blocks" in format_validation_error(info.value)
    with pytest.raises(ValueError, match="8,000,000 GPUs exceeds the 1,048,576 GPUs .* at most 131,072 nodes"):
        get_cluster("dgx-a100", nodes=10 ** 6)
    with pytest.raises(ValueError, match="nodes: must be a whole number"):
        get_cluster("dgx-a100", nodes=True)
    for field, value in (("hbm_bytes", float("inf")), ("hbm_bytes", 1e-300), ("hbm_bw_bytes_per_s", True)):
        with pytest.raises(ValueError, match=field):
            get_cluster("dgx-a100", gpu=None).gpu.model_validate({**get_gpu("h100-sxm").model_dump(), field: value})


def test_a_dtype_the_gpu_lacks_is_refused_naming_the_gpus_that_have_it():
    model = load_model("gpt3-1.3b")
    fp8 = TrainingSpec(global_batch_size=64, seq_len=2048, dtype="fp8")
    with pytest.raises(ValueError, match=r"a100-80gb has no fp8 .* GPU with fp8: h100-sxm, h200, b200"):
        estimate(model, get_cluster("dgx-a100"), fp8, ParallelPlan(dp=8))
    assert estimate(model, get_cluster("dgx-h100"), fp8, ParallelPlan(dp=8)).mfu > 0
    assert "bf16" not in get_gpu("v100").peak_flops_per_s   # Volta has no bf16 tensor cores
    with pytest.raises(ValueError, match="v100 has no bf16"):
        estimate(model, get_cluster("dgx1-v100"), TRAIN, ParallelPlan(dp=8))
    fp16 = estimate(model, get_cluster("dgx1-v100"), TRAIN.model_copy(update={"dtype": "fp16"}), ParallelPlan(dp=8))
    assert fp16.mfu > 0


LLAMA = {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4,
         "intermediate_size": 512, "vocab_size": 1000}


@pytest.mark.parametrize("change, words, internal", [
    ({"hidden_act": "tanh"}, "hidden_act: 'tanh' is not supported; supported: gelu", None),
    ({"num_hidden_layers": None}, "num_hidden_layers: Field required", "num_layers"),
    ({"num_hidden_layers": "4"}, "num_hidden_layers: must be a whole number", "num_layers"),
    ({"num_attention_heads": 3}, "not divisible by num_attention_heads=3", "num_heads"),
    ({"model_type": "mamba"}, "model_type 'mamba'", None),
    ({"model_type": "mixtral", "num_local_experts": "8", "num_experts_per_tok": 2},
     "num_local_experts: must be a whole number", "num_experts"),
    ({"model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 9},
     "num_experts_per_tok: 9 exceeds num_local_experts=8", "experts_per_token"),
    ({"model_type": "deepseek_v3", "n_routed_experts": 8, "num_experts_per_tok": 2, "kv_lora_rank": 64,
      "num_attention_heads": 10**12}, "num_attention_heads: must be a whole number from 1 to 65,536", None),
    ({"model_type": "deepseek_v3", "n_routed_experts": 8, "num_experts_per_tok": 2, "kv_lora_rank": 64,
      "hidden_size": "256"}, "hidden_size: must be a whole number", None),
    ({"model_type": "qwen2_moe", "num_experts": 8, "num_experts_per_tok": 2, "mlp_only_layers": 3},
     "mlp_only_layers: must be a list of layer numbers", None),
])
def test_hugging_face_problems_name_the_configs_keys(change, words, internal):
    cfg = {k: v for k, v in {**LLAMA, **change}.items() if v is not None}
    with pytest.raises(ValueError) as info:
        model_from_hf_config(cfg)
    assert words in str(info.value) and "\n" not in str(info.value)
    if internal:
        assert f"{internal}:" not in str(info.value) and f"{internal}=" not in str(info.value)


def test_supported_activations_map_and_gelu_models_stay_gelu():
    assert model_from_hf_config(LLAMA).activation == "swiglu"
    assert model_from_hf_config({**LLAMA, "hidden_act": "gelu"}).activation == "gelu"


def test_a_plan_on_a_huge_cluster_builds_nothing_per_gpu():
    cluster = get_cluster("dgx-a100", nodes=1 << 17)   # 2^20 GPUs
    tracemalloc.start()
    topo = build_topology(cluster)
    comm = build_comm_model(cluster, ParallelPlan(dp=2, tp=4), topology=topo)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 << 20, peak   # the per-GPU tables took ~1 GB
    assert comm.links["tp"].size == 4 and topo._graph is None
    assert topo.gpus[(1 << 20) - 1] == "n131071/gpu7" and len(topo.gpus) == 1 << 20
    assert topo.server_of(123457) == "n15432"
    assert topo.route_table.link_attrs(topo.route_table._base_list[8])[2] == "uplink"


def _plans():
    out = []
    for schedule, v in (("gpipe", 1), ("1f1b", 1), ("interleaved-1f1b", 2), ("zero-bubble", 1)):
        for split in (None, (8, 5, 5, 6) if v == 1 else (3, 3, 3, 3, 2, 4, 3, 3)):   # gpt3-350m: 24 blocks
            out.append(ParallelPlan(dp=2, tp=2, pp=4, cp=1, micro_batch_size=2, schedule=schedule,
                                    virtual_stages=v, zero_stage=1, layers_per_stage=split))
    return out


@pytest.mark.parametrize("plan", _plans(), ids=lambda p: f"{p.short()}-{'even' if p.layers_per_stage is None else 'split'}")
def test_the_timeline_changes_no_figure_and_shows_the_step_end(plan):
    model, cluster = load_model("gpt3-350m"), get_cluster("dgx-a100", nodes=2)
    training = TrainingSpec(global_batch_size=64, seq_len=1024)
    plain = estimate(model, cluster, training, plan)
    traced = estimate(model, cluster, training, plan, timeline=True)
    assert plain.model_dump(exclude={"timeline"}) == traced.model_dump(exclude={"timeline"})
    kinds = {e.kind for e in traced.timeline}
    assert {"fwd", "dp_comm", "optimizer"} <= kinds
    assert {e.stage for e in traced.timeline if e.kind == "optimizer"} == set(range(plan.pp))
    end = max(e.end_s for e in traced.timeline)
    if plan.layers_per_stage is not None:   # the simulated figures: the trace ends at the step time
        assert end == pytest.approx(plain.step_time_s, rel=1e-12)


def test_steps_too_long_to_simulate_are_priced_in_closed_form_and_refused_as_a_timeline():
    model, cluster = load_model("gpt3-350m"), get_cluster("dgx-a100", nodes=1)
    training = TrainingSpec(global_batch_size=1 << 22, seq_len=128)
    plan = ParallelPlan(dp=1, pp=2, micro_batch_size=1, layers_per_stage=(13, 11))
    assert sim_ops("1f1b", 2, 1, 1 << 22) > MAX_SIM_OPS
    tracemalloc.start()
    est = estimate(model, cluster, training, plan)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 << 20 and math.isfinite(est.step_time_s) and est.step_time_s > 0
    with pytest.raises(ValueError, match="timeline: 4,194,304 micro-batches x 2 stages"):
        estimate(model, cluster, training, plan, timeline=True)


@pytest.mark.parametrize("schedule, v", [("gpipe", 1), ("1f1b", 1), ("interleaved-1f1b", 2), ("zero-bubble", 1)])
def test_the_closed_form_fallback_matches_the_simulation_for_uniform_stages(schedule, v):
    model, cluster = load_model("gpt3-350m"), get_cluster("dgx-a100", nodes=1)
    training = TrainingSpec(global_batch_size=256, seq_len=512)
    plan = ParallelPlan(dp=1, pp=4, virtual_stages=v, schedule=schedule, layers_per_stage=(24 // (4 * v),) * (4 * v))
    ctx, comm = step_context(model, cluster, training), comm_model(cluster, plan)
    st = cached_stage_times(ctx, knobs_from_plan(plan), comm, schedule, plan.layers_per_stage)
    uniform = {key: None if st.__dict__[key] is None else st.__dict__[key] * 0 + st.__dict__[key][1]
               for key in ("f", "b", "w", "act")}
    st = type(st)(**{**st.__dict__, **uniform})
    span, busy, peaks, span0, _ = _closed_form(st)
    sim_span, sim_busy, sim_peaks, sim_span0, _ = _simulate(st, timeline=True)
    assert busy == pytest.approx(sim_busy, rel=1e-12) and peaks == pytest.approx(sim_peaks, rel=1e-12)
    assert span0 == pytest.approx(sim_span0, rel=1e-12)   # free transfers: exact for every schedule
    assert span == pytest.approx(sim_span, rel=1e-12 if schedule != "zero-bubble" else 1e-3)


def test_estimate_batch_refuses_what_it_cannot_price():
    model, cluster = load_model("gpt3-350m"), get_cluster("dgx-a100", nodes=1)
    with pytest.raises(ValueError, match="layers_per_stage"):
        estimate_batch(model, cluster, TRAIN, [ParallelPlan(dp=4, pp=2, layers_per_stage=(13, 11))])
    with pytest.raises(ValueError, match="placement"):
        estimate_batch(model, cluster, TRAIN, [ParallelPlan(dp=8, placement=("dp", "tp", "cp", "pp"))])


def test_an_empty_vocabulary_shard_costs_no_compute():
    model = ModelSpec(num_layers=2, hidden_size=64, num_heads=8, vocab_size=3, max_seq_len=128)
    est = estimate(model, get_cluster("dgx-a100"), TrainingSpec(global_batch_size=8, seq_len=128), ParallelPlan(tp=8))
    assert math.isfinite(est.step_time_s) and est.step_time_s > 0


def test_topology_files_are_bounded_and_checked(tmp_path):
    from costmodel.network.topology import MAX_FILE_NODES, load_topology

    big = {"nodes": [{"id": f"s{i}", "kind": "switch"} for i in range(MAX_FILE_NODES + 1)], "links": []}
    (tmp_path / "big.json").write_text(json.dumps(big))
    with pytest.raises(ValueError, match="holds at most 65,536 nodes"):
        load_topology(tmp_path / "big.json")
    (tmp_path / "odd.json").write_text(json.dumps({"nodes": [{"id": "g", "kind": "gpu", "server": [1]}], "links": []}))
    with pytest.raises(ValueError, match="has server"):
        load_topology(tmp_path / "odd.json")
    (tmp_path / "deep.json").write_text("[" * 10_000 + "]" * 10_000)
    with pytest.raises(ValueError, match="nests deeper than 64 levels"):
        load_topology(tmp_path / "deep.json")
