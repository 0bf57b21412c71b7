"""Context parallelism priced as the executor runs it on the device (all-gather + reduce-scatter on the
CPU host, torch's ring attention on CUDA), its gradient reduction over the dp x cp replicas, and the
executor's rules in `costmodel.step.runnable`."""

from __future__ import annotations

import pytest

from costmodel import EfficiencyModel, ParallelPlan, TrainingSpec, estimate, get_cluster, load_model
from costmodel.layer.cp_variant import cp_variant, device_kind
from costmodel.step.estimate import comm_model
from costmodel.step.runnable import executor_problems, executor_unsupported

CPU = get_cluster("cpu", nodes=1)
H100 = get_cluster("dgx-h100", nodes=1)
TINY = load_model("tiny-llama")
SMALL = TrainingSpec(global_batch_size=4, seq_len=64, dtype="fp32")


def test_the_variant_follows_the_device_unless_the_plan_names_it():
    assert (device_kind(CPU), device_kind(H100), device_kind("cpu")) == ("cpu", "cuda", "cpu")
    assert cp_variant(ParallelPlan(), "cuda") is None
    assert cp_variant(ParallelPlan(cp=2), "cpu") == "all-gather"
    assert cp_variant(ParallelPlan(cp=2), "cuda") == "ring"
    assert cp_variant(ParallelPlan(cp=2, cp_attention="all-gather"), "cuda") == "all-gather"
    assert ParallelPlan(cp=2, cp_attention="ring").short().startswith("dp1-tp1-pp1-cp2-ring")
    with pytest.raises(ValueError, match="cp_attention='ring' needs cp > 1"):
        ParallelPlan(cp_attention="ring")


@pytest.mark.parametrize("recompute, gathers", [("none", 1), ("selective", 2), ("full", 2)])
def test_cpu_all_gather_is_one_gather_and_one_reduce_scatter_per_block(recompute, gathers):
    """Exposed (nothing overlaps them): per block and micro-batch the all-gather of K and V of the kv
    heads (whole sequence) and the reduce-scatter of their gradients; recomputation gathers again."""
    plan = ParallelPlan(cp=2, recompute=recompute)
    est = estimate(TINY, CPU, SMALL, plan)
    comm = comm_model(CPU, plan)
    kv = 2 * 4 * 1 * 64 * TINY.kv_heads * TINY.kv_channels   # fp32 K and V, micro-batch 1, 64 tokens
    eff = EfficiencyModel().collective_efficiency
    per_block = (gathers * comm.time_s("cp", "all_gather", kv) + comm.time_s("cp", "reduce_scatter", kv)) / eff
    assert est.time.cp_comm_s == pytest.approx(4 * TINY.num_layers * per_block, rel=1e-9)   # 4 micro-batches


def test_cuda_ring_attention_hides_behind_the_attention_core():
    """On CUDA 'auto' is torch's ring attention: the estimate of cp_attention='ring', its traffic (the
    all-gather of the heads' K/V, again for the recomputed forward and the backward; cp fp32 gradient
    transfers) partly hidden behind the core's cp steps; the all-gather variant prices differently."""
    model = load_model("llama3-8b").model_copy(update={"max_seq_len": 32768})
    training = TrainingSpec(global_batch_size=8, seq_len=32768)
    auto, ring, gather = (estimate(model, H100, training, ParallelPlan(cp=8, recompute="full", cp_attention=v))
                          for v in ("auto", "ring", "all-gather"))
    assert auto.step_time_s == ring.step_time_s and auto.time.cp_comm_s == ring.time.cp_comm_s
    assert ring.time.cp_comm_s != gather.time.cp_comm_s
    comm = comm_model(H100, ring.plan)
    heads = 2 * 2 * 32768 * model.num_heads * model.kv_channels   # bf16 K and V after the GQA repeat
    grads = 2 * 4 * 32768 // 8 * model.num_heads * model.kv_channels
    eff = EfficiencyModel().collective_efficiency
    exposed = (3 * comm.time_s("cp", "all_gather", heads) + 8 * comm.time_s("cp", "send_recv", grads)) / eff
    assert 0 < ring.time.cp_comm_s < 8 * model.num_layers * exposed   # 8 micro-batches, 32 blocks
    assert estimate(model, H100, training, ParallelPlan(dp=8, recompute="full")).time.cp_comm_s == 0


