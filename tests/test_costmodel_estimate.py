"""`estimate` / `evaluate`: the public contract, invariants over grids, rejections, timelines."""

from __future__ import annotations

import itertools
import json

import pytest

from costmodel import (
    LinkSpec,
    ParallelPlan,
    PlanError,
    Rejection,
    StepEstimate,
    TrainingSpec,
    estimate,
    evaluate,
    get_cluster,
    load_model,
)


def test_public_contract_snippet():
    model = load_model("gpt3-175b")
    cluster = get_cluster("dgx-a100", nodes=128)
    training = TrainingSpec(global_batch_size=1536, seq_len=2048)
    plan = ParallelPlan(dp=8, tp=8, pp=16, micro_batch_size=1, recompute="full")
    est = estimate(model, cluster, training, plan)
    assert isinstance(est, StepEstimate)
    assert est.step_time_s > 0 and est.tokens_per_s == pytest.approx(1536 * 2048 / est.step_time_s)
    assert 0.2 < est.mfu < est.hfu < 0.8
    assert est.fits and est.memory.peak_bytes < est.capacity_bytes
    # round-trips through JSON like any spec
    again = StepEstimate.model_validate_json(est.model_dump_json())
    assert again.step_time_s == est.step_time_s and again.memory == est.memory


def _grid():
    model = load_model("gpt3-13b")
    cluster = get_cluster("dgx-a100", nodes=4)
    training = TrainingSpec(global_batch_size=64, seq_len=2048)
    plans = []
    for dp, tp, pp, mb, sched, z, rc, sp in itertools.product(
            [1, 2, 4], [1, 2, 8], [1, 2, 4], [1, 2], ["1f1b", "gpipe", "zero-bubble", "interleaved-1f1b"],
            [0, 1, 3], ["none", "selective", "full"], [False, True]):
        if sp and tp == 1 or (sched == "interleaved-1f1b" and pp == 1) or dp * tp * pp > 32:
            continue
        v = 2 if sched == "interleaved-1f1b" else 1
        plan = ParallelPlan(dp=dp, tp=tp, pp=pp, micro_batch_size=mb, schedule=sched, virtual_stages=v,
                            zero_stage=z, recompute=rc, sequence_parallel=sp)
        plans.append(plan)
    return model, cluster, training, plans[::7]


def test_invariants_over_a_grid():
    model, cluster, training, plans = _grid()
    assert len(plans) > 50
    for plan in plans:
        est = estimate(model, cluster, training, plan)
        t = est.time
        assert t.total_s == pytest.approx(est.step_time_s, rel=1e-12)
        assert min(t.compute_s, t.tp_comm_s, t.dp_comm_s, t.pp_comm_s, t.bubble_s, t.optimizer_s) >= 0
        if plan.tp == 1:
            assert t.tp_comm_s == 0
        if plan.pp == 1:
            assert t.bubble_s == 0 and t.pp_comm_s == 0
        if plan.dp == 1:
            assert t.dp_comm_s == 0
        mem = est.memory
        assert mem.allocated_bytes == pytest.approx(mem.parameters_bytes + mem.gradients_bytes + mem.optimizer_bytes
                                                    + mem.activations_bytes + mem.buffers_bytes
                                                    + mem.temporaries_bytes, rel=1e-12)
        assert mem.allocated_bytes <= mem.reserved_bytes
        assert mem.peak_bytes == pytest.approx(mem.reserved_bytes + mem.context_bytes, rel=1e-12)


