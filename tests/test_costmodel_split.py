"""Uneven pipeline splits: estimate balances the stages itself when pp * v does not divide the layers."""

from __future__ import annotations

import pytest

from costmodel import (
    ModelSpec,
    ParallelPlan,
    PlanError,
    TrainingSpec,
    check_plan,
    estimate,
    evaluate,
    get_cluster,
    load_model,
)
from planner.cli import main

BLOOM_LIKE = ModelSpec(name="bloom-like", num_layers=70, hidden_size=14336, num_heads=112, vocab_size=250880,
                       max_seq_len=2048, activation="gelu", norm="layernorm", position="learned")


def test_llama3_405b_on_16_stages_gets_a_balanced_split() -> None:
    model = load_model("llama3-405b")
    est = estimate(model, get_cluster("dgx-h100", nodes=128), TrainingSpec(global_batch_size=2048, seq_len=8192),
                   ParallelPlan(dp=8, tp=8, pp=16, recompute="full"))
    split = est.plan.layers_per_stage
    assert split is not None and len(split) == 16 and sum(split) == 126
    assert split[-1] <= min(split[1:-1])          # the LM head (128k vocabulary) makes the last stage lighter
    assert max(split) - min(split) <= 2


def test_bloom_like_70_layers_on_12_stages_estimates_and_evaluates() -> None:
    cluster, training = get_cluster("dgx-a100", nodes=48), TrainingSpec(global_batch_size=2048, seq_len=2048)
    plan = ParallelPlan(dp=8, tp=4, pp=12, micro_batch_size=2, recompute="full", zero_stage=1)
    est = estimate(BLOOM_LIKE, cluster, training, plan)
    assert sum(est.plan.layers_per_stage) == 70 and len(est.plan.layers_per_stage) == 12
    assert getattr(evaluate(BLOOM_LIKE, cluster, training, plan), "code", None) != "invalid"
    # an explicit split is priced as given
    given = plan.model_copy(update={"layers_per_stage": (5,) + (6,) * 10 + (5,)})
    assert estimate(BLOOM_LIKE, cluster, training, given).plan.layers_per_stage == given.layers_per_stage


def test_runs_still_need_an_explicit_split() -> None:
    with pytest.raises(PlanError, match="layers_per_stage"):
        check_plan(BLOOM_LIKE, None, TrainingSpec(global_batch_size=96, seq_len=2048), ParallelPlan(pp=12))


def test_cli_estimate_uneven(capsys) -> None:
    assert main(["estimate", "--model", "llama3-405b", "--pp", "16", "--tp", "8", "--cluster", "dgx-h100",
                 "--nodes", "128", "--seq-len", "8192", "--recompute", "full"]) == 0
    out = capsys.readouterr().out
    assert "layers per stage:" in out and "pp16" in out
