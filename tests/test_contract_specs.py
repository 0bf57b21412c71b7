"""The shared contract: specs are frozen, reject unknown fields, and rules name the field."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from costmodel import (
    ParallelPlan,
    PlanError,
    TrainingSpec,
    check_plan,
    get_cluster,
    list_clusters,
    list_gpus,
    list_models,
    load_model,
    load_plan,
    model_from_hf_config,
    plan_problems,
    save_plan,
)


def test_every_catalog_entry_loads():
    assert {"gpt3-175b", "llama2-70b", "llama3-405b", "bert-large", "t5-11b", "tiny-llama"} <= set(list_models())
    assert {"v100", "a100-40gb", "a100-80gb", "h100-sxm", "h200", "b200", "mi300x", "l40s", "cpu"} <= set(list_gpus())
    for name in list_models():
        assert load_model(name).name == name
    for name in list_clusters():
        cluster = get_cluster(name, nodes=3)
        assert cluster.num_gpus == 3 * cluster.gpus_per_node


def test_specs_are_frozen_and_reject_unknown_fields():
    plan = ParallelPlan(dp=2)
    with pytest.raises(ValidationError):
        plan.dp = 4  # type: ignore[misc]
    with pytest.raises(ValidationError, match="tensor_parallel"):
        ParallelPlan(tensor_parallel=2)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="greater than 0"):
        TrainingSpec(global_batch_size=-1, seq_len=2048)


def test_plan_self_rules():
    with pytest.raises(ValidationError, match="interleaved-1f1b"):
        ParallelPlan(pp=2, virtual_stages=2, schedule="1f1b")
    with pytest.raises(ValidationError, match="sequence_parallel"):
        ParallelPlan(sequence_parallel=True)
    with pytest.raises(ValidationError, match="layers_per_stage"):
        ParallelPlan(pp=2, layers_per_stage=(1, 2, 3))
    assert ParallelPlan(dp=8, tp=8, pp=16).world_size == 1024


def test_check_plan_quotes_the_numbers():
    model = load_model("gpt3-175b")
    cluster = get_cluster("dgx-a100", nodes=128)
    training = TrainingSpec(global_batch_size=1536, seq_len=2048)
    check_plan(model, cluster, training, ParallelPlan(dp=8, tp=8, pp=16, recompute="full"))
    with pytest.raises(PlanError, match="num_heads=96.*tp=7") as info:
        check_plan(model, cluster, training, ParallelPlan(dp=1, tp=7, pp=1))
    assert info.value.field == "tp"
    problems = plan_problems(model, cluster, training, ParallelPlan(dp=16, tp=8, pp=16))
    assert any(p.field == "dp" and "2048 GPUs" in str(p) for p in problems)
    problems = plan_problems(model, cluster, training, ParallelPlan(dp=8, tp=8, pp=128))
    assert any(p.field == "pp" for p in problems)
    problems = plan_problems(model, cluster, training, ParallelPlan(dp=5, tp=8, pp=16))
    assert any(p.field == "micro_batch_size" for p in problems)


def test_plan_file_roundtrip_and_errors(tmp_path):
    plan = ParallelPlan(dp=2, tp=2, pp=2, virtual_stages=2, schedule="interleaved-1f1b",
                        layers_per_stage=(1, 1, 1, 1))
    path = save_plan(plan, tmp_path / "plan.json")
    assert load_plan(path) == plan
    assert not list(tmp_path.glob(".*tmp"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_plan(tmp_path / "bad.json")
    (tmp_path / "typo.json").write_text(json.dumps({"dp": 2, "tensor_paralel": 2}))
    with pytest.raises(ValueError, match="tensor_paralel"):
        load_plan(tmp_path / "typo.json")
    with pytest.raises(ValueError, match="does not exist"):
        load_plan(tmp_path / "missing.json")


def test_unknown_preset_suggests_names():
    with pytest.raises(ValueError, match="did you mean.*gpt3-175b"):
        load_model("gpt3-17b")
    with pytest.raises(ValueError, match="unknown cluster"):
        get_cluster("dgx-z100")


def test_hf_config_files(tmp_path):
    llama = {"model_type": "llama", "num_hidden_layers": 80, "hidden_size": 8192, "num_attention_heads": 64,
             "num_key_value_heads": 8, "intermediate_size": 28672, "vocab_size": 32000,
             "max_position_embeddings": 4096, "hidden_act": "silu"}
    path = tmp_path / "llama2-70b" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(llama))
    spec = load_model(str(path))
    assert (spec.name, spec.kv_heads, spec.activation, spec.norm) == ("llama2-70b", 8, "swiglu", "rmsnorm")
    t5 = model_from_hf_config({"model_type": "t5", "num_layers": 24, "num_decoder_layers": 24, "d_model": 1024,
                               "num_heads": 128, "d_kv": 128, "d_ff": 65536, "vocab_size": 32128})
    assert t5.arch == "encoder-decoder" and t5.kv_channels == 128
    with pytest.raises(ValueError, match="model_type 'mamba'"):
        model_from_hf_config({"model_type": "mamba"})