def test_more_bandwidth_or_flops_is_never_slower():
    model, cluster, training, plans = _grid()
    intra, inter = cluster.intra_node_link, cluster.inter_node_link
    faster_net = cluster.model_copy(update={
        "intra_node_link": LinkSpec(name="fast", bw_bytes_per_s=2 * intra.bw_bytes_per_s, latency_s=intra.latency_s),
        "inter_node_link": LinkSpec(name="fast-ib", bw_bytes_per_s=4 * inter.bw_bytes_per_s,
                                    latency_s=inter.latency_s)})
    gpu = cluster.gpu
    faster_gpu = cluster.model_copy(update={"gpu": gpu.model_copy(update={
        "peak_flops_per_s": {k: 2 * v for k, v in gpu.peak_flops_per_s.items()},
        "hbm_bw_bytes_per_s": 1.5 * gpu.hbm_bw_bytes_per_s})})
    for plan in plans:
        base = estimate(model, cluster, training, plan).step_time_s
        assert estimate(model, faster_net, training, plan).step_time_s <= base * (1 + 1e-12)
        assert estimate(model, faster_gpu, training, plan).step_time_s <= base * (1 + 1e-12)


def test_tp_traffic_and_bubble_appear_when_they_should():
    model = load_model("gpt3-13b")
    cluster = get_cluster("dgx-a100", nodes=2)
    training = TrainingSpec(global_batch_size=64, seq_len=2048)
    est = estimate(model, cluster, training, ParallelPlan(dp=2, tp=4, pp=2))
    assert est.time.tp_comm_s > 0 and est.time.bubble_s > 0 and est.time.dp_comm_s >= 0
    # more micro-batches shrink the bubble share; interleaving shrinks it further
    few = estimate(model, cluster, TrainingSpec(global_batch_size=8, seq_len=2048), ParallelPlan(dp=2, tp=4, pp=2))
    assert few.time.bubble_s / few.step_time_s > est.time.bubble_s / est.step_time_s
    inter = estimate(model, cluster, training, ParallelPlan(dp=2, tp=4, pp=2, virtual_stages=2,
                                                             schedule="interleaved-1f1b"))
    assert inter.time.bubble_s < est.time.bubble_s


def test_invalid_plan_raises_plan_error_naming_the_field():
    model = load_model("gpt3-175b")
    cluster = get_cluster("dgx-a100", nodes=1)
    training = TrainingSpec(global_batch_size=16, seq_len=2048)
    with pytest.raises(PlanError, match="^tp: num_heads=96"):
        estimate(model, cluster, training, ParallelPlan(tp=7))
    with pytest.raises(PlanError, match="^dp: the plan needs .*=16 GPUs"):
        estimate(model, cluster, training, ParallelPlan(dp=2, tp=8))
    rej = evaluate(model, cluster, training, ParallelPlan(tp=7))
    assert isinstance(rej, Rejection) and rej.code == "invalid"


def test_oom_is_a_rejection_quoting_the_numbers():
    model = load_model("gpt3-175b")
    cluster = get_cluster("dgx-h100", nodes=16)
    training = TrainingSpec(global_batch_size=1536, seq_len=2048)
    plan = ParallelPlan(dp=2, tp=8, pp=8, micro_batch_size=2)
    est = estimate(model, cluster, training, plan)
    assert not est.fits
    rej = evaluate(model, cluster, training, plan)
    assert isinstance(rej, Rejection) and rej.code == "oom"
    assert rej.needed_bytes == est.memory.peak_bytes and rej.capacity_bytes == 80 * 2**30
    gib = f"{est.memory.peak_bytes / 2**30:.1f}"
    assert rej.message.startswith(f"needs {gib} GiB per GPU (stage 0, forward (")
    assert "h100-sxm has 80.0 GiB (76.0 GiB usable with the 5% safety margin): activations " in rej.message
    assert "try recompute=" in rej.message
    ok = evaluate(model, cluster, training, plan.model_copy(update={"recompute": "full", "micro_batch_size": 1}))
    assert isinstance(ok, StepEstimate) and ok.fits