def test_cp_ranks_reduce_gradients_with_the_data_parallel_ones():
    """The executor wraps DDP/FSDP over dp x cp: with no overlap, cp2 pays the all-reduce dp2 pays (same
    group size and link, same parameters per GPU) and cp_comm_s holds only the attention traffic."""
    eff = EfficiencyModel(overlap_grad_reduce=False)
    cp2 = estimate(TINY, CPU, SMALL, ParallelPlan(cp=2), efficiency=eff)
    dp2 = estimate(TINY, CPU, SMALL, ParallelPlan(dp=2), efficiency=eff)
    assert cp2.time.dp_comm_s == pytest.approx(dp2.time.dp_comm_s, rel=1e-12) and cp2.time.dp_comm_s > 0
    both = estimate(TINY, CPU, SMALL, ParallelPlan(dp=2, cp=2, zero_stage=3), efficiency=eff)
    assert both.memory.parameters_bytes == pytest.approx(
        estimate(TINY, CPU, SMALL, ParallelPlan(dp=4, zero_stage=3), efficiency=eff).memory.parameters_bytes)


def test_executor_rules_name_the_field():
    t5, tied = load_model("t5-base"), TINY.model_copy(update={"tie_embeddings": True})
    cases = [
        (ParallelPlan(cp=2), dict(device="cpu", seq_len=18), "cp"),
        (ParallelPlan(cp=2, cp_attention="ring"), dict(device="cpu", seq_len=16), "cp_attention"),
        (ParallelPlan(pp=2, micro_batch_size=4), dict(device="cuda", global_batch=4), "micro_batch_size"),
        (ParallelPlan(pp=2, virtual_stages=2, schedule="interleaved-1f1b"), dict(device="cuda", global_batch=3),
         "schedule"),
        (ParallelPlan(pp=2), dict(device="cuda", model=tied), "pp"),
        (ParallelPlan(dp=2, pp=2, schedule="zero-bubble", zero_stage=3), dict(device="cuda"), "zero_stage"),
        (ParallelPlan(cp=2), dict(device="cuda", model=t5, seq_len=16), "cp"),   # T5 runs, but not sharded
    ]
    for plan, kwargs, field in cases:
        problems = executor_problems(plan, **kwargs)
        assert [p.field for p in problems][:1] == [field], (plan.short(), problems)
        assert executor_unsupported(plan, **kwargs).startswith(f"{field}: ")
    assert executor_unsupported(ParallelPlan(dp=2, tp=2), device="cpu", model=t5, seq_len=16) is None
    # zero-bubble with selective recomputation runs (a replayable checkpoint cache)
    assert executor_unsupported(ParallelPlan(pp=2, schedule="zero-bubble", recompute="selective"),
                                device="cpu", model=TINY, seq_len=16, global_batch=4) is None


def test_cli_estimate_takes_the_variant_and_names_bad_input(capsys):
    from planner.cli import main

    base = ["estimate", "--model", "llama3-8b", "--cluster", "dgx-h100", "--nodes", "1", "--seq-len", "8192",
            "--global-batch", "16"]
    assert main([*base, "--cp", "4", "--dp", "2", "--cp-attention", "all-gather"]) == 0
    assert "dp2-tp1-pp1-cp4-all-gather-mb1" in capsys.readouterr().out
    assert main([*base, "--cp-attention", "ring"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cp_attention='ring' needs cp > 1" in err[0]