def test_timeline_and_uneven_stages_use_the_simulator():
    model = load_model("gpt3-13b")                                   # 40 layers
    cluster = get_cluster("dgx-a100", nodes=2)
    training = TrainingSpec(global_batch_size=32, seq_len=2048)
    plan = ParallelPlan(dp=2, tp=2, pp=4, recompute="full")
    closed = estimate(model, cluster, training, plan)
    sim = estimate(model, cluster, training, plan, timeline=True)
    assert sim.timeline and {e.stage for e in sim.timeline} == {0, 1, 2, 3}
    assert sim.time.total_s == pytest.approx(sim.step_time_s, rel=1e-9)
    assert sim.step_time_s == pytest.approx(closed.step_time_s, rel=0.05)   # closed form vs simulation
    trace = json.loads(sim.chrome_trace_json())
    assert len(trace["traceEvents"]) >= len(sim.timeline)
    # an unbalanced split is slower, and its heavy first stage holds more parameters
    even = estimate(model, cluster, training, plan.model_copy(update={"layers_per_stage": (10, 10, 10, 10)}))
    uneven = estimate(model, cluster, training, plan.model_copy(update={"layers_per_stage": (13, 9, 9, 9)}))
    assert uneven.step_time_s > even.step_time_s
    assert even.step_time_s == pytest.approx(sim.step_time_s, rel=1e-9)
    assert len(uneven.stage_memory) == 4
    assert uneven.stage_memory[0].parameters_bytes > even.stage_memory[0].parameters_bytes


@pytest.mark.parametrize("name", ["llama3-8b", "bert-large", "t5-base", "tiny-llama"])
def test_other_architectures_estimate(name):
    model = load_model(name)
    cluster = get_cluster("dgx-h100", nodes=1)
    training = TrainingSpec(global_batch_size=16, seq_len=min(512, model.max_seq_len))
    tp = 2 if model.kv_heads % 2 == 0 else 1
    pp = 2 if model.total_layers % 2 == 0 else 1
    est = estimate(model, cluster, training, ParallelPlan(dp=2, tp=tp, pp=pp, zero_stage=1))
    assert est.step_time_s > 0 and est.memory.peak_bytes > 0
    assert est.time.total_s == pytest.approx(est.step_time_s, rel=1e-12)


def test_context_parallel_prices_the_ring():
    model = load_model("llama3-8b")
    cluster = get_cluster("dgx-h100", nodes=2)
    training = TrainingSpec(global_batch_size=16, seq_len=8192)
    est = estimate(model, cluster, training, ParallelPlan(dp=2, cp=4, tp=2))
    assert est.time.cp_comm_s > 0
    one = estimate(model, cluster, training, ParallelPlan(dp=8, tp=2))
    assert est.memory.activations_bytes < one.memory.activations_bytes


@pytest.mark.parametrize("schedule,v", [("gpipe", 1), ("1f1b", 1), ("interleaved-1f1b", 2)])
def test_closed_form_agrees_with_the_timeline_simulation(schedule, v):
    """One pipeline model: even splits priced in closed form give the simulator's step time and the
    same breakdown definitions (busiest rank's work, transfer cost, bubble)."""
    model = load_model("gpt3-13b")                                   # 40 layers
    cluster = get_cluster("dgx-a100", nodes=4)
    training = TrainingSpec(global_batch_size=64, seq_len=2048)
    for pp, mb, rc in itertools.product([2, 4, 8], [1, 2], ["full", "none"]):
        if 40 % (pp * v):
            continue
        plan = ParallelPlan(dp=32 // (pp * 2), tp=2, pp=pp, micro_batch_size=mb, recompute=rc, schedule=schedule,
                            virtual_stages=v)
        closed = estimate(model, cluster, training, plan)
        sim = estimate(model, cluster, training, plan, timeline=True)
        tol = 1e-9 if schedule == "gpipe" else 0.01
        assert closed.step_time_s == pytest.approx(sim.step_time_s, rel=tol), plan.short()
        for part in ("compute_s", "tp_comm_s", "dp_comm_s", "optimizer_s"):
            assert getattr(closed.time, part) == pytest.approx(getattr(sim.time, part), rel=1e-9), part
        for part in ("bubble_s", "pp_comm_s"):
            assert getattr(closed.time, part) == pytest.approx(getattr(sim.time, part),
                                                               abs=tol * sim.step_time_s), part
